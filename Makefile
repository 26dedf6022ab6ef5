# The README's two commands, `make demo` and `make test`, do all set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv postgres chromium demo test bench lint clean

venv: $(STAMP)

# torch is pinned to the CPU wheel on disk via the constraints file and installed in the
# same pip command, so no extra resolves to a CUDA build.
$(STAMP): pyproject.toml constraints-dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq -c constraints-dev.txt "torch==2.13.0" -e ".[all,dev]"
	touch $(STAMP)

demo: venv
	$(BIN)/carbon-callbacks demo

# The team-ledger tests run against a real PostgreSQL server from Debian's packages. Best effort
# (root with apt-get): where it cannot be installed those tests skip and say why.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
	    && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	    || echo "make: could not install postgresql; the PostgreSQL ledger tests will skip" >&2; \
	fi

# The browser tests of `carbon-callbacks serve` drive Debian's headless Chromium through its
# chromedriver. Best effort, as for PostgreSQL: where it cannot be installed those tests skip.
chromium:
	@if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 \
	    && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	        chromium-driver >/dev/null) \
	    || echo "make: could not install chromium; the serve browser tests will skip" >&2; \
	fi

test: venv postgres chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/pip install -qq -c constraints-dev.txt -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
