"""Hand-made pictogram drawers: the person and the vehicles (car, bus, train, bicycle, motorbike)."""

from __future__ import annotations

import math

from .pictogram_core import (
    GLASS,
    METAL,
    SKIN,
    TYRE,
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
