"""Datasets: one module per source, one :class:`MultiLabelDataset` type, a registry by name.

``load("synthscenes", split="train")`` gives the embedded default world;
``load("voc2007", root="~/data/VOCdevkit", split="test")`` a real one. Loaders register
themselves with :func:`register`; modules are imported lazily on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trm_lib.utils.registry import Registry

from .base import (
    DatasetError,
    MultiLabelDataset,
    TorchView,
    open_image,
    read_generic,
    write_generic,
)

Loader = Callable[..., MultiLabelDataset]
#: name -> loader; each loader module registers itself, the SynthScenes world (a higher-ranked
#: package) is declared and imported on first use, so ``import trm_lib`` stays light
DATASETS: Registry[Loader] = Registry("dataset", error=DatasetError, declared={
    "synthscenes": "trm_lib.synth.world",
    "voc2007": "trm_lib.datasets.voc",
    "coco2014": "trm_lib.datasets.coco",
    "nuswide": "trm_lib.datasets.nuswide",
    "vg200": "trm_lib.datasets.vg",
    "cub": "trm_lib.datasets.cub",
})


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make ``load(name, ...)`` call this loader."""
    return DATASETS.register(name)


def available() -> list[str]:
    return sorted(DATASETS.names())


def load(name: str, root: str | Path | None = None, split: str = "train",
         **options: Any) -> MultiLabelDataset:
    """Load dataset ``name`` (see :func:`available`) from ``root`` for ``split``."""
    return DATASETS.get(name)(root=root, split=split, **options)


@register("folder")
def _load_folder(root: str | Path | None = None, split: str = "train") -> MultiLabelDataset:
    if root is None:
        raise DatasetError("dataset 'folder' needs a root (the generic format folder)")
    return read_generic(Path(root).expanduser(), split, name="folder")


__all__ = ["DATASETS", "DatasetError", "MultiLabelDataset", "TorchView", "available", "load", "open_image",
           "read_generic", "register", "write_generic"]
