"""`import carbon_callbacks` stays light: no ML framework, the meter loaded on first use."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "keras", "transformers", "optuna", "sqlalchemy", "matplotlib", "lightning",
         "pytorch_lightning", "tensorflow", "jax", "pynvml")


def test_import_loads_no_ml_framework():
    code = (
        "import sys, carbon_callbacks\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_meter_import_loads_no_ml_framework_either():
    frameworks = tuple(m for m in HEAVY if m != "pynvml")  # a meter loads NVML's bindings
    code = (
        "import sys\nfrom carbon_callbacks import EnergyMeter\nEnergyMeter()\n"
        f"print(','.join(m for m in {frameworks!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_energy_meter_is_exported():
    import carbon_callbacks

    assert "EnergyMeter" in dir(carbon_callbacks)
    assert carbon_callbacks.EnergyMeter.__name__ == "EnergyMeter"
