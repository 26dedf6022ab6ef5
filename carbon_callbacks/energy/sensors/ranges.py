"""How wide each method's low/high range is, and why.

Every component's joules carry a range set by how they were obtained. The figures are the
library's stated judgement from the sources named here, not statistical intervals: they are
meant to say "this number is good to a few percent" or "this is an estimate, maybe off by half".

Counters (``counter``)
    RAPL ``energy_uj``: the register counts in units of 2^-14 J (about 61 uJ) on most Intel parts
    and 15.3 uJ on others (Intel SDM vol. 3B, MSR_RAPL_POWER_UNIT), and sysfs rounds to 1 uJ, so
    quantisation is two units per read, negligible over an epoch. Accuracy: from Haswell on,
    Intel package and DRAM RAPL track external power meters closely (Hackenberg et al. 2015,
    "An energy efficiency feature survey of the Intel Haswell processor"; Desrochers et al. 2016,
    "A validation of DRAM RAPL power measurements"; Khan et al. 2018, "RAPL in Action",
    ACM TOMPECS): we use +/-5%. AMD Zen's RAPL is a model inside the chip rather than a
    measurement (Schoene et al. 2021, "Energy efficiency aspects of the AMD Zen 2
    architecture"): we use +/-15% for ``amd-rapl`` zones.
    NVML ``nvmlDeviceGetTotalEnergyConsumption`` (mJ): the NVML reference manual states board
    power readings are "accurate to within +/- 5% of current power draw"; we use +/-5%.

Polled power (``polled``)
    NVML ``nvmlDeviceGetPowerUsage`` sampled by the meter's thread at 10 Hz or faster and
    integrated by trapezoid. Range: the sensor's +/-5% plus the sampling error of each step,
    bounded by half the power change across it times its length (the gap between the left and
    right Riemann sums), so a spiky trace gets a wider range than a flat one. Yang et al. 2024
    ("Part-time power measurements: nvidia-smi's lack of attention") show the reading itself is
    averaged over part of each period on recent GPUs, which the 5% does not cover for very bursty
    loads.

Models (``model``)
    CPU load x TDP and RAM W/GB are estimates. TDP is a thermal design figure, not measured
    power: real package power under full load ranges from well under TDP to above it (turbo
    budgets PL2), and idle power varies several-fold between parts. We use x0.5 to x1.5 of the
    point value, a deliberately wide band.
"""

from __future__ import annotations

RAPL_INTEL_REL = 0.05
"""Relative accuracy of Intel RAPL package/DRAM counters (see module docstring)."""

RAPL_AMD_REL = 0.15
"""Relative accuracy of AMD RAPL counters, which model rather than measure."""

RAPL_QUANTUM_J = 61e-6 * 2
"""Quantisation of one RAPL read pair (start and end), in joules."""

NVML_REL = 0.05
"""NVML's documented power accuracy (+/-5% of current draw)."""

MODEL_LOW = 0.5
"""Low end of a model's range, as a fraction of its point value."""

MODEL_HIGH = 1.5
"""High end of a model's range, as a fraction of its point value."""


def counter_range(joules: float, rel: float, quantum: float = 0.0) -> tuple[float, float]:
    """Low/high for a counter's joules: relative accuracy plus quantisation."""
    d = abs(joules) * rel + quantum
    return max(0.0, joules - d), joules + d


def model_range(joules: float) -> tuple[float, float]:
    """Low/high for a modelled figure: the model's wide documented spread."""
    return joules * MODEL_LOW, joules * MODEL_HIGH
