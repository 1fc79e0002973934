"""Datasets: one module per source, one :class:`MultiLabelDataset` type, a registry by name.

``load("synthscenes", split="train")`` gives the embedded default world;
``load("voc2007", root="~/data/VOCdevkit", split="test")`` a real one. Loaders register
themselves with :func:`register`; modules are imported lazily on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import (
    DatasetError,
    MultiLabelDataset,
    TorchView,
    open_image,
    read_generic,
    write_generic,
)

Loader = Callable[..., MultiLabelDataset]
_REGISTRY: dict[str, Loader] = {}
# name -> module that registers it (imported on demand so `import trm_lib` stays light)
_MODULES = {
    "folder": "trm_lib.datasets",
    "synthscenes": "trm_lib.synth.world",
    "voc2007": "trm_lib.datasets.voc",
    "coco2014": "trm_lib.datasets.coco",
    "nuswide": "trm_lib.datasets.nuswide",
    "vg200": "trm_lib.datasets.vg",
    "cub": "trm_lib.datasets.cub",
}


def register(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        _REGISTRY[name] = fn
        return fn
    return deco


def available() -> list[str]:
    return sorted(set(_MODULES) | set(_REGISTRY))


def load(name: str, root: str | Path | None = None, split: str = "train",
         **options: Any) -> MultiLabelDataset:
    """Load dataset ``name`` (see :func:`available`) from ``root`` for ``split``."""
    if name not in _REGISTRY and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(available())})")
    return _REGISTRY[name](root=root, split=split, **options)


@register("folder")
def _load_folder(root: str | Path | None = None, split: str = "train") -> MultiLabelDataset:
    if root is None:
        raise DatasetError("dataset 'folder' needs a root (the generic format folder)")
    return read_generic(Path(root).expanduser(), split, name="folder")


__all__ = ["DatasetError", "MultiLabelDataset", "TorchView", "available", "load", "open_image",
           "read_generic", "register", "write_generic"]
