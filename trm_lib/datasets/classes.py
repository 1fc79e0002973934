"""Class lists and the real label matrices shipped with the package.

The VOC2007 label matrices (trainval 5,011 x 20, test 4,952 x 20, from the public TaI-DPT release,
MIT licence; see ``trm_lib/data/voc2007_labels``) give SynthScenes real class frequencies and
co-occurrence, and let the peers' partial-label masks apply row for row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOC_CLASSES: list[str] = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]

VOC2007_LABELS_DIR = Path(__file__).resolve().parent.parent / "data" / "voc2007_labels"


def voc2007_full_labels(split: str) -> np.ndarray:
    """Full {1,-1} VOC2007 labels: ``split`` is ``trainval``/``train`` or ``test``."""
    from .labels import read_peer_labels

    name = {"train": "train_full.txt", "trainval": "train_full.txt", "test": "test_full.txt"}
    if split not in name:
        raise ValueError(f"VOC2007 split must be train/trainval/test, got {split!r}")
    return read_peer_labels(VOC2007_LABELS_DIR / name[split], num_classes=len(VOC_CLASSES))


def voc2007_peer_mask(proportion: float) -> np.ndarray:
    """The peers' protocol-A mask for trainval at ``proportion`` (0.1 ... 0.9), as {1,-1,0}."""
    from .labels import read_peer_labels

    path = VOC2007_LABELS_DIR / "partial-labels" / f"train_proportion_{proportion:g}.txt"
    return read_peer_labels(path, num_classes=len(VOC_CLASSES))
