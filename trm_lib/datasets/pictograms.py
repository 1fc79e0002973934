"""Procedural pictograms: every object class drawn as a recognisable, varied vector sketch.

SynthScenes and the TinyCLIP caption corpus are both drawn from here, so a class looks the same in
pre-training and in the multi-label world while the *distribution* of scenes differs (one large
object vs. cluttered multi-object scenes). That is the relation between web pre-training and a
downstream dataset that makes zero-shot CLIP useful but imperfect.

A drawer records primitives into a :class:`Sketch` in its own frame (``x`` in ``[0, aspect]``,
``y`` in ``[0, 1]`` pointing down, ground at ``y = 1``, object facing right). The frame is then
mapped onto a pixel box with flip, anisotropic scale and rotation (:meth:`Sketch.place`); the
same placed primitives can be rasterised onto an image and into a mask, which is how scenes
measure occlusion exactly. Drawing is PIL ``ImageDraw`` polygons and lines only (no per-pixel
Python), so a whole 128-px scene renders in about 2 ms of CPU (``python -m trm_lib bench synth``).

The 20 PASCAL VOC classes have hand-made drawers with deliberately confusable pairs (cat/dog,
cow/horse/sheep, car/bus, bicycle/motorbike, chair/sofa). Any other class list works too: a name
without a drawer gets a generic pictogram whose shape, texture and colour are a signature of its
index (:func:`generic_spec`), and :func:`register_drawer` plugs in hand-made ones.
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
# People
# ---------------------------------------------------------------------------------------------

@register_drawer("person", aspect=0.42, palette=("red", "blue", "green", "yellow", "white",
                 "black", "orange", "purple", "pink"), size_prior=0.95, multiplicity=0.45,
                 phrase="{name} in {color}")
def draw_person(s: Sketch, rng: Rand, shirt: Color) -> None:
    cx = s.aspect / 2
    skin = _pick(rng, SKIN)
    legs = _pick(rng, ("blue", "black", "gray", "brown", "tan"))
    ink = _outline(shirt)
    head_r = _u(rng, 0.065, 0.08)
    hy = head_r + 0.01
    sh_y, hip_y = hy + head_r + 0.035, _u(rng, 0.52, 0.56)
    sw, hw = _u(rng, 0.095, 0.115), _u(rng, 0.07, 0.09)
    # legs (behind the torso): hip -> knee -> foot, walking pose
    for side, swing in ((-1, _u(rng, -0.12, 0.1)), (1, _u(rng, -0.1, 0.12))):
        hx = cx + side * hw * 0.55
        knee = (hx + swing * 0.5, (hip_y + 0.96) / 2)
        foot = (hx + swing, 0.955)
        s.line([(hx, hip_y - 0.02), knee, foot], legs, 0.075)
        s.ellipse(foot[0] + 0.025, 0.975, 0.045, 0.022, (30, 30, 30))
    if rng.random() < 0.25:  # skirt / long coat
        s.poly([(cx - hw, hip_y - 0.05), (cx + hw, hip_y - 0.05), (cx + hw * 1.6, hip_y + 0.16),
                (cx - hw * 1.6, hip_y + 0.16)], shade(shirt, 0.85), ink, 0.012)
    # torso
    s.poly([(cx - sw, sh_y + 0.02), (cx - sw * 0.8, sh_y - 0.005), (cx + sw * 0.8, sh_y - 0.005),
            (cx + sw, sh_y + 0.02), (cx + hw, hip_y), (cx - hw, hip_y)], shirt, ink, 0.012)
    # arms: shoulder -> elbow -> hand, some raised
    for side in (-1, 1):
        up = rng.random() < 0.2
        ax = cx + side * sw * 0.92
        if up:
            elbow = (ax + side * 0.06, sh_y - 0.08)
            hand = (ax + side * _u(rng, 0.02, 0.08), sh_y - _u(rng, 0.18, 0.24))
        else:
            a = math.radians(_u(rng, 5, 30))
            elbow = (ax + side * 0.2 * math.sin(a), sh_y + 0.17 * math.cos(a))
            bend = math.radians(_u(rng, -10, 40))
            hand = (elbow[0] + side * 0.16 * math.sin(a + bend) * 0.6,
                    elbow[1] + 0.15 * math.cos(a + bend))
        s.line([(ax, sh_y + 0.03), elbow], shirt, 0.06)
        s.line([elbow, hand], shirt if rng.random() < 0.5 else skin, 0.05)
        s.circle(hand[0], hand[1], 0.03, skin)
    s.rect(cx - 0.022, hy + head_r - 0.01, cx + 0.022, sh_y + 0.005, skin)  # neck
    s.circle(cx, hy, head_r, skin, _outline(skin), 0.01)
    hair = _pick(rng, ("black", "brown", "golden", "gray"))
    if rng.random() < 0.8:  # hair cap
        s.ellipse(cx, hy - head_r * 0.35, head_r * 1.02, head_r * 0.7, hair)
    s.circle(cx + head_r * 0.45, hy + 0.005, 0.009, (20, 20, 20))  # eye (faces right)


# ---------------------------------------------------------------------------------------------
# Vehicles
# ---------------------------------------------------------------------------------------------

def _wheel(s: Sketch, x: float, y: float, r: float, hub: Color = METAL) -> None:
    s.circle(x, y, r, TYRE)
    s.circle(x, y, r * 0.5, hub)
    s.circle(x, y, r * 0.15, (60, 60, 64))


@register_drawer("car", aspect=2.1, palette=("red", "blue", "white", "black", "silver",
                 "yellow", "green"), size_prior=1.0, multiplicity=0.35)
def draw_car(s: Sketch, rng: Rand, body: Color) -> None:
    A = s.aspect
    ink = _outline(body)
    top = _u(rng, 0.1, 0.22)  # roof height: SUV (high) ... sports car (low)
    belt = _u(rng, 0.42, 0.5)
    c0, c1 = _u(rng, 0.45, 0.7), _u(rng, 1.35, 1.6)  # cabin extent
    s.poly([(c0, belt), (c0 + 0.25, top), (c1 - 0.1, top), (c1 + 0.22, belt)], body, ink, 0.015)
    # windows with a pillar
    m = (c0 + c1) / 2 + 0.05
    s.poly([(c0 + 0.1, belt - 0.01), (c0 + 0.3, top + 0.04), (m - 0.03, top + 0.04),
            (m - 0.03, belt - 0.01)], GLASS)
    s.poly([(m + 0.03, belt - 0.01), (m + 0.03, top + 0.04), (c1 - 0.12, top + 0.04),
            (c1 + 0.1, belt - 0.01)], GLASS)
    s.poly([(0.02, 0.56), (0.1, belt - 0.02), (A - 0.15, belt - 0.03), (A - 0.02, 0.55),
            (A - 0.02, 0.78), (0.02, 0.78)], body, ink, 0.015)
    s.line([(0.1, 0.6), (A - 0.1, 0.6)], shade(body, 0.75), 0.012)
    s.ellipse(A - 0.07, 0.57, 0.05, 0.035, (250, 230, 140))  # headlight
    s.rect(0.02, 0.54, 0.07, 0.6, (210, 30, 30))  # tail light
    r = _u(rng, 0.16, 0.2)
    _wheel(s, 0.45, 1 - r, r)
    _wheel(s, A - 0.45, 1 - r, r)


@register_drawer("bus", aspect=2.8, palette=("yellow", "red", "blue", "white", "green", "orange"),
                 size_prior=1.25, multiplicity=0.12)
def draw_bus(s: Sketch, rng: Rand, body: Color) -> None:
    A = s.aspect
    ink = _outline(body)
    r = _u(rng, 0.1, 0.13)
    s.poly([(0.03, 0.06), (A - 0.12, 0.04), (A - 0.03, 0.12), (A - 0.03, 0.88), (0.03, 0.88)],
           body, ink, 0.015)
    decker = rng.random() < 0.3
    rows = [(0.1, 0.33), (0.45, 0.66)] if decker else [(0.14, 0.46)]
    n = int(rng.integers(5, 8))
    x0, x1 = 0.15, A - 0.5
    step = (x1 - x0) / n
    for ya, yb in rows:
        for k in range(n):
            s.rect(x0 + k * step + 0.03, ya, x0 + (k + 1) * step - 0.03, yb, GLASS,
                   shade(body, 0.6), 0.01)
    s.poly([(A - 0.42, 0.1), (A - 0.12, 0.08), (A - 0.06, 0.14), (A - 0.06, 0.55),
            (A - 0.42, 0.55)], GLASS, shade(body, 0.6), 0.01)  # windscreen
    s.rect(A - 0.38, 0.58, A - 0.16, 0.86, shade(body, 0.7))  # door
    if not decker:
        s.rect(0.03, 0.58, A - 0.42, 0.64, shade(body, 1.5))  # livery stripe
    s.ellipse(A - 0.07, 0.76, 0.03, 0.03, (250, 230, 140))
    _wheel(s, 0.5, 1 - r, r)
    _wheel(s, A - 0.7, 1 - r, r)


@register_drawer("train", aspect=3.8, palette=("red", "blue", "green", "yellow", "silver",
                 "orange"), max_rotation=5, size_prior=1.35, multiplicity=0.05)
def draw_train(s: Sketch, rng: Rand, body: Color) -> None:
    A = s.aspect
    ink = _outline(body)
    # track: sleepers and two rails
    for k in range(int(A / 0.16) + 1):
        x = k * 0.16 + 0.03
        s.line([(x - 0.03, 0.985), (x + 0.05, 0.94)], (110, 80, 50), 0.03)
    s.line([(0, 0.95), (A, 0.95)], (120, 120, 126), 0.022)
    s.line([(0, 0.985), (A, 0.985)], (150, 150, 156), 0.018)
    n_cars = int(rng.integers(2, 4))
    loco_len = _u(rng, 0.9, 1.1)
    car_len = (A - loco_len - 0.08 * n_cars) / n_cars
    roof = shade(body, 0.7)
    x = 0.02
    for _ in range(n_cars):  # carriages
        s.rect(x, 0.3, x + car_len, 0.84, body, ink, 0.012)
        s.rect(x, 0.26, x + car_len, 0.32, roof)
        nw = max(2, round(car_len / 0.22))
        w = car_len / nw
        for k in range(nw):
            s.rect(x + k * w + 0.04, 0.4, x + (k + 1) * w - 0.04, 0.58, GLASS)
        s.rect(x, 0.66, x + car_len, 0.7, shade(body, 1.5))
        for wx in (x + 0.12, x + 0.28, x + car_len - 0.28, x + car_len - 0.12):
            s.circle(wx, 0.88, 0.065, TYRE)
        s.line([(x + car_len, 0.74), (x + car_len + 0.08, 0.74)], (60, 60, 60), 0.03)
        x += car_len + 0.08
    # locomotive with a slanted nose (modern) or a boiler + chimney (steam)
    if rng.random() < 0.3:
        s.rect(x, 0.2, x + 0.35, 0.84, body, ink, 0.012)
        s.rect(x + 0.08, 0.28, x + 0.28, 0.45, GLASS)
        s.poly([(x + 0.35, 0.42), (A - 0.05, 0.42), (A - 0.02, 0.84), (x + 0.35, 0.84)],
               (40, 40, 44), ink, 0.012)
        s.rect(A - 0.35, 0.22, A - 0.24, 0.42, (40, 40, 44))
        for wx in (x + 0.2, x + 0.5, A - 0.2):
            s.circle(wx, 0.86, 0.1, (180, 30, 30), (30, 30, 30), 0.02)
    else:
        s.poly([(x, 0.3), (A - 0.35, 0.28), (A - 0.04, 0.5), (A - 0.02, 0.84), (x, 0.84)], body,
               ink, 0.012)
        s.poly([(A - 0.33, 0.33), (A - 0.1, 0.5), (A - 0.33, 0.5)], GLASS)
        s.rect(x, 0.66, A - 0.02, 0.7, shade(body, 1.5))
        s.ellipse(A - 0.08, 0.62, 0.03, 0.03, (250, 240, 160))
        for wx in (x + 0.15, x + 0.32, A - 0.32, A - 0.15):
            s.circle(wx, 0.88, 0.065, TYRE)


@register_drawer("bicycle", aspect=1.75, palette=("red", "blue", "black", "green", "yellow",
                 "silver"), max_rotation=6, size_prior=0.8, multiplicity=0.2)
def draw_bicycle(s: Sketch, rng: Rand, frame: Color) -> None:
    A = s.aspect
    r = _u(rng, 0.26, 0.3)
    wy = 1 - r - 0.01
    back, front = (r + 0.03, wy), (A - r - 0.03, wy)
    for cx, cy in (back, front):  # thin spoked wheels: the bicycle's signature
        for k in range(6):
            a = math.pi * k / 6
            s.line([(cx - r * math.cos(a), cy - r * math.sin(a)),
                    (cx + r * math.cos(a), cy + r * math.sin(a))], (170, 170, 176), 0.008)
        s.circle(cx, cy, r, None, TYRE, 0.035)
        s.circle(cx, cy, 0.03, METAL)
    bb = (A * 0.46, wy + 0.02)
    seat_top = (A * 0.4, wy - _u(rng, 0.38, 0.45))
    head = (front[0] - 0.15, wy - 0.4)
    w = 0.04
    s.line([back, bb, seat_top, back], frame, w)
    s.line([seat_top, head], frame, w)
    s.line([bb, (head[0] + 0.02, head[1] + 0.08)], frame, w)
    s.line([head, front], frame, w * 0.9)
    s.line([seat_top, (seat_top[0] - 0.02, seat_top[1] - 0.06)], METAL, 0.025)
    s.ellipse(seat_top[0] - 0.03, seat_top[1] - 0.07, 0.09, 0.025, (30, 30, 30))
    s.line([head, (head[0] - 0.03, head[1] - 0.1), (head[0] - 0.14, head[1] - 0.12)], METAL,
           0.025)
    s.circle(bb[0], bb[1], 0.045, METAL)
    s.line([(bb[0] - 0.05, bb[1] + 0.08), (bb[0] + 0.05, bb[1] - 0.08)], (40, 40, 40), 0.02)


@register_drawer("motorbike", aspect=1.9, palette=("red", "black", "blue", "silver", "orange",
                 "green"), max_rotation=6, size_prior=0.9, multiplicity=0.15)
def draw_motorbike(s: Sketch, rng: Rand, body: Color) -> None:
    A = s.aspect
    ink = _outline(body)
    r = _u(rng, 0.24, 0.28)
    wy = 1 - r
    back, front = (r + 0.04, wy), (A - r - 0.04, wy)
    s.line([(back[0], wy), (A * 0.45, wy - 0.2)], METAL, 0.05)  # swing arm
    s.line([(A * 0.5, wy - 0.05), (back[0] - 0.1, wy - 0.15)], (200, 200, 205), 0.05)  # exhaust
    for cx, cy in (back, front):  # thick tyres with disc rims
        s.circle(cx, cy, r, TYRE)
        s.circle(cx, cy, r * 0.55, METAL)
        s.circle(cx, cy, r * 0.2, (60, 60, 64))
    s.poly([(A * 0.38, wy - 0.05), (A * 0.6, wy - 0.05), (A * 0.62, wy - 0.28),
            (A * 0.36, wy - 0.28)], (70, 70, 76), (40, 40, 40), 0.01)  # engine
    s.line([(front[0], front[1]), (A * 0.74, wy - 0.55)], METAL, 0.05)  # fork
    s.poly([(A * 0.3, wy - 0.3), (A * 0.4, wy - 0.45), (A * 0.66, wy - 0.5), (A * 0.74, wy - 0.4),
            (A * 0.62, wy - 0.24), (A * 0.36, wy - 0.22)], body, ink, 0.015)  # tank + panel
    s.poly([(back[0] - 0.12, wy - 0.35), (A * 0.42, wy - 0.47), (A * 0.45, wy - 0.38),
            (back[0] - 0.08, wy - 0.26)], body, ink, 0.012)  # tail
    s.poly([(A * 0.2, wy - 0.43), (A * 0.44, wy - 0.5), (A * 0.46, wy - 0.44),
            (A * 0.22, wy - 0.37)], (30, 30, 32))  # seat
    s.line([(A * 0.74, wy - 0.55), (A * 0.7, wy - 0.66), (A * 0.62, wy - 0.68)], (40, 40, 40),
           0.035)  # handlebar
    s.ellipse(A * 0.8, wy - 0.5, 0.05, 0.06, (250, 240, 170), (60, 60, 60), 0.01)  # headlight


# ---------------------------------------------------------------------------------------------
# Household objects
# ---------------------------------------------------------------------------------------------

@register_drawer("bottle", aspect=0.36, palette=("green", "brown", "blue", "white", "red",
                 "dark green"), max_rotation=12, size_prior=0.55, multiplicity=0.5)
def draw_bottle(s: Sketch, rng: Rand, glass: Color) -> None:
    A = s.aspect
    cx = A / 2
    bw = A / 2 - 0.02
    nw = bw * _u(rng, 0.28, 0.4)
    shoulder = _u(rng, 0.35, 0.5)
    neck = _u(rng, 0.07, 0.15)
    ink = _outline(glass)
    pts = [(cx - bw, 0.98), (cx - bw, shoulder + 0.08), (cx - bw * 0.8, shoulder),
           (cx - nw, shoulder - 0.08), (cx - nw, neck), (cx + nw, neck), (cx + nw, shoulder - 0.08),
           (cx + bw * 0.8, shoulder), (cx + bw, shoulder + 0.08), (cx + bw, 0.98)]
    s.poly(pts, glass, ink, 0.02)
    s.rect(cx - nw * 1.15, neck - 0.06, cx + nw * 1.15, neck + 0.015,
           _pick(rng, ("golden", "red", "silver", "black")))  # cap
    if rng.random() < 0.8:  # label
        y0 = _u(rng, shoulder + 0.12, 0.62)
        s.rect(cx - bw, y0, cx + bw, y0 + _u(rng, 0.15, 0.25),
               _pick(rng, ("white", "cream", "red", "yellow")))
    s.line([(cx - bw * 0.55, shoulder + 0.1), (cx - bw * 0.55, 0.9)], shade(glass, 1.5), 0.025)


@register_drawer("chair", aspect=0.78, palette=("brown", "black", "white", "red", "blue",
                 "tan"), size_prior=0.75, multiplicity=0.45)
def draw_chair(s: Sketch, rng: Rand, wood: Color) -> None:
    A = s.aspect
    ink = _outline(wood)
    seat_y = _u(rng, 0.5, 0.58)
    bx0, bx1 = 0.12, A - 0.12
    dark = shade(wood, 0.7)
    # back legs (further away, shorter) then front legs
    s.line([(bx0 + 0.05, seat_y), (bx0 + 0.05, 0.9)], dark, 0.045)
    s.line([(bx1 - 0.05, seat_y), (bx1 - 0.05, 0.9)], dark, 0.045)
    # back rest: two posts + top rail + slats or a solid panel
    s.line([(bx0, 0.02), (bx0, seat_y)], wood, 0.05)
    s.line([(bx1, 0.02), (bx1, seat_y)], wood, 0.05)
    s.rect(bx0 - 0.02, 0.02, bx1 + 0.02, 0.12, wood, ink, 0.012)
    if rng.random() < 0.5:
        for k in range(3):
            x = bx0 + (bx1 - bx0) * (k + 1) / 4
            s.line([(x, 0.12), (x, seat_y)], wood, 0.035)
    else:
        s.rect(bx0, 0.12, bx1, seat_y - 0.12, shade(wood, 1.25), ink, 0.01)
    seat = _pick(rng, ("red", "blue", "green", "cream")) if rng.random() < 0.3 else wood
    s.poly([(bx0 - 0.02, seat_y - 0.03), (bx1 + 0.02, seat_y - 0.03), (A - 0.02, seat_y + 0.06),
            (0.02, seat_y + 0.06)], seat, ink, 0.012)
    s.rect(0.02, seat_y + 0.06, A - 0.02, seat_y + 0.11, dark)
    s.line([(0.06, seat_y + 0.1), (0.06, 0.99)], wood, 0.05)
    s.line([(A - 0.06, seat_y + 0.1), (A - 0.06, 0.99)], wood, 0.05)


@register_drawer("sofa", aspect=2.3, palette=("red", "blue", "gray", "brown", "green", "beige"),
                 max_rotation=4, size_prior=1.2, multiplicity=0.05)
def draw_sofa(s: Sketch, rng: Rand, cloth: Color) -> None:
    A = s.aspect
    ink = _outline(cloth)
    n = int(rng.integers(2, 4))
    back_top = _u(rng, 0.08, 0.2)
    s.rect(0.1, back_top, A - 0.1, 0.62, shade(cloth, 0.85), ink, 0.012)
    for k in range(1, n):  # back cushion seams
        x = 0.1 + (A - 0.2) * k / n
        s.line([(x, back_top + 0.05), (x, 0.58)], shade(cloth, 0.6), 0.015)
    s.rect(0.22, 0.56, A - 0.22, 0.82, cloth, ink, 0.012)  # seat
    for k in range(1, n):
        x = 0.22 + (A - 0.44) * k / n
        s.line([(x, 0.58), (x, 0.8)], shade(cloth, 0.6), 0.015)
    for x0 in (0.0, A - 0.27):  # arm rests
        s.poly([(x0, 0.42), (x0 + 0.27, 0.42), (x0 + 0.27, 0.88), (x0, 0.88)], shade(cloth, 0.95),
               ink, 0.012)
        s.ellipse(x0 + 0.135, 0.42, 0.135, 0.06, shade(cloth, 1.15), ink, 0.01)
    if rng.random() < 0.5:  # a throw pillow
        px = _u(rng, 0.4, A - 0.6)
        s.poly([(px, 0.38), (px + 0.22, 0.34), (px + 0.26, 0.56), (px + 0.03, 0.58)],
               _pick(rng, ("yellow", "white", "orange", "purple")))
    for x in (0.08, A - 0.14):
        s.rect(x, 0.88, x + 0.06, 0.98, (50, 35, 25))


@register_drawer("diningtable", aspect=1.9, palette=("brown", "white", "black", "tan"),
                 max_rotation=4, size_prior=1.25, multiplicity=0.02)
def draw_diningtable(s: Sketch, rng: Rand, wood: Color) -> None:
    A = s.aspect
    ink = _outline(wood)
    top_y = _u(rng, 0.3, 0.42)
    dark = shade(wood, 0.7)
    for x in (0.3, A - 0.3):  # far legs
        s.line([(x, top_y), (x, 0.86)], dark, 0.05)
    s.poly([(0.16, top_y), (A - 0.16, top_y), (A, top_y + 0.14), (0, top_y + 0.14)], wood, ink,
           0.012)
    if rng.random() < 0.35:  # tablecloth
        cloth = _pick(rng, ("white", "red", "blue", "cream"))
        s.poly([(0.16, top_y - 0.005), (A - 0.16, top_y - 0.005), (A + 0.0, top_y + 0.14),
                (A, top_y + 0.34), (0, top_y + 0.34), (0, top_y + 0.14)], cloth,
               _outline(cloth), 0.01)
    else:
        s.rect(0, top_y + 0.14, A, top_y + 0.2, dark)
    for x in (0.08, A - 0.08):
        s.line([(x, top_y + 0.18), (x, 0.99)], wood, 0.06)
    for _ in range(int(rng.integers(0, 4))):  # plates and bowls
        px = _u(rng, 0.35, A - 0.35)
        s.ellipse(px, top_y + 0.07, 0.13, 0.035, (245, 245, 240), (150, 150, 150), 0.008)
        if rng.random() < 0.5:
            s.ellipse(px, top_y + 0.06, 0.05, 0.015, _pick(rng, ("orange", "green", "red")))


@register_drawer("tvmonitor", aspect=1.3, palette=("black", "silver", "white", "gray"),
                 max_rotation=5, size_prior=0.8, multiplicity=0.1)
def draw_tvmonitor(s: Sketch, rng: Rand, frame: Color) -> None:
    A = s.aspect
    ink = _outline(frame)
    bot = _u(rng, 0.72, 0.8)
    s.rect(0.02, 0.02, A - 0.02, bot, frame, ink, 0.015)
    b = _u(rng, 0.04, 0.08)
    screen = _pick(rng, ("blue", "black", "green", "purple", "gray"))
    s.rect(0.02 + b, 0.02 + b, A - 0.02 - b, bot - b, shade(screen, 0.8))
    # the picture: a bright horizon / shapes on the screen
    hz = _u(rng, 0.3, 0.55)
    s.rect(0.02 + b, hz, A - 0.02 - b, bot - b, shade(_pick(rng, ("green", "blue", "orange")),
                                                        1.2))
    s.circle(_u(rng, 0.3, A - 0.3), _u(rng, 0.15, hz), 0.07, (250, 230, 120))
    s.line([(0.06, 0.05 + b), (0.25, 0.05 + b)], shade(frame, 1.5), 0.01)  # glare
    s.rect(A / 2 - 0.06, bot, A / 2 + 0.06, 0.92, shade(frame, 0.8))  # stand
    s.poly([(A / 2 - 0.3, 0.99), (A / 2 - 0.22, 0.9), (A / 2 + 0.22, 0.9), (A / 2 + 0.3, 0.99)],
           shade(frame, 0.8), ink, 0.01)


@register_drawer("pottedplant", aspect=0.75, palette=("orange", "blue", "white", "gray", "red",
                 "brown"), size_prior=0.7, multiplicity=0.3, phrase="{name} in a {color} pot")
def draw_pottedplant(s: Sketch, rng: Rand, pot: Color) -> None:
    A = s.aspect
    cx = A / 2
    rim = _u(rng, 0.56, 0.64)
    greens = [(34, 120, 40), (60, 150, 50), (24, 90, 36), (90, 160, 60)]
    n = int(rng.integers(6, 11))
    for k in range(n):  # leaves radiating out of the pot
        a = math.radians(-75 + 150 * (k + _u(rng, 0.1, 0.9)) / n)
        length = _u(rng, 0.25, rim - 0.02)
        lx, ly = cx + math.sin(a) * length * 0.9, rim - math.cos(a) * length
        s.line([(cx, rim), ((cx + lx) / 2, (rim + ly) / 2)], (50, 100, 40), 0.015)
        s.ellipse((cx + lx) / 2 + math.sin(a) * length * 0.2, (rim + ly) / 2 - math.cos(a)
                  * length * 0.22, length * 0.38, _u(rng, 0.045, 0.075),
                  jitter(greens[int(rng.integers(len(greens)))], rng, 8),
                  angle=math.degrees(a) - 90)
    if rng.random() < 0.35:  # flowers
        fc = _pick(rng, ("red", "yellow", "pink", "white", "purple"))
        for _ in range(int(rng.integers(2, 5))):
            s.circle(cx + _u(rng, -0.25, 0.25), _u(rng, 0.08, rim - 0.2), 0.045, fc)
    ink = _outline(pot)
    s.rect(cx - 0.26, rim - 0.02, cx + 0.26, rim + 0.07, shade(pot, 0.85), ink, 0.012)
    s.poly([(cx - 0.23, rim + 0.07), (cx + 0.23, rim + 0.07), (cx + 0.16, 0.99),
            (cx - 0.16, 0.99)], pot, ink, 0.012)


# ---------------------------------------------------------------------------------------------
# Aeroplane, boat, bird
# ---------------------------------------------------------------------------------------------

@register_drawer("aeroplane", aspect=2.4, palette=("white", "silver", "blue", "red", "yellow"),
                 max_rotation=22, size_prior=1.05, multiplicity=0.08)
def draw_aeroplane(s: Sketch, rng: Rand, body: Color) -> None:
    A = s.aspect
    ink = _outline(body)
    accent = _pick(rng, ("red", "blue", "orange", "green", "gray"))
    s.poly([(1.1, 0.5), (1.4, 0.5), (1.15, _u(rng, 0.25, 0.32)), (1.0, 0.27)], shade(body, 0.7),
           ink, 0.01)  # far wing
    s.poly([(0.15, 0.5), (0.05, _u(rng, 0.05, 0.15)), (0.28, 0.1), (0.55, 0.5)], accent, ink,
           0.012)  # tail fin
    fus = [(0.08, 0.47), (0.4, 0.5), (A - 0.35, 0.5), (A - 0.12, 0.53), (A - 0.02, 0.6),
           (A - 0.1, 0.67), (A - 0.35, 0.7), (0.5, 0.7), (0.12, 0.56)]
    s.poly(fus, body, ink, 0.015)
    s.poly([(0.14, 0.56), (0.45, 0.57), (0.3, 0.66), (0.08, 0.66)], shade(body, 0.8), ink, 0.01)
    s.line([(0.6, 0.635), (A - 0.35, 0.635)], accent, 0.025)  # cheat line
    for k in range(int((A - 0.9) / 0.09)):  # cabin windows
        s.circle(0.62 + 0.09 * k, 0.575, 0.017, (60, 70, 90))
    s.poly([(A - 0.2, 0.545), (A - 0.1, 0.56), (A - 0.08, 0.59), (A - 0.2, 0.59)], (50, 60, 80))
    wing_tip = _u(rng, 0.88, 0.97)
    s.poly([(0.95, 0.64), (1.45, 0.64), (1.05, wing_tip), (0.8, wing_tip)], shade(body, 0.88),
           ink, 0.012)  # near wing
    s.ellipse(1.22, 0.74, 0.16, 0.055, METAL, (70, 70, 76), 0.01)  # engine


@register_drawer("boat", aspect=1.3, palette=("white", "red", "blue", "yellow", "brown",
                 "green"), max_rotation=10, size_prior=0.95, multiplicity=0.3)
def draw_boat(s: Sketch, rng: Rand, hull: Color) -> None:
    A = s.aspect
    ink = _outline(hull)
    deck = _u(rng, 0.6, 0.68)
    if rng.random() < 0.7:  # sailing boat
        sail = _pick(rng, ("white", "white", "cream", "red", "orange", "blue"))
        mx = A * _u(rng, 0.45, 0.55)
        s.line([(mx, 0.01), (mx, deck)], (90, 70, 50), 0.025)
        s.poly([(mx + 0.03, 0.04), (mx + 0.03, deck - 0.06), (A - 0.12, deck - 0.06)], sail,
               _outline(sail), 0.01)
        s.poly([(mx - 0.03, 0.1), (mx - 0.03, deck - 0.06), (0.14, deck - 0.06)],
               shade(sail, 0.92), _outline(sail), 0.01)
    else:  # motor boat: cabin with windows
        s.rect(A * 0.3, deck - 0.24, A * 0.7, deck, (240, 240, 236), (90, 90, 90), 0.012)
        s.rect(A * 0.34, deck - 0.19, A * 0.66, deck - 0.1, GLASS)
        s.line([(A * 0.5, deck - 0.24), (A * 0.5, deck - 0.38)], (80, 80, 80), 0.015)
    s.poly([(0.0, deck), (A, deck - 0.04), (A - 0.2, 0.9), (0.14, 0.9)], hull, ink, 0.015)
    s.line([(0.03, deck + 0.05), (A - 0.05, deck + 0.01)], shade(hull, 1.5), 0.02)
    water = (70, 120, 190)
    pts = [(0.02 + k * 0.1, 0.93 + (0.03 if k % 2 else 0.0)) for k in range(int(A / 0.1))]
    s.line(pts, water, 0.025)


@register_drawer("bird", aspect=1.3, palette=("brown", "blue", "red", "yellow", "black", "gray",
                 "white"), max_rotation=18, size_prior=0.6, multiplicity=0.4)
def draw_bird(s: Sketch, rng: Rand, body: Color) -> None:
    A = s.aspect
    ink = _outline(body)
    flying = rng.random() < 0.3
    wing = shade(body, 0.7)
    beak = _pick(rng, ("orange", "yellow", "black"))
    if flying:
        tip = _u(rng, 0.0, 0.2)
        s.poly([(0.5, 0.5), (0.75, 0.5), (0.35, tip)], wing, ink, 0.01)  # far wing
    s.poly([(0.32, 0.55), (0.02, _u(rng, 0.4, 0.52)), (0.04, 0.66), (0.3, 0.66)], wing, ink,
           0.01)  # tail
    if not flying:
        for dx in (0.0, 0.08):  # legs
            s.line([(0.6 + dx, 0.7), (0.56 + dx, 0.96), (0.64 + dx, 0.97)], (200, 120, 40), 0.02)
    s.ellipse(0.6, 0.56, 0.33, 0.17, body, ink, 0.012, angle=-12)
    s.ellipse(0.66, 0.62, 0.18, 0.08, shade(body, 1.25), angle=-8)  # breast
    s.circle(0.96, 0.36, 0.14, body, ink, 0.012)
    s.poly([(1.07, 0.31), (A - 0.01, 0.37), (1.07, 0.42)], beak, _outline(beak), 0.008)
    s.circle(1.0, 0.33, 0.025, (255, 255, 255))
    s.circle(1.005, 0.33, 0.013, (10, 10, 10))
    if flying:
        tip = _u(rng, 0.0, 0.15)
        s.poly([(0.45, 0.52), (0.8, 0.5), (0.45, tip)], wing, ink, 0.01)
    else:
        s.ellipse(0.52, 0.52, 0.22, 0.1, wing, ink, 0.01, angle=-16)


# ---------------------------------------------------------------------------------------------
# Quadrupeds: one parametric body, five species that differ the way the real ones do
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Body:
    bx: float  # body centre
    by: float
    rx: float  # body half-length / half-height
    ry: float
    leg_w: float
    boxy: float  # 0: ellipse body, 1: rounded box
    head: tuple[float, float, float, float, float]  # cx, cy, rx, ry, angle
    neck_w: float


def _legs(s: Sketch, rng: Rand, b: _Body, col: Color, hoof: Color | None,
          ground: float = 0.985) -> None:
    far = shade(col, 0.72)
    top = b.by + b.ry * 0.4
    for xf, c in ((0.62, far), (-0.7, far), (0.7, col), (-0.62, col)):
        x = b.bx + xf * b.rx
        sw = _u(rng, -0.07, 0.07)
        knee = (x + sw * 0.3, (top + ground) / 2)
        s.line([(x, top), knee, (x + sw, ground - 0.02)], c, b.leg_w)
        if hoof is not None:
            s.rect(x + sw - b.leg_w * 0.55, ground - 0.035, x + sw + b.leg_w * 0.55, ground, hoof)


def _body(s: Sketch, b: _Body, col: Color, ink: Color) -> None:
    if b.boxy > 0:
        r = b.ry * 0.6
        x0, x1, y0, y1 = b.bx - b.rx, b.bx + b.rx, b.by - b.ry, b.by + b.ry
        pts = []
        for cx, cy, a0 in ((x1 - r, y0 + r, -90), (x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90),
                           (x0 + r, y0 + r, 180)):
            pts += [(cx + r * math.cos(math.radians(a0 + k * 30)),
                     cy + r * math.sin(math.radians(a0 + k * 30))) for k in range(4)]
        s.poly(pts, col, ink, 0.012)
    else:
        s.ellipse(b.bx, b.by, b.rx, b.ry, col, ink, 0.012)


def _head(s: Sketch, b: _Body, col: Color, ink: Color) -> None:
    hx, hy, hrx, hry, ha = b.head
    s.line([(b.bx + b.rx * 0.7, b.by - b.ry * 0.3), (hx - hrx * 0.3, hy)], col, b.neck_w)
    s.ellipse(hx, hy, hrx, hry, col, ink, 0.012, angle=ha)


def _eye(s: Sketch, x: float, y: float, r: float = 0.02) -> None:
    s.circle(x, y, r, (15, 15, 15))


@register_drawer("cat", aspect=1.45, palette=("orange", "black", "gray", "white", "brown"),
                 size_prior=0.6, multiplicity=0.15)
def draw_cat(s: Sketch, rng: Rand, fur: Color) -> None:
    """Small head without snout, tall pointed ears, thin legs, long tail curling up."""
    ink = _outline(fur)
    hy = _u(rng, 0.3, 0.4)
    b = _Body(0.68, 0.6, _u(rng, 0.36, 0.42), _u(rng, 0.14, 0.17), 0.055, 0,
              (1.2, hy, 0.16, 0.145, 0), 0.12)
    tail_up = _u(rng, 0.05, 0.25)
    s.line([(b.bx - b.rx * 0.9, b.by - 0.05), (0.18, b.by - 0.12), (0.1, b.by - 0.3),
            (0.14, tail_up)], fur, 0.05)
    _legs(s, rng, b, fur, None)
    _body(s, b, fur, ink)
    if fur[0] > 150 and rng.random() < 0.7 or rng.random() < 0.2:  # tabby stripes
        for k in range(4):
            x = b.bx - b.rx * 0.6 + k * b.rx * 0.35
            s.line([(x, b.by - b.ry * 0.95), (x - 0.03, b.by - b.ry * 0.2)], shade(fur, 0.65),
                   0.03)
    hx, hy2 = b.head[0], b.head[1]
    for ex in (-0.09, 0.08):  # pointed ears
        s.poly([(hx + ex - 0.06, hy2 - 0.08), (hx + ex + 0.005, hy2 - 0.25),
                (hx + ex + 0.06, hy2 - 0.07)], fur, ink, 0.01)
        s.poly([(hx + ex - 0.03, hy2 - 0.09), (hx + ex + 0.005, hy2 - 0.19),
                (hx + ex + 0.03, hy2 - 0.09)], (230, 150, 160))
    _head(s, b, fur, ink)
    _eye(s, hx + 0.02, hy2 - 0.02, 0.022)
    _eye(s, hx + 0.1, hy2 - 0.02, 0.022)
    s.poly([(hx + 0.1, hy2 + 0.04), (hx + 0.14, hy2 + 0.04), (hx + 0.12, hy2 + 0.065)],
           (230, 120, 140))
    for dy in (-0.02, 0.02):  # whiskers
        s.line([(hx + 0.12, hy2 + 0.06), (hx + 0.27, hy2 + 0.04 + dy * 2)], (40, 40, 40), 0.006)


@register_drawer("dog", aspect=1.6, palette=("brown", "black", "white", "golden", "gray"),
                 size_prior=0.7, multiplicity=0.2)
def draw_dog(s: Sketch, rng: Rand, fur: Color) -> None:
    """Longer body and legs than a cat, a snout with a black nose, floppy ears, short tail."""
    ink = _outline(fur)
    hy = _u(rng, 0.22, 0.3)
    b = _Body(0.7, 0.5, _u(rng, 0.42, 0.47), _u(rng, 0.15, 0.19), 0.075, 0.4,
              (1.26, hy, 0.15, 0.13, 0), 0.13)
    wag = _u(rng, -0.1, 0.1)
    s.line([(b.bx - b.rx * 0.95, b.by - 0.08), (0.12 + wag, b.by - 0.28)], fur, 0.055)
    _legs(s, rng, b, fur, None)
    _body(s, b, fur, ink)
    if rng.random() < 0.35:  # patch
        s.ellipse(b.bx - 0.1, b.by - 0.04, b.rx * 0.4, b.ry * 0.6,
                  shade(fur, 0.55) if sum(fur) > 300 else shade(fur, 2.0))
    hx, hy2 = b.head[0], b.head[1]
    _head(s, b, fur, ink)
    s.ellipse(hx + 0.17, hy2 + 0.05, 0.12, 0.075, shade(fur, 1.1), ink, 0.01)  # snout
    s.circle(hx + 0.28, hy2 + 0.03, 0.03, (15, 15, 15))  # nose
    s.ellipse(hx - 0.07, hy2 + 0.07, 0.05, 0.13, shade(fur, 0.6), ink, 0.01, angle=15)  # ear
    _eye(s, hx + 0.05, hy2 - 0.04, 0.022)
    if rng.random() < 0.4:
        s.line([(hx - 0.14, hy2 + 0.12), (hx - 0.02, hy2 + 0.15)], (200, 30, 30), 0.03)  # collar


@register_drawer("horse", aspect=1.35, palette=("brown", "black", "white", "gray", "tan"),
                 size_prior=1.05, multiplicity=0.25)
def draw_horse(s: Sketch, rng: Rand, coat: Color) -> None:
    """Long thin legs with hooves, long raised neck with a mane, long face, hanging tail."""
    ink = _outline(coat)
    mane = shade(coat, 0.4) if sum(coat) > 200 else (60, 50, 40)
    b = _Body(0.6, 0.43, _u(rng, 0.38, 0.42), _u(rng, 0.13, 0.15), 0.055, 0.3,
              (1.12, 0.16, 0.17, 0.065, _u(rng, 35, 55)), 0.13)
    s.line([(b.bx - b.rx * 0.95, b.by - 0.08), (0.1, b.by + 0.1), (_u(rng, 0.04, 0.12), 0.72)],
           mane, 0.06)  # tail
    _legs(s, rng, b, coat, (40, 35, 30))
    _body(s, b, coat, ink)
    hx, hy, _, _, ha = b.head
    base = (b.bx + b.rx * 0.75, b.by - b.ry * 0.2)
    top = (hx - 0.1, hy - 0.03)
    s.poly([(base[0] - 0.12, base[1] - 0.08), (top[0] - 0.03, top[1] - 0.02),
            (top[0] + 0.09, top[1] + 0.05), (base[0] + 0.1, base[1] + 0.08)], coat, ink, 0.012)
    s.line([(base[0] - 0.12, base[1] - 0.1), (top[0] - 0.02, top[1] - 0.04)], mane, 0.05)
    s.ellipse(hx, hy, b.head[2], b.head[3], coat, ink, 0.012, angle=ha)
    s.poly([(top[0] - 0.0, top[1] - 0.03), (top[0] + 0.02, top[1] - 0.12),
            (top[0] + 0.05, top[1] - 0.02)], coat, ink, 0.01)  # ear
    _eye(s, hx - 0.03, hy - 0.03, 0.018)


@register_drawer("cow", aspect=1.6, palette=("black and white", "brown", "white", "black"),
                 size_prior=1.0, multiplicity=0.4)
def draw_cow(s: Sketch, rng: Rand, coat: Color) -> None:
    """Bulky boxy body, short thick legs, low blocky head with horns, pink muzzle and udder."""
    ink = _outline(coat)
    spotted = coat[0] > 200 and rng.random() < 0.85
    b = _Body(0.72, 0.5, _u(rng, 0.48, 0.52), _u(rng, 0.19, 0.22), 0.085, 1.0,
              (1.38, _u(rng, 0.36, 0.46), 0.13, 0.12, 10), 0.18)
    s.line([(b.bx - b.rx, b.by - b.ry * 0.7), (0.17, b.by + 0.15), (0.16, 0.72)], shade(coat, 0.7),
           0.02)
    s.circle(0.16, 0.74, 0.03, (40, 30, 25))  # tail tuft
    _legs(s, rng, b, coat, (50, 40, 35))
    _body(s, b, coat, ink)
    if spotted:
        for _ in range(int(rng.integers(3, 6))):
            s.ellipse(b.bx + _u(rng, -0.7, 0.6) * b.rx, b.by + _u(rng, -0.6, 0.5) * b.ry,
                      _u(rng, 0.06, 0.13), _u(rng, 0.04, 0.09), (30, 30, 32),
                      angle=_u(rng, -40, 40))
    s.ellipse(b.bx - b.rx * 0.45, b.by + b.ry + 0.01, 0.08, 0.045, (235, 160, 170))  # udder
    hx, hy = b.head[0], b.head[1]
    for dx in (-0.08, 0.06):
        s.line([(hx + dx, hy - 0.09), (hx + dx - 0.02, hy - 0.17), (hx + dx + 0.03, hy - 0.2)],
               (235, 225, 200), 0.025)  # horns
    s.ellipse(hx - 0.15, hy - 0.04, 0.07, 0.03, coat, ink, 0.008, angle=-20)  # ear
    _head(s, b, coat, ink)
    if spotted:
        s.ellipse(hx - 0.03, hy - 0.03, 0.06, 0.07, (30, 30, 32))
    s.ellipse(hx + 0.06, hy + 0.08, 0.09, 0.06, (235, 165, 170), ink, 0.008)  # muzzle
    _eye(s, hx + 0.03, hy - 0.03, 0.02)


@register_drawer("sheep", aspect=1.4, palette=("white", "cream", "gray", "black"),
                 size_prior=0.75, multiplicity=0.5)
def draw_sheep(s: Sketch, rng: Rand, wool: Color) -> None:
    """A woolly cloud body (bumpy outline), dark face and thin dark legs, no visible tail."""
    face = (35, 32, 30) if wool[0] > 100 or rng.random() < 0.5 else (210, 200, 190)
    b = _Body(0.66, 0.5, _u(rng, 0.4, 0.45), _u(rng, 0.2, 0.23), 0.045, 0,
              (1.17, _u(rng, 0.36, 0.46), 0.11, 0.09, 20), 0.08)
    _legs(s, rng, b, face, None)
    ink = _outline(wool)
    s.ellipse(b.bx, b.by, b.rx, b.ry, wool, ink, 0.012)
    n = 14
    for k in range(n):  # wool curls around the rim and inside
        a = 2 * math.pi * k / n
        s.circle(b.bx + math.cos(a) * b.rx * 0.92, b.by + math.sin(a) * b.ry * 0.85,
                 _u(rng, 0.07, 0.095), wool, ink, 0.01)
    for _ in range(5):
        s.circle(b.bx + _u(rng, -0.6, 0.6) * b.rx, b.by + _u(rng, -0.5, 0.5) * b.ry,
                 _u(rng, 0.06, 0.08), shade(wool, 1.08) if wool[0] < 240 else shade(wool, 0.93),
                 ink, 0.008)
    hx, hy = b.head[0], b.head[1]
    s.ellipse(hx - 0.06, hy - 0.02, 0.07, 0.03, face, None, 0, angle=-25)  # ear
    s.ellipse(hx, hy, b.head[2], b.head[3], face, _outline(face), 0.01, angle=b.head[4])
    s.circle(hx - 0.07, hy - 0.08, 0.07, wool, ink, 0.008)  # wool tuft on the head
    s.circle(hx + 0.03, hy - 0.02, 0.016, (235, 235, 235) if face[0] < 100 else (20, 20, 20))


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


__all__ = ["ALIASES", "DRAWERS", "DrawerSpec", "NAMED_COLORS", "Placed", "Rand", "Sketch",
           "as_rand", "describe",
           "generic_spec", "get_spec", "jitter", "prompt_name", "register_drawer",
           "render_object", "shade", "sketch_object", "with_article"]
