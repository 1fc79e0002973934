"""SynthScenes: the embedded multi-label world, and the caption corpus TinyCLIP is pre-trained on.

No real images or CLIP weights can be downloaded, so the default experiments run on a world this
module draws. It is built to behave like PASCAL VOC in miniature:

* **Labels are real.** Image ``i`` of split ``train`` shows exactly the positive classes of row
  ``i`` of the VOC2007 trainval label matrix (``test``: the test matrix), so class frequencies and
  co-occurrence are VOC's and the peers' partial-label masks apply row for row.
* **Images are hard enough.** Textured, cluttered backgrounds, distractor shapes that are no class,
  objects at several scales (including small ones), partial occlusion, repeated instances, and
  confusable classes (cat/dog, cow/horse/sheep, car/bus, bicycle/motorbike, chair/sofa).
* **Labels stay true.** Negatives are never drawn; every positive class has an instance of which
  at least ``min_visible`` of its pixels are visible (measured exactly on an instance-id map).
  Boxes go to a sidecar (``objects/<split>.json``) so attention maps can be checked against them.

The world is written in the generic format (:func:`trm_lib.datasets.base.write_generic`) and read
back by the same :func:`~trm_lib.datasets.base.read_generic` path as user data. Each image's RNG is
seeded from ``(seed, split, index)``, so generation is deterministic, parallel (a process pool,
any worker count gives byte-identical files) and resumable (finished chunks are recorded in the
temporary sibling folder, which is renamed into place only when everything is written).

The **caption corpus** (:func:`ensure_captions`) uses the same pictograms in a different
distribution — mostly one large, centred object on a textured background with a few distractors,
captioned ``"a photo of a red car."`` — the analogue of web pre-training for the tiny CLIP.
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ..config import ConfigError
from ..io import atomic_write, read_json, replace_dir, sha256_file, write_json
from ..paths import cache_dir
from . import register
from .base import DatasetError, MultiLabelDataset, read_generic, write_generic
from .classes import VOC_CLASSES, voc2007_full_labels
from .pictograms import (
    DrawerSpec,
    Placed,
    Rand,
    RandLike,
    Sketch,
    as_rand,
    describe,
    get_spec,
    prompt_name,
    sketch_object,
    with_article,
)

# Bump when the drawing or layout code changes what a given config produces: it is part of every
# cache key, so stale worlds and corpora are never reused.
GENERATOR_VERSION = "2"

_SPLIT_ROWS = {"train": "trainval", "test": "test"}  # SynthScenes split -> VOC2007 label matrix


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def _check(cls_name: str, name: str, ok: bool, what: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{cls_name}.{name} must be {what}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines a SynthScenes world (and nothing that does not: worker count
    and progress display are arguments of :func:`generate_world`, not config)."""

    image_size: int = 224
    n_train: int | None = None  # None: all 5,011 VOC2007 trainval rows; k: the first k rows
    n_test: int | None = None  # None: all 4,952 VOC2007 test rows
    seed: int = 0
    jpeg_quality: int = 90
    min_visible: float = 0.6  # every positive class keeps an instance this visible (pixel share)
    small_object_prob: float = 0.25  # share of instances drawn small (10-20 % of the image side)
    multi_instance: float = 1.0  # scales each class's probability of further instances
    max_objects: int = 8  # instances per image (each positive class keeps at least one)
    distractors: float = 3.0  # mean number of non-class distractor shapes
    clutter: float = 1.0  # background texture strength (0: plain gradients, no noise)

    def __post_init__(self) -> None:
        c = "WorldConfig"
        _check(c, "image_size", _is_int(self.image_size) and 32 <= self.image_size <= 1024,
               "an integer in [32, 1024]", self.image_size)
        for name in ("n_train", "n_test"):
            v = getattr(self, name)
            _check(c, name, v is None or (_is_int(v) and v >= 1), "None or an integer >= 1", v)
        _check(c, "seed", _is_int(self.seed) and self.seed >= 0, "an integer >= 0", self.seed)
        _check(c, "jpeg_quality", _is_int(self.jpeg_quality) and 1 <= self.jpeg_quality <= 100,
               "an integer in [1, 100]", self.jpeg_quality)
        for name, lo, hi in (("min_visible", 0.05, 1.0), ("small_object_prob", 0.0, 1.0),
                             ("multi_instance", 0.0, 2.0), ("distractors", 0.0, 20.0),
                             ("clutter", 0.0, 2.0)):
            v = getattr(self, name)
            _check(c, name, _is_num(v) and lo <= v <= hi, f"a number in [{lo}, {hi}]", v)
        _check(c, "max_objects", _is_int(self.max_objects) and self.max_objects >= 1,
               "an integer >= 1", self.max_objects)

    def limit(self, split: str) -> int | None:
        return {"train": self.n_train, "test": self.n_test}.get(split)


@dataclass(frozen=True)
class CaptionConfig:
    """The caption corpus: mostly one large object per image, sometimes two.

    16,000 images at 224 px take about 40 CPU-seconds to generate (about 20 s on two idle
    cores); pre-training may also render samples in memory with :func:`render_caption_sample`
    instead of reading JPEGs.
    """

    n_images: int = 16000
    image_size: int = 224
    seed: int = 1
    jpeg_quality: int = 90
    two_object_prob: float = 0.25  # share of images with two objects ("a car and a dog")
    color_prob: float = 0.7  # share of captions that name the colour ("a red car")
    clutter: float = 1.0  # background texture strength (0: plain gradient, as a product photo)
    distractors: float = 2.0  # mean number of non-class distractor shapes behind the objects
    min_size: float = 0.55  # smallest single object, as its longer side / image side (max 0.9)
    classes: tuple[str, ...] | None = None  # None: the 20 VOC classes

    def __post_init__(self) -> None:
        c = "CaptionConfig"
        _check(c, "n_images", _is_int(self.n_images) and self.n_images >= 1, "an integer >= 1",
               self.n_images)
        _check(c, "image_size", _is_int(self.image_size) and 32 <= self.image_size <= 1024,
               "an integer in [32, 1024]", self.image_size)
        _check(c, "seed", _is_int(self.seed) and self.seed >= 0, "an integer >= 0", self.seed)
        _check(c, "jpeg_quality", _is_int(self.jpeg_quality) and 1 <= self.jpeg_quality <= 100,
               "an integer in [1, 100]", self.jpeg_quality)
        for name, lo, hi in (("two_object_prob", 0.0, 1.0), ("color_prob", 0.0, 1.0),
                             ("clutter", 0.0, 2.0), ("distractors", 0.0, 20.0),
                             ("min_size", 0.1, 0.9)):
            v = getattr(self, name)
            _check(c, name, _is_num(v) and lo <= v <= hi, f"a number in [{lo}, {hi}]", v)
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(x) for x in self.classes))
            _check(c, "classes", len(self.classes) >= 2 and len(set(self.classes))
                   == len(self.classes), "None or >= 2 distinct class names", self.classes)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes is not None else list(VOC_CLASSES)


def config_hash(cfg: WorldConfig | CaptionConfig, extra: Any = None) -> str:
    """Short stable hash of a config (plus the generator version): the cache key."""
    payload = {"kind": type(cfg).__name__, "version": GENERATOR_VERSION, "config": asdict(cfg),
               "extra": extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def _rng(seed: int, stream: str, index: int) -> Rand:
    """Per-item random stream from (seed, stream, index): order- and worker-independent."""
    code = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")
    return Rand(np.random.default_rng(np.random.SeedSequence([seed, code, index])))


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


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------

@dataclass
class _Instance:
    cls: int
    spec: DrawerSpec
    size: float  # sqrt(width * height) as a fraction of the image side
    primary: bool  # the first instance of its class (must stay visible)


def render_scene(positives: Sequence[int], classes: Sequence[str], cfg: WorldConfig,
                 rng: RandLike) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Draw one scene showing exactly the classes ``positives`` (indices into ``classes``).

    Returns the image and one record per drawn instance: ``{"class", "box": [x0, y0, x1, y1]
    (full extent, exclusive ends), "visible": pixel share left unoccluded, "color"}``.
    Layouts in which some positive class ends up less than ``cfg.min_visible`` visible are
    redrawn (with the same generator, so still deterministic).
    """
    S = cfg.image_size
    rng = as_rand(rng)
    for _attempt in range(8):
        im, objs, ok = _try_scene(positives, classes, cfg, rng, S)
        if ok:
            return im, objs
    raise RuntimeError(f"could not lay out classes {[classes[c] for c in positives]} with "
                       f"min_visible={cfg.min_visible} in {S}px after 8 attempts")


def _instances(positives: Sequence[int], classes: Sequence[str], cfg: WorldConfig,
               rng: Rand) -> list[_Instance]:
    out: list[_Instance] = []
    extra: list[_Instance] = []
    for c in positives:
        spec = get_spec(classes[c], c)
        out.append(_Instance(c, spec, 0.0, True))
        n = 1
        while n < 5 and rng.random() < spec.multiplicity * cfg.multi_instance:
            extra.append(_Instance(c, spec, 0.0, False))
            n += 1
    room = max(cfg.max_objects - len(out), 0)
    insts = out + extra[:room]
    # scale = sqrt(w * h) / S; crowded images hold smaller objects, as in VOC
    lo, hi = {1: (0.36, 0.68), 2: (0.27, 0.52), 3: (0.22, 0.45)}.get(len(insts), (0.18, 0.38))
    small = cfg.small_object_prob * (0.5 if len(insts) == 1 else 1.0)
    for inst in insts:
        if rng.random() < small:
            inst.size = rng.uniform(0.08, 0.15)
        else:
            inst.size = max(rng.uniform(lo, hi) * inst.spec.size_prior, 0.08)
    insts.sort(key=lambda i: -i.size)  # big first = drawn behind
    return insts


@dataclass
class _Placement:
    """An instance (or a front distractor) on the canvas. Its mask is rasterised into the id map
    lazily, only once some other object's box overlaps its box."""

    obj: Placed
    at: tuple[int, int]  # patch origin in the image
    box: tuple[int, int, int, int]
    guard: bool  # must keep min_visible (class instances; not distractors)
    record: dict | None
    area: int = 0  # footprint pixels, once stamped
    visible: int = 0  # of which not covered by later objects
    stamped: bool = False


def _overlaps(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _window(ids: np.ndarray, obj: Placed, at: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(view of the id map under the patch, the matching part of the mask), canvas-clipped."""
    S = ids.shape[0]
    m = obj.mask()
    x, y = at
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + m.shape[1], S), min(y + m.shape[0], S)
    return ids[y0:y1, x0:x1], m[y0 - y:y1 - y, x0 - x:x1 - x]


def _stamp(ids: np.ndarray, p: _Placement, pid: int) -> None:
    """Write ``p`` into the id map on top. Invariant: a placement is stamped as soon as a later
    box overlaps its own, so when this runs nothing drawn later covers it yet."""
    region, m = _window(ids, p.obj, p.at)
    region[m] = pid
    p.area = p.visible = int(m.sum())
    p.stamped = True


def _place(obj: Placed, placements: list[_Placement], ids: np.ndarray, min_visible: float,
           rng: Rand, tries: int = 10) -> tuple[tuple[int, int], list[int] | None] | None:
    """A random patch origin where ``obj``'s extent fits the canvas and every guarded earlier
    placement keeps ``min_visible`` of its pixels; also the id counts under ``obj`` (None if
    its box overlaps nothing)."""
    S = ids.shape[0]
    ex0, ey0, ex1, ey1 = obj.extent
    w, h = ex1 - ex0, ey1 - ey0
    if w > S or h > S or w <= 0:
        return None
    for _ in range(tries):
        x, y = rng.integers(S - w + 1), rng.integers(S - h + 1)
        box = (x, y, x + w, y + h)
        hits = [k for k, p in enumerate(placements) if _overlaps(p.box, box)]
        at = (x - ex0, y - ey0)
        if not hits:
            return at, None
        for k in hits:
            if not placements[k].stamped:
                _stamp(ids, placements[k], k + 1)
        region, m = _window(ids, obj, at)
        counts = np.bincount(region[m], minlength=len(placements) + 1).tolist()
        if all(not placements[k].guard
               or placements[k].visible - counts[k + 1] >= min_visible * placements[k].area
               for k in hits):
            return at, counts
    return None


def _box_size(scale: float, aspect: float, limit: float) -> tuple[float, float]:
    """Width and height with ``sqrt(w * h) = scale`` and ``w / h = aspect``, shrunk to fit
    ``limit``: long objects (trains) stay long instead of becoming slivers."""
    w, h = scale * math.sqrt(aspect), scale / math.sqrt(aspect)
    f = min(1.0, limit / max(w, h))
    return w * f, h * f


def _try_scene(positives: Sequence[int], classes: Sequence[str], cfg: WorldConfig,
               rng: Rand, S: int) -> tuple[Image.Image, list[dict], bool]:
    im = _background(rng, S, cfg.clutter)
    draw = ImageDraw.Draw(im)
    for _ in range(rng.poisson(cfg.distractors)):  # behind everything
        _draw_distractor(draw, rng, S)
    placements: list[_Placement] = []
    items: list[tuple[_Instance | None, Placed | None]] = [
        (i, None) for i in _instances(positives, classes, cfg, rng)]
    if rng.random() < 0.3 * cfg.clutter:  # a distractor in front, occluding a little
        items.append((None, _distractor(rng, S, 0.6)))
    # instance id map: k + 1 for placements[k], 0 for background
    ids = np.zeros((S, S), dtype=np.uint8 if len(items) < 255 else np.uint16)
    for inst, obj in items:
        if inst is not None:
            sk, cname = sketch_object(inst.spec, rng)
            angle = rng.uniform(-inst.spec.max_rotation, inst.spec.max_rotation)
            flip = rng.random() < 0.5
            aspect = inst.spec.aspect * math.exp(rng.uniform(-0.15, 0.15))
        spot = None
        for shrink in (1.0, 0.8, 0.64, 0.5) if inst is not None else (1.0,):
            if inst is not None:
                w, h = _box_size(inst.size * S * shrink, aspect, 0.95 * S)
                obj = sk.place((0, 0, w, h), angle, flip)
            spot = _place(obj, placements, ids, cfg.min_visible, rng)
            if spot is not None:
                break
        if spot is None:
            if inst is None or not inst.primary:
                continue  # extra instances and front distractors are optional
            return im, [], False
        at, counts = spot
        p = _Placement(obj, at, obj.box(at), inst is not None, None if inst is None else {
            "class": classes[inst.cls], "box": list(obj.box(at)), "color": cname})
        if counts is not None:
            for k, q in enumerate(placements):
                q.visible -= counts[k + 1]
            _stamp(ids, p, len(placements) + 1)
        placements.append(p)
    for p in placements:
        p.obj.draw(draw, at=p.at)
    out = []
    for p in placements:
        if p.record is not None:
            p.record["visible"] = round(p.visible / p.area, 3) if p.stamped else 1.0
            out.append(p.record)
    need = {classes[c] for c in positives}
    if {r["class"] for r in out if r["visible"] >= cfg.min_visible} != need:
        return im, [], False
    im = _add_noise(im, rng, round(rng.uniform(0.5, 3.5) * cfg.clutter))
    return im, out, True


def render_world_image(split: str, index: int, positives: Sequence[int],
                       cfg: WorldConfig | None = None, classes: Sequence[str] | None = None
                       ) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Image ``index`` of ``split`` exactly as :func:`generate_world` draws it (in memory)."""
    cfg = cfg or WorldConfig()
    return render_scene(positives, classes or VOC_CLASSES, cfg, _rng(cfg.seed, split, index))


# ---------------------------------------------------------------------------------------------
# Caption corpus
# ---------------------------------------------------------------------------------------------

CAPTION_TEMPLATES = ("a photo of {}.", "a photo of {}.", "a photo of {}.", "a picture of {}.",
                     "an image of {}.")


def render_caption_sample(index: int, cfg: CaptionConfig | None = None
                          ) -> tuple[Image.Image, str, list[int]]:
    """Caption-corpus item ``index``: (image, caption, class indices in caption order).

    Pure function of ``(cfg, index)``, so pre-training can render on the fly instead of reading
    JPEGs (the JPEG files of :func:`ensure_captions` are these images after compression).
    """
    cfg = cfg or CaptionConfig()
    classes = cfg.class_names
    rng = _rng(cfg.seed, "captions", index)
    S = cfg.image_size
    im = _background(rng, S, cfg.clutter, simple=cfg.clutter == 0)
    draw = ImageDraw.Draw(im)
    for _ in range(rng.poisson(cfg.distractors) if cfg.distractors else 0):
        _draw_distractor(draw, rng, S)
    first = rng.integers(len(classes))
    picks = [first]
    if rng.random() < cfg.two_object_prob:
        second = rng.integers(len(classes) - 1)
        picks.append(second + (second >= first))
    phrases = []
    for k, c in enumerate(picks):
        spec = get_spec(classes[c], c)
        sk, cname = sketch_object(spec, rng)
        aspect = spec.aspect * math.exp(rng.uniform(-0.12, 0.12))
        if len(picks) == 1:
            L = rng.uniform(cfg.min_size, 0.9) * S
            cx, cy = (0.5 + rng.uniform(-0.1, 0.1)) * S, (0.5 + rng.uniform(-0.1, 0.1)) * S
        else:
            L = rng.uniform(0.38, 0.52) * S
            cx = (0.27 + 0.46 * k + rng.uniform(-0.04, 0.04)) * S
            cy = (0.5 + rng.uniform(-0.15, 0.15)) * S
        w, h = (L, L / aspect) if aspect >= 1 else (L * aspect, L)
        obj = sk.place((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
                       rng.uniform(-spec.max_rotation, spec.max_rotation), rng.random() < 0.5)
        obj.draw(draw)
        phrases.append(describe(spec, cname) if rng.random() < cfg.color_prob
                       else with_article(prompt_name(spec.name)))
    template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    im = _add_noise(im, rng, rng.integers(2))
    return im, template.format(" and ".join(phrases)), picks


def ensure_captions(cfg: CaptionConfig | None = None, root: str | os.PathLike | None = None,
                    progress: bool = True, workers: int | None = None, force: bool = False
                    ) -> Path:
    """The caption corpus folder (generated if missing): ``images/<i:05d>.jpg``,
    ``captions.csv`` (image, caption, classes joined by ``|``) and ``corpus.json``."""
    cfg = cfg or CaptionConfig()
    root = Path(root) if root is not None else (
        cache_dir() / "captions" / f"s{cfg.image_size}-seed{cfg.seed}-{config_hash(cfg)}")
    fingerprint = config_hash(cfg)

    def build(tmp: Path) -> None:
        (tmp / "images").mkdir(parents=True, exist_ok=True)
        rows: list[list[str]] = []
        for part in _run_chunks(tmp, "captions", cfg.n_images, _caption_chunk, (cfg,), workers,
                                progress, "captions"):
            rows.extend(part)
        classes = cfg.class_names
        with atomic_write(tmp / "captions.csv", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "caption", "classes"])
            writer.writerows(rows)
        write_json(tmp / "corpus.json", {
            "name": "synthscenes-captions", "version": GENERATOR_VERSION,
            "config": asdict(cfg), "config_hash": fingerprint, "classes": classes,
            "prompt_names": [prompt_name(c) for c in classes], "images": len(rows),
            "captions_sha256": sha256_file(tmp / "captions.csv")})

    return _materialise(root, fingerprint, build, force, "corpus.json")


def _caption_chunk(tmp: str, start: int, stop: int, cfg: CaptionConfig) -> list[list[str]]:
    classes = cfg.class_names
    rows = []
    for i in range(start, stop):
        im, caption, picks = render_caption_sample(i, cfg)
        rel = f"images/{i:05d}.jpg"
        im.save(os.path.join(tmp, rel), "JPEG", quality=cfg.jpeg_quality)
        rows.append([rel, caption, "|".join(classes[c] for c in picks)])
    return rows


def load_captions(root: str | os.PathLike | None = None) -> Any:
    """The caption corpus as a ``pandas.DataFrame`` with columns ``image`` (relative),
    ``caption``, ``classes`` (list of class names) and ``path`` (absolute); the class list is in
    ``df.attrs["classes"]``. ``root=None``: the default corpus (generated if missing)."""
    import pandas as pd

    root = Path(root) if root is not None else ensure_captions()
    ann, manifest = root / "captions.csv", root / "corpus.json"
    for f in (ann, manifest):
        if not f.exists():
            raise DatasetError(f"{f}: not found (not a caption corpus folder; see ensure_captions)")
    meta = read_json(manifest)
    df = pd.read_csv(ann, dtype=str, keep_default_na=False)
    if list(df.columns) != ["image", "caption", "classes"]:
        raise DatasetError(f"{ann}: header must be image,caption,classes, got {list(df.columns)}")
    known = set(meta["classes"])
    df["classes"] = df["classes"].str.split("|")
    for lineno, names in enumerate(df["classes"], start=2):
        bad = [n for n in names if n not in known]
        if bad:
            raise DatasetError(f"{ann}:{lineno}: unknown class(es) {bad} (classes of {manifest})")
    df["path"] = [str(root / p) for p in df["image"]]
    df.attrs["classes"] = list(meta["classes"])
    return df


# ---------------------------------------------------------------------------------------------
# World generation
# ---------------------------------------------------------------------------------------------

def default_labels() -> dict[str, np.ndarray]:
    """The VOC2007 full label matrices SynthScenes copies: train = trainval, test = test."""
    return {split: voc2007_full_labels(src) for split, src in _SPLIT_ROWS.items()}


def world_dir(cfg: WorldConfig | None = None) -> Path:
    """Where the cached default world for ``cfg`` lives (whether or not it exists yet)."""
    cfg = cfg or WorldConfig()
    return cache_dir() / "synthscenes" / f"s{cfg.image_size}-seed{cfg.seed}-{config_hash(cfg)}"


def ensure_world(cfg: WorldConfig | None = None, root: str | os.PathLike | None = None,
                 progress: bool = True, workers: int | None = None, force: bool = False) -> Path:
    """The world folder for ``cfg`` (VOC2007 label rows), generated if missing, reused otherwise.

    ``root=None``: ``cache_dir()/synthscenes/s<size>-seed<seed>-<config hash>``.
    """
    cfg = cfg or WorldConfig()
    return generate_world(root if root is not None else world_dir(cfg), cfg, progress=progress,
                          workers=workers, force=force)


def generate_world(root: str | os.PathLike, cfg: WorldConfig | None = None, *,
                   labels: Mapping[str, np.ndarray] | None = None,
                   classes: Sequence[str] | None = None, workers: int | None = None,
                   progress: bool = True, force: bool = False, chunk: int = 64) -> Path:
    """Generate a world into ``root`` (nothing is done if a matching world is already there).

    ``labels``: ``{split: (N, C) {1, -1} matrix}`` (default: VOC2007 train/test) and ``classes``
    (default: VOC) make a world for any class list; ``cfg.n_train``/``cfg.n_test`` keep the first
    rows of ``train``/``test``. Classes without a hand-made drawer get a generic signature
    pictogram. Writes into ``.<name>.partial`` beside ``root`` (resumed if interrupted) and renames
    it into place when complete. ``workers`` (default: available cores, at most 8) does not
    change the output.
    """
    cfg = cfg or WorldConfig()
    root = Path(root).expanduser()
    custom = labels is not None or classes is not None
    classes = list(classes) if classes is not None else list(VOC_CLASSES)
    source = _select_rows(labels if labels is not None else default_labels(), classes, cfg)
    label_sha = hashlib.sha256(b"".join(
        s.encode() + np.ascontiguousarray(Y).tobytes() for s, Y in source.items())).hexdigest()
    fingerprint = config_hash(cfg, {"classes": classes, "labels": label_sha})

    def build(tmp: Path) -> None:
        splits_meta = {}
        for split, Y in source.items():
            (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
            records: list[list[dict]] = []
            for part in _run_chunks(tmp, split, len(Y), _world_chunk, (split, cfg, classes, Y),
                                    workers, progress, f"synthscenes {split}", chunk):
                records.extend(part)
            rel = [f"images/{split}/{i:05d}.jpg" for i in range(len(Y))]
            ann = write_generic(tmp, split, rel, Y, classes)
            obj_file = _write_objects(tmp / "objects" / f"{split}.json", split, classes,
                                      cfg.image_size, rel, records)
            n_obj = [len(r) for r in records]
            splits_meta[split] = {
                "images": len(Y), "annotations": f"annotations/{split}.csv",
                "annotations_sha256": sha256_file(ann), "objects": f"objects/{split}.json",
                "objects_sha256": sha256_file(obj_file),
                "label_rows": ("custom" if custom else
                               f"voc2007 {_SPLIT_ROWS[split]} rows 0..{len(Y) - 1}"),
                "positives_per_image": round(float((Y == 1).sum(1).mean()), 4),
                "instances_per_image": round(float(np.mean(n_obj)), 4),
                "small_instances": int(sum(max(o["box"][2] - o["box"][0], o["box"][3]
                                                - o["box"][1]) <= 0.22 * cfg.image_size
                                            for r in records for o in r)),
                "occluded_instances": int(sum(o["visible"] < 0.98 for r in records for o in r)),
            }
        write_json(tmp / "world.json", {
            "name": "synthscenes", "version": GENERATOR_VERSION, "config": asdict(cfg),
            "config_hash": config_hash(cfg), "fingerprint": fingerprint, "classes": classes,
            "prompt_names": [prompt_name(c) for c in classes],
            "labels": "custom" if custom else "voc2007", "labels_sha256": label_sha,
            "splits": splits_meta})

    return _materialise(root, fingerprint, build, force, "world.json")


def _select_rows(labels: Mapping[str, np.ndarray], classes: Sequence[str], cfg: WorldConfig
                 ) -> dict[str, np.ndarray]:
    if not labels:
        raise DatasetError("generate_world: labels must map at least one split to a matrix")
    if len(set(classes)) != len(classes) or not classes:
        raise DatasetError(f"generate_world: classes must be distinct and non-empty: {classes}")
    out = {}
    for split, Y in labels.items():
        if not split or "/" in split or split.startswith("."):
            raise DatasetError(f"generate_world: bad split name {split!r}")
        Y = np.asarray(Y)
        if Y.ndim != 2 or Y.shape[1] != len(classes):
            raise DatasetError(f"generate_world: labels[{split!r}] has shape {Y.shape}, expected "
                               f"(images, {len(classes)} classes)")
        if not np.isin(Y, (1, -1)).all():
            raise DatasetError(f"generate_world: labels[{split!r}] must be full labels in {{1, -1}}")
        n = cfg.limit(split)
        if n is not None:
            if n > len(Y):
                raise ConfigError(f"WorldConfig.n_{split}={n} exceeds the {len(Y)} rows of "
                                  f"labels[{split!r}]")
            Y = Y[:n]
        out[split] = Y.astype(np.int8)
    return out


def _world_chunk(tmp: str, start: int, stop: int, split: str, cfg: WorldConfig,
                 classes: Sequence[str], Y: np.ndarray) -> list[list[dict]]:
    out = []
    for i in range(start, stop):
        im, objs = render_world_image(split, i, np.flatnonzero(Y[i] == 1).tolist(), cfg, classes)
        im.save(os.path.join(tmp, "images", split, f"{i:05d}.jpg"), "JPEG",
                quality=cfg.jpeg_quality)
        out.append(objs)
    return out


def _write_objects(path: Path, split: str, classes: Sequence[str], image_size: int,
                   rel: Sequence[str], records: Sequence[list[dict]]) -> Path:
    """Box sidecar: valid JSON with one image per line (diff- and grep-friendly)."""
    head = json.dumps({"split": split, "image_size": image_size, "classes": list(classes),
                       "box_format": "x0,y0,x1,y1 pixels, exclusive ends, full (amodal) extent"},
                      sort_keys=True)
    lines = [json.dumps({"image": r, "objects": objs}, sort_keys=True, separators=(",", ":"))
             for r, objs in zip(rel, records)]
    with atomic_write(path) as fh:
        fh.write(head[:-1] + ', "images": [\n' + ",\n".join(lines) + "\n]}\n")
    return path


# ---------------------------------------------------------------------------------------------
# Chunked, resumable, parallel generation into a temporary sibling folder
# ---------------------------------------------------------------------------------------------

def default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _call_chunk(args: tuple) -> tuple[int, Any]:
    fn, tmp, start, stop, extra = args
    return start, fn(tmp, start, stop, *extra)


def _run_chunks(tmp: Path, stream: str, n: int, fn: Callable[..., list], extra: tuple,
                workers: int | None, progress: bool, desc: str, chunk: int = 128
                ) -> Iterable[list]:
    """Run ``fn(tmp, start, stop, *extra)`` over chunks of ``range(n)``; each finished chunk's
    result is saved under ``tmp/.parts`` so an interrupted run resumes where it stopped. Yields
    the chunk results in order."""
    parts = tmp / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    starts = list(range(0, n, chunk))

    def part_file(start: int) -> Path:
        return parts / f"{stream}-{start:06d}.json"

    todo = [(fn, str(tmp), s, min(s + chunk, n), extra) for s in starts
            if not part_file(s).exists()]
    workers = default_workers() if workers is None else max(1, int(workers))
    bar = _progress(n, desc, progress, done=n - sum(t[3] - t[2] for t in todo))
    try:
        if workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            # fork keeps drawers registered at runtime visible to the workers (spawn would not)
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            with mp.get_context(method).Pool(min(workers, len(todo))) as pool:
                for start, result in pool.imap_unordered(_call_chunk, todo):
                    _save_part(part_file(start), result)
                    bar(min(chunk, n - start))
        else:
            for task in todo:
                start, result = _call_chunk(task)
                _save_part(part_file(start), result)
                bar(min(chunk, n - start))
    finally:
        bar(None)
    for s in starts:
        yield json.loads(part_file(s).read_text())


def _save_part(path: Path, result: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(result, fh, separators=(",", ":"), sort_keys=True)


def _progress(total: int, desc: str, enabled: bool, done: int = 0) -> Callable[[int | None], None]:
    """``bar(k)`` advances by k, ``bar(None)`` closes. tqdm on stderr when enabled."""
    if not enabled:
        return lambda k: None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the environment
        return lambda k: None
    t = tqdm(total=total, initial=done, desc=desc, unit="img", leave=False, file=sys.stderr)

    def step(k: int | None) -> None:
        if k is None:
            t.close()
        else:
            t.update(k)
    return step


@contextlib.contextmanager
def _lock(root: Path):
    """Inter-process lock per target folder, so two notebooks asking for the same world at once
    generate it once. The lock file lives in the cache, not beside the user's folder."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield
        return
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    path = cache_dir() / "locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _materialise(root: Path, fingerprint: str, build: Callable[[Path], None], force: bool,
                 manifest: str) -> Path:
    """Build into ``.<root>.partial`` (resuming a matching one) and rename into place."""
    root = root.expanduser()
    root.parent.mkdir(parents=True, exist_ok=True)
    with _lock(root):
        if root.exists() and not force:
            _check_existing(root, fingerprint, manifest)
            return root
        tmp = root.parent / f".{root.name}.partial"
        stamp = tmp / ".fingerprint"
        if tmp.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
            shutil.rmtree(tmp)  # a leftover from another config: not resumable
        tmp.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint)
        build(tmp)
        shutil.rmtree(tmp / ".parts", ignore_errors=True)
        stamp.unlink()
        replace_dir(tmp, root)  # force: the old world is swapped out, then deleted
    return root


def _check_existing(root: Path, fingerprint: str, manifest: str) -> None:
    path = root / manifest
    if not path.exists():
        raise DatasetError(f"{path}: missing; {root} exists but is not a complete generated "
                           f"folder (delete it or pass force=True)")
    meta = read_json(path)
    have = meta.get("fingerprint", meta.get("config_hash"))
    if have != fingerprint:
        raise DatasetError(f"{path}: folder was generated with another config or label set "
                           f"(fingerprint {have} != {fingerprint}); use another root or "
                           f"force=True to regenerate")


# ---------------------------------------------------------------------------------------------
# Loader, boxes sidecar
# ---------------------------------------------------------------------------------------------

_WORLD_FIELDS = {f.name for f in fields(WorldConfig)}


@register("synthscenes")
def load_synthscenes(root: str | os.PathLike | None = None, split: str = "train",
                     **options: Any) -> MultiLabelDataset:
    """SynthScenes through the generic-format reader. ``root=None``: the cached world for
    ``WorldConfig(**options)`` (generated on demand); with a ``root`` that holds a world, options
    must agree with its ``world.json``; a ``root`` without one is generated there."""
    unknown = sorted(set(options) - _WORLD_FIELDS - {"progress", "workers"})
    if unknown:
        raise DatasetError(f"synthscenes: unknown option(s) {unknown} (known: "
                           f"{', '.join(sorted(_WORLD_FIELDS))}, progress, workers)")
    progress = options.pop("progress", True)
    workers = options.pop("workers", None)
    if root is not None and (Path(root).expanduser() / "world.json").exists():
        root = Path(root).expanduser()
        manifest = read_json(root / "world.json")
        have = manifest.get("config", {})
        clash = {k: (v, have.get(k)) for k, v in options.items() if have.get(k) != v}
        if clash:
            raise DatasetError(f"{root / 'world.json'}: world was generated with "
                               + ", ".join(f"{k}={h!r}" for k, (_, h) in clash.items())
                               + f"; requested {', '.join(f'{k}={v!r}' for k, (v, _) in clash.items())}")
    else:
        try:
            cfg = WorldConfig(**options)
        except TypeError as err:  # pragma: no cover - guarded by the unknown-option check
            raise DatasetError(f"synthscenes: {err}") from None
        root = ensure_world(cfg, root, progress=progress, workers=workers)
        manifest = read_json(root / "world.json")
    if split not in manifest["splits"]:
        raise DatasetError(f"{root / 'world.json'}: no split {split!r} (splits: "
                           f"{', '.join(manifest['splits'])})")
    ds = read_generic(root, split, name="synthscenes")
    ds.meta.update({"world": manifest["config"], "world_version": manifest["version"],
                    "objects_file": str(root / manifest["splits"][split]["objects"]),
                    "prompt_names": manifest["prompt_names"]})
    return ds


def load_objects(dataset: MultiLabelDataset) -> list[list[dict[str, Any]]]:
    """Per image of ``dataset`` (subsets included, matched by image path), the drawn instances:
    ``[{"class", "box": [x0, y0, x1, y1], "visible", "color"}, ...]``."""
    path = dataset.meta.get("objects_file")
    if path is None:
        raise DatasetError(f"{dataset.name}/{dataset.split}: no object boxes (only SynthScenes "
                           f"datasets carry meta['objects_file'])")
    by_image = _read_objects(str(path), os.path.getmtime(path))
    out = []
    for p in dataset.image_paths:
        try:
            key = str(Path(p).relative_to(dataset.root))
        except ValueError:
            key = str(p)
        if key not in by_image:
            raise DatasetError(f"{path}: no entry for image {key}")
        out.append(by_image[key])
    return out


@lru_cache(maxsize=4)
def _read_objects(path: str, mtime: float) -> dict[str, list[dict]]:
    data = read_json(path)
    return {e["image"]: e["objects"] for e in data["images"]}


# ---------------------------------------------------------------------------------------------
# CLI and benchmark
# ---------------------------------------------------------------------------------------------

def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m trm_lib synth``: generate (or locate) the world / caption corpus."""
    p = argparse.ArgumentParser(prog="python -m trm_lib synth", description=cli.__doc__)
    p.add_argument("--split", choices=("train", "test", "all"), default="all",
                   help="split(s) whose counts to print (the world always holds both)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--root", default=None, help="target folder (default: the cache)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--force", action="store_true", help="regenerate even if present")
    p.add_argument("--captions", action="store_true", help="the caption corpus instead")
    p.add_argument("--n-images", type=int, default=None, help="caption corpus size")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(list(argv or []))
    t0 = time.perf_counter()
    try:
        if a.captions:
            kw = {k: v for k, v in (("image_size", a.image_size), ("seed", a.seed),
                                     ("n_images", a.n_images)) if v is not None}
            root = ensure_captions(CaptionConfig(**kw), a.root, progress=not a.quiet,
                                   workers=a.workers, force=a.force)
            meta = read_json(root / "corpus.json")
            print(f"{root}\n  images: {meta['images']}  ({time.perf_counter() - t0:.1f} s)")
            return 0
        kw = {k: v for k, v in (("image_size", a.image_size), ("seed", a.seed),
                                 ("n_train", a.n_train), ("n_test", a.n_test)) if v is not None}
        root = ensure_world(WorldConfig(**kw), a.root, progress=not a.quiet, workers=a.workers,
                            force=a.force)
    except (ConfigError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = read_json(root / "world.json")
    print(root)
    order = sorted(meta["splits"], key=lambda k: (k != "train", k != "test", k))
    for split in order:
        info = meta["splits"][split]
        if a.split in ("all", split):
            print(f"  {split}: {info['images']} images, {info['positives_per_image']:.2f} "
                  f"positive classes and {info['instances_per_image']:.2f} instances per image")
    print(f"  ({time.perf_counter() - t0:.1f} s)")
    return 0


def bench(argv: Sequence[str] | None = None) -> int:
    """``python -m trm_lib bench synth``: scenes rendered + JPEG-encoded per second, one core.

    Rates are per CPU-second of this process (``time.process_time``), so other jobs sharing the
    machine do not distort them; the wall-clock rate is printed beside them.
    """
    p = argparse.ArgumentParser(prog="python -m trm_lib bench synth", description=bench.__doc__)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(list(argv or []))
    cfg = WorldConfig(image_size=a.size, seed=a.seed)
    Y = voc2007_full_labels("trainval")
    rows = [np.flatnonzero(Y[i % len(Y)] == 1).tolist() for i in range(a.n)]
    render_world_image("train", 0, rows[0], cfg)  # warm the caches (ramps, noise tiles)
    t_render = t_jpeg = 0.0
    nbytes = 0
    wall = time.perf_counter()
    for i, pos in enumerate(rows):
        t0 = time.process_time()
        im, _ = render_world_image("train", i, pos, cfg)
        t1 = time.process_time()
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=cfg.jpeg_quality)
        t_jpeg += time.process_time() - t1
        t_render += t1 - t0
        nbytes += buf.tell()
    wall = time.perf_counter() - wall
    cap_cfg = CaptionConfig(image_size=a.size)
    t0 = time.process_time()
    for i in range(a.n):
        render_caption_sample(i, cap_cfg)
    t_cap = time.process_time() - t0
    total = t_render + t_jpeg
    print(f"synth scenes @ {a.size}px, {a.n} images, one core (per CPU-second):")
    print(f"  render + JPEG: {a.n / total:8.1f} img/s   (target >= 300 at 128 px; wall clock "
          f"{a.n / wall:.1f} img/s)")
    print(f"  render only:   {a.n / t_render:8.1f} img/s   JPEG only: {a.n / t_jpeg:8.1f} img/s"
          f"   mean file {nbytes / a.n / 1024:.1f} KiB")
    print(f"  caption corpus, render only: {a.n / t_cap:8.1f} img/s")
    return 0


__all__ = ["CAPTION_TEMPLATES", "CaptionConfig", "GENERATOR_VERSION", "WorldConfig", "bench",
           "cli", "config_hash", "default_labels", "default_workers", "ensure_captions",
           "ensure_world", "generate_world", "load_captions", "load_objects", "load_synthscenes",
           "prompt_name", "render_caption_sample", "render_scene", "render_world_image",
           "world_dir"]
