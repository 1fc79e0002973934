"""Chunked, resumable, parallel generation of a world or corpus into a temporary sibling folder,
renamed into place only when everything is written (any worker count: byte-identical files).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from trm_lib.datasets.base import DatasetError
from trm_lib.utils.io import atomic_write, disk_full, is_disk_full, read_json, replace_dir
from trm_lib.utils.locks import file_lock
from trm_lib.utils.paths import cache_dir, unwritable_hint

# ---------------------------------------------------------------------------------------------
# Chunked, resumable, parallel generation into a temporary sibling folder
# ---------------------------------------------------------------------------------------------

def default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _call_chunk(args: tuple) -> tuple[int, Any]:
    fn, tmp, start, stop, extra = args
    return start, fn(tmp, start, stop, *extra)


def _run_chunks(tmp: Path, stream: str, n: int, fn: Callable[..., list], extra: tuple,
                workers: int | None, progress: bool, desc: str, chunk: int = 128
                ) -> Iterable[list]:
    """Run ``fn(tmp, start, stop, *extra)`` over chunks of ``range(n)``; each finished chunk's
    result is saved under ``tmp/.parts`` so an interrupted run resumes where it stopped. Yields
    the chunk results in order."""
    parts = tmp / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, n, chunk))

    def part_file(start: int) -> Path:
        return parts / f"{stream}-{start:06d}.json"

    todo = [(fn, str(tmp), s, min(s + chunk, n), extra) for s in starts
            if not part_file(s).exists()]
    workers = default_workers() if workers is None else max(1, int(workers))
    bar = _progress(n, desc, progress, done=n - sum(t[3] - t[2] for t in todo))
    try:
        if workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            # fork keeps drawers registered at runtime visible to the workers (spawn would not)
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            with mp.get_context(method).Pool(min(workers, len(todo))) as pool:
                for start, result in pool.imap_unordered(_call_chunk, todo):
                    _save_part(part_file(start), result)
                    bar(min(chunk, n - start))
        else:
            for task in todo:
                start, result = _call_chunk(task)
                _save_part(part_file(start), result)
                bar(min(chunk, n - start))
    finally:
        bar(None)
    for s in starts:
        yield json.loads(part_file(s).read_text())


def _save_part(path: Path, result: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(result, fh, separators=(",", ":"), sort_keys=True)


def _progress(total: int, desc: str, enabled: bool, done: int = 0) -> Callable[[int | None], None]:
    """``bar(k)`` advances by k, ``bar(None)`` closes. tqdm on stderr when enabled."""
    if not enabled:
        return lambda k: None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the environment
        return lambda k: None
    t = tqdm(total=total, initial=done, desc=desc, unit="img", leave=False, file=sys.stderr)

    def step(k: int | None) -> None:
        if k is None:
            t.close()
        else:
            t.update(k)
    return step


def _lock(root: Path) -> contextlib.AbstractContextManager[Path]:
    """Inter-process lock per target folder (:func:`trm_lib.utils.locks.file_lock`), so two notebooks
    asking for the same world at once generate it once. The lock file lives in the cache, not
    beside the user's folder."""
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return file_lock(cache_dir() / "locks" / f"{key}.lock", what=f"world {root}")


def _materialise(root: Path, fingerprint: str, build: Callable[[Path], None], force: bool,
                 manifest: str) -> Path:
    """Build into ``.<root>.partial`` (resuming a matching one) and rename into place."""
    root = root.expanduser()
    if root.exists() and not force and (root / manifest).exists():
        # complete: checked without the lock, which a read-only cache could not create
        _check_existing(root, fingerprint, manifest)
        return root
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full(root.parent / root.name) from None
        raise DatasetError(f"{root.parent}: cannot create the folder ({err.strerror}); "
                           f"{unwritable_hint(root.parent)}") from None
    with _lock(root):
        if root.exists() and not force:
            _check_existing(root, fingerprint, manifest)
            return root
        tmp = root.parent / f".{root.name}.partial"
        stamp = tmp / ".fingerprint"
        if tmp.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
            shutil.rmtree(tmp)  # a leftover from another config: not resumable
        tmp.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint)
        build(tmp)
        shutil.rmtree(tmp / ".parts", ignore_errors=True)
        stamp.unlink()
        replace_dir(tmp, root)  # force: the old world is swapped out, then deleted
    return root


def _check_existing(root: Path, fingerprint: str, manifest: str) -> None:
    path = root / manifest
    if not path.exists():
        raise DatasetError(f"{path}: missing; {root} exists but is not a complete generated "
                           f"folder (delete it or pass force=True)")
    meta = read_json(path)
    have = meta.get("fingerprint", meta.get("config_hash"))
    if have != fingerprint:
        raise DatasetError(f"{path}: folder was generated with another config or label set "
                           f"(fingerprint {have} != {fingerprint}); use another root or "
                           f"force=True to regenerate")
