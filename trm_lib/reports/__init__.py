"""Rank 8: everything that turns runs into what people read and click — the papermill driver
and its schedule, the notebooks' parameters, the HTML book, the browser driver, course mode and
the explorer. ``from trm_lib import reports; reports.notebook_overrides(...)`` reads the driver."""

from __future__ import annotations

from .driver import (
    NotebookFailed,
    NotebookRun,
    cli,
    notebook_overrides,
    run_notebooks,
    write_book,
    write_index,
)
from .parameters import check_parameters, validate_parameters

__all__ = ["NotebookFailed", "NotebookRun", "check_parameters", "cli", "notebook_overrides", "run_notebooks",
           "validate_parameters", "write_book", "write_index"]
