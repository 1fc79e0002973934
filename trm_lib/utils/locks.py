"""The one inter-process file lock of the package (advisory ``flock``).

Every folder that two processes could write at once -- a generated world, a TinyCLIP cache, a
feature store, a results CSV, a run folder -- is guarded by :func:`file_lock` on a lock file.
``blocking=True`` waits its turn (two notebooks asking for one world build it once);
``blocking=False`` fails at once with :class:`LockedError` naming the holder's lock file (two
trainings into one run folder would delete each other's checkpoints). The lock is released when
the ``with`` block ends or the process dies (the kernel drops ``flock`` locks with the file
descriptor), so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .io import FileError, disk_full
from .paths import unwritable_hint

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]


class LockedError(FileError):
    """Another process holds the lock (``blocking=False``); the message names the lock file."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, blocking: bool = True, what: str | None = None
              ) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created with the umask's mode, parents too).

    ``what`` names the guarded thing in the :class:`LockedError` of ``blocking=False``. A lock
    file that cannot be created (read-only filesystem) raises :class:`~trm_lib.utils.io.FileError`
    naming it: callers that only *read* must check first whether they need the lock at all.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise disk_full(path) from None
        raise FileError(f"{path}: cannot create the lock file ({err.strerror}); "
                        f"{unwritable_hint(path)}") from None
    try:
        if fcntl is not None:
            flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                raise LockedError(
                    f"{what or path.parent} is in use by another process (lock {path}); wait "
                    f"for it to finish or choose another folder") from None
        yield path
    finally:
        os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def waiting_lock(path: str | os.PathLike, what: str, waiting: str,
                 say: Callable[[str], None]) -> Iterator[Path]:
    """Hold ``path``'s lock; when another process holds it, ``say(waiting)`` once, then wait
    for it (a second writer of a run or report folder waits instead of clobbering it)."""
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(file_lock(path, blocking=False, what=what))
        except LockedError:
            say(waiting)
            held = stack.enter_context(file_lock(path, what=what))
        yield held


__all__ = ["LockedError", "file_lock", "waiting_lock"]
