"""TRM-ML research workbench: text-region matching for multi-label recognition with missing labels.

The package does the work; the notebooks in ``notebooks/`` tell the story. Subpackages go in
ranks (README, docs/DESIGN.md): ``utils < config < datasets, backbone < core < synth, tinyclip <
train < experiments < viz < reports, tools``; ``core`` is the paper's method.

``import trm_lib`` loads nothing else: the short names below (``from trm_lib import course``)
resolve lazily to the module that holds the concept now.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

#: short names kept for notebooks, scripts and the docs: name -> the module holding it
ALIASES = {
    "course": "trm_lib.reports.course",
    "explorer": "trm_lib.reports.explorer",
    "labels": "trm_lib.datasets.labels",
    "metrics": "trm_lib.core.metrics",
    "losses": "trm_lib.core.losses",
    "model": "trm_lib.core.model",
    "prototypes": "trm_lib.core.prototypes",
    "baselines": "trm_lib.core.baselines",
    "stats": "trm_lib.experiments.stats",
}


def __getattr__(name: str) -> ModuleType:
    if name in ALIASES:
        return importlib.import_module(ALIASES[name])
    raise AttributeError(f"module 'trm_lib' has no attribute {name!r}")
