"""What the commands that start a local web server share (``tensorboard``, ``explorer``):
checks of their input made *before* a server starts, so a mistake is one ``error:`` line and
exit status 2 instead of a server's traceback, and the server's process tree."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from trm_lib.utils.errors import UserError

#: every server of the workbench listens here only: nothing is exposed beyond this machine
HOST = "127.0.0.1"


class ServeError(UserError, RuntimeError):
    """A server cannot start as asked (a port in use, a folder that is not there)."""


def check_port(port: int, host: str = HOST) -> int:
    """``port`` if a server can listen on it at ``host`` now; else :class:`ServeError` naming
    it. Port 0 means any free port (the one found is returned)."""
    if not 0 <= port <= 65535:
        raise ServeError(f"--port {port}: not a TCP port (0-65535)")
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as err:
            why = "already in use" if err.errno == errno.EADDRINUSE else err.strerror
            raise ServeError(f"--port {port}: {host}:{port} {why}; choose another port "
                             f"(--port 0: any free one)") from None
        return int(s.getsockname()[1])


def check_folder(path: str | Path, option: str) -> Path:
    """``path`` if it is a folder; else :class:`ServeError` naming the option."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ServeError(f"{option} {path}: no such folder")
    return path.resolve()


__all__ = ["HOST", "ServeError", "check_folder", "check_port"]
