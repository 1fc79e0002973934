"""What a TinyCLIP pre-training is (:class:`PretrainConfig`, the shipped per-model defaults)
and where its result lives (``cache_dir()/tinyclip/<model>-<config hash>/``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from trm_lib.config.run_config import ConfigError, require
from trm_lib.utils.io import stable_hash
from trm_lib.utils.paths import cache_dir

# Bump when the training code changes what a given config produces (part of the cache key).
PRETRAIN_VERSION = "1"
WEIGHTS_FILE = "open_clip_model.safetensors"
MANIFEST = "pretrain.json"
ZERO_SHOT_TEMPLATE = "a photo of a {}."
POSITIVES = ("classes", "caption", "none")
AUGMENTS = ("none", "flip", "shift_flip", "crop_flip")
CROP_MIN = 0.6  # smallest crop side (fraction of the image side) of the crop_flip augmentation


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines the pre-trained weights (hashed into the cache folder name).

    ``positives``: which pairs in a batch count as matches -- ``classes`` (same set of classes,
    whatever the colour words and template), ``caption`` (identical caption text) or ``none``
    (standard CLIP: only the pair itself).
    """

    model: str = "TinyCLIP-RN"
    seed: int = 0
    # caption corpus (trm_lib.synth.world.CaptionConfig)
    corpus_images: int = 12544  # 196 steps of 64 per epoch
    corpus_seed: int = 1
    corpus_image_size: int = 224
    two_object_prob: float = 0.25
    color_prob: float = 0.7
    corpus_clutter: float = 1.0
    corpus_distractors: float = 2.0
    corpus_min_size: float = 0.55
    # optimisation
    train_size: int = 128  # px the model is trained at (None-like 0: its native size)
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1.5e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    init_temperature: float = 0.07
    positives: str = "classes"
    augment: str = "shift_flip"
    # region-text loss: a second multi-positive CLIP loss on region_similarity() of the dense
    # tokens c_proj(v_proj(token + pos)), so single locations (not only the attention-pooled
    # whole) are text-aligned, as web CLIP's are (MaskCLIP) -- the property TRM-ML relies on
    region_weight: float = 1.0
    region_sharpness: float = 10.0

    def __post_init__(self) -> None:
        def need(name: str, ok: bool, what: str) -> None:
            require(f"PretrainConfig.{name}", ok, what, getattr(self, name))

        need("model", isinstance(self.model, str) and bool(self.model), "a model config name")
        for name in ("seed", "corpus_seed"):
            need(name, _is_int(getattr(self, name)) and getattr(self, name) >= 0, "an integer >= 0")
        for name in ("corpus_images", "epochs", "batch_size"):
            need(name, _is_int(getattr(self, name)) and getattr(self, name) >= 1,
                 "an integer >= 1")
        need("warmup_steps", _is_int(self.warmup_steps) and self.warmup_steps >= 0,
             "an integer >= 0")
        need("corpus_image_size", _is_int(self.corpus_image_size)
             and 32 <= self.corpus_image_size <= 1024, "an integer in [32, 1024]")
        need("train_size", _is_int(self.train_size) and (self.train_size == 0
             or 32 <= self.train_size <= 1024), "0 (native) or an integer in [32, 1024]")
        for name, lo, hi in (("two_object_prob", 0, 1), ("color_prob", 0, 1),
                             ("corpus_clutter", 0, 2), ("corpus_distractors", 0, 20),
                             ("corpus_min_size", 0.1, 0.9)):  # CaptionConfig's ranges
            need(name, _is_num(getattr(self, name)) and lo <= getattr(self, name) <= hi,
                 f"a number in [{lo}, {hi}]")
        need("lr", _is_num(self.lr) and self.lr > 0, "a number > 0")
        need("region_weight", _is_num(self.region_weight) and self.region_weight >= 0,
             "a number >= 0")
        need("region_sharpness", _is_num(self.region_sharpness) and self.region_sharpness > 0,
             "a number > 0")
        need("weight_decay", _is_num(self.weight_decay) and self.weight_decay >= 0,
             "a number >= 0")
        need("init_temperature", _is_num(self.init_temperature)
             and 0.005 <= self.init_temperature <= 1, "a number in [0.005, 1]")
        need("positives", self.positives in POSITIVES, f"one of {list(POSITIVES)}")
        need("augment", self.augment in AUGMENTS, f"one of {list(AUGMENTS)}")
        if self.corpus_images < self.batch_size:
            raise ConfigError(f"PretrainConfig.batch_size ({self.batch_size}) must not exceed "
                              f"corpus_images ({self.corpus_images}): no full batch")

    def caption_config(self) -> Any:
        from trm_lib.synth.world import CaptionConfig

        return CaptionConfig(n_images=self.corpus_images, image_size=self.corpus_image_size,
                             seed=self.corpus_seed, two_object_prob=self.two_object_prob,
                             color_prob=self.color_prob, clutter=self.corpus_clutter,
                             distractors=self.corpus_distractors,
                             min_size=self.corpus_min_size)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


# Per-model defaults: the configs the project ships (ensure_tinyclip(name) uses these).
DEFAULT_CONFIGS: dict[str, PretrainConfig] = {
    "TinyCLIP-RN": PretrainConfig(),
}


def default_config(model_name: str = "TinyCLIP-RN") -> PretrainConfig:
    """The shipped pre-training config for ``model_name`` (any other open_clip name gets the
    TinyCLIP-RN recipe with that model)."""
    return DEFAULT_CONFIGS.get(model_name, replace(PretrainConfig(), model=model_name))


# ---------------------------------------------------------------------------------------------
# Model configs
# ---------------------------------------------------------------------------------------------

def model_config(name: str) -> dict[str, Any]:
    """The open_clip config dict of ``name`` (our JSONs are registered first)."""
    import open_clip

    from trm_lib.backbone.clip import register_model_configs

    register_model_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ConfigError(f"PretrainConfig.model {name!r} is not an open_clip model config "
                          f"(tiny configs live in trm_lib/model_configs)")
    return cfg


def config_hash(cfg: PretrainConfig) -> str:
    """Short hash of everything that determines the weights: the pre-training config, the model
    architecture, the caption corpus config (with its generator version) and this code's
    version. Names the cache folder."""
    from trm_lib.synth.world import config_hash as corpus_hash

    payload = {"version": PRETRAIN_VERSION, "config": asdict(cfg),
               "model_cfg": model_config(cfg.model), "corpus": corpus_hash(cfg.caption_config())}
    return stable_hash(payload, 10)


def tinyclip_dir(cfg: PretrainConfig | None = None) -> Path:
    """Where the cached weights for ``cfg`` live (whether or not they exist yet)."""
    cfg = cfg or default_config()
    return cache_dir() / "tinyclip" / f"{cfg.model}-{config_hash(cfg)}"
