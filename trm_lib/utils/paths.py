"""Where things live on disk, resolved from the repository root (never from the caller's cwd).

Papermill runs kernels in the caller's working directory, so every default path is anchored here.
``TRM_CACHE`` overrides the cache folder (generated worlds, TinyCLIP weights, feature stores).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = PACKAGE_DIR.parent


def cache_dir() -> Path:
    """Root of everything regenerable: worlds, weights, feature stores, masks."""
    path = Path(os.environ.get("TRM_CACHE", REPO_ROOT / ".cache" / "trm"))
    _make(path, "TRM_CACHE")
    return path


def unwritable_hint(path: str | os.PathLike) -> str:
    """What to do about a folder that cannot be written: inside the cache, move the cache (a
    read-only ``TRM_CACHE``); elsewhere, make the folder writable."""
    cache = Path(os.environ.get("TRM_CACHE", REPO_ROOT / ".cache" / "trm")).absolute()
    if Path(path).absolute().is_relative_to(cache):
        return f"set TRM_CACHE to a writable folder (now {cache})"
    return "the folder must be writable"


def _make(path: Path, variable: str) -> None:
    """Create a default folder, or one error naming the variable that moves it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        from .errors import FileError

        raise FileError(f"{path}: cannot create the folder ({err.strerror}); set {variable} to "
                        f"a writable folder") from None


def reports_dir() -> Path:
    return REPO_ROOT / "reports"


def notebooks_dir() -> Path:
    return REPO_ROOT / "notebooks"


def runs_dir() -> Path:
    """Training runs (checkpoints, logs, results CSVs)."""
    path = Path(os.environ.get("TRM_RUNS", REPO_ROOT / "runs"))
    _make(path, "TRM_RUNS")
    return path


def shared_fixtures_dir() -> Path:
    """The read-only fixtures folder shipped beside the checkout (real VOC2007 label matrices)."""
    env = os.environ.get("TRM_SHARED")
    if env:
        return Path(env) / "fixtures"
    return REPO_ROOT.parent / "shared" / "fixtures"


def git_revision(root: str | os.PathLike = REPO_ROOT) -> str:
    """Commit id, with ``+dirty`` when tracked files have uncommitted changes; ``unknown``
    outside a git checkout. Recorded in every results row and report index."""
    import subprocess

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, check=True, capture_output=True, text=True,
                               timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty" if dirty.strip() else "")
