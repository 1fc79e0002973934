"""The frozen-feature cache: backbone features computed once per (backbone x dataset x transform).

Both CLIP towers are frozen, so every epoch of every method would otherwise recompute the same
image features; decoding JPEGs and running the image tower dominates training time. We compute the
global embedding and the dense token map once, store them as float16 ``.npy`` files (read back as
memmaps, so a store larger than RAM still works) and train heads on them. The format -- row-wise
ordinary writes, the manifest as commit record, CRC-32 checksums verified on open -- lives in
:mod:`trm_lib.backbone.store`.

Stores live in ``<cache>/features/<key hash>/``. The key covers everything that changes the
numbers -- backbone identity (model, weights hash, size, precision), dataset name/split/root/
fingerprint (classes, image paths, labels), a stamp of every image file's size and modification
time, transform, raw flag -- so any change lands in a different folder. Size + mtime rather than a
content hash: one ``stat`` per image is ~1000x cheaper than reading it (a content hash would cost
as much as computing the features on the embedded world's small JPEGs, and hours on COCO), and
rewriting an image -- even with the same name, labels and size -- changes its mtime; only a
deliberate restore of the old mtime escapes it. Rows are written in order and the manifest advances
only after they are on disk, so an interrupted run resumes where it stopped. Cached features have
no augmentation: that is the trade-off of ``train.use_cache`` (live images remain available
through the backbone's train transform).

Policy on a damaged store: :func:`compute_features` rebuilds a complete store that fails its
checks (checksums, manifest, arrays) with a one-line ``warning:`` on stderr naming the folder and
the reason; :class:`FeatureStore` opened directly refuses it with :class:`FeatureCacheError`.
A complete store is opened without taking the lock, so a read-only cache works; a cache that
must be written but cannot is one error naming the folder and ``TRM_CACHE``.

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
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trm_lib.utils import distributed
from trm_lib.utils.io import FileError, stable_hash, write_json
from trm_lib.utils.locks import file_lock
from trm_lib.utils.paths import cache_dir

from .store import (
    FORMAT_VERSION,
    FeatureCacheError,
    FeatureStore,
    StoreWriter,
    create_store,
    finish_store,
    read_manifest,
    remove_store,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from trm_lib.datasets.base import MultiLabelDataset

    from .clip import FrozenCLIP


# ---------------------------------------------------------------------------------------------
# Keys and locations
# ---------------------------------------------------------------------------------------------

def images_stamp(dataset: MultiLabelDataset) -> str:
    """Hash of every image file's (size, mtime) in order: a rewritten image changes the key
    (module docstring: why not a content hash). A missing image is an error naming it."""
    h = hashlib.sha256()
    for path in dataset.image_paths:
        try:
            st = Path(path).stat()
        except OSError as err:
            raise FeatureCacheError(f"{path}: image of {dataset.name}/{dataset.split} cannot "
                                    f"be read ({err.strerror})") from None
        h.update(f"{st.st_size}:{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def feature_key(backbone: FrozenCLIP, dataset: MultiLabelDataset, raw: bool = False,
                transform: Any = None, decode: str = "pil") -> dict[str, Any]:
    """Everything that determines the cached numbers (JSON-serialisable). ``decode``: ``pil`` or
    ``nvjpeg`` (GPU decoding gives slightly different pixels, see :mod:`trm_lib.backbone.decode`); the
    key of the default PIL path has no ``decode`` entry."""
    transform = transform if transform is not None else backbone.transform()
    if decode not in ("pil", "nvjpeg"):
        raise ValueError(f"decode must be 'pil' or 'nvjpeg', got {decode!r}")
    extra = {"decode": decode} if decode != "pil" else {}
    return {**extra,
        "format": FORMAT_VERSION,
        "backbone": backbone.identity(),
        "dataset": {"name": dataset.name, "split": dataset.split,
                    "root": str(Path(dataset.root).resolve()),
                    "fingerprint": dataset.fingerprint(), "n": len(dataset),
                    "images": images_stamp(dataset)},
        "transform": repr(transform),
        "image_size": backbone.image_size,
        "grid": list(backbone.grid),
        "raw": bool(raw),
    }


def key_hash(key: dict[str, Any]) -> str:
    """The feature store's folder name: :func:`trm_lib.utils.io.stable_hash` of its key."""
    return stable_hash(key, 16)


def store_dir(key: dict[str, Any], cache_root: str | Path | None = None) -> Path:
    root = Path(cache_root) if cache_root is not None else cache_dir()
    return root / "features" / key_hash(key)


def _locked(folder: Path) -> contextlib.AbstractContextManager[Path]:
    """Exclusive lock on the store while it is computed (two processes would interleave rows)."""
    return file_lock(folder / ".lock", what=f"feature store {folder}")


def _open_complete(folder: Path, key: dict[str, Any]) -> tuple[FeatureStore | None, str]:
    """The complete, verified store of ``key`` in ``folder`` (read-only, no lock), else None and
    why it cannot be used ("" when there is simply none yet, or it is incomplete)."""
    if not (folder / "manifest.json").exists():
        return None, ""
    try:
        if not read_manifest(folder, key)["complete"]:
            return None, ""
        return FeatureStore(folder), ""
    except FeatureCacheError as err:
        return None, str(err)


def _prepare(folder: Path, key: dict[str, Any], backbone: FrozenCLIP, n: int, raw: bool
             ) -> tuple[dict[str, Any], StoreWriter | None]:
    """Under the store's lock: the manifest to continue from and a writer (None when another
    process finished the store meanwhile). A damaged store is removed and begun again."""
    store, problem = _open_complete(folder, key)
    if store is not None:
        return store.manifest, None
    if not problem and (folder / "manifest.json").exists():
        try:
            manifest = read_manifest(folder, key)  # incomplete: resume
            return manifest, StoreWriter(folder, manifest)
        except FeatureCacheError as err:
            problem = str(err)
    if problem:
        reason = problem.rsplit("; delete ", 1)[0]  # we do the deleting
        print(f"warning: {reason}; recomputing the feature store {folder}", file=sys.stderr)
        remove_store(folder)
        folder.mkdir(parents=True, exist_ok=True)
    L = backbone.grid[0] * backbone.grid[1]
    shapes = {"global": [n, backbone.embed_dim], "dense": [n, L, backbone.embed_dim]}
    if raw:
        shapes["dense_raw"] = [n, L, backbone.dense_dim]
    manifest = create_store(folder, key, shapes, {
        "key_hash": key_hash(key), "n": n, "grid": list(backbone.grid),
        "embed_dim": backbone.embed_dim, "dense_dim": backbone.dense_dim})
    return manifest, StoreWriter(folder, manifest)


@contextlib.contextmanager
def _writing(folder: Path, problem: str) -> Iterator[None]:
    """The store's lock, or one error naming the folder and TRM_CACHE when the cache cannot be
    written (read-only filesystem, no permission)."""
    try:
        lock = _locked(folder)
        lock.__enter__()
    except FileError as err:
        why = f"{problem}; and " if problem else ""
        raise FeatureCacheError(
            f"{why}the feature store {folder} must be computed but the cache is not writable "
            f"({err}); set TRM_CACHE to a writable folder (now {cache_dir()})") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def compute_features(backbone: FrozenCLIP, dataset: MultiLabelDataset, *, batch_size: int = 128,
                     raw: bool = False, num_workers: int = 0,
                     device: str | torch.device | None = None,
                     cache_root: str | Path | None = None, progress: bool = True,
                     gpu_decode: bool = False) -> FeatureStore:
    """Return the feature store of ``dataset`` under ``backbone``, computing what is missing.

    Reuse costs one manifest read and (once per process) the checksum pass; an interrupted
    computation resumes from its last written batch; a damaged store is recomputed with a
    warning (module docstring). ``cache_root`` defaults to :func:`trm_lib.utils.paths.cache_dir`.
    ``gpu_decode``: decode JPEGs with nvJPEG on the backbone's GPU (:mod:`trm_lib.backbone.decode`; falls
    back to PIL, with a warning, when the backbone is not on CUDA). In a multi-process group
    (``torchrun``) every rank must call this with the same arguments: the work is sharded.
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
    if distributed.is_distributed():
        _compute_sharded(backbone, dataset, transform, key, folder, batch_size, num_workers, raw,
                         progress, gpu)
        return FeatureStore(folder)
    store, problem = _open_complete(folder, key)
    if store is not None:
        return store
    with _writing(folder, problem):
        manifest, writer = _prepare(folder, key, backbone, len(dataset), raw)
        if writer is not None:
            try:
                _fill(backbone, dataset, transform, manifest, folder, writer, batch_size,
                      num_workers, raw, progress, gpu)
            finally:
                writer.close()
    return FeatureStore(folder)


def _fill(backbone: FrozenCLIP, dataset: MultiLabelDataset, transform: Any,
          manifest: dict[str, Any], folder: Path, writer: StoreWriter,
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
            _write_rows(writer, out, lo, hi, folder, dataset)
            manifest["completed"] = hi
            manifest["seconds"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            write_json(folder / "manifest.json", manifest)
            bar.update(hi - lo)
    _finish(manifest, folder, dataset, progress)


def _write_rows(writer: StoreWriter, out: dict[str, torch.Tensor], lo: int, hi: int,
                folder: Path, dataset: MultiLabelDataset) -> None:
    """Rows ``lo:hi`` of every array as float16, on disk (before the manifest may advance)."""
    rows = {}
    for name in writer.files:
        rows[name] = out[name].to(torch.float16).cpu().numpy()
        if not np.isfinite(rows[name]).all():
            raise FeatureCacheError(
                f"{folder / (name + '.npy')}: non-finite {name} features for "
                f"images {lo}..{hi - 1} (e.g. {dataset.image_paths[lo]}); float16 overflow "
                f"or a broken backbone")
    writer.write(lo, rows)


def _finish(manifest: dict[str, Any], folder: Path, dataset: MultiLabelDataset,
            progress: bool) -> None:
    finish_store(folder, manifest)
    if progress:
        print(f"features: {manifest['n']} images of {dataset.name}/{dataset.split} -> {folder} "
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
    with contextlib.ExitStack() as stack:
        manifest: dict[str, Any] = {}
        writer: StoreWriter | None = None
        status: tuple[str, Any] = ("start", 0)
        if main:
            try:
                store, problem = _open_complete(folder, key)
                if store is not None:
                    status = ("done", n)
                else:
                    stack.enter_context(_writing(folder, problem))
                    manifest, writer = _prepare(folder, key, backbone, n, raw)
                    if writer is None:
                        status = ("done", n)
                    else:
                        stack.callback(writer.close)
                        status = ("start", manifest["completed"])
            except FileError as err:
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
                if main and writer is not None:
                    _write_rows(writer, rows, lo, hi, folder, dataset)
                    manifest["completed"] = hi
                    manifest["seconds"] += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    write_json(folder / "manifest.json", manifest)
                    bar.update(hi - lo)
        if main and writer is not None:
            _finish(manifest, folder, dataset, progress)
    distributed.barrier()  # the store is complete before any rank opens it


__all__ = ["FORMAT_VERSION", "FeatureCacheError", "FeatureStore", "compute_features",
           "feature_key", "images_stamp", "key_hash", "store_dir"]
