"""Attention and saliency: map upsampling and overlays, the Figure-4 rows, saliency maps of a
trained run, the pointing game."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from trm_lib.datasets.labels import check_labels

from .common import _as_rgb, _figure, _styled


def upsample_map(map_hw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of an h x w map to ``size = (H, W)`` with pixel-centre alignment (what
    ``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)`` computes)."""
    m = np.asarray(map_hw, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"upsample_map: expected an h x w map, got shape {m.shape}")
    H, W = size
    return np.asarray(Image.fromarray(m).resize((W, H), Image.Resampling.BILINEAR))


def overlay_map(image: Any, map_hw: np.ndarray, cmap: str = "jet", alpha: float = 0.5,
                normalize: bool = True) -> np.ndarray:
    """Blend a colour-mapped saliency map over ``image``; returns an H x W x 3 float array.

    ``normalize`` rescales the map to [0, 1] first (attention rows are softmax-normalised and
    tiny, so each map is shown relative to its own range, as in the paper's Figure 4).
    """
    img = _as_rgb(image)
    m = upsample_map(map_hw, img.shape[:2])
    if normalize:
        lo, hi = float(m.min()), float(m.max())
        m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    heat = mpl.colormaps[cmap](np.clip(m, 0.0, 1.0))[..., :3]
    return (1 - alpha) * img + alpha * heat


@_styled
def plot_attention_rows(image: Any, rows: Mapping[str, np.ndarray], class_names: Sequence[str],
                        scores: np.ndarray, grid: tuple[int, int], top_k: int = 3,
                        cmap: str = "jet", alpha: float = 0.5) -> Figure:
    """Figure 4: one image, its ``top_k`` classes by ``scores``, one row of maps per entry of
    ``rows`` (e.g. ``{"DualCoOp (pixel)": S, "TRM-ML (region)": A}``, each (C, h*w)).

    Column 0 is the image itself; each map is reshaped to ``grid = (h, w)``, upsampled bilinearly
    to the image size and overlaid.
    """
    scores = np.asarray(scores, dtype=float).reshape(-1)
    C, (h, w) = len(class_names), grid
    if scores.shape[0] != C:
        raise ValueError(f"plot_attention_rows: {scores.shape[0]} scores for {C} class names")
    if not rows:
        raise ValueError("plot_attention_rows: no rows of maps given")
    maps = {}
    for name, arr in rows.items():
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape != (C, h * w):
            raise ValueError(f"plot_attention_rows: rows[{name!r}] has shape {arr.shape}, "
                             f"expected (classes, h*w) = ({C}, {h * w}) for grid {grid}")
        maps[name] = arr.reshape(C, h, w)
    img = _as_rgb(image)
    top = np.argsort(-scores, kind="stable")[:top_k]
    fig, axes = _figure(len(maps), len(top) + 1, (2.4 * (len(top) + 1), 2.5 * len(maps)))
    for r, (name, arr) in enumerate(maps.items()):
        axes[r, 0].imshow(img)
        axes[r, 0].set_ylabel(name, fontsize=9)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=9)
        for j, c in enumerate(top, start=1):
            axes[r, j].imshow(overlay_map(img, arr[c], cmap=cmap, alpha=alpha))
            if r == 0:
                axes[r, j].set_title(f"{class_names[c]} ({scores[c]:.2f})", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return fig


def saliency_maps(run: Any, indices: Sequence[int] | None = None, split: str = "test",
                  images: Sequence[Any] | None = None, batch_size: int = 32
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(N, C)`` and saliency maps ``(N, C, L)`` of a trained run's method, in fp32.

    ``run`` is a :class:`trm_lib.train.LoadedRun`. Either ``indices`` (rows of ``split``, fed
    through the run's own feature source, i.e. exactly what the evaluator sees) or ``images``
    (any image files, PIL images or arrays, of any size: resized by the backbone's evaluation
    transform, then the frozen backbone). The method must return ``out["maps"]`` (TRM-ML: its
    region attention; DualCoOp: its text-pixel weights); maps are on ``run.session.backbone.grid``.
    """
    import torch

    if (indices is None) == (images is None):
        raise ValueError("saliency_maps: pass exactly one of indices= or images=")
    method, session = run.method, run.session
    device = session.device
    if images is None:
        batches: Any = run.batches(split, indices=list(indices), batch_size=batch_size)
    else:
        backbone, cfg = session.backbone, run.config
        raw = cfg.backbone.cache_raw or cfg.method.kv_source == "raw"
        transform = backbone.transform(train=False)

        def encoded() -> Any:
            for start in range(0, len(images), batch_size):
                chunk = images[start:start + batch_size]
                x = torch.stack([transform(Image.fromarray(
                    (_as_rgb(im, where=f"images[{start + j}]") * 255).round().astype(np.uint8)))
                    for j, im in enumerate(chunk)])
                yield backbone.encode_images(x, raw=raw)

        batches = encoded()
    was_training = method.training
    method.eval()
    scores, maps = [], []
    try:
        with torch.no_grad():
            for batch in batches:
                out = method({k: v.to(device) for k, v in batch.items()})
                if "maps" not in out:
                    raise ValueError(f"saliency_maps: method {method.cfg.name!r} returns no "
                                     "'maps' (only methods with spatial saliency can be shown)")
                scores.append(method.scores(out).float().cpu())
                maps.append(out["maps"].float().cpu())
    finally:
        method.train(was_training)
    if not scores:
        raise ValueError("saliency_maps: no images given")
    return torch.cat(scores).numpy(), torch.cat(maps).numpy()


def pointing_game(maps: np.ndarray | None, grid: tuple[int, int], labels: np.ndarray,
                  objects: Sequence[Sequence[Mapping[str, Any]]], class_names: Sequence[str],
                  image_size: int | tuple[int, int]) -> pd.DataFrame:
    """Pointing game (Zhang et al., ECCV 2016) for class saliency maps with ground-truth boxes.

    For every (image, true positive class) pair, the map of that class points at the centre of
    its hottest cell, in image pixels (where the bilinearly upsampled overlay of
    :func:`plot_attention_rows` peaks; ties go to the first cell in row-major order), and the
    pair is a *hit* if that point lies inside a box of that class (boxes ``[x0, y0, x1, y1]``,
    exclusive ends, as in the SynthScenes sidecar
    :func:`trm_lib.synth.world.load_objects`). ``maps=None`` scores the *centre
    baseline* (always point at the image centre), the number a saliency map has to beat before
    it says anything.

    ``maps`` (N, C, h*w); ``labels`` (N, C) full labels; ``objects[i]`` the instances of image
    i (``{"class", "box"}``); ``image_size`` S or (H, W). Returns per class ``hits``, ``pairs``
    and ``hit_rate`` plus a ``total`` row (hits over all pairs); classes without a positive have
    NaN rate.
    """
    Y = check_labels(labels, allowed=(1, -1), where="labels")
    N, C = Y.shape
    if C != len(class_names):
        raise ValueError(f"pointing_game: labels have {C} columns for {len(class_names)} classes")
    if len(objects) != N:
        raise ValueError(f"pointing_game: {len(objects)} object lists for {N} label rows")
    H, W = (image_size, image_size) if isinstance(image_size, int | np.integer) else image_size
    h, w = grid
    if maps is not None:
        maps = np.asarray(maps, dtype=np.float32)
        if maps.shape != (N, C, h * w):
            raise ValueError(f"pointing_game: maps shape {maps.shape}, expected (images, "
                             f"classes, h*w) = ({N}, {C}, {h * w}) for grid {grid}")
    index = {name: c for c, name in enumerate(class_names)}
    hits, pairs = np.zeros(C, np.int64), np.zeros(C, np.int64)
    for i, c in zip(*np.nonzero(Y == 1)):
        boxes = [o["box"] for o in objects[i] if index.get(o["class"]) == c]
        if not boxes:
            continue  # a positive without a drawn instance cannot be pointed at
        if maps is None:
            y, x = H / 2, W / 2
        else:
            row, col = divmod(int(np.argmax(maps[i, c])), w)
            y, x = (row + 0.5) * H / h, (col + 0.5) * W / w
        pairs[c] += 1
        hits[c] += any(x0 <= x < x1 and y0 <= y < y1 for x0, y0, x1, y1 in boxes)
    df = pd.DataFrame({"hits": hits, "pairs": pairs},
                      index=pd.Index(list(class_names), name="class"))
    df.loc["total"] = [hits.sum(), pairs.sum()]
    with np.errstate(invalid="ignore", divide="ignore"):
        df["hit_rate"] = np.where(df["pairs"] > 0, df["hits"] / df["pairs"].clip(lower=1), np.nan)
    return df
