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

The rooms: :mod:`~trm_lib.synth.config` (configs, cache keys, random streams),
:mod:`~trm_lib.synth.background` and :mod:`~trm_lib.synth.layout` (drawing a
scene), :mod:`~trm_lib.synth.captions` (the corpus), :mod:`~trm_lib.synth.files`
(chunked world files); this module generates and loads the world and re-exports their names.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from trm_lib.config.run_config import ConfigError
from trm_lib.datasets import register
from trm_lib.datasets.base import DatasetError, MultiLabelDataset, read_generic, write_generic
from trm_lib.datasets.classes import VOC_CLASSES, voc2007_full_labels
from trm_lib.utils.io import atomic_write, read_json, sha256_file, write_json
from trm_lib.utils.paths import cache_dir

from .captions import CAPTION_TEMPLATES, ensure_captions, load_captions, render_caption_sample
from .config import GENERATOR_VERSION, CaptionConfig, WorldConfig, config_hash
from .files import _materialise, _run_chunks, default_workers
from .layout import render_scene, render_world_image
from .pictograms import prompt_name

_SPLIT_ROWS = {"train": "trainval", "test": "test"}  # SynthScenes split -> VOC2007 label matrix


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
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise DatasetError(f"synthscenes: option workers must be an integer >= 1 (or null for "
                           f"the available cores), got {workers!r}")
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

