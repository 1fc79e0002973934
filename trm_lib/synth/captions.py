"""The caption corpus TinyCLIP is pre-trained on: the same pictograms, mostly one large centred
object per image, captioned ``"a photo of a red car."``.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from trm_lib.datasets.base import DatasetError
from trm_lib.utils.io import atomic_write, read_json, sha256_file, write_json
from trm_lib.utils.paths import cache_dir

from .background import _add_noise, _background, _draw_distractor
from .config import GENERATOR_VERSION, CaptionConfig, _rng, config_hash
from .files import _materialise, _run_chunks
from .pictograms import describe, get_spec, prompt_name, sketch_object, with_article

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
