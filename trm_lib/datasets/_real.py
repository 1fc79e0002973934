"""Plumbing shared by the loaders of real datasets (VOC, COCO, NUS-WIDE, VG-200, CUB).

Real datasets arrive in their official layouts, sometimes half-downloaded (NUS-WIDE has lost
many Flickr images), sometimes unpacked one folder higher or lower than expected. These helpers
make every loader fail the same way: one :class:`DatasetError` that names the missing path and
prints the layout that was expected. Nothing here ever writes into a dataset folder.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import DatasetError

MISSING_POLICIES = ("error", "skip", "ignore")


def need_root(name: str, root: str | os.PathLike | None, layout: str) -> Path:
    """``root`` as an absolute folder, or an error saying that one is needed and what it holds."""
    if root is None:
        raise DatasetError(f"dataset {name!r} needs a root folder (data.root in the config or "
                           f"--data-root on the command line); expected layout:\n{layout}")
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise DatasetError(f"{path}: root of dataset {name!r} is not a folder; expected "
                           f"layout:\n{layout}")
    return path


def first_existing(candidates: Sequence[Path], layout: str, what: str = "file") -> Path:
    """The first candidate that exists, else one error naming them all (first = canonical)."""
    for path in candidates:
        if (path.is_dir() if what == "folder" else path.is_file()):
            return path
    others = "".join(f"\n  also looked for {p}" for p in candidates[1:])
    raise DatasetError(f"{candidates[0]}: {what} not found{others}\nexpected layout:\n{layout}")


def read_lines(path: Path) -> list[str]:
    """Stripped non-blank lines; tolerates CRLF line ends and a UTF-8 byte-order mark."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def choice(name: str, option: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise DatasetError(f"dataset {name!r}: option {option}={value!r} must be one of "
                           f"{list(allowed)}")
    return value


def official_split(name: str, split: str, mapping: dict[str, str]) -> str:
    """Map our split name (``train``/``test``/aliases) to the dataset's own name for it."""
    if split not in mapping:
        raise DatasetError(f"dataset {name!r}: split must be one of {sorted(mapping)}, "
                           f"got {split!r}")
    return mapping[split]


def missing_files(paths: Sequence[Path]) -> np.ndarray:
    """Indices of ``paths`` that are not existing files.

    One ``os.scandir`` per parent folder instead of one ``stat`` per image: checking COCO's 82k or
    NUS-WIDE's 270k files takes about a second this way.
    """
    listing: dict[str, set[str]] = {}
    bad = []
    for i, path in enumerate(paths):
        parent, name = os.path.split(os.fspath(path))  # strings: pathlib costs 5x more here
        if parent not in listing:
            try:
                with os.scandir(parent) as it:
                    listing[parent] = {e.name for e in it if e.is_file()}
            except (FileNotFoundError, NotADirectoryError):
                listing[parent] = set()
        if name not in listing[parent]:
            bad.append(i)
    return np.asarray(bad, dtype=np.int64)


def handle_missing(name: str, split: str, root: Path, paths: list[Path], policy: str,
                   meta: dict[str, Any], layout: str) -> np.ndarray:
    """Apply the ``missing=`` policy to the listed images; return the indices to keep.

    ``error``: raise, naming the first missing file and the count. ``skip``: drop them, warn with
    the count and list them (relative to ``root``) in ``meta["missing"]``; if *no* listed image
    exists, the layout is wrong and it raises anyway. ``ignore``: do not look at the image files
    at all (label-only work, e.g. statistics without the images).
    """
    choice(name, "missing", policy, MISSING_POLICIES)
    keep = np.arange(len(paths))
    if policy == "ignore":
        return keep
    bad = missing_files(paths)
    if bad.size == 0:
        meta["missing"] = []
        return keep
    if bad.size == len(paths):
        raise DatasetError(f"{paths[0]}: image file not found, and neither is any other of the "
                           f"{len(paths)} images listed for {name}/{split} (wrong root, or images "
                           f"not unpacked?); expected layout:\n{layout}")
    if policy == "error":
        raise DatasetError(f"{paths[bad[0]]}: image file not found ({bad.size} of {len(paths)} "
                           f"images of {name}/{split} are missing; pass missing='skip' to drop "
                           f"them with a warning, or fix the download)")
    meta["missing"] = [_relative(paths[i], root) for i in bad]
    warnings.warn(f"{name}/{split}: {bad.size} of {len(paths)} listed images are missing under "
                  f"{root} and were skipped (see dataset.meta['missing'])", stacklevel=3)
    return np.setdiff1d(keep, bad)


def _relative(path: Path, root: Path) -> str:
    text, prefix = os.fspath(path), os.fspath(root).rstrip(os.sep) + os.sep
    return text[len(prefix):].replace(os.sep, "/") if text.startswith(prefix) else text
