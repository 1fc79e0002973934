"""SynthScenes backgrounds (gradients, texture, noise) and distractor shapes that are no class.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from .pictograms import Placed, Rand, Sketch

# ---------------------------------------------------------------------------------------------
# Backgrounds and distractors
# ---------------------------------------------------------------------------------------------

def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(r * 255), int(g * 255), int(b * 255))


def _near(c: Sequence[float], rng: Rand, spread: float) -> tuple[int, int, int]:
    """A colour near ``c`` (low-contrast texture)."""
    r, g, b = (min(255, max(0, int(v + rng.normal(0.0, spread)))) for v in c)
    return (r, g, b)


@lru_cache(maxsize=64)
def _ramp(size: int, bucket: int) -> Image.Image:
    """Cached 'L' ramp 0..255 along direction ``bucket`` (of 16): a gradient is then one
    ``Image.composite`` of two flat colours (C code) instead of per-pixel arithmetic."""
    a = 2 * math.pi * bucket / 16
    c, s = math.cos(a), math.sin(a)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1)
    t = xx * c + yy * s
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    return Image.fromarray(np.round(t * 255).astype(np.uint8))


@lru_cache(maxsize=16)
def _noise_tile(size: int, level: int) -> Image.Image:
    """A fixed (2S x 2S) RGB noise tile centred on 128 (std ~ 2.5 * level grey levels); images
    add a random window of it, far cheaper than fresh per-pixel noise."""
    rng = np.random.default_rng(20240601 + level)
    arr = np.clip(np.round(rng.normal(128.0, 2.5 * level, size=(2 * size, 2 * size, 3))), 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


def _background(rng: Rand, S: int, clutter: float, simple: bool = False) -> Image.Image:
    """A gradient (any direction, two related colours) plus, unless ``simple``, texture: a
    horizon, stripes, tiles and low-contrast blobs."""
    hue = rng.random()
    c0 = _hsv(hue, rng.uniform(0.05, 0.5), rng.uniform(0.35, 0.95))
    c1 = _hsv(hue + rng.uniform(-0.12, 0.12), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.95))
    im = Image.composite(Image.new("RGB", (S, S), c1), Image.new("RGB", (S, S), c0),
                         _ramp(S, rng.integers(16)))
    if simple:
        return im
    draw = ImageDraw.Draw(im)
    base = [(u + v) / 2 for u, v in zip(c0, c1)]
    if rng.random() < 0.4:  # horizon: a ground region of another colour
        hz, tilt = rng.uniform(0.45, 0.8) * S, rng.uniform(-0.12, 0.12) * S
        draw.polygon([(0, hz - tilt), (S, hz + tilt), (S, S), (0, S)],
                     fill=_hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.25, 0.8)))
    if rng.random() < 0.35 * clutter:  # stripes
        k = rng.integers(4, 14)
        ang = rng.uniform(0, math.pi)
        col = _near(base, rng, 40)
        w = max(1, int(S * rng.uniform(0.006, 0.03)))
        dx, dy = math.cos(ang), math.sin(ang)
        for j in range(k):
            off = (j / k - 0.5) * 2 * S
            cx, cy = S / 2 - dy * off, S / 2 + dx * off
            draw.line([(cx - dx * 2 * S, cy - dy * 2 * S), (cx + dx * 2 * S, cy + dy * 2 * S)],
                      fill=col, width=w)
    if rng.random() < 0.15 * clutter:  # tiles / grid
        step = S / rng.integers(3, 8)
        col = _near([v * 0.75 for v in base], rng, 10)
        for j in range(1, int(S / step) + 1):
            draw.line([(0, j * step), (S, j * step)], fill=col, width=1)
            draw.line([(j * step, 0), (j * step, S)], fill=col, width=1)
    for _ in range(rng.poisson(3 * clutter)):  # low-contrast blobs
        r = rng.uniform(0.05, 0.25) * S
        x, y = rng.uniform(0, S), rng.uniform(0, S)
        draw.ellipse([x - r, y - r * rng.uniform(0.5, 1), x + r, y + r], fill=_near(base, rng, 30))
    return im


def _distractor_shape(rng: Rand) -> tuple[int, list[tuple[float, float]], float]:
    """(kind, points in a unit box, line width) of a shape that is no class: 0 an irregular
    blob, 1 a scribble (polyline), 2 a shard (triangle)."""
    u = rng.random()
    if u < 0.45:  # blob: a star-shaped polygon with noisy radii
        k = rng.integers(6, 11)
        pts = []
        for j in range(k):
            a, r = 2 * math.pi * (j + rng.uniform(0, 0.6)) / k, rng.uniform(0.25, 0.5)
            pts.append((0.5 + r * math.cos(a), 0.5 + r * math.sin(a)))
        return 0, pts, 0.0
    if u < 0.8:  # scribble: a clipped random walk
        x = y = 0.5
        pts = []
        for _ in range(rng.integers(3, 7)):
            x = min(1.0, max(0.0, x + rng.normal(0, 0.3)))
            y = min(1.0, max(0.0, y + rng.normal(0, 0.3)))
            pts.append((x, y))
        return 1, pts, rng.uniform(0.03, 0.08)
    return 2, [(rng.random(), rng.random()) for _ in range(3)], 0.0


def _distractor_color(rng: Rand) -> tuple[int, int, int]:
    return _hsv(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.2, 1.0))


def _draw_distractor(draw: ImageDraw.ImageDraw, rng: Rand, S: int) -> None:
    """A background distractor, drawn straight onto the image (no mask needed)."""
    col = _distractor_color(rng)
    kind, pts, width = _distractor_shape(rng)
    size = rng.uniform(0.06, 0.25) * S
    x, y, w = rng.uniform(-0.1, 0.9) * S, rng.uniform(-0.1, 0.9) * S, rng.uniform(0.5, 1.5)
    xy = [(x + px * size * w, y + py * size) for px, py in pts]
    if kind == 1:
        draw.line(xy, fill=col, width=max(1, round(width * size)), joint="curve")
    else:
        draw.polygon(xy, fill=col)


def _distractor(rng: Rand, S: int, scale: float = 1.0) -> Placed:
    """A distractor as a placed sketch (with a mask), for one that may occlude objects."""
    sk = Sketch(1.0)
    col = _distractor_color(rng)
    kind, pts, width = _distractor_shape(rng)
    if kind == 1:
        sk.line(pts, col, width)
    else:
        sk.poly(pts, col)
    size = rng.uniform(0.06, 0.25) * S * scale
    return sk.place((0, 0, size * rng.uniform(0.5, 1.5), size), rng.uniform(0, 360))


def _add_noise(im: Image.Image, rng: Rand, level: int) -> Image.Image:
    """Sensor-like noise: add a random window of a cached tile (level 0 = none)."""
    if level <= 0:
        return im
    S = im.size[0]
    ox, oy = rng.integers(S), rng.integers(S)
    return ImageChops.add(im, _noise_tile(S, level).crop((ox, oy, ox + S, oy + S)), 1.0, -128)
