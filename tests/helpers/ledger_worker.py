"""A separate process that writes to a ledger, for the concurrency and SIGKILL tests.

Usage: python ledger_worker.py LEDGER NAME EPOCHS [GO_FILE] [DELAY]

Writes one run named NAME with EPOCHS epochs (forever if EPOCHS is 0), printing each epoch
number once it is committed. With GO_FILE it waits for that file first, so two workers start
writing at the same moment.
"""

from __future__ import annotations

import os
import sys
import time

# Run as a script: the repository root makes ``tests.helpers`` importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from carbon_callbacks.ledger import Ledger  # noqa: E402
from tests.helpers.ledger_records import make_record  # noqa: E402


def main() -> None:
    location, name, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    go = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    ledger = Ledger.open(location, timeout=30.0)
    run_id = ledger.start_run({"project": name, "run_id": f"{name}-run"})
    print(f"run {run_id}", flush=True)
    while go and not os.path.exists(go):
        time.sleep(0.005)
    epoch = 0
    while epochs == 0 or epoch < epochs:
        ledger.add_epoch(run_id, make_record(epoch, energy_kwh=0.001 + epoch * 1e-6))
        print(epoch, flush=True)
        epoch += 1
        if delay:
            time.sleep(delay)
    ledger.end_run(run_id)
    print("done", flush=True)


if __name__ == "__main__":
    main()
