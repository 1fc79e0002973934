"""Label matrices and missing-label protocols.

Full labels are ``{1, -1}`` (N, C) int8 matrices; observed labels are ``{1, -1, 0}`` with 0 =
unknown. One flat N x C matrix for every dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import atomic_write


class LabelError(ValueError):
    """A label matrix or label file is malformed; the message names the file/field."""


def check_labels(Y: np.ndarray, allowed: tuple[int, ...] = (1, -1, 0), where: str = "labels"
                 ) -> np.ndarray:
    """Return ``Y`` as an int8 (N, C) matrix or raise naming the first bad entry."""
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise LabelError(f"{where}: expected a 2-D (images x classes) matrix, got shape {Y.shape}")
    if Y.dtype.kind == "f" and not np.all(np.isfinite(Y)):
        raise LabelError(f"{where}: contains NaN/inf")
    bad = ~np.isin(Y, allowed)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise LabelError(f"{where}: value {Y[r, c]!r} at row {r}, column {c} is not in {allowed}")
    return Y.astype(np.int8)


def read_peer_labels(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read the peers' text format: one row per image, comma-separated 1/-1/0."""
    path = Path(path)
    if not path.exists():
        raise LabelError(f"{path}: label file not found")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = [int(v) for v in line.split(",")]
        except ValueError:
            raise LabelError(f"{path}:{lineno}: values must be integers 1, -1 or 0") from None
        if rows and len(row) != len(rows[0]):
            raise LabelError(f"{path}:{lineno}: {len(row)} columns, expected {len(rows[0])}")
        rows.append(row)
    if not rows:
        raise LabelError(f"{path}: empty label file")
    Y = check_labels(np.asarray(rows), where=str(path))
    if num_classes is not None and Y.shape[1] != num_classes:
        raise LabelError(f"{path}: {Y.shape[1]} columns, expected {num_classes} classes")
    return Y


def write_peer_labels(path: str | os.PathLike, Y: np.ndarray) -> Path:
    """Write ``Y`` in the peers' text format (atomic)."""
    Y = check_labels(Y, where=str(path))
    with atomic_write(path) as fh:
        for row in Y:
            fh.write(",".join(str(int(v)) for v in row) + "\n")
    return Path(path)
