"""Atomic file writes and checksums: nothing half-written is ever left behind.

Every writer in the package goes through :func:`atomic_write`, which writes to a temporary file in
the destination folder and renames it into place (atomic on POSIX), so an interrupted run leaves
either the old file or the new one. Files are fsynced before the rename (and the folder
after it), get the mode the umask gives an ordinary ``open``, and a full disk is reported as
:class:`DiskFullError` naming the file, with nothing half-written left.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import DiskFullError, FileError


def disk_full(path: str | os.PathLike) -> DiskFullError:
    return DiskFullError(f"no space left on {Path(path).parent} (writing {path}); free space "
                         f"or point TRM_CACHE / TRM_RUNS / the output elsewhere")


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask both sets and
    returns it, which would race with other threads)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("Umask:")).split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder's entry table (not possible everywhere)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_beside(final: Path, suffix: str) -> tuple[int, str]:
    """A temp file next to ``final`` with the mode an ordinary ``open`` would give (0666 minus
    the umask) rather than mkstemp's 0600, so shared caches and run folders stay readable."""
    if final.exists() and not final.is_file():  # /dev/null, a FIFO, a folder: never replaced
        raise FileError(f"{final}: not a regular file; refusing to replace it (choose a file "
                        f"path for the output)")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full(final) from None
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            from .paths import unwritable_hint

            raise FileError(f"{final}: cannot write ({err.strerror}); "
                            f"{unwritable_hint(final)}") from None
        raise
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666 & ~umask())
    return fd, tmp


@contextlib.contextmanager
def _commit(final: Path, tmp: str) -> Iterator[None]:
    """Rename ``tmp`` over ``final`` when the block succeeds (delete it otherwise); a full disk
    becomes :class:`DiskFullError` naming ``final``."""
    try:
        yield
        os.replace(tmp, final)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_disk_full(err):
            raise disk_full(final) from None
        raise
    _fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync it and rename it over ``path``, on
    error delete it. Files get the umask's mode; a full disk raises :class:`DiskFullError`."""
    path = Path(path)
    fd, tmp = _temp_beside(path, ".tmp")
    with _commit(path, tmp), os.fdopen(fd, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def atomic_path(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Yield a temp *path* beside ``path`` for writers that want a filename (torch.save, PIL);
    what they wrote is fsynced before the rename. Same mode and disk-full rules as
    :func:`atomic_write`."""

    @contextlib.contextmanager
    def _ctx() -> Iterator[Path]:
        final = Path(path)
        fd, tmp = _temp_beside(final, final.suffix or ".tmp")
        os.close(fd)
        with _commit(final, tmp):
            yield Path(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    return _ctx()


def remove_orphans(folder: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """Delete the temp files that atomic writes of ``names`` left in ``folder`` when their
    process was killed (SIGKILL skips the cleanup: ``.r.csv.*.tmp``, a 29 MB
    ``.last.pt.*.pt``). Call it only under the lock every writer of those files holds, so no
    live write is removed. Returns what was deleted."""
    removed = []
    folder = Path(folder)
    for name in names:
        suffix = re.escape(Path(name).suffix or ".tmp")
        temp = re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}({suffix}|\.tmp)")
        for path in folder.glob(f".{glob.escape(name)}.*"):
            if temp.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a damaged one (empty, truncated, random bytes) raises
    :class:`FileError` naming it (callers add what to do)."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        what = "empty file" if isinstance(err, json.JSONDecodeError) and not err.doc.strip() \
            else f"not valid JSON ({err})"
        raise FileError(f"{path}: {what}") from None


def stable_hash(payload: Any, length: int | None = None) -> str:
    """SHA-256 (hex, first ``length`` digits) of ``payload`` as key-sorted JSON, non-JSON values
    as ``str``: the one content hash behind every cache key and config hash of the package
    (worlds, TinyCLIP folders, feature stores, run folders), so equal configs give equal keys."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move the finished folder ``tmp`` to ``final``; an existing ``final`` is swapped out first
    and deleted only after the new one is in place, so readers never see a half folder."""
    import shutil

    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a private temporary sibling and put it in place as ``final`` only when
    the block succeeds (:func:`replace_dir`); on any failure the partial folder is removed."""
    import shutil
    import tempfile

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
