"""The one dataset type every source produces, and the generic on-disk format.

Every loader (synthetic or real) returns a :class:`MultiLabelDataset`: absolute image paths, the
*full* label matrix in {1, -1} (hidden labels are kept so pseudo-label precision can be measured;
masking happens in :mod:`trm_lib.datasets.labels`, never here), class names and the split name.

Generic format (written by SynthScenes, readable for any user data)::

    <root>/classes.txt              one class name per line
    <root>/annotations/<split>.csv  header ``image,<class_1>,...,<class_C>``; one row per image,
                                    image path relative to <root>, values 1 / -1
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trm_lib.utils.errors import UserError
from trm_lib.utils.io import atomic_write


class DatasetError(UserError, ValueError):
    """Bad dataset input; the message names the file and field."""


@dataclass
class MultiLabelDataset:
    name: str
    split: str
    root: Path
    image_paths: list[Path]
    labels: np.ndarray  # (N, C) int8 in {1, -1}
    class_names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int8)
        n, c = len(self.image_paths), len(self.class_names)
        if self.labels.shape != (n, c):
            raise DatasetError(f"{self.name}/{self.split}: labels have shape {self.labels.shape}, "
                               f"expected ({n}, {c}) = (images, classes)")
        bad = ~np.isin(self.labels, (1, -1))
        if bad.any():
            r, col = np.argwhere(bad)[0]
            raise DatasetError(f"{self.name}/{self.split}: full labels must be 1/-1; row {r} "
                               f"({self.image_paths[r]}) class {self.class_names[col]!r} "
                               f"has {self.labels[r, col]}")

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_image(self, index: int) -> Image.Image:
        """Open image ``index`` as RGB; a missing or corrupt file raises naming the file."""
        return open_image(self.image_paths[index])

    def subset(self, indices: Sequence[int] | np.ndarray, split: str | None = None
               ) -> MultiLabelDataset:
        idx = np.asarray(indices, dtype=np.int64)
        return MultiLabelDataset(self.name, split or self.split, self.root,
                                 [self.image_paths[i] for i in idx], self.labels[idx],
                                 list(self.class_names), dict(self.meta, parent_indices=idx.tolist()))

    def verify(self, skip: bool = False) -> list[tuple[Path, str]]:
        """Open every image. Default: raise on the first bad file. ``skip=True``: drop bad files
        from this dataset in place and return ``[(path, reason), ...]`` for reporting."""
        bad: list[tuple[Path, str]] = []
        for path in self.image_paths:
            try:
                with Image.open(path) as im:
                    im.verify()
            except _IMAGE_ERRORS as err:
                if not skip:
                    raise DatasetError(f"{path}: cannot read image ({err})") from None
                bad.append((path, str(err) or type(err).__name__))
        if bad:
            drop = {p for p, _ in bad}
            keep = [i for i, p in enumerate(self.image_paths) if p not in drop]
            self.image_paths = [self.image_paths[i] for i in keep]
            self.labels = self.labels[keep]
            self.meta.setdefault("skipped", []).extend(str(p) for p, _ in bad)
        return bad

    def fingerprint(self) -> str:
        """Stable hash of (classes, image paths relative to root, labels) — part of cache keys."""
        h = hashlib.sha256()
        h.update("\n".join(self.class_names).encode())
        for p in self.image_paths:
            try:
                rel = p.relative_to(self.root)
            except ValueError:
                rel = p
            h.update(str(rel).encode() + b"\0")
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()[:16]

    def torch(self, transform: Callable[[Image.Image], Any] | None = None) -> TorchView:
        return TorchView(self, transform)


class TorchView:
    """``torch.utils.data.Dataset`` view: ``(image, full_labels, index)`` per item."""

    def __init__(self, dataset: MultiLabelDataset, transform: Callable | None = None):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        import torch

        image = self.dataset.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.from_numpy(self.dataset.labels[index].astype(np.float32)), index


#: what PIL raises for a file that is no image it can read, including a decompression bomb
#: (more than twice ``Image.MAX_IMAGE_PIXELS``, e.g. a 400-megapixel PNG), which is not an OSError
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def open_image(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except _IMAGE_ERRORS as err:
        raise DatasetError(f"{path}: cannot read image ({err})") from None


# ---------------------------------------------------------------------------------------------
# Generic format
# ---------------------------------------------------------------------------------------------

def write_generic(root: str | os.PathLike, split: str, rel_paths: Sequence[str],
                  labels: np.ndarray, class_names: Sequence[str]) -> Path:
    """Write ``classes.txt`` (if absent or identical) and ``annotations/<split>.csv``."""
    root = Path(root)
    classes_file = root / "classes.txt"
    text = "\n".join(class_names) + "\n"
    if classes_file.exists() and classes_file.read_text() != text:
        raise DatasetError(f"{classes_file}: existing class list differs from the one being written")
    if not classes_file.exists():
        with atomic_write(classes_file) as fh:
            fh.write(text)
    labels = np.asarray(labels)
    if labels.shape != (len(rel_paths), len(class_names)):
        raise DatasetError(f"labels shape {labels.shape} != ({len(rel_paths)}, {len(class_names)})")
    out = root / "annotations" / f"{split}.csv"
    with atomic_write(out, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", *class_names])
        for rel, row in zip(rel_paths, labels):
            writer.writerow([rel, *(int(v) for v in row)])
    return out


def read_generic(root: str | os.PathLike, split: str, name: str = "folder") -> MultiLabelDataset:
    """Read the generic format; every error names the file and the offending row/field."""
    root = Path(root)
    classes_file = root / "classes.txt"
    ann = root / "annotations" / f"{split}.csv"
    for f in (classes_file, ann):
        if not f.exists():
            raise DatasetError(f"{f}: not found (expected layout: <root>/classes.txt and "
                               f"<root>/annotations/<split>.csv)")
    class_names = [c.strip() for c in _utf8(classes_file).splitlines() if c.strip()]
    dupes = sorted({c for c in class_names if class_names.count(c) > 1})
    if dupes:
        raise DatasetError(f"{classes_file}: class names must be unique, repeated: "
                           f"{', '.join(dupes)}")
    paths, rows = _read_rows(ann, class_names, classes_file)
    if not paths:
        raise DatasetError(f"{ann}: no image rows (only the header); a split needs at least "
                           f"one image")
    labels = np.asarray(rows, dtype=np.int8).reshape(len(rows), len(class_names))
    return MultiLabelDataset(name, split, root, paths, labels, class_names)


def _utf8(path: Path) -> str:
    """The text of ``path`` (a leading byte-order mark, as Excel writes, is dropped); a file in
    another encoding (Latin-1 ``classes.txt``) names it."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at "
                           f"offset {err.start}); save it as UTF-8") from None


def _read_rows(ann: Path, class_names: list[str], classes_file: Path
               ) -> tuple[list[Path], list[list[int]]]:
    """Image paths and label rows of a generic-format CSV; every error names the file and line
    (a repeated image row would count one image twice in every metric)."""
    reader = csv.reader(io.StringIO(_utf8(ann), newline=""))
    header = next(reader, None)
    if header is None or header[0] != "image" or header[1:] != class_names:
        raise DatasetError(f"{ann}: header must be 'image,' followed by the classes of "
                           f"{classes_file}")
    paths: list[Path] = []
    rows: list[list[int]] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(reader, start=2):
        if len(row) != len(class_names) + 1:
            raise DatasetError(f"{ann}:{lineno}: expected {len(class_names) + 1} fields, "
                               f"got {len(row)}")
        try:
            values = [int(v) for v in row[1:]]
        except ValueError:
            raise DatasetError(f"{ann}:{lineno}: label values must be 1 or -1") from None
        if any(v not in (1, -1) for v in values):
            raise DatasetError(f"{ann}:{lineno}: label values must be 1 or -1")
        if row[0] in seen:
            raise DatasetError(f"{ann}:{lineno}: image {row[0]!r} is listed twice (first "
                               f"on line {seen[row[0]]}); list each image once")
        seen[row[0]] = lineno
        paths.append(ann.parent.parent / row[0])
        rows.append(values)
    return paths, rows
