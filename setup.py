"""The package list, found rather than written out (everything else is in pyproject.toml).

Discovery under ``carbon_callbacks/`` (namespace packages included, so the data folders ship),
plus the adapters: they live in ``integrations/`` at the top level and install as
``carbon_callbacks.integrations`` (the mapping is ``package-dir`` in pyproject.toml), which
``[tool.setuptools.packages.find]`` cannot express.
"""

from __future__ import annotations

from setuptools import find_namespace_packages, find_packages, setup

ADAPTERS = "carbon_callbacks.integrations"

setup(
    packages=[
        *find_namespace_packages(include=["carbon_callbacks", "carbon_callbacks.*"]),
        ADAPTERS,
        *(f"{ADAPTERS}.{name}" for name in find_packages("integrations")),
    ]
)
