"""Paths read back from disk stay inside their folder.

A file the package wrote and later reads back (a feature store's ``manifest.json``, a run
folder's files, a mask's checksum sidecar) may have been edited, copied from elsewhere or
crafted. A name it records is followed only through :func:`inside`, so such a record can never
make the package read or overwrite a file outside its own folder: an absolute name, a ``..``
step or a symlink that leads out is one :class:`~trm_lib.utils.errors.FileError` naming the
record and the field (issue 29: a manifest whose ``file`` was ``../../../x.npy`` had an ``.npy``
outside the cache overwritten on resume).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from .errors import FileError


def inside(folder: str | os.PathLike, name: str | os.PathLike, *, field: str = "file",
           record: str | os.PathLike | None = None,
           error: type[Exception] = FileError) -> Path:
    """``folder / name``, refused unless it stays inside ``folder`` after resolving symlinks.

    ``name`` must be relative, without ``..`` steps, and must not resolve (through symlinks,
    the file's or a parent's) outside ``folder``. ``record`` is the file the name was read
    from and ``field`` its field; both go into the error, of type ``error`` (a caller's own
    :class:`~trm_lib.utils.errors.UserError` subclass, so it is handled like its other
    damaged-record errors).
    """
    folder = Path(folder)
    where = f"{record}: field {field!r}" if record is not None else f"{folder}: {field!r}"
    if not isinstance(name, str | os.PathLike) or not str(name).strip():
        raise error(f"{where} must name a file inside {folder}, got {name!r}")
    pure = PurePath(name)
    if pure.is_absolute() or ".." in pure.parts or "\x00" in str(name):
        raise error(f"{where} = {str(name)!r} points outside {folder}; a record may only "
                    f"name files inside its own folder")
    path = folder / pure
    base = folder.resolve()
    if not path.resolve().is_relative_to(base):
        raise error(f"{where} = {str(name)!r} leads outside {folder} through a symlink "
                    f"({path.resolve()}); a record may only name files inside its own folder")
    return path


__all__ = ["inside"]
