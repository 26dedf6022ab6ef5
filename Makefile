# The README's two commands, `make demo` and `make test`, do all set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

LAYOUT := build/layout

.PHONY: venv postgres chromium demo test bench lint layout typecheck layers wheel-check clean

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

# Cheap static checks first, then the suite, then the wheel.
test: venv postgres chromium lint layers typecheck
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory wheel-check

# Each peer (CodeCarbon, carbontracker, Zeus, perun, eco2AI) goes into a virtualenv of its own
# under benchmarks/.peers, so that their pins never meet ours; a peer that cannot be installed
# is left out and RESULTS.md says why.
bench: venv
	$(BIN)/python benchmarks/peers.py install
	$(BIN)/python benchmarks/run_all.py

lint: venv
	$(BIN)/ruff check .

# mypy and import-linter must read the package as it installs, with integrations/ inside
# carbon_callbacks, a tree that exists on disk only in the wheel. build/layout is that tree made
# of symlinks to the sources, rebuilt every time so a new or removed module is seen.
layout:
	@rm -rf $(LAYOUT) && mkdir -p $(LAYOUT)/carbon_callbacks
	@for f in carbon_callbacks/*; do \
	    [ "$${f##*/}" = __pycache__ ] || ln -s "$(CURDIR)/$$f" $(LAYOUT)/carbon_callbacks/; \
	done
	@ln -s "$(CURDIR)/integrations" $(LAYOUT)/carbon_callbacks/integrations

# Settings in pyproject.toml [tool.mypy]. mypy names the files by their path in build/layout;
# sed maps them back to the sources.
typecheck: venv layout
	@$(BIN)/mypy > $(LAYOUT)/mypy.txt; status=$$?; \
	sed -e 's#^$(LAYOUT)/carbon_callbacks/integrations/#integrations/#' \
	    -e 's#^$(LAYOUT)/##' $(LAYOUT)/mypy.txt; exit $$status

# The rooms' import order and the core's independence from adapters and frameworks: the
# contracts in pyproject.toml [tool.importlinter] (tests/test_layering.py shows they catch a
# violation). lint-imports finds the package from its working directory.
layers: venv layout
	cd $(LAYOUT) && $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml

# Builds the wheel, checks it holds every source and data file, installs it with --no-deps
# into a fresh venv in a temp folder that borrows the dev venv's packages through a .pth file
# (fast, nothing downloaded), and from there runs `carbon-callbacks detect` and imports the
# Lightning adapter, so a file missing from the wheel fails here. See tools/wheel_check.py.
wheel-check: venv
	$(BIN)/python tools/wheel_check.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache
