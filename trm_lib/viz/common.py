"""What every viz figure shares: the label colours, the seaborn-like style, a pyplot-free
figure factory and the input checks."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

SVG_HASHSALT = "trm-ml"  # makes SVG element ids a function of the content, not of a random uuid
LABEL_COLORS = {"positive": "#e76f51", "negative": "#264653", "unknown": "#e5e5e5"}
HIDDEN_POSITIVE_COLOR = "#f4b9a7"  # a pale positive: unknown to training, positive in truth
# seaborn's "whitegrid" look as plain rcParams, so that figures not drawn by seaborn share it
# without importing seaborn (see _seaborn)
STYLE = {"axes.facecolor": "white", "axes.edgecolor": ".8", "axes.grid": True,
         "axes.axisbelow": True, "axes.labelcolor": ".15", "grid.color": ".8",
         "text.color": ".15", "xtick.color": ".15", "ytick.color": ".15",
         "xtick.major.size": 0, "ytick.major.size": 0}


def _seaborn() -> Any:
    """seaborn, imported on first use: with the scipy it loads it more than doubles the import
    time of ``viz`` (1.3 s -> 3.4 s), which the explorer, the course checker and every notebook
    would pay even when they draw no statistical figure."""
    import seaborn

    return seaborn


def _figure(nrows: int, ncols: int, figsize: tuple[float, float], **kw: Any
            ) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _styled(func: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw the whole figure under :data:`STYLE` without touching the caller's rcParams."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with mpl.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


def _colors(n: int) -> list[Any]:
    return list(mpl.colormaps["tab10"].colors[:n]) if n <= 10 else \
        list(mpl.colormaps["turbo"](np.linspace(0.05, 0.95, n)))


def _require_columns(df: pd.DataFrame, cols: Sequence[str], where: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; have {list(df.columns)}")


def _as_rgb(image: Any, where: str = "image") -> np.ndarray:
    """Any image-like (PIL image, path, HxW / HxWx3 / HxWx4 array) as a float HxWx3 in [0, 1]."""
    if isinstance(image, str | os.PathLike):
        from trm_lib.datasets.base import open_image  # names the file when it is missing or corrupt

        image = open_image(image)
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{where}: expected an HxW, HxWx3 or HxWx4 image, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{where}: float images must hold finite values in [0, 1]")
    return arr


def _palette(names: Sequence[str]) -> dict[str, Any]:
    """Colours keyed by sorted name, so a method keeps its colour across figures of one study."""
    names = sorted(set(names))
    return dict(zip(names, _colors(len(names))))


def _pct(p: float) -> str:
    return f"{p * 100:g}%"
