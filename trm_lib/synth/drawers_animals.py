"""Hand-made pictogram drawers: aeroplane, boat, bird, and the quadrupeds (one parametric body,
five species that differ the way the real ones do)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .pictogram_core import (
    GLASS,
    METAL,
    Color,
    Rand,
    Sketch,
    _outline,
    _pick,
    _u,
    register_drawer,
    shade,
)

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
