"""SynthScenes scene layout: which instances a scene holds, where they go, and how much of each
stays visible (measured exactly on an instance-id map, so every positive keeps ``min_visible``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from trm_lib.datasets.classes import VOC_CLASSES

from .background import _add_noise, _background, _distractor, _draw_distractor
from .config import WorldConfig, _rng
from .pictograms import DrawerSpec, Placed, Rand, RandLike, as_rand, get_spec, sketch_object

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
