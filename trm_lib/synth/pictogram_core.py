"""The pictograms' frame, registry and generic drawer (the design is told in
:mod:`trm_lib.synth.pictograms`).

This module holds the frame (:class:`Sketch`), the drawer registry, the colour helpers and the
generic drawer; the hand-made VOC drawers live in the ``drawers_*`` modules, which register into
the registry here, and :mod:`trm_lib.synth.pictograms` imports them all.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

Color = tuple[int, int, int]

# Colour names used in captions -> base RGB. Instances jitter around the base value.
NAMED_COLORS: dict[str, Color] = {
    "red": (196, 36, 36), "blue": (38, 78, 196), "green": (46, 140, 58),
    "yellow": (236, 200, 36), "orange": (232, 124, 34), "purple": (118, 56, 156),
    "pink": (232, 136, 172), "white": (236, 236, 230), "black": (34, 34, 38),
    "gray": (128, 128, 134), "silver": (184, 188, 194), "brown": (116, 74, 40),
    "golden": (212, 160, 64), "cream": (232, 218, 184), "tan": (196, 156, 108),
    "black and white": (236, 236, 230), "dark green": (30, 90, 40), "beige": (214, 196, 160),
}

# VOC names are compounds; captions and class prompts use natural text (one mapping everywhere).
_PROMPT_NAMES = {"diningtable": "dining table", "tvmonitor": "tv monitor",
                 "pottedplant": "potted plant"}

# Other datasets' names for the VOC drawers (COCO spells several VOC classes differently).
ALIASES = {"airplane": "aeroplane", "motorcycle": "motorbike", "couch": "sofa",
           "dining table": "diningtable", "tv": "tvmonitor", "tv monitor": "tvmonitor",
           "potted plant": "pottedplant", "aeroplane": "aeroplane"}


def prompt_name(cls: str) -> str:
    """Natural text for a class name: ``diningtable -> dining table``, ``aeroplane`` stays."""
    return _PROMPT_NAMES.get(cls, cls.replace("_", " "))


def with_article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


# ---------------------------------------------------------------------------------------------
# Sketch: primitives in the drawer frame, placed onto pixels
# ---------------------------------------------------------------------------------------------

_POLY, _LINE = 0, 1
_CIRCLE = [(math.cos(2 * math.pi * k / 24), math.sin(2 * math.pi * k / 24)) for k in range(24)]


class Rand:
    """Buffered scalar draws from a ``numpy.random.Generator``.

    Drawers make ~100 scalar draws per scene and numpy's per-call overhead (1-4 us) would cost
    more than the drawing itself, so uniforms are drawn in blocks. Supports the scalar part of the
    Generator API that drawers use (``random``, ``uniform``, ``integers``, ``normal``,
    ``poisson``); ``generator`` is the underlying Generator for vector draws. Deterministic: the
    same generator state gives the same sequence of values.
    """

    __slots__ = ("generator", "_buf", "_i")

    def __init__(self, generator: np.random.Generator | Rand):
        self.generator = generator.generator if isinstance(generator, Rand) else generator
        self._buf: list[float] = []
        self._i = 0

    def random(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self.generator.random(256).tolist()
            self._i = 0
        self._i += 1
        return self._buf[self._i - 1]

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * self.random()

    def integers(self, low: int, high: int | None = None) -> int:
        """Uniform integer in ``[low, high)`` (``[0, low)`` if ``high`` is None)."""
        if high is None:
            low, high = 0, low
        return low + min(int(self.random() * (high - low)), high - low - 1)

    def normal(self, loc: float = 0.0, scale: float = 1.0) -> float:
        u1, u2 = 1.0 - self.random(), self.random()  # Box-Muller
        return loc + scale * math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)

    def poisson(self, lam: float) -> int:
        """Knuth's multiplication method (small ``lam``, as used for counts of shapes)."""
        limit, k, p = math.exp(-lam), 0, self.random()
        while p > limit:
            k += 1
            p *= self.random()
        return k


RandLike = Rand | np.random.Generator


def as_rand(rng: RandLike) -> Rand:
    return rng if isinstance(rng, Rand) else Rand(rng)


class Sketch:
    """Recorded drawing in frame units; widths are in frame units too (fractions of height)."""

    __slots__ = ("aspect", "xy", "ops")

    def __init__(self, aspect: float):
        self.aspect = float(aspect)
        self.xy: list[float] = []  # flat x0, y0, x1, y1, ...
        # (kind, first point, end point, fill, outline, width)
        self.ops: list[tuple[int, int, int, Color | None, Color | None, float]] = []

    def _add(self, kind: int, flat: list[float], fill: Color | None, outline: Color | None,
             width: float) -> None:
        start = len(self.xy) // 2
        self.xy.extend(flat)
        self.ops.append((kind, start, len(self.xy) // 2, fill, outline, width))

    def poly(self, pts: Sequence[tuple[float, float]], fill: Color | None,
             outline: Color | None = None, width: float = 0.0) -> None:
        self._add(_POLY, [v for p in pts for v in p], fill, outline, width)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Color | None,
             outline: Color | None = None, width: float = 0.0) -> None:
        self._add(_POLY, [x0, y0, x1, y0, x1, y1, x0, y1], fill, outline, width)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Color | None,
                outline: Color | None = None, width: float = 0.0, angle: float = 0.0) -> None:
        """Ellipse as a 24-gon, rotated by ``angle`` degrees (clockwise on screen)."""
        flat: list[float] = []
        if angle:
            c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            ax, ay, bx, by = rx * c, rx * s, -ry * s, ry * c
            for u, v in _CIRCLE:
                flat += (cx + ax * u + bx * v, cy + ay * u + by * v)
        else:
            for u, v in _CIRCLE:
                flat += (cx + rx * u, cy + ry * v)
        self._add(_POLY, flat, fill, outline, width)

    def circle(self, cx: float, cy: float, r: float, fill: Color | None,
               outline: Color | None = None, width: float = 0.0) -> None:
        self.ellipse(cx, cy, r, r, fill, outline, width)

    def line(self, pts: Sequence[tuple[float, float]], fill: Color, width: float) -> None:
        self._add(_LINE, [v for p in pts for v in p], fill, None, width)

    def place(self, box: Sequence[float], angle: float = 0.0, flip: bool = False) -> Placed:
        """Map the frame onto pixel ``box = (x0, y0, x1, y1)``: stretch the frame to the box
        (aspect variation comes from the caller's box), mirror if ``flip``, rotate by ``angle``
        degrees, then scale uniformly so the drawn points fill the box (``contain``): a pose
        with raised arms or a rotated object stays inside its box, and drawers that leave part
        of their frame empty still fill it."""
        x0, y0, x1, y1 = (float(v) for v in box)
        sx, sy = (x1 - x0) / self.aspect, (y1 - y0)
        pts = np.array(self.xy, dtype=np.float64).reshape(-1, 2)
        fx = -sx if flip else sx
        c, s = (math.cos(math.radians(angle)), math.sin(math.radians(angle))) if angle else (1, 0)
        out = pts @ np.array([[fx * c, fx * s], [-sy * s, sy * c]])
        lo, hi = out.min(axis=0), out.max(axis=0)
        ext = np.maximum(hi - lo, 1e-9)
        f = min((x1 - x0) / ext[0], (y1 - y0) / ext[1])
        out = (out - (lo + hi) / 2) * f + ((x0 + x1) / 2, (y0 + y1) / 2)
        return Placed(out, self.ops, f * math.sqrt(max(sx * sy, 1e-9)))


class Placed:
    """A sketch in pixel coordinates, stored relative to its own integer patch origin so that
    moving it is an integer shift (identical rasterisation) and its mask is computed once.

    ``extent`` is the object's box in patch coordinates ``(x0, y0, x1, y1)``, exclusive ends:
    the point hull grown by half the widest stroke. It is known without rasterising, so layouts
    can test box overlaps first and rasterise masks only where boxes actually overlap.
    """

    __slots__ = ("origin", "size", "pts", "ops", "widths", "extent", "_mask")

    def __init__(self, pts: np.ndarray, ops: list, scale: float):
        widths = [max(1, round(op[5] * scale)) if (op[0] == _LINE or op[5] > 0) else 0
                  for op in ops]
        # per-primitive bounds grown by that primitive's half stroke width
        starts = [op[1] for op in ops]
        hw = np.array(widths, dtype=np.float64)[:, None] / 2
        lo = (np.minimum.reduceat(pts, starts, axis=0) - hw).min(axis=0).tolist()
        hi = (np.maximum.reduceat(pts, starts, axis=0) + hw).max(axis=0).tolist()
        pad = 2
        ox, oy = math.floor(lo[0]) - pad, math.floor(lo[1]) - pad
        self.origin = (ox, oy)
        self.size = (math.ceil(hi[0]) + pad - ox + 1, math.ceil(hi[1]) + pad - oy + 1)
        self.extent = (math.floor(lo[0]) - ox, math.floor(lo[1]) - oy,
                       math.floor(hi[0]) + 1 - ox, math.floor(hi[1]) + 1 - oy)
        self.pts = pts - (ox, oy)
        self.ops = ops
        self.widths = widths
        self._mask: np.ndarray | None = None

    def draw(self, draw: ImageDraw.ImageDraw, at: tuple[int, int] | None = None,
             color: int | Color | None = None) -> None:
        """Rasterise with the patch origin at ``at`` (default: where it was placed). ``color``
        overrides every fill/outline (used for masks)."""
        tx, ty = self.origin if at is None else at
        flat = (self.pts + (tx, ty) if (tx or ty) else self.pts).ravel().tolist()
        for (kind, s, e, fill, outline, _), w in zip(self.ops, self.widths):
            xy = flat[2 * s:2 * e]
            if kind == _LINE:
                draw.line(xy, fill=color if color is not None else fill, width=w, joint="curve")
            elif color is not None:
                draw.polygon(xy, fill=color if fill is not None else None,
                             outline=color if (outline is not None or fill is None) else None,
                             width=max(w, 1))
            else:
                draw.polygon(xy, fill=fill, outline=outline, width=max(w, 1))

    def mask(self) -> np.ndarray:
        """Boolean (h, w) footprint in patch coordinates (cached)."""
        if self._mask is None:
            im = Image.new("L", self.size, 0)
            self.draw(ImageDraw.Draw(im), at=(0, 0), color=255)
            # frombuffer: cheaper than np.asarray's array-interface path for small patches
            self._mask = np.frombuffer(im.tobytes(), np.uint8).reshape(self.size[1],
                                                                       self.size[0]) > 0
        return self._mask

    def box(self, at: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
        """The extent in image pixels with the patch origin at ``at`` (default: as placed)."""
        tx, ty = self.origin if at is None else at
        x0, y0, x1, y1 = self.extent
        return (tx + x0, ty + y0, tx + x1, ty + y1)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

DrawFn = Callable[[Sketch, Rand, Color], None]


@dataclass(frozen=True)
class DrawerSpec:
    """How to draw one class and how it behaves in scenes and captions."""

    name: str
    draw: DrawFn
    aspect: float  # natural width / height of the frame
    palette: tuple[str, ...]  # colour names (keys of NAMED_COLORS)
    max_rotation: float = 8.0  # degrees, uniform in [-max, max]
    size_prior: float = 1.0  # relative size in scenes (bottle small, table large)
    multiplicity: float = 0.15  # P(one more instance) in a scene, applied repeatedly
    phrase: str = "{color} {name}"  # caption noun phrase; {name} is the prompt name
    rgb: tuple[Color, ...] | None = None  # explicit colours (generic drawers), else from names

    def color(self, name: str) -> Color:
        if self.rgb is not None:
            return self.rgb[self.palette.index(name)]
        return NAMED_COLORS[name]


DRAWERS: dict[str, DrawerSpec] = {}


def register_drawer(name: str, *, aspect: float, palette: Sequence[str], max_rotation: float = 8.0,
                    size_prior: float = 1.0, multiplicity: float = 0.15,
                    phrase: str = "{color} {name}") -> Callable[[DrawFn], DrawFn]:
    """Decorator: register ``fn(sketch, rng, rgb)`` as the drawer of class ``name``."""
    unknown = [c for c in palette if c not in NAMED_COLORS]
    if unknown:
        raise ValueError(f"drawer {name!r}: unknown colour name(s) {unknown} "
                         f"(known: {', '.join(NAMED_COLORS)})")

    def deco(fn: DrawFn) -> DrawFn:
        DRAWERS[name] = DrawerSpec(name, fn, aspect, tuple(palette), max_rotation, size_prior,
                                   multiplicity, phrase)
        return fn
    return deco


def get_spec(cls: str, index: int = 0) -> DrawerSpec:
    """The drawer for class ``cls`` (aliases resolved); the generic signature drawer for class
    index ``index`` if there is none."""
    key = ALIASES.get(cls, cls)
    if key in DRAWERS:
        spec = DRAWERS[key]
        return spec if spec.name == cls else _renamed(spec, cls)
    return generic_spec(cls, index)


def _renamed(spec: DrawerSpec, name: str) -> DrawerSpec:
    return DrawerSpec(name, spec.draw, spec.aspect, spec.palette, spec.max_rotation,
                      spec.size_prior, spec.multiplicity, spec.phrase, spec.rgb)


def sketch_object(spec: DrawerSpec, rng: RandLike, color: str | None = None
                  ) -> tuple[Sketch, str]:
    """Draw one instance of ``spec`` in its frame; returns the sketch and its colour name."""
    rng = as_rand(rng)
    name = color if color is not None else spec.palette[int(rng.integers(len(spec.palette)))]
    sk = Sketch(spec.aspect)
    spec.draw(sk, rng, jitter(spec.color(name), rng))
    return sk, name


def render_object(target: Image.Image | ImageDraw.ImageDraw, cls: str,
                  box: Sequence[float], rng: RandLike, *, index: int = 0,
                  color: str | None = None, angle: float | None = None,
                  flip: bool | None = None) -> dict[str, Any]:
    """Draw one instance of ``cls`` filling ``box = (x0, y0, x1, y1)`` on ``target``.

    Colour, pose, rotation and flip are drawn from ``rng`` unless given. Returns ``{"class",
    "color", "box" (drawn extent, exclusive ends), "angle", "flip", "phrase"}`` — ``phrase`` is the caption
    noun phrase with article, e.g. ``"a red car"``.
    """
    spec = get_spec(cls, index)
    rng = as_rand(rng)
    sk, cname = sketch_object(spec, rng, color)
    if angle is None:
        angle = float(rng.uniform(-spec.max_rotation, spec.max_rotation))
    if flip is None:
        flip = bool(rng.random() < 0.5)
    placed = sk.place(box, angle, flip)
    draw = target if isinstance(target, ImageDraw.ImageDraw) else ImageDraw.Draw(target)
    placed.draw(draw)
    return {"class": cls, "color": cname, "box": list(placed.box()), "angle": round(angle, 2),
            "flip": flip, "phrase": describe(spec, cname)}


def describe(spec: DrawerSpec, color: str | None) -> str:
    """Caption noun phrase with article: ``a red car``, ``a person in blue``, ``an aeroplane``."""
    name = prompt_name(spec.name)
    if color is None:
        return with_article(name)
    return with_article(spec.phrase.format(color=color, name=name))


# ---------------------------------------------------------------------------------------------
# Colour helpers
# ---------------------------------------------------------------------------------------------

def jitter(c: Color, rng: Rand, amount: int = 14) -> Color:
    r, g, b = (min(255, max(0, int(v) + int(rng.integers(-amount, amount + 1)))) for v in c)
    return (r, g, b)


def shade(c: Color, f: float) -> Color:
    """``f < 1`` darkens, ``f > 1`` lightens towards white."""
    if f <= 1:
        return (int(c[0] * f), int(c[1] * f), int(c[2] * f))
    t = min(f - 1, 1.0)
    return (int(c[0] + (255 - c[0]) * t), int(c[1] + (255 - c[1]) * t),
            int(c[2] + (255 - c[2]) * t))


def _pick(rng: Rand, names: Sequence[str]) -> Color:
    return jitter(NAMED_COLORS[names[int(rng.integers(len(names)))]], rng, 10)


def _u(rng: Rand, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _outline(c: Color) -> Color:
    """Dark contour of a fill colour (a pictogram's ink line)."""
    return shade(c, 0.45) if sum(c) > 120 else shade(c, 1.6)


GLASS: Color = (168, 200, 226)
TYRE: Color = (28, 28, 30)
METAL: Color = (150, 152, 158)
SKIN = ("cream", "tan", "brown", "beige")


# ---------------------------------------------------------------------------------------------
# Generic signature drawer (any other class list)
# ---------------------------------------------------------------------------------------------

_SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon", "cross", "crescent",
           "arrow", "heart")
_TEXTURES = ("solid", "stripes", "dots", "band")


def _shape_points(shape: str) -> list[tuple[float, float]]:
    """Unit-frame (x, y in [0, 1]) outline of a signature shape."""
    if shape == "circle":
        return [(0.5 + 0.48 * u, 0.5 + 0.48 * v) for u, v in _CIRCLE]
    if shape == "square":
        return [(0.05, 0.05), (0.95, 0.05), (0.95, 0.95), (0.05, 0.95)]
    if shape == "triangle":
        return [(0.5, 0.02), (0.98, 0.95), (0.02, 0.95)]
    if shape == "diamond":
        return [(0.5, 0.0), (0.95, 0.5), (0.5, 1.0), (0.05, 0.5)]
    if shape in ("star", "hexagon"):
        k, radii = (5, (0.5, 0.2)) if shape == "star" else (6, (0.48, 0.48))
        pts = []
        for i in range(2 * k):
            a = math.pi * i / k - math.pi / 2
            r = radii[i % 2]
            pts.append((0.5 + r * math.cos(a), 0.52 + r * math.sin(a)))
        return pts
    if shape == "cross":
        return [(0.35, 0.02), (0.65, 0.02), (0.65, 0.35), (0.98, 0.35), (0.98, 0.65), (0.65, 0.65),
                (0.65, 0.98), (0.35, 0.98), (0.35, 0.65), (0.02, 0.65), (0.02, 0.35), (0.35, 0.35)]
    if shape == "crescent":
        outer = [(0.5 + 0.48 * math.cos(a), 0.5 + 0.48 * math.sin(a))
                 for a in np.linspace(-math.pi / 2, math.pi / 2 * 3, 16)[:9]]
        inner = [(0.3 + 0.36 * math.cos(a), 0.5 + 0.4 * math.sin(a))
                 for a in np.linspace(math.pi / 2, -math.pi / 2, 9)]
        return outer + inner
    if shape == "arrow":
        return [(0.02, 0.35), (0.55, 0.35), (0.55, 0.08), (0.98, 0.5), (0.55, 0.92), (0.55, 0.65),
                (0.02, 0.65)]
    # heart
    pts = []
    for i in range(24):
        t = 2 * math.pi * i / 24
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((0.5 + x / 34, 0.45 - y / 34))
    return pts


def _nearest_color_name(rgb: Color) -> str:
    return min((n for n in NAMED_COLORS if n != "black and white"),
               key=lambda n: sum((a - b) ** 2 for a, b in zip(NAMED_COLORS[n], rgb)))


def generic_spec(cls: str, index: int) -> DrawerSpec:
    """A pictogram whose shape, texture and hue are a signature of class ``index``: distinct for
    the first 40 indices by (shape, texture) and further separated by hue (golden-ratio steps)."""
    shape = _SHAPES[index % len(_SHAPES)]
    texture = _TEXTURES[(index // len(_SHAPES)) % len(_TEXTURES)]
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.85)
    rgb: Color = (int(r * 255), int(g * 255), int(b * 255))
    outline = _shape_points(shape)
    cname = _nearest_color_name(rgb)

    def draw(s: Sketch, rng: Rand, col: Color) -> None:
        s.poly(outline, col, _outline(col), 0.03)
        second = shade(col, 0.5) if sum(col) > 360 else shade(col, 1.7)
        if texture == "stripes":
            for k in range(1, 5):
                s.line([(0.2 * k, 0.2), (0.2 * k, 0.8)], second, 0.06)
        elif texture == "dots":
            for x, y in ((0.35, 0.4), (0.65, 0.4), (0.5, 0.65)):
                s.circle(x, y, 0.08, second)
        elif texture == "band":
            s.line([(0.2, 0.5), (0.8, 0.5)], second, 0.14)

    return DrawerSpec(cls, draw, 1.0, (cname,), 15.0, 0.8, 0.15, "{color} {name}", (rgb,))


__all__ = ["ALIASES", "Color", "DRAWERS", "DrawFn", "DrawerSpec", "GLASS", "METAL", "NAMED_COLORS",
           "Placed", "Rand", "RandLike", "SKIN", "Sketch", "TYRE", "as_rand", "describe",
           "generic_spec", "get_spec", "jitter", "prompt_name", "register_drawer", "render_object",
           "shade", "sketch_object", "with_article"]
