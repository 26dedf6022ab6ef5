"""A real tiny fit that a signal or an exception ends mid-epoch, for tests/system/faults.

    python -m tests.helpers.endings_worker ADAPTER ACTION OUT_DIR [--without-callback]

ACTION is ``sigterm``/``sigint`` (sent to this process from inside epoch 1's second training
step), ``raise`` (an exception there), or ``iterator`` (Keras: the training data fails in epoch
1, outside every method the callback wraps, and the script ends on the uncaught exception).
The default ledger is ``OUT_DIR/ledger.sqlite``. ``FIT RETURNED`` is printed if ``fit``
returns, so a run with and one without the callback can be compared.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras-home-"))


def _failing_data(out: Path):  # noqa: ANN202 - a keras.utils.PyDataset built on demand
    import keras
    import numpy as np

    class Failing(keras.utils.PyDataset):
        """Four batches an epoch; the second batch of epoch 1 cannot be read."""

        def __init__(self) -> None:
            super().__init__()
            self.reads = 0
            rng = np.random.RandomState(0)
            self.x = rng.randn(64, 8).astype("float32")
            self.y = (self.x[:, 0] > 0).astype("int32")

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):  # noqa: ANN204
            self.reads += 1
            if self.reads == 6:
                raise OSError("training data shard vanished")
            return self.x[16 * i : 16 * (i + 1)], self.y[16 * i : 16 * (i + 1)]

    return Failing()


def main() -> None:
    adapter_name, action, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    without = "--without-callback" in sys.argv
    os.environ["CARBON_CALLBACKS_LEDGER"] = str(out / "ledger.sqlite")
    from tests.helpers.adapter_fits import DRIVERS, Fault, Step

    adapter = DRIVERS[adapter_name]()
    carbon = None if without else adapter.callback()
    if action == "iterator":
        model = adapter._model(Step())
        callbacks = [carbon] if carbon is not None else []
        model.fit(_failing_data(out), epochs=3, verbose=0, callbacks=callbacks)
    else:
        adapter.fit(out, carbon, epochs=3, step=Step(Fault(epoch=1, batch=1, action=action)))
    print("FIT RETURNED", flush=True)


if __name__ == "__main__":
    main()
