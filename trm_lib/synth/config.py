"""The configs of SynthScenes and its caption corpus, their cache keys, and the per-item
random streams (a pure function of seed, stream and index: any worker order draws the same).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trm_lib.config.run_config import ConfigError, require
from trm_lib.datasets.classes import VOC_CLASSES
from trm_lib.utils.io import stable_hash

from .pictograms import Rand

# Bump when the drawing or layout code changes what a given config produces: it is part of every
# cache key, so stale worlds and corpora are never reused.
GENERATOR_VERSION = "2"


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

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
        require(f"{c}.image_size", _is_int(self.image_size) and 32 <= self.image_size <= 1024,
               "an integer in [32, 1024]", self.image_size)
        for name in ("n_train", "n_test"):
            v = getattr(self, name)
            require(f"{c}.{name}", v is None or (_is_int(v) and v >= 1),
                    "None or an integer >= 1", v)
        require(f"{c}.seed", _is_int(self.seed) and self.seed >= 0, "an integer >= 0", self.seed)
        require(f"{c}.jpeg_quality", _is_int(self.jpeg_quality) and 1 <= self.jpeg_quality <= 100,
               "an integer in [1, 100]", self.jpeg_quality)
        for name, lo, hi in (("min_visible", 0.05, 1.0), ("small_object_prob", 0.0, 1.0),
                             ("multi_instance", 0.0, 2.0), ("distractors", 0.0, 20.0),
                             ("clutter", 0.0, 2.0)):
            v = getattr(self, name)
            require(f"{c}.{name}", _is_num(v) and lo <= v <= hi, f"a number in [{lo}, {hi}]", v)
        require(f"{c}.max_objects", _is_int(self.max_objects) and self.max_objects >= 1,
               "an integer >= 1", self.max_objects)

    def limit(self, split: str) -> int | None:
        return {"train": self.n_train, "test": self.n_test}.get(split)


#: named world difficulties: the WorldConfig knobs a component should depend on (smaller and
#: more occluded objects and more distractors / clutter make regions matter; more instances per
#: class give the instance memory and the prototypes more to agree on). ``default`` is the
#: embedded world; each value is a ``data.options`` mapping (add n_train / n_test for a tiny one).
DIFFICULTY: dict[str, dict[str, float]] = {
    "easy": {"small_object_prob": 0.0, "min_visible": 1.0, "distractors": 0.0, "clutter": 0.0,
             "multi_instance": 0.5},
    "default": {},
    "small": {"small_object_prob": 0.7},
    "occluded": {"min_visible": 0.3, "max_objects": 12},
    "cluttered": {"distractors": 10.0, "clutter": 2.0},
    "hard": {"small_object_prob": 0.6, "min_visible": 0.3, "distractors": 8.0, "clutter": 2.0,
             "multi_instance": 2.0, "max_objects": 12},
}


def difficulty_options(name: str, **extra: Any) -> dict[str, Any]:
    """The ``data.options`` of world difficulty ``name`` (:data:`DIFFICULTY`) plus ``extra``
    (e.g. ``n_train=400`` for a tiny world), validated as a :class:`WorldConfig`."""
    if name not in DIFFICULTY:
        raise ConfigError(f"unknown world difficulty {name!r} (known: {', '.join(DIFFICULTY)})")
    options = {**DIFFICULTY[name], **extra}
    WorldConfig(**options)  # one clear error naming the field
    return options


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
        require(f"{c}.n_images", _is_int(self.n_images) and self.n_images >= 1, "an integer >= 1",
               self.n_images)
        require(f"{c}.image_size", _is_int(self.image_size) and 32 <= self.image_size <= 1024,
               "an integer in [32, 1024]", self.image_size)
        require(f"{c}.seed", _is_int(self.seed) and self.seed >= 0, "an integer >= 0", self.seed)
        require(f"{c}.jpeg_quality", _is_int(self.jpeg_quality) and 1 <= self.jpeg_quality <= 100,
               "an integer in [1, 100]", self.jpeg_quality)
        for name, lo, hi in (("two_object_prob", 0.0, 1.0), ("color_prob", 0.0, 1.0),
                             ("clutter", 0.0, 2.0), ("distractors", 0.0, 20.0),
                             ("min_size", 0.1, 0.9)):
            v = getattr(self, name)
            require(f"{c}.{name}", _is_num(v) and lo <= v <= hi, f"a number in [{lo}, {hi}]", v)
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(x) for x in self.classes))
            require(f"{c}.classes", len(self.classes) >= 2 and len(set(self.classes))
                   == len(self.classes), "None or >= 2 distinct class names", self.classes)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes) if self.classes is not None else list(VOC_CLASSES)


def config_hash(cfg: WorldConfig | CaptionConfig, extra: Any = None) -> str:
    """Short stable hash of a config (plus the generator version): the cache key."""
    payload = {"kind": type(cfg).__name__, "version": GENERATOR_VERSION, "config": asdict(cfg),
               "extra": extra}
    return stable_hash(payload, 10)


def _rng(seed: int, stream: str, index: int) -> Rand:
    """Per-item random stream from (seed, stream, index): order- and worker-independent."""
    code = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")
    return Rand(np.random.default_rng(np.random.SeedSequence([seed, code, index])))
