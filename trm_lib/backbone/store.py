"""The on-disk feature store: ``.npy`` arrays + ``manifest.json``, written row by row, checksummed.

A store folder holds ``global.npy`` (N, D), ``dense.npy`` (N, L, D), optionally
``dense_raw.npy`` (N, L, d_v), all float16, and ``manifest.json`` (key, shapes, grid, completed
rows, and once complete a CRC-32 per block of rows of every array). How it stays honest:

- **Writes are ordinary file writes** (``pwrite`` at the row's offset), never through a writable
  mmap: a full disk is then an ``OSError`` (reported as ``no space left on <folder>``, the store
  removed) instead of a SIGBUS that kills the process without a word. The arrays' full size is
  reserved (``posix_fallocate``) when the store is created, so a disk too small fails at once.
- **The manifest is the commit record**, written atomically and advanced only after the rows are
  on disk (``fdatasync``), so an interrupted computation resumes where it stopped.
- **Checksums are verified on open**: when the store completes, every array gets a CRC-32 per
  block of ~8 MiB of rows; :class:`FeatureStore` checks them all (once per process and file
  version) and names the array and rows that differ, so finite garbage (bytes replaced, header
  kept) or NaN bytes are refused, never trained on. CRC-32 reads ~0.7 GB/s here, about what the
  first epoch's page-ins cost anyway, and the verified pages stay in the page cache for it.

Reading stays mmap-based (a store larger than RAM works). :mod:`trm_lib.backbone.features` computes
stores; this module only knows the format.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trm_lib.utils.io import FileError, disk_full, is_disk_full, read_json, write_json
from trm_lib.utils.safepath import inside

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
BLOCK_BYTES = 8 << 20  # rows per checksum block: ~8 MiB of each array
_NEED = ("format", "key", "n", "grid", "embed_dim", "dense_dim", "arrays", "completed",
         "complete")


class FeatureCacheError(FileError):
    """A feature store is corrupt, incomplete or does not match its key; names the file."""


def read_manifest(folder: Path, key: dict[str, Any] | None = None) -> dict[str, Any]:
    """The validated manifest of ``folder`` (and, given ``key``, one that matches it)."""
    path = folder / MANIFEST
    try:
        manifest = read_json(path)
    except FileError as err:
        raise FeatureCacheError(f"{err}; delete {folder} to recompute") from None
    if not isinstance(manifest, dict) or any(k not in manifest for k in _NEED):
        missing = [k for k in _NEED if not isinstance(manifest, dict) or k not in manifest]
        raise FeatureCacheError(f"{path}: corrupt manifest, missing {', '.join(missing)}; "
                                f"delete {folder} to recompute")
    if manifest["format"] != FORMAT_VERSION:
        raise FeatureCacheError(f"{path}: format {manifest['format']} != {FORMAT_VERSION}; "
                                f"delete {folder} to recompute")
    if key is not None and manifest["key"] != json.loads(json.dumps(key)):
        raise FeatureCacheError(f"{path}: manifest key does not match the requested features "
                                f"(a foreign or edited store); delete {folder}")
    arrays = manifest["arrays"]
    if not isinstance(arrays, dict) or not all(isinstance(v, dict) for v in arrays.values()):
        raise FeatureCacheError(f"{path}: corrupt manifest, 'arrays' is not a mapping of "
                                f"array specs; delete {folder} to recompute")
    for name in arrays:
        _file(folder, manifest, name)  # every recorded file name stays inside the store
    return manifest


def _file(folder: Path, manifest: dict[str, Any], name: str) -> Path:
    """The file of array ``name``: the manifest's ``file`` field, never outside ``folder``."""
    return inside(folder, manifest["arrays"][name].get("file"), field=f"arrays.{name}.file",
                  record=folder / MANIFEST, error=FeatureCacheError)


def _array_path(folder: Path, manifest: dict[str, Any], name: str) -> Path:
    path = _file(folder, manifest, name)
    if not path.exists():
        raise FeatureCacheError(f"{path}: listed in {folder / MANIFEST} but missing; "
                                f"delete {folder} to recompute")
    return path


def open_array(folder: Path, manifest: dict[str, Any], name: str) -> np.memmap:
    """Array ``name`` as a read-only memmap, its shape and dtype checked against the manifest."""
    spec = manifest["arrays"][name]
    path = _array_path(folder, manifest, name)
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise FeatureCacheError(f"{path}: unreadable ({err}); delete {folder}") from None
    if list(arr.shape) != spec["shape"] or arr.dtype != np.float16:
        raise FeatureCacheError(f"{path}: shape {arr.shape} / dtype {arr.dtype}, manifest says "
                                f"{tuple(spec['shape'])} / float16; delete {folder}")
    return arr


def _block_rows(shape: Sequence[int]) -> int:
    row_bytes = 2 * int(np.prod(shape[1:], dtype=np.int64))
    return max(1, BLOCK_BYTES // max(1, row_bytes))


def _checksums(arr: np.ndarray, block_rows: int) -> list[int]:
    return [zlib.crc32(memoryview(np.ascontiguousarray(arr[lo:lo + block_rows])).cast("B"))
            for lo in range(0, arr.shape[0], block_rows)]


#: files verified by this process: (path, inode, size, mtime_ns) -> True
_VERIFIED: set[tuple[str, int, int, int]] = set()


def verify(folder: Path, manifest: dict[str, Any], arrays: dict[str, np.memmap]) -> None:
    """Compare every block of every array with its CRC-32 in the manifest; raise naming the
    array and the first rows that differ. A file version verified before in this process is
    not read again."""
    for name, arr in arrays.items():
        spec = manifest["arrays"][name]
        path = _file(folder, manifest, name)
        st = path.stat()
        stamp = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp in _VERIFIED:
            continue
        check = spec.get("checksum")
        if not isinstance(check, dict) or check.get("kind") != "crc32":
            raise FeatureCacheError(f"{path}: no checksum in {folder / MANIFEST} (a store "
                                    f"written by an older version); delete {folder}")
        rows = int(check["block_rows"])
        got = _checksums(arr, rows)
        bad = [i for i, (a, b) in enumerate(zip(got, check["blocks"], strict=False)) if a != b]
        if bad or len(got) != len(check["blocks"]):
            lo = bad[0] * rows if bad else 0
            hi = min(lo + rows, arr.shape[0]) - 1
            nan = "" if np.isfinite(arr[lo:hi + 1]).all() else ", holding NaN/inf"
            raise FeatureCacheError(f"{path}: rows {lo}..{hi} do not match their checksum"
                                    f"{nan} ({len(bad)} of {len(got)} blocks differ; the file "
                                    f"was changed after it was written); delete {folder}")
        _VERIFIED.add(stamp)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

class StoreWriter:
    """Writes rows into the arrays of one incomplete store with ordinary file writes."""

    def __init__(self, folder: Path, manifest: dict[str, Any]):
        self.folder, self.manifest = folder, manifest
        self.files: dict[str, tuple[int, int, int]] = {}  # name -> (fd, data offset, row bytes)
        try:
            for name, spec in manifest["arrays"].items():
                path = _array_path(folder, manifest, name)
                with open(path, "rb") as fh:
                    version = np.lib.format.read_magic(fh)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    read(fh)
                    offset = fh.tell()
                row = 2 * int(np.prod(spec["shape"][1:], dtype=np.int64))
                self.files[name] = (os.open(path, os.O_WRONLY), offset, row)
        except BaseException:
            self.close()
            raise

    def write(self, lo: int, rows: dict[str, np.ndarray]) -> None:
        """Rows ``lo:lo+len`` of every array, on disk before this returns (the manifest may
        then advance). A full disk removes the store and raises ``no space left``."""
        try:
            for name, (fd, offset, row_bytes) in self.files.items():
                view = memoryview(np.ascontiguousarray(rows[name], dtype=np.float16)).cast("B")
                pos = offset + lo * row_bytes
                while view:
                    done = os.pwrite(fd, view, pos)
                    view, pos = view[done:], pos + done
            for fd, _, _ in self.files.values():
                (getattr(os, "fdatasync", None) or os.fsync)(fd)
        except OSError as err:
            if not is_disk_full(err):
                raise
            self.close()
            remove_store(self.folder)
            raise disk_full(self.folder / MANIFEST) from None

    def close(self) -> None:
        for fd, _, _ in self.files.values():
            os.close(fd)
        self.files = {}


def create_store(folder: Path, key: dict[str, Any], shapes: dict[str, list[int]],
                 info: dict[str, Any]) -> dict[str, Any]:
    """Empty arrays of ``shapes`` (their space reserved) and the manifest that commits them."""
    try:
        for name, shape in shapes.items():
            path = folder / f"{name}.npy"
            with open(path, "wb") as fh:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                          "fortran_order": False, "shape": tuple(shape)}
                np.lib.format.write_array_header_1_0(fh, header)
                fh.flush()
                size = fh.tell() + 2 * int(np.prod(shape, dtype=np.int64))
                try:
                    os.posix_fallocate(fh.fileno(), 0, size)
                except (AttributeError, OSError) as err:  # no fallocate here: a sparse file
                    if is_disk_full(err):
                        raise
                    fh.truncate(size)
        manifest = {"format": FORMAT_VERSION, "key": key, **info,
                    "arrays": {name: {"file": f"{name}.npy", "shape": shape, "dtype": "float16"}
                               for name, shape in shapes.items()},
                    "completed": 0, "complete": False, "seconds": 0.0}
        write_json(folder / MANIFEST, manifest)  # after the arrays: it is the commit record
    except OSError as err:
        if not is_disk_full(err):
            raise
        remove_store(folder)
        raise disk_full(folder / MANIFEST) from None
    except FileError:
        remove_store(folder)
        raise
    return manifest


def finish_store(folder: Path, manifest: dict[str, Any]) -> None:
    """Checksum every array and mark the store complete (the manifest's last write)."""
    for name, spec in manifest["arrays"].items():
        arr = open_array(folder, manifest, name)
        rows = _block_rows(spec["shape"])
        spec["checksum"] = {"kind": "crc32", "block_rows": rows, "blocks": _checksums(arr, rows)}
        del arr
    manifest["complete"] = manifest["completed"] == manifest["n"]
    write_json(folder / MANIFEST, manifest)


def remove_store(folder: Path) -> None:
    """Delete a store's manifest (first: it commits the rest) and arrays; keep the lock file,
    which the caller may hold."""
    (folder / MANIFEST).unlink(missing_ok=True)
    for path in folder.glob("*.npy"):
        path.unlink(missing_ok=True)
    for path in folder.glob(f".{MANIFEST}.*"):
        path.unlink(missing_ok=True)
    if folder.exists() and not any(p.name != ".lock" for p in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

class FeatureStore:
    """A completed feature store, opened read-only and verified against its checksums.
    ``batch(indices)`` gives float32 tensors under the feature-batch keys of
    :mod:`trm_lib.core.methods`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = read_manifest(self.path)
        if not manifest["complete"]:
            raise FeatureCacheError(
                f"{self.path / MANIFEST}: incomplete store ({manifest['completed']}/"
                f"{manifest['n']} rows); run compute_features again to resume")
        self.manifest = manifest
        self.key: dict[str, Any] = manifest["key"]
        self.grid: tuple[int, int] = tuple(manifest["grid"])
        self.embed_dim: int = manifest["embed_dim"]
        self.dense_dim: int = manifest["dense_dim"]
        arrays = {name: open_array(self.path, manifest, name) for name in manifest["arrays"]}
        verify(self.path, manifest, arrays)
        self.global_feats = arrays["global"]
        self.dense = arrays["dense"]
        self.dense_raw = arrays.get("dense_raw")

    def __len__(self) -> int:
        return self.global_feats.shape[0]

    def __repr__(self) -> str:
        return (f"FeatureStore({self.path}, n={len(self)}, D={self.embed_dim}, grid={self.grid}"
                f"{', raw' if self.dense_raw is not None else ''})")

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor,
              device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """Rows ``indices`` as float32 tensors: ``global`` (B, D), ``dense`` (B, L, D) and, when
        cached, ``dense_raw`` (B, L, d_v)."""
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices,
                         dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.path}: indices out of range [0, {len(self)})")
        arrays = {"global": self.global_feats, "dense": self.dense}
        if self.dense_raw is not None:
            arrays["dense_raw"] = self.dense_raw
        out = {k: torch.from_numpy(np.ascontiguousarray(a[idx])) for k, a in arrays.items()}
        if device is not None:
            return {k: v.to(device, non_blocking=True).float() for k, v in out.items()}
        return {k: v.float() for k, v in out.items()}


__all__ = ["FORMAT_VERSION", "FeatureCacheError", "FeatureStore", "StoreWriter", "create_store",
           "finish_store", "open_array", "read_manifest", "remove_store", "verify"]
