"""The project's notebook files: names, the parameters cell, outputs (which committed notebooks
must not hold). The report driver (:mod:`trm_lib.reports.driver`) and course mode read them through
here."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trm_lib.utils.errors import UserError
from trm_lib.utils.io import atomic_write
from trm_lib.utils.paths import notebooks_dir

if TYPE_CHECKING:  # pragma: no cover - typing only
    import nbformat

NOTEBOOK_NAME = re.compile(r"^(\d{2})_[A-Za-z0-9_\-]+\.ipynb$")
REQUIRED_PARAMETERS = ("smoke", "report_dir")
META_KEY = "trm_report"  # the report driver's run record in an executed copy's metadata


class ReportError(UserError, RuntimeError):
    """A notebook is misnamed, malformed or failed; the message names the notebook (and cell)."""


def discover_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """The notebooks of ``folder`` (default ``notebooks/``) in run order; a misnamed one is an
    error rather than silently skipped."""
    folder = Path(folder) if folder is not None else notebooks_dir()
    if not folder.is_dir():
        raise ReportError(f"{folder}: notebooks folder not found")
    paths = sorted(folder.glob("*.ipynb"))
    bad = [p.name for p in paths if not NOTEBOOK_NAME.match(p.name)]
    if bad:
        raise ReportError(f"{folder}: notebooks must be named NN_name.ipynb (NN = run order); "
                          f"rename or move {bad}")
    return paths


def select_notebooks(paths: Sequence[Path], only: Sequence[str] | None) -> list[Path]:
    """Keep the notebooks whose number (``03``) or stem (``03_training``) is in ``only``."""
    if not only:
        return list(paths)
    keys = [k.strip().removesuffix(".ipynb") for k in only if k.strip()]
    unknown = [k for k in keys if not any(k in (p.stem, p.name[:2]) for p in paths)]
    if unknown:
        raise ReportError(f"--only {','.join(unknown)}: no such notebook; have "
                          f"{[p.stem for p in paths]}")
    return [p for p in paths if p.stem in keys or p.name[:2] in keys]


def _read(path: Path) -> nbformat.NotebookNode:
    import nbformat  # lazily: its jsonschema import costs seconds, and notebooks import this module

    try:
        return nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise ReportError(f"{path}: notebook not found") from None
    except Exception as err:  # nbformat raises several unrelated types for corrupt files
        raise ReportError(f"{path}: not a readable notebook ({err})") from None


def parameters_of(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """The parameters declared by the notebook's single ``parameters`` cell:
    ``{name: {"type": ..., "default": ..., "help": ...}}`` (values as written in the cell)."""
    from papermill import inspect_notebook

    path = Path(path)
    nb = _read(path)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ReportError(f"{path}: expected exactly one cell tagged 'parameters', found "
                          f"{len(tagged)} (cells {tagged})")
    return {p["name"]: {"type": p["inferred_type_name"], "default": p["default"], "help": p["help"]}
            for p in inspect_notebook(str(path)).values()}


def notebook_has_outputs(path: str | os.PathLike) -> bool:
    """True if any code cell holds outputs or an execution count, or widget state is saved."""
    nb = _read(Path(path))
    if nb.metadata.get("widgets"):
        return True
    return any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
               for c in nb.cells)


def strip_outputs(path: str | os.PathLike) -> bool:
    """Remove outputs, execution counts, run metadata and widget state in place (atomic);
    returns whether the file changed."""
    import nbformat

    path = Path(path)
    nb = _read(path)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        for key in ("execution", "papermill"):
            cell.metadata.pop(key, None)
    for key in ("widgets", "papermill", META_KEY):
        nb.metadata.pop(key, None)
    after = nbformat.writes(nb)
    if after == before:
        return False
    with atomic_write(path) as fh:
        fh.write(after)
    return True


__all__ = ["META_KEY", "NOTEBOOK_NAME", "REQUIRED_PARAMETERS", "ReportError", "discover_notebooks",
           "notebook_has_outputs", "parameters_of", "select_notebooks", "strip_outputs"]
