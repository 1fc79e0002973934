"""The frozen-feature cache: backbone features computed once per (backbone x dataset x transform).

Both CLIP towers are frozen, so every epoch of every method would otherwise recompute the same
image features; decoding JPEGs and running the image tower dominates training time. We compute the
global embedding and the dense token map once, store them as float16 ``.npy`` files (read back as
memmaps, so a store larger than RAM still works) and train heads on them.

Layout: ``<cache>/features/<key hash>/`` with ``global.npy`` (N, D), ``dense.npy`` (N, L, D),
optionally ``dense_raw.npy`` (N, L, d_v), and ``manifest.json`` (the full key, shapes, grid and
the number of completed rows). The key covers everything that changes the numbers -- backbone
identity (model, weights hash, size, precision), dataset name/split/root/fingerprint, transform,
raw flag -- so any change lands in a different folder. Rows are written in order and the manifest
(written atomically) advances only after the rows are flushed, so an interrupted run resumes
where it stopped. Cached features have no augmentation: that is the trade-off of
``train.use_cache`` (live images remain available through the backbone's train transform).

Under ``torchrun`` (``python -m torch.distributed.run --nproc_per_node=N -m trm_lib features
...``) the ranks share the work: in every round each rank encodes one batch of the next
``N x batch_size`` rows, rank 0 gathers them and writes them into the *same* store (same key,
files and manifest as a single process; rank r's batch is exactly single-process batch
``round * N + r``, so the numbers are bit-identical). Only rank 0 writes, so the resume rule is
unchanged and a store begun with one N can be finished with another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import distributed
from .io import read_json, write_json
from .locks import file_lock
from .paths import cache_dir

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .backbone import FrozenCLIP
    from .datasets.base import MultiLabelDataset

FORMAT_VERSION = 1


class FeatureCacheError(ValueError):
    """A feature store is corrupt, incomplete or does not match its key; names the file."""


# ---------------------------------------------------------------------------------------------
# Keys and locations
# ---------------------------------------------------------------------------------------------

def feature_key(backbone: FrozenCLIP, dataset: MultiLabelDataset, raw: bool = False,
                transform: Any = None, decode: str = "pil") -> dict[str, Any]:
    """Everything that determines the cached numbers (JSON-serialisable). ``decode``: ``pil`` or
    ``nvjpeg`` (GPU decoding gives slightly different pixels, see :mod:`trm_lib.decode`); the
    key of the default PIL path has no ``decode`` entry, so existing stores keep their hash."""
    transform = transform if transform is not None else backbone.transform()
    if decode not in ("pil", "nvjpeg"):
        raise ValueError(f"decode must be 'pil' or 'nvjpeg', got {decode!r}")
    extra = {"decode": decode} if decode != "pil" else {}
    return {**extra,
        "format": FORMAT_VERSION,
        "backbone": backbone.identity(),
        "dataset": {"name": dataset.name, "split": dataset.split,
                    "root": str(Path(dataset.root).resolve()),
                    "fingerprint": dataset.fingerprint(), "n": len(dataset)},
        "transform": repr(transform),
        "image_size": backbone.image_size,
        "grid": list(backbone.grid),
        "raw": bool(raw),
    }


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def store_dir(key: dict[str, Any], cache_root: str | Path | None = None) -> Path:
    root = Path(cache_root) if cache_root is not None else cache_dir()
    return root / "features" / key_hash(key)


def _locked(folder: Path) -> contextlib.AbstractContextManager[Path]:
    """Exclusive lock on the store while it is computed (two processes would interleave rows)."""
    return file_lock(folder / ".lock", what=f"feature store {folder}")


def _read_manifest(path: Path, key: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        manifest = read_json(path)
    except ValueError as err:
        raise FeatureCacheError(f"{err}; delete {path.parent} to recompute") from None
    need = ("format", "key", "n", "grid", "embed_dim", "dense_dim", "arrays", "completed",
            "complete")
    if not isinstance(manifest, dict) or any(k not in manifest for k in need):
        missing = [k for k in need if not isinstance(manifest, dict) or k not in manifest]
        raise FeatureCacheError(f"{path}: corrupt manifest, missing {', '.join(missing)}; "
                                f"delete {path.parent} to recompute")
    if manifest["format"] != FORMAT_VERSION:
        raise FeatureCacheError(f"{path}: format {manifest['format']} != {FORMAT_VERSION}; "
                                f"delete {path.parent} to recompute")
    if key is not None and manifest["key"] != json.loads(json.dumps(key)):
        raise FeatureCacheError(f"{path}: manifest key does not match the requested features "
                                f"(a foreign or edited store); delete {path.parent}")
    return manifest


def _open_array(folder: Path, manifest: dict[str, Any], name: str, mode: str) -> np.memmap:
    spec = manifest["arrays"][name]
    path = folder / spec["file"]
    if not path.exists():
        raise FeatureCacheError(f"{path}: listed in {folder / 'manifest.json'} but missing; "
                                f"delete {folder} to recompute")
    try:
        arr = np.load(path, mmap_mode=mode)
    except (ValueError, OSError) as err:
        raise FeatureCacheError(f"{path}: unreadable ({err}); delete {folder}") from None
    if list(arr.shape) != spec["shape"] or arr.dtype != np.float16:
        raise FeatureCacheError(f"{path}: shape {arr.shape} / dtype {arr.dtype}, manifest says "
                                f"{tuple(spec['shape'])} / float16; delete {folder}")
    return arr


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------

class FeatureStore:
    """A completed feature store, opened read-only. ``batch(indices)`` gives float32 tensors
    under the feature-batch keys of :mod:`trm_lib.methods`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = _read_manifest(self.path / "manifest.json")
        if not manifest["complete"]:
            raise FeatureCacheError(
                f"{self.path / 'manifest.json'}: incomplete store ({manifest['completed']}/"
                f"{manifest['n']} rows); run compute_features again to resume")
        self.manifest = manifest
        self.key: dict[str, Any] = manifest["key"]
        self.grid: tuple[int, int] = tuple(manifest["grid"])
        self.embed_dim: int = manifest["embed_dim"]
        self.dense_dim: int = manifest["dense_dim"]
        self.global_feats = _open_array(self.path, manifest, "global", "r")
        self.dense = _open_array(self.path, manifest, "dense", "r")
        self.dense_raw = (_open_array(self.path, manifest, "dense_raw", "r")
                          if "dense_raw" in manifest["arrays"] else None)

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


def compute_features(backbone: FrozenCLIP, dataset: MultiLabelDataset, *, batch_size: int = 128,
                     raw: bool = False, num_workers: int = 0,
                     device: str | torch.device | None = None,
                     cache_root: str | Path | None = None, progress: bool = True,
                     gpu_decode: bool = False) -> FeatureStore:
    """Return the feature store of ``dataset`` under ``backbone``, computing what is missing.

    Reuse costs one manifest read; an interrupted computation resumes from its last flushed
    batch. ``cache_root`` defaults to :func:`trm_lib.paths.cache_dir`. ``gpu_decode``: decode
    JPEGs with nvJPEG on the backbone's GPU (:mod:`trm_lib.decode`; falls back to PIL, with a
    warning, when the backbone is not on CUDA). In a multi-process group (``torchrun``) every
    rank must call this with the same arguments: the work is sharded (module docstring).
    """
    from .decode import use_gpu_decode

    if len(dataset) == 0:
        raise FeatureCacheError(f"{dataset.name}/{dataset.split}: dataset has no images")
    if device is not None:
        backbone.to(device)
    transform = backbone.transform()
    gpu = use_gpu_decode(gpu_decode, backbone.device)
    key = feature_key(backbone, dataset, raw, transform, "nvjpeg" if gpu else "pil")
    folder = store_dir(key, cache_root)
    manifest_path = folder / "manifest.json"
    if distributed.is_distributed():
        _compute_sharded(backbone, dataset, transform, key, folder, batch_size, num_workers, raw,
                         progress, gpu)
        return FeatureStore(folder)
    with _locked(folder):
        if manifest_path.exists():
            manifest = _read_manifest(manifest_path, key)
            if manifest["complete"]:
                return FeatureStore(folder)
            arrays = {name: _open_array(folder, manifest, name, "r+")
                      for name in manifest["arrays"]}
        else:
            manifest, arrays = _create_store(folder, key, backbone, len(dataset), raw)
        _fill(backbone, dataset, transform, manifest, manifest_path, arrays, batch_size,
              num_workers, raw, progress, gpu)
    return FeatureStore(folder)


def _create_store(folder: Path, key: dict[str, Any], backbone: FrozenCLIP, n: int, raw: bool
                  ) -> tuple[dict[str, Any], dict[str, np.memmap]]:
    L = backbone.grid[0] * backbone.grid[1]
    shapes = {"global": [n, backbone.embed_dim], "dense": [n, L, backbone.embed_dim]}
    if raw:
        shapes["dense_raw"] = [n, L, backbone.dense_dim]
    arrays = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+",
                                              dtype=np.float16, shape=tuple(shape))
              for name, shape in shapes.items()}
    manifest = {
        "format": FORMAT_VERSION, "key": key, "key_hash": key_hash(key), "n": n,
        "grid": list(backbone.grid), "embed_dim": backbone.embed_dim,
        "dense_dim": backbone.dense_dim,
        "arrays": {name: {"file": f"{name}.npy", "shape": shape, "dtype": "float16"}
                   for name, shape in shapes.items()},
        "completed": 0, "complete": False, "seconds": 0.0,
    }
    write_json(folder / "manifest.json", manifest)  # after the arrays: it is the commit record
    return manifest, arrays


def _fill(backbone: FrozenCLIP, dataset: MultiLabelDataset, transform: Any,
          manifest: dict[str, Any], manifest_path: Path, arrays: dict[str, np.memmap],
          batch_size: int, num_workers: int, raw: bool, progress: bool,
          gpu_decode: bool = False) -> None:
    from tqdm import tqdm

    from .decode import image_batches

    start, n = manifest["completed"], manifest["n"]
    loader = image_batches(dataset, transform,
                           [range(lo, min(lo + batch_size, n)) for lo in range(start, n, batch_size)],
                           device=backbone.device, gpu_decode=gpu_decode, num_workers=num_workers)
    t0 = time.perf_counter()
    with tqdm(total=n, initial=start, disable=not progress, unit="img",
              desc=f"features {dataset.name}/{dataset.split}") as bar:
        for images, index in loader:
            lo, hi = int(index[0]), int(index[-1]) + 1
            out = backbone.encode_images(images, raw=raw)
            _write_rows(arrays, out, lo, hi, manifest_path, dataset)
            manifest["completed"] = hi
            manifest["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            write_json(manifest_path, manifest)
            bar.update(hi - lo)
    _finish(manifest, manifest_path, dataset, progress)


def _write_rows(arrays: dict[str, np.memmap], out: dict[str, torch.Tensor], lo: int, hi: int,
                manifest_path: Path, dataset: MultiLabelDataset) -> None:
    """Rows ``lo:hi`` of every array as float16, flushed (before the manifest may advance)."""
    for name, arr in arrays.items():
        rows = out[name].to(torch.float16).cpu().numpy()
        if not np.isfinite(rows).all():
            raise FeatureCacheError(
                f"{manifest_path.parent / (name + '.npy')}: non-finite {name} features for "
                f"images {lo}..{hi - 1} (e.g. {dataset.image_paths[lo]}); float16 overflow "
                f"or a broken backbone")
        arr[lo:hi] = rows
    for arr in arrays.values():
        arr.flush()


def _finish(manifest: dict[str, Any], manifest_path: Path, dataset: MultiLabelDataset,
            progress: bool) -> None:
    n = manifest["n"]
    manifest["complete"] = manifest["completed"] == n
    write_json(manifest_path, manifest)
    if progress:
        print(f"features: {n} images of {dataset.name}/{dataset.split} -> {manifest_path.parent} "
              f"({manifest['seconds']:.1f}s)", file=sys.stderr)


def _compute_sharded(backbone: FrozenCLIP, dataset: MultiLabelDataset, transform: Any,
                     key: dict[str, Any], folder: Path, batch_size: int, num_workers: int,
                     raw: bool, progress: bool, gpu_decode: bool) -> None:
    """The multi-process twin of the body of :func:`compute_features` (module docstring).

    Rank 0 alone opens, locks and writes the store and tells the others where to start (or
    the error that stops everyone, so no rank is left waiting in a collective). Rank r encodes
    rows ``[lo + r*B, lo + (r+1)*B)`` of every round ``lo`` -- single-process batch
    ``round * N + r`` -- and rank 0 gathers the round, writes it in order and advances the
    manifest, exactly as :func:`_fill` does for one batch."""
    from tqdm import tqdm

    from .decode import image_batches

    main, n = distributed.is_main(), len(dataset)
    rank, world = distributed.rank(), distributed.world_size()
    manifest_path = folder / "manifest.json"
    with _locked(folder) if main else contextlib.nullcontext():
        manifest: dict[str, Any] = {}
        arrays: dict[str, np.memmap] = {}
        status: tuple[str, Any] = ("start", 0)
        if main:
            try:
                if manifest_path.exists():
                    manifest = _read_manifest(manifest_path, key)
                    if manifest["complete"]:
                        status = ("done", n)
                    else:
                        arrays = {name: _open_array(folder, manifest, name, "r+")
                                  for name in manifest["arrays"]}
                        status = ("start", manifest["completed"])
                else:
                    manifest, arrays = _create_store(folder, key, backbone, n, raw)
            except FeatureCacheError as err:
                status = ("error", str(err))
        status = distributed.broadcast_object(status)
        if status[0] == "error":
            raise FeatureCacheError(status[1])
        start = int(status[1])
        rounds = list(range(start, n, world * batch_size))
        mine = [range(min(lo + rank * batch_size, n), min(lo + (rank + 1) * batch_size, n))
                for lo in rounds]
        names = ["global", "dense"] + (["dense_raw"] if raw else [])
        L = backbone.grid[0] * backbone.grid[1]
        widths = {"global": (backbone.embed_dim,), "dense": (L, backbone.embed_dim),
                  "dense_raw": (L, backbone.dense_dim)}
        loader = image_batches(dataset, transform, mine, device=backbone.device,
                               gpu_decode=gpu_decode, num_workers=num_workers)
        t0 = time.perf_counter()
        with tqdm(total=n, initial=start, disable=not (progress and main), unit="img",
                  desc=f"features {dataset.name}/{dataset.split} x{world}") as bar:
            for lo, (images, _) in zip(rounds, loader, strict=True):
                hi = min(lo + world * batch_size, n)
                out = (backbone.encode_images(images, raw=raw) if images is not None else
                       {k: torch.zeros((0, *widths[k]), device=backbone.device) for k in names})
                sizes = [max(0, min(lo + (r + 1) * batch_size, n) - min(lo + r * batch_size, n))
                         for r in range(world)]
                rows = {k: distributed.gather_tensor(out[k].to(torch.float16), sizes)
                        for k in names}
                if main:
                    _write_rows(arrays, rows, lo, hi, manifest_path, dataset)
                    manifest["completed"] = hi
                    manifest["seconds"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    write_json(manifest_path, manifest)
                    bar.update(hi - lo)
        if main and status[0] != "done":
            _finish(manifest, manifest_path, dataset, progress)
    distributed.barrier()  # the store is complete before any rank opens it


__all__ = ["FORMAT_VERSION", "FeatureCacheError", "FeatureStore", "compute_features",
           "feature_key", "key_hash", "store_dir"]
