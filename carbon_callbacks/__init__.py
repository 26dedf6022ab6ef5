"""carbon-callbacks: per-epoch energy and CO2e for ML training.

The core imports no ML framework; ``EnergyMeter`` is loaded on first use so that
``import carbon_callbacks`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["EnergyMeter", "__version__"]

if TYPE_CHECKING:
    from carbon_callbacks.energy.meter import EnergyMeter


def __getattr__(name: str) -> Any:
    # PEP 562: psutil and the sensors load only when the meter is first asked for.
    if name == "EnergyMeter":
        from carbon_callbacks.energy.meter import EnergyMeter

        return EnergyMeter
    raise AttributeError(f"module 'carbon_callbacks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "EnergyMeter"])
