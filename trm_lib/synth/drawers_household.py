"""Hand-made pictogram drawers: household objects (bottle, chair, sofa, dining table, tv monitor,
potted plant)."""

from __future__ import annotations

import math

from .pictogram_core import Color, Rand, Sketch, _outline, _pick, _u, jitter, register_drawer, shade

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
