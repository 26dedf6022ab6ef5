"""Joules, never carbon: the meter (``meter.py``), the sensors it reads (``sensors/``), the
chains it builds by default (``defaults.py``) and the account of them (``detect.py``).

Nothing is imported here, so ``import carbon_callbacks.energy`` stays cheap; import
``EnergyMeter`` from ``carbon_callbacks`` or ``carbon_callbacks.energy.meter``.
"""
