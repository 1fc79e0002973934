"""Dataclass configs with YAML in/out, dotted ``key=value`` overrides and validation.

One :class:`RunConfig` describes a run completely (data, backbone, method, training). Every
guessed choice (marked *choice* in ``docs/METHOD_CHOICES.md``) is a field of :class:`MethodConfig`
with the documented default, so an ablation is a one-line override such as ``method.kd=none``.
Defaults are sized for the embedded SynthScenes + TinyCLIP world on a 2-core laptop; the paper's
real-data settings ship as presets (``trm_lib/presets/*.yaml``).
"""

from __future__ import annotations

import math
import os
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from trm_lib.utils.errors import ConfigError

from .yaml_safe import YAML_BYTES, YAML_NODE_BUDGET, read_yaml  # noqa: F401  (re-exported)

#: ``method.kd`` values: region → query distillation forms (:func:`trm_lib.core.losses.distillation_loss`)
KD_FORMS = ("ensemble", "cosine", "mse", "kl", "none")
#: method.loss: how unknown entries enter the classification loss
SP_LOSSES = ("partial", "an", "ll_r", "em")

#: named pseudo-label forms (source × soft/hard) for studies: the overrides each one sets
PSEUDO_FORMS: dict[str, dict[str, object]] = {
    "memory_soft": {"method.pseudo_source": "memory", "method.pseudo_soft": True},
    "memory_hard": {"method.pseudo_source": "memory", "method.pseudo_soft": False},
    "prototype_hard": {"method.pseudo_source": "prototype", "method.pseudo_soft": False},
    "prototype_soft": {"method.pseudo_source": "prototype", "method.pseudo_soft": True},
}


@dataclass
class DataConfig:
    dataset: str = "synthscenes"  # registry name (trm_lib.datasets.load)
    root: str | None = None  # None: the embedded world in the cache (generated on demand)
    protocol: str = "proportion"  # proportion (A) | single_positive (B) | full
    proportion: float = 0.1  # protocol A: probability of keeping each label entry
    mask_seed: int = 0  # seed of the label mask (protocol A/B)
    val_fraction: float = 0.1  # held-out validation split carved from train (model selection)
    split_seed: int = 0
    train_split: str = "train"
    test_split: str = "test"
    max_train: int | None = None  # take the first N training images (smoke runs)
    max_test: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # loader-specific options

    RANGES: ClassVar[dict[str, str]] = {
        "proportion": "(0, 1]", "mask_seed": "[0, inf)", "val_fraction": "[0, 0.5)",
        "split_seed": "[0, inf)", "max_train": "[1, inf)", "max_test": "[1, inf)"}

    def validate(self) -> None:
        check_ranges(self, "data")
        _choice("data.protocol", self.protocol, ("proportion", "single_positive", "full"))
        for name in ("dataset", "train_split", "test_split"):
            _nonempty(f"data.{name}", getattr(self, name))
        if self.root is not None:
            _nonempty("data.root", self.root, "(null = the loader's default)")


@dataclass
class BackboneConfig:
    model: str = "TinyCLIP-RN"  # open_clip model name (tiny configs are registered by trm_lib)
    pretrained: str | None = "tinyclip"  # tag | weights file | local-dir:PATH | tinyclip | None
    image_size: int | None = None  # None: the model's native size
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    batch_size: int = 128  # feature extraction batch size
    cache_raw: bool = False  # also cache the unprojected dense map (needed for method.kv_source=raw)

    # image_size 0 is refused rather than read as "native" (null says that explicitly)
    RANGES: ClassVar[dict[str, str]] = {"image_size": "[1, inf)", "batch_size": "[1, inf)"}

    def validate(self) -> None:
        check_ranges(self, "backbone", {"image_size": "null = the model's native size"})
        _choice("backbone.precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        _nonempty("backbone.model", self.model)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ConfigError("backbone.templates must be non-empty and each contain '{}'")


@dataclass
class MethodConfig:
    name: str = "trm_ml"  # a registered method: trm_lib.core.list_methods(), checked at build
    # --- TRM-ML head (docs/METHOD_CHOICES.md: the head's rows; docs/DESIGN.md) ---
    query_init: str = "text"  # [choice] text | random
    num_heads: int = 8  # [choice]
    num_layers: int = 1  # [choice]
    mlp_hidden: int = 2  # MLP hidden width as a multiple of the embedding dim
    dropout: float = 0.0
    kv_source: str = "projected"  # [choice] keys/values from projected tokens F~ or raw F
    matching: str = "region"  # region (one-to-one text-region) | image (text-image ablation)
    inference: str = "query"  # [choice] query | query+region (average with the region branch)
    attn_init: str = "clip"  # [choice] clip (W_q, W_k start as identity: CLIP's text-pixel map) | random
    # [choice] False: Z = MLP(Q^) as in the paper's figure; True: Z = Q^ + MLP(Q^), starting as
    # text-region zero-shot. False won on the observed val split at p = 0.1 / 0.5 / 0.9
    # (docs/METHOD_CHOICES.md)
    mlp_residual: bool = False
    logit_scale_init: float = math.log(50.0)  # [lineage] ln 50
    learn_logit_scale: bool = True
    learn_text_context: bool = False  # [choice] CoOp-style learnable context for class texts
    # --- losses (docs/METHOD_CHOICES.md: the loss rows) ---
    cls_loss: str = "asl"  # asl | bce (both on observed entries only)
    asl_gamma_pos: float = 1.0
    asl_gamma_neg: float = 2.0
    asl_clip: float = 0.05
    # [choice] how unknown entries enter the classification loss (every method; SP_LOSSES):
    # partial = not at all (the lineage's); an = assumed negatives of weight an_neg_weight
    # (Cole et al. 2021); ll_r = an, minus the largest-loss assumed negatives, ll_delta more of
    # them per epoch (Kim et al. 2022); em = observed BCE + entropy maximisation of the unknowns
    # with weight em_weight (Zhou et al. 2022; BCE whatever cls_loss says)
    loss: str = "partial"
    an_neg_weight: float = 1.0  # 1: AN; 1/(C-1): weak negatives (WAN)
    label_smoothing: float = 0.0  # epsilon: targets 1-eps / eps as Cole et al.'s AN-LS (bce only)
    ll_delta: float = 0.01  # LL-R: rejection rate added per epoch (a share as ll_r_share says)
    ll_max_rate: float = 0.5  # LL-R: at most this fraction rejected
    # LL-R: the rate is a share of all | assumed_negatives. all = snucml/LargeLossMatters:
    # ceil(rate * B * C) entries, taken among the unknown ones; assumed_negatives = ceil(rate *
    # n_unknown) (this package's earlier rule; docs/METHOD_CHOICES.md)
    ll_r_share: str = "all"
    em_weight: float = 0.1  # EM: alpha of the entropy term
    # [choice] ensemble | cosine | mse | kl | none (KD_FORMS). ensemble: on unknown entries the
    # query branch learns the mean of its own and the calibrated region branch's probabilities;
    # chosen with alpha on the observed val split at p = 0.1 and 0.5, 3 seeds
    # (docs/METHOD_CHOICES.md)
    kd: str = "ensemble"
    kd_weight: float = 1.0  # alpha
    mcl: bool = True  # multimodal contrastive learning
    mcl_weight: float = 0.01  # beta (chosen by sweep on held-out split, docs/METHOD_CHOICES.md)
    mcl_temp_proto: float = 0.07
    mcl_temp_feat: float = 0.2
    memory_size: int = 64  # features kept per class in the memory bank
    # --- prototypes and pseudo-labels (docs/METHOD_CHOICES.md, their rows) ---
    pseudo: bool = True
    # [choice] what scores an unknown entry: memory = its region feature's k nearest observed
    # positives minus negatives of the class in an instance memory bank, calibrated to a
    # probability on the observed entries; prototype = softmax over classes of the mean
    # (visual prototype, text) cosine of its query feature (pseudo_score, pseudo_temp).
    # memory + soft beat prototype + hard and no pseudo-labels on the val split at p = 0.1
    # (docs/METHOD_CHOICES.md)
    pseudo_source: str = "memory"
    # [choice] soft: unknown entries learn the score itself (KL, weight pseudo_weight); hard:
    # score >= pseudo_high -> +1, <= pseudo_low -> -1 in the classification loss. The thresholds
    # always define the logged pseudo-label precision / recall
    pseudo_soft: bool = True
    pseudo_bank: int = 512  # images kept per class and polarity in the instance memory
    pseudo_k: int = 5  # neighbours per polarity of the memory score
    proto_gate: float = 0.8  # confidence gate sigma(s) for entering the memory bank
    proto_update: str = "ema"  # [choice] ema | overwrite
    proto_momentum: float = 0.9
    pseudo_score: str = "softmax_mean"  # [choice] softmax over classes of mean(visual, text) cos
    pseudo_temp: float = 0.07
    pseudo_high: float = 0.9
    pseudo_low: float = 0.02
    pseudo_warmup: int = 2  # epochs before pseudo-labels start
    # soft: weight of the soft pseudo-label term; hard: of pseudo-labelled entries in L_cls
    pseudo_weight: float = 1.0
    # [choice] hard pseudo-labels: a pseudo-positive also needs the classifier's sigma(s) >= 0.5
    # (and a pseudo-negative sigma(s) < 0.5); True won on the observed val split at p = 0.1 for
    # seeds 0, 1 and 2 with prototype + hard (docs/METHOD_CHOICES.md)
    pseudo_agree: bool = True
    # --- DualCoOp-style baseline ---
    n_ctx: int = 16
    # [choice] words that start the (positive) learnable context, CoOp's "a photo of a"; their
    # token count must equal n_ctx. "" = N(0, 0.02) vectors as in CoOp's random init
    ctx_init: str = ""
    # [choice] where DualCoOp's negative context starts: random (N(0, 0.02)) | positive (a copy
    # of the positive context, so t- = t+ and every logit s+ - s- starts at 0; the first steps
    # then separate the pair along each class's attended region features)
    neg_ctx_init: str = "random"
    class_specific_ctx: bool = True
    # [choice] DualCoOp's logit = s+ - s- (lineage: none) or, with zero_shot, plus lambda times
    # zero-shot CLIP's cosine cos(global, t_c), trained jointly (lowers val and test); with
    # zero_shot_score the pair trains on s+ - s- alone (the lineage's loss) and the scores add
    # w * lambda cos(global, t_c), the one weight w learned on the scored logit (the fidelity
    # preset's choice, docs/METHOD_CHOICES.md)
    dualcoop_prior: str = "none"

    RANGES: ClassVar[dict[str, str]] = {
        "num_heads": "[1, inf)", "num_layers": "[1, inf)", "mlp_hidden": "[1, inf)",
        "dropout": "[0, 1)", "logit_scale_init": "(-inf, inf)", "asl_gamma_pos": "[0, inf)",
        "asl_gamma_neg": "[0, inf)", "asl_clip": "[0, 1)", "kd_weight": "[0, inf)",
        "mcl_weight": "[0, inf)", "mcl_temp_proto": "(0, inf)", "mcl_temp_feat": "(0, inf)",
        "memory_size": "[0, inf)", "pseudo_bank": "[1, inf)", "pseudo_k": "[1, inf)",
        "proto_gate": "[0, 1]", "proto_momentum": "[0, 1)", "pseudo_temp": "(0, inf)",
        "pseudo_high": "[0, 1]", "pseudo_low": "[0, 1]", "pseudo_warmup": "[0, inf)",
        "pseudo_weight": "[0, inf)", "n_ctx": "[1, inf)", "an_neg_weight": "[0, inf)",
        "label_smoothing": "[0, 1)", "ll_delta": "[0, 1]", "ll_max_rate": "[0, 1]",
        "em_weight": "[0, inf)"}

    def validate(self) -> None:
        check_ranges(self, "method")
        # method.name is checked where the method is built (trm_lib.core.METHODS names the valid
        # ones): a config never imports the method implementations
        _nonempty("method.name", self.name)
        _choice("method.query_init", self.query_init, ("text", "random"))
        _choice("method.attn_init", self.attn_init, ("clip", "random"))
        _choice("method.kv_source", self.kv_source, ("projected", "raw"))
        _choice("method.matching", self.matching, ("region", "image"))
        _choice("method.inference", self.inference, ("query", "query+region"))
        _choice("method.cls_loss", self.cls_loss, ("asl", "bce"))
        _choice("method.loss", self.loss, SP_LOSSES)
        _choice("method.ll_r_share", self.ll_r_share, ("all", "assumed_negatives"))
        if self.label_smoothing > 0 and self.cls_loss != "bce":
            raise ConfigError("method.label_smoothing needs method.cls_loss=bce")
        _choice("method.kd", self.kd, KD_FORMS)
        _choice("method.proto_update", self.proto_update, ("ema", "overwrite"))
        _choice("method.pseudo_score", self.pseudo_score, ("softmax_mean", "cosine_mean"))
        _choice("method.pseudo_source", self.pseudo_source, ("memory", "prototype"))
        _choice("method.neg_ctx_init", self.neg_ctx_init, ("random", "positive"))
        _choice("method.dualcoop_prior", self.dualcoop_prior,
                ("none", "zero_shot", "zero_shot_score"))
        if not (0.0 <= self.pseudo_low < self.pseudo_high <= 1.0):
            raise ConfigError(
                f"method.pseudo_low < method.pseudo_high required in [0, 1], got "
                f"{self.pseudo_low}, {self.pseudo_high}")
        if not 1 <= self.pseudo_k <= self.pseudo_bank:
            raise ConfigError(f"method.pseudo_k must be in [1, method.pseudo_bank], got "
                              f"pseudo_k={self.pseudo_k}, pseudo_bank={self.pseudo_bank}")


@dataclass
class TrainConfig:
    # embedded defaults chosen on the observed val split at p = 0.1, 0.5 and 0.9
    # (docs/METHOD_CHOICES.md): 12 epochs at lr 6e-4 (6 epochs under-train at p >= 0.5)
    epochs: int = 12
    batch_size: int = 64
    optimizer: str = "adamw"  # sgd | adamw
    lr: float = 6e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    scheduler: str = "cosine"  # cosine | constant
    use_cache: bool = True  # train on cached frozen features (no augmentation) or live images
    augment: str = "crop_flip"  # live images only: crop_flip | cutout | none
    amp: bool = True  # autocast on CUDA only
    # [choice] fp32 | bf16: bf16 autocasts the training steps on the CPU for the methods whose
    # `cpu_bf16` is set, those measured faster under it (`python -m trm_lib bench train`:
    # TRM-ML 1.45x on an AVX-512-BF16 EPYC, DualCoOp 0.75x, so not it); off by default so fp32
    # numbers stay reproducible. On CUDA `amp` decides.
    precision: str = "fp32"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    num_workers: int = 0
    gpu_decode: bool = False  # decode JPEGs on the GPU (nvJPEG) for live images and feature caches
    out_dir: str | None = None  # None: runs/<auto name>
    resume: bool = True
    select_metric: str = "mAP"  # metric on the validation split for model selection
    # [choice] which epoch a run reports: val (best select_metric on the held-out split) | last.
    # last is the embedded default: at p = 0.1 the partially labelled val split (501 images)
    # holds ~75 observed positives, too few to rank epochs (docs/METHOD_CHOICES.md)
    select: str = "last"
    # score the test split every k epochs (0: only where needed); it is always scored at the last
    # epoch and at the selected one (k > 0: at every epoch validation selects on the way; k = 0:
    # once, from best.pt, when the run ends). test_oracle = best of the scored epochs, so
    # k > 1 trades the oracle's resolution for time (test scoring is ~1/3 of a cached-feature
    # TRM-ML epoch on CPU)
    test_every: int = 1
    progress: bool = True

    RANGES: ClassVar[dict[str, str]] = {
        "epochs": "[0, inf)", "batch_size": "[1, inf)", "lr": "(0, inf)", "momentum": "[0, 1)",
        "weight_decay": "[0, inf)", "warmup_epochs": "[0, inf)", "warmup_lr": "(0, inf)",
        "seed": "[0, inf)", "num_workers": "[0, inf)", "test_every": "[0, inf)"}

    def validate(self) -> None:
        check_ranges(self, "train")
        _choice("train.optimizer", self.optimizer, ("sgd", "adamw"))
        _choice("train.scheduler", self.scheduler, ("cosine", "constant"))
        _choice("train.select", self.select, ("val", "last"))
        _choice("train.augment", self.augment, ("crop_flip", "cutout", "none"))
        _choice("train.precision", self.precision, ("fp32", "bf16"))
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(f"train.device must be auto, cpu, mps, cuda or cuda:N, got "
                              f"{self.device!r}")
        _nonempty("train.select_metric", self.select_metric)
        if self.out_dir is not None:
            _nonempty("train.out_dir", self.out_dir, "(null = runs/<auto name>)")
        if self.gpu_decode and self.device == "cpu":
            raise ConfigError("train.gpu_decode=true needs a CUDA device, but train.device='cpu' "
                              "(use device auto/cuda, or gpu_decode=false)")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        for section in (self.data, self.backbone, self.method, self.train):
            section.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            from trm_lib.utils.io import atomic_write

            with atomic_write(path) as fh:
                fh.write(text)
        return text

    def flat(self) -> dict[str, Any]:
        """``{"method.kd": "cosine", ...}`` for results tables."""
        out: dict[str, Any] = {}
        for sec, values in self.to_dict().items():
            for key, value in values.items():
                out[f"{sec}.{key}"] = value
        return out

    def with_overrides(self, overrides: dict[str, Any] | list[str] | None) -> RunConfig:
        """Return a copy with dotted overrides applied (``{"method.kd": "none"}`` or
        ``["method.kd=none"]``). Values of the list form are parsed as YAML scalars (``"24"`` →
        24); dict values are taken as given and must already have the field's type."""
        cfg = from_dict(self.to_dict())
        if not overrides:
            return cfg
        items = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        for key, value in items.items():
            _set_dotted(cfg, key, value)
        return cfg.validate()


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form section.key=value")
        key, raw = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw != "" else None
    return out


_SECTIONS = {"data": DataConfig, "backbone": BackboneConfig, "method": MethodConfig,
             "train": TrainConfig}


def _coerce(where: str, value: Any, hint: Any) -> Any:
    """Coerce a YAML/CLI value to the annotated type, or raise a ConfigError naming the field."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args or hint is Any:
            return None
        raise ConfigError(f"{where} may not be null")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _coerce(where, value, inner[0]) if len(inner) == 1 else value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or int(value) != value:  # .inf / .nan: no integer
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    return value


def _section_from_dict(name: str, cls: type, values: dict[str, Any], source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section '{name}' must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {', '.join(f'{name}.{u}' for u in unknown)}"
                          f" (known: {', '.join(sorted(known))})")
    kwargs = {k: _coerce(f"{source}: {name}.{k}", v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def from_dict(values: dict[str, Any], source: str = "config") -> RunConfig:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    unknown = sorted(set(values) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown} (known: {sorted(_SECTIONS)})")
    parts = {name: _section_from_dict(name, cls, values.get(name) or {}, source)
             for name, cls in _SECTIONS.items()}
    return RunConfig(**parts)


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read a YAML run config; every error names the file and the field."""
    path = Path(path)
    cfg = from_dict(read_yaml(path), source=str(path))
    try:
        return cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def presets_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "presets"


def preset_path(name: str, what: str = "--preset") -> Path:
    """``presets/<name>.yaml``; a preset is a *name* (``voc2007-rn101``): an empty one, or a
    path such as ``../../x``, is a ConfigError (a file is given with ``--config`` / ``--spec``),
    so a preset can never read a file outside ``presets/``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)) or ".." in str(name):
        raise ConfigError(f"{what} {name!r}: a preset is a name from {presets_dir()} (e.g. "
                          f"synthscenes-tiny); give a file with --config / --spec instead")
    return presets_dir() / f"{name}.yaml"


def load_preset(name: str) -> RunConfig:
    path = preset_path(name)
    if not path.exists():
        known = sorted(p.stem for p in presets_dir().glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(known) or 'none'})")
    return load_config(path)


def _set_dotted(cfg: RunConfig, key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in _SECTIONS:
        raise ConfigError(f"override key {key!r} must be section.field with section in "
                          f"{sorted(_SECTIONS)}")
    section = getattr(cfg, parts[0])
    hints = typing.get_type_hints(type(section))
    if parts[1] not in {f.name for f in fields(section)}:
        raise ConfigError(f"unknown field {key!r} (known: "
                          f"{', '.join(f.name for f in fields(section))})")
    setattr(section, parts[1], _coerce(key, value, hints[parts[1]]))


def _choice(where: str, value: Any, allowed: tuple[str, ...]) -> None:
    require(where, value in allowed, f"one of {list(allowed)}", value)


def _nonempty(where: str, value: Any, note: str = "") -> None:
    require(where, isinstance(value, str) and value.strip() != "",
            f"a non-empty string{' ' + note if note else ''}", value)


def require(where: str, ok: bool, what: str, value: Any) -> None:
    """The one check of every config class in the package (run, world, pre-training configs):
    ``where`` (the dotted field) must be ``what``, else a ConfigError naming both."""
    if not ok:
        raise ConfigError(f"{where} must be {what}, got {value!r}")


_INTERVAL = re.compile(r"([\[(])\s*(-?inf|-?[\d.e+-]+)\s*,\s*(-?inf|-?[\d.e+-]+)\s*([\])])")


def check_range(where: str, value: Any, interval: str, note: str = "") -> None:
    """``value`` must be a finite number in ``interval`` (``"[0, 1)"``, ``"(0, inf)"``): NaN and
    inf are always refused, so a typo never reaches the optimizer. ``None`` passes (optional
    fields are typed ``X | None``; the type check refuses null elsewhere)."""
    if value is None:
        return
    m = _INTERVAL.fullmatch(interval.strip())
    if m is None:  # pragma: no cover - a programming error in a RANGES table
        raise ValueError(f"bad interval {interval!r} for {where}")
    lo, hi = float(m[2]), float(m[3])
    ok = (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
          and (lo <= value if m[1] == "[" else lo < value)
          and (value <= hi if m[4] == "]" else value < hi))
    if math.isinf(hi) and math.isinf(lo):
        what = "a finite number"
    elif math.isinf(hi):
        what = f"{'>=' if m[1] == '[' else '>'} {m[2]}"
    else:
        what = f"in {interval}"
    require(where, ok, what + (f" ({note})" if note else ""), value)


def check_ranges(section: Any, prefix: str, notes: dict[str, str] | None = None) -> None:
    """Check every field listed in ``section.RANGES``; a test keeps every numeric field listed."""
    for name, interval in type(section).RANGES.items():
        check_range(f"{prefix}.{name}", getattr(section, name), interval,
                    (notes or {}).get(name, ""))


def replace(cfg: RunConfig, **sections: Any) -> RunConfig:
    """``replace(cfg, method={"kd": "none"})`` — a convenience over with_overrides."""
    flat = {f"{s}.{k}": v for s, vals in sections.items() for k, v in vals.items()}
    return cfg.with_overrides(flat)


__all__ = ["KD_FORMS", "SP_LOSSES", "BackboneConfig", "ConfigError", "DataConfig",
           "MethodConfig", "RunConfig", "TrainConfig", "check_range", "check_ranges", "from_dict",
           "load_config", "load_preset", "parse_overrides", "presets_dir", "read_yaml", "replace",
           "require"]
