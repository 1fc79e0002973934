"""Saving figures and tables byte-stably: a file is a pure function of its content."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import pandas as pd
from matplotlib.figure import Figure

from trm_lib.utils.io import atomic_path, atomic_write

from .common import SVG_HASHSALT

FORMATS = ("png", "svg", "pdf")


def _metadata(fmt: str) -> dict[str, Any]:
    """Metadata that keeps a file a pure function of the figure: no version stamps; a date only
    when ``SOURCE_DATE_EPOCH`` pins it (matplotlib reads the variable itself)."""
    pinned = bool(os.environ.get("SOURCE_DATE_EPOCH"))
    if fmt == "png":
        return {"Software": None}
    if fmt == "svg":
        return {"Creator": None} if pinned else {"Creator": None, "Date": None}
    return ({"Creator": None, "Producer": None} if pinned
            else {"Creator": None, "Producer": None, "CreationDate": None})


def save_figure(fig: Figure, path: str | os.PathLike, formats: Sequence[str] = ("png", "svg"),
                dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``<path>.<fmt>`` for each format, atomically and byte-stably.

    ``path`` may carry one of the format suffixes (``curves.png``); it is replaced, so
    ``save_figure(fig, "figures/curves.png")`` also writes ``curves.svg``. Returns the paths written.
    """
    path = Path(path)
    base = path.with_suffix("") if path.suffix.lstrip(".").lower() in FORMATS else path
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"save_figure({path}): formats {list(formats)} must be a non-empty subset "
                         f"of {list(FORMATS)}")
    written = []
    with mpl.rc_context({"svg.hashsalt": SVG_HASHSALT}):
        for fmt in formats:
            out = base.with_name(f"{base.name}.{fmt}")
            with atomic_path(out) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_metadata(fmt),
                            bbox_inches="tight")
            written.append(out)
    return written


def _cell(value: Any) -> str:
    """One Markdown cell: a float with a long tail of digits to 6 significant ones (a reader's
    table; the CSV beside it keeps every digit; 62.5 stays 62.5), NaN and None blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        text = ""
    elif isinstance(value, float) and len(str(value)) > 9:
        text = format(value, ".6g")
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, index: bool = True) -> str:
    """Render ``df`` as a GitHub Markdown table (numeric columns right-aligned)."""
    frame = df.reset_index() if index else df
    cols = [str(c) for c in frame.columns]
    align = ["---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns]
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False, name=None)]
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, path: str | os.PathLike, index: bool = True) -> list[Path]:
    """Write ``df`` as ``<path>.csv`` (for machines) and ``<path>.md`` (for the report)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".csv", ".md") else path
    csv_path, md_path = base.with_name(base.name + ".csv"), base.with_name(base.name + ".md")
    with atomic_write(csv_path, newline="") as fh:
        df.to_csv(fh, index=index)
    with atomic_write(md_path) as fh:
        fh.write(markdown_table(df, index=index))
    return [csv_path, md_path]
