"""The one trainer and the one evaluator for every method (TRM-ML and the baselines).

Every method goes through :func:`train`: same data, same label mask, same validation split,
same features, same schedule, same evaluator. That is what makes a comparison fair, so nothing
here knows which method it runs (see :mod:`trm_lib.methods` for the contract).

Data flows one way::

    dataset ──labels.observed_labels──▶ {1,-1,0} mask on the whole training set
       │                                 └─ labels.train_val_split ─▶ train rows | val rows
       └─ frozen backbone ─▶ feature batches (cache, or live images with augmentation)
                               └─ method ─▶ loss (train rows) / scores ─▶ metrics

Model selection is honest: the epoch is chosen on a validation split carved from the training
set, whose labels are *as incomplete as the training labels*. Its mAP is computed on the observed
entries only (per class, rows whose entry is unknown are left out), because that is all a user
of partial labels has. Under protocol B (one positive per image, no observed negatives) that
would give every class an AP of 1, so there unknown entries count as negatives — the
"assume negative" estimate, biased low but the only informative one. The test split is scored
on full labels; ``test`` is the number *at the selected epoch*, ``test_oracle`` the best test
number over epochs (what the peers report, selected on test), labelled as such.

A run folder holds ``config.yaml``, ``history.csv`` (one row per epoch), ``last.pt`` (resume
point), ``best.pt`` (selected epoch), ``test_scores.npy`` (test probabilities at the selected
epoch) and, once finished, ``result.json``. Every file is written atomically; checkpoints load
with ``torch.load(weights_only=True)``.

Multi-GPU: ``torchrun --nproc_per_node=N -m trm_lib train ...`` runs N processes (one GPU each,
:mod:`trm_lib.distributed`) that compute what one process computes:

- ``train.batch_size`` stays the *global* batch: every rank draws the same (seed, epoch)
  permutation, cuts the same global batches and runs the method's forward on its contiguous
  ~``batch_size / N`` share. The learning-rate schedule and the number of steps do not change.
- The method's outputs are gathered (with a gradient path back to each rank's share) and every
  rank computes ``method.loss`` on the whole global batch, then gradients of
  ``method.trainable_parameters()`` are averaged over ranks. This, not
  ``DistributedDataParallel``, because TRM-ML's loss is not a sum of per-sample terms: the
  contrastive term compares all anchors of the batch, and the memory bank and pseudo-label
  buffer are updated from the batch inside ``loss``. A DDP-wrapped forward would give each
  rank its own batch statistics and its own memory state; here the loss value, the logs and
  all per-sample state are those of the single-process run (exact up to float summation order;
  method buffers are also re-broadcast from rank 0 after every epoch). Under DDP ``loss`` sees
  the label keys (``observed``, ``full``, ``index``) of the global batch; the feature tensors
  are not gathered (no method's loss reads them).
- Validation and test rows are split across ranks and the scores all-gathered, so the one
  evaluator runs on the full score matrix (on every rank, which keeps the selection state
  identical); only rank 0 prints and writes files. The run folder must be visible to every
  rank for a resume (one node: always).
- Not bit-identical to one process: dropout masks (each rank draws its own) and live-image
  augmentation (each rank's transforms draw from its own RNG stream) -- equal in distribution.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import __version__, distributed, labels, metrics
from .config import BackboneConfig, ConfigError, RunConfig, TrainConfig, from_dict
from .datasets import MultiLabelDataset
from .datasets import load as load_dataset
from .io import atomic_path, atomic_write, read_json, write_json
from .method_zoo import build_method
from .methods import Method, MethodContext
from .paths import git_revision, runs_dir

Batch = dict[str, torch.Tensor]
Log = Callable[[str], None] | None

# Config fields that do not change what a run computes: a resumed run may differ in these.
NON_RESULT_FIELDS = ("train.out_dir", "train.resume", "train.progress", "train.num_workers",
                     "backbone.batch_size", "train.test_every")
# train.test_every only decides on which extra epochs the test split is *scored*: training, the
# selected epoch and its test numbers are the same for every value (the selected epoch is always
# scored); only test_oracle's resolution changes. So runs that differ in it share a run folder.


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, mismatched checkpoint); the message says where."""


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    """What one run produced. ``metrics`` has the splits ``val`` (observed labels, selected
    epoch), ``test`` (full labels at the selected epoch — the honest number) and ``test_oracle``
    (full labels at the epoch with the best test mAP — the number the peers report)."""

    config: RunConfig
    history: pd.DataFrame
    metrics: dict[str, dict[str, float]]
    best_epoch: int
    oracle_epoch: int
    out_dir: Path
    wall_time: float
    per_class_ap: dict[str, float] = field(default_factory=dict)  # test AP per class, selected
    scores: np.ndarray | None = None  # test probabilities (N_test, C) at the selected epoch
    epochs_done: int = 0
    complete: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        m = self.metrics
        tag = "" if self.complete else f" (stopped after epoch {self.epochs_done})"
        return (f"{self.config.method.name}: best epoch {self.best_epoch}, "
                f"val mAP {_pct(m['val'].get('mAP'))}, test mAP {_pct(m['test'].get('mAP'))}, "
                f"test-oracle mAP {_pct(m['test_oracle'].get('mAP'))} (epoch {self.oracle_epoch})"
                f"{tag}; {self.wall_time:.1f}s; {self.out_dir}")


def load_result(out_dir: str | Path) -> RunResult:
    """Rebuild the :class:`RunResult` of a finished run from its folder (no computation)."""
    out_dir = Path(out_dir)
    info = read_json(out_dir / "result.json")
    scores_file = out_dir / "test_scores.npy"
    return RunResult(
        config=from_dict(info["config"], source=str(out_dir / "result.json")),
        history=pd.read_csv(out_dir / "history.csv"),
        metrics=info["metrics"], best_epoch=info["best_epoch"],
        oracle_epoch=info["oracle_epoch"], out_dir=out_dir, wall_time=info["wall_time"],
        per_class_ap=info["per_class_ap"],
        scores=np.load(scores_file) if scores_file.exists() else None,
        epochs_done=info["epochs_done"], complete=True, provenance=info["provenance"])


def provenance() -> dict[str, Any]:
    """Git revision (:func:`trm_lib.paths.git_revision`) and library versions."""
    import open_clip

    return {"git_rev": git_revision(), "versions": {"torch": torch.__version__,
                                                    "open_clip": open_clip.__version__,
                                                    "trm_lib": __version__}}


# ---------------------------------------------------------------------------------------------
# Seeds, devices, schedule
# ---------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a device; under ``torchrun`` ``auto``/``cuda`` mean the rank's GPU
    (:func:`trm_lib.distributed.local_device`)."""
    if name != "auto" and torch.device(name).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available (use 'auto' or 'cpu')")
    try:
        return distributed.local_device(name)
    except distributed.DistributedError as err:
        raise ConfigError(f"train.device: {err}") from None


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning rate of global iteration ``step`` (0-based): a constant warm-up at
    ``warmup_lr`` for ``warmup_epochs`` (the lineage's ConstantWarmupScheduler), then cosine
    from ``lr`` to 0 over the remaining iterations, or constant ``lr``."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.warmup_lr
    if cfg.scheduler == "constant":
        return cfg.lr
    rest = max(1, cfg.epochs * steps_per_epoch - warm)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(step - warm, rest) / rest))


def epoch_order(indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) only, so a resumed run
    sees exactly the batches of an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(np.asarray(indices))


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Data and feature sources
# ---------------------------------------------------------------------------------------------

@dataclass
class RunData:
    """Datasets and labels of a run. ``observed`` covers the whole training set (the mask is
    drawn once on it); ``train_idx`` / ``val_idx`` are rows of that training set."""

    train: MultiLabelDataset
    test: MultiLabelDataset
    observed: np.ndarray  # (N_train, C) {1,-1,0}
    train_idx: np.ndarray
    val_idx: np.ndarray

    def rows(self, split: str) -> tuple[MultiLabelDataset, np.ndarray]:
        """``(dataset, row indices)`` of ``split`` in {train, val, test}."""
        if split == "train":
            return self.train, self.train_idx
        if split == "val":
            return self.train, self.val_idx
        if split == "test":
            return self.test, np.arange(len(self.test))
        raise ValueError(f"split must be train, val or test, got {split!r}")


def _load_split(cfg: RunConfig, split: str, limit: int | None) -> MultiLabelDataset:
    d = cfg.data
    ds = load_dataset(d.dataset, d.root, split=split, **d.options)
    if limit is not None and limit < len(ds):
        ds = ds.subset(np.arange(limit))
    return ds


def prepare_data(cfg: RunConfig) -> RunData:
    """Load train/test, draw the observed labels on the whole training set, carve validation."""
    d = cfg.data
    train_ds = _load_split(cfg, d.train_split, d.max_train)
    test_ds = _load_split(cfg, d.test_split, d.max_test)
    if train_ds.class_names != test_ds.class_names:
        raise ConfigError(f"data: splits {d.train_split!r} and {d.test_split!r} of "
                          f"{d.dataset!r} have different class lists")
    observed = labels.observed_labels(train_ds, d.protocol, d.proportion, d.mask_seed)
    train_idx, val_idx = labels.train_val_split(len(train_ds), d.val_fraction, d.split_seed)
    return RunData(train_ds, test_ds, observed, train_idx, val_idx)


def _chunks(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [np.asarray(order[s:s + batch_size]) for s in range(0, len(order), batch_size)]


class CachedFeatures:
    """Feature batches read from a :class:`trm_lib.features.FeatureStore` (no augmentation)."""

    def __init__(self, store: Any):
        self.store = store

    def batches(self, order: np.ndarray, batch_size: int,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        return self.batches_from(_chunks(order, batch_size), generator)

    def batches_from(self, index_batches: Sequence[np.ndarray],
                     generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One feature batch per array of rows (an empty array gives an empty batch: a rank's
        share of a global batch smaller than the world)."""
        for idx in index_batches:
            idx = np.asarray(idx, dtype=np.int64)
            feats = dict(self.store.batch(idx))
            feats["index"] = torch.as_tensor(idx, dtype=torch.long)
            yield feats


class LiveFeatures:
    """Feature batches computed on the fly: decode, transform (augment for training), frozen
    backbone forward. Same dict as :class:`CachedFeatures`, so methods cannot tell.
    ``gpu_decode``: JPEGs decoded and transformed on the GPU (:mod:`trm_lib.decode`)."""

    def __init__(self, backbone: Any, dataset: MultiLabelDataset, transform: Callable,
                 device: torch.device, raw: bool, num_workers: int = 0,
                 gpu_decode: bool = False):
        self.backbone, self.dataset, self.transform = backbone, dataset, transform
        self.device, self.raw, self.num_workers = device, raw, num_workers
        self.gpu_decode = gpu_decode

    def batches(self, order: np.ndarray, batch_size: int,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        return self.batches_from(_chunks(order, batch_size), generator)

    def batches_from(self, index_batches: Sequence[np.ndarray],
                     generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One feature batch per array of rows (empty arrays give empty batches)."""
        from .decode import image_batches

        for images, idx in image_batches(self.dataset, self.transform, index_batches,
                                         device=self.device, gpu_decode=self.gpu_decode,
                                         num_workers=self.num_workers, generator=generator):
            if images is None:
                feats = self._empty()
            else:
                with torch.no_grad():
                    out = self.backbone.encode_images(images.to(self.device, non_blocking=True),
                                                      raw=self.raw)
                feats = {k: v.float() for k, v in out.items()}
            feats["index"] = idx.long()
            yield feats

    def _empty(self) -> Batch:
        b = self.backbone
        L = b.grid[0] * b.grid[1]
        feats = {"global": torch.zeros(0, b.embed_dim, device=self.device),
                 "dense": torch.zeros(0, L, b.embed_dim, device=self.device)}
        if self.raw:
            feats["dense_raw"] = torch.zeros(0, L, b.dense_dim, device=self.device)
        return feats


class Resources:
    """Frozen things shared by the runs of one process (an experiment grid): backbones,
    datasets and feature stores, keyed by their configuration. Features are also cached on disk
    by :mod:`trm_lib.features`; this saves re-loading them per run."""

    def __init__(self) -> None:
        self._backbones: dict[str, Any] = {}
        self._stores: dict[str, Any] = {}
        self._text: dict[str, torch.Tensor] = {}

    @staticmethod
    def _key(*parts: Any) -> str:
        return json.dumps(parts, sort_keys=True, default=str)

    def backbone(self, cfg: BackboneConfig, device: torch.device) -> Any:
        key = self._key(cfg.__dict__, str(device))
        if key not in self._backbones:
            from . import pretrain  # noqa: F401  registers backbone.pretrained="tinyclip"
            from .backbone import FrozenCLIP

            self._backbones[key] = FrozenCLIP.from_config(cfg, device)
        return self._backbones[key]

    def features(self, cfg: BackboneConfig, backbone: Any, dataset: MultiLabelDataset,
                 raw: bool, progress: bool, gpu_decode: bool = False) -> Any:
        key = self._key(cfg.__dict__, dataset.name, dataset.split, dataset.fingerprint(), raw,
                        gpu_decode)
        if key not in self._stores:
            from .features import compute_features

            self._stores[key] = compute_features(backbone, dataset, batch_size=cfg.batch_size,
                                                 raw=raw, progress=progress,
                                                 gpu_decode=gpu_decode)
        return self._stores[key]

    def text_embeddings(self, cfg: BackboneConfig, backbone: Any,
                        dataset: MultiLabelDataset) -> torch.Tensor:
        key = self._key(cfg.__dict__, dataset.class_names)
        if key not in self._text:
            with torch.no_grad():
                emb = backbone.encode_text(dataset.class_names, cfg.templates,
                                           prompt_names(dataset))
            self._text[key] = emb.detach().float()
        return self._text[key]


def prompt_names(dataset: MultiLabelDataset) -> Callable[[str], str] | None:
    """Class name → words used in prompts, from ``dataset.meta["prompt_names"]`` (a list aligned
    with the class names, as SynthScenes writes it, or a mapping); None keeps the names."""
    names = dataset.meta.get("prompt_names")
    if not names:
        return None
    if isinstance(names, dict):
        mapping = dict(names)
    else:
        if len(names) != dataset.num_classes:
            raise ValueError(f"{dataset.name}/{dataset.split}: meta['prompt_names'] has "
                             f"{len(names)} entries for {dataset.num_classes} classes")
        mapping = dict(zip(dataset.class_names, names))
    return lambda c: mapping.get(c, c)


def prompt_words(dataset: MultiLabelDataset) -> list[str]:
    """The words each class of ``dataset`` is prompted with (:func:`prompt_names` applied)."""
    names = prompt_names(dataset)
    return [names(c) if names else c for c in dataset.class_names]


@dataclass
class Session:
    """Everything a run needs besides the method: device, data, frozen backbone, feature
    sources and the :class:`MethodContext`. Built the same way by :func:`train` and
    :func:`load_run`, so a reloaded run sees exactly the features it was trained on."""

    cfg: RunConfig
    device: torch.device
    data: RunData
    backbone: Any
    ctx: MethodContext
    train_source: CachedFeatures | LiveFeatures  # training batches (augmented if live)
    eval_sources: dict[str, CachedFeatures | LiveFeatures]  # "train" / "test" datasets

    @classmethod
    def build(cls, cfg: RunConfig, resources: Resources | None = None,
              progress: bool = False) -> Session:
        cfg.validate()
        resources = resources or Resources()
        device = resolve_device(cfg.train.device)
        with distributed.main_first():  # rank 0 writes masks / generated worlds, then the rest
            data = prepare_data(cfg)
            backbone = resources.backbone(cfg.backbone, device)
        raw = cfg.backbone.cache_raw or cfg.method.kv_source == "raw"
        from .decode import use_gpu_decode

        gpu = use_gpu_decode(cfg.train.gpu_decode, device)
        if cfg.train.use_cache:
            sources = {name: CachedFeatures(resources.features(cfg.backbone, backbone, ds, raw,
                                                               progress, gpu))
                       for name, ds in (("train", data.train), ("test", data.test))}
            train_source: CachedFeatures | LiveFeatures = sources["train"]
        else:
            eval_tf = backbone.transform(train=False, augment="none")
            sources = {name: LiveFeatures(backbone, ds, eval_tf, device, raw,
                                          cfg.train.num_workers, gpu)
                       for name, ds in (("train", data.train), ("test", data.test))}
            train_source = LiveFeatures(
                backbone, data.train, backbone.transform(train=True, augment=cfg.train.augment),
                device, raw, cfg.train.num_workers, gpu)
        ctx = MethodContext(
            class_names=list(data.train.class_names),
            text_embeddings=resources.text_embeddings(cfg.backbone, backbone, data.train
                                                      ).to(device),
            embed_dim=backbone.embed_dim, dense_dim=backbone.dense_dim,
            grid=tuple(backbone.grid), num_train=len(data.train), backbone=backbone,
            prompt_names=prompt_words(data.train))
        return cls(cfg, device, data, backbone, ctx, train_source, sources)

    def batches(self, split: str = "test", indices: Sequence[int] | None = None,
                batch_size: int | None = None) -> Iterator[Batch]:
        """Evaluation feature batches (no augmentation, dataset order) of ``split`` rows, or of
        the given rows of that split's dataset."""
        dataset, rows = self.data.rows(split)
        if indices is not None:
            rows = np.asarray(indices, dtype=np.int64)
        source = self.eval_sources["test" if split == "test" else "train"]
        return source.batches(rows, batch_size or self.cfg.train.batch_size)


# ---------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------

def _to_device(batch: Batch, device: torch.device | None) -> Batch:
    if device is None:
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def eval_outputs(method: Method, batches: Iterable[Batch], device: torch.device | None = None,
                 amp: bool = False, then: Callable[[Any, Batch], Any] | None = None
                 ) -> Iterator[Any]:
    """``then(method(batch), batch)`` (or the output itself) of every batch, in eval mode without
    gradients; the method's previous mode comes back when the iteration ends or is abandoned.
    Shared by :func:`predict` and the analyses that need more of the output than the scores."""
    was_training = method.training
    method.eval()
    try:
        for batch in batches:
            batch = _to_device(batch, device)
            with torch.no_grad(), _autocast(batch["global"].device, amp):
                out = method(batch)
                yield out if then is None else then(out, batch)
    finally:
        method.train(was_training)


def predict(method: Method, batches: Iterable[Batch], device: torch.device | None = None,
            amp: bool = False) -> np.ndarray:
    """Scores ``method.scores(method(batch))`` of every batch, in eval mode, as one (N, C)
    float64 array (methods may return float64 probabilities so that confident images do not tie
    at 1.0; nothing here rounds them). The one inference path of the package."""
    out = [scores.detach().to(torch.float64).cpu()
           for scores in eval_outputs(method, batches, device, amp,
                                      then=lambda out, _batch: method.scores(out))]
    if not out:
        raise ValueError("predict: no batches to score")
    return torch.cat(out).numpy()


def predict_split(method: Method, session: Session, split: str,
                  amp: bool = False) -> np.ndarray:
    """:func:`predict` over all rows of ``split``; under ``torchrun`` each rank scores its
    contiguous share of the rows and the shares are all-gathered back into row order, so
    every rank holds the full (N, C) score matrix."""
    if not distributed.is_distributed():
        return predict(method, session.batches(split), session.device, amp)
    _, rows = session.data.rows(split)
    mine = distributed.shard_indices(rows)
    if len(mine):
        local = predict(method, session.batches(split, mine), session.device, amp)
    else:
        local = np.zeros((0, len(session.ctx.class_names)), dtype=np.float64)
    return distributed.all_gather_array(local)


def observed_metrics(scores: np.ndarray, observed: np.ndarray,
                     unknown: str = "exclude") -> dict[str, float]:
    """mAP against *observed* labels {1,-1,0} — the validation signal of a partial-label run.

    ``unknown="exclude"``: per class, rows whose entry is unknown (0) are left out.
    ``unknown="negative"``: unknown entries count as negatives (protocol B observes none).
    Either way a class needs at least one positive *and* one negative to rank: without both its
    AP is undefined or trivially 1, so it is excluded and counted in ``n_excluded_classes``
    (with few validation images and small p that happens; ``mAP`` is NaN if every class is).
    ``known_fraction`` is the share of observed entries.
    """
    observed = labels.check_labels(observed, where="observed labels")
    if unknown not in ("exclude", "negative"):
        raise ValueError(f"unknown must be 'exclude' or 'negative', got {unknown!r}")
    targets = np.where(observed == 0, -1, observed) if unknown == "negative" else observed
    ap = np.full(observed.shape[1], np.nan)
    for c in range(observed.shape[1]):
        known = targets[:, c] != 0
        col = targets[known, c]
        if (col == 1).any() and (col == -1).any():
            ap[c] = metrics.average_precision(scores[known, c], col)
    excluded = int(np.isnan(ap).sum())
    return {"mAP": float(np.nanmean(ap)) if excluded < ap.size else float("nan"),
            "n_excluded_classes": float(excluded),
            "known_fraction": float((observed != 0).mean())}


def evaluate(method: Method, batches: Iterable[Batch], targets: np.ndarray, *,
             class_names: Sequence[str] | None = None, observed: bool = False,
             device: torch.device | None = None, amp: bool = False) -> dict[str, float]:
    """THE evaluator: score ``batches`` with ``method`` and compute the metrics.

    ``targets`` are full labels (→ :func:`trm_lib.metrics.evaluate_scores`: mAP, CP…OF1,
    top-3, ``AP/<class>`` with ``class_names``) or, with ``observed=True``, a {1,-1,0} mask
    (→ :func:`observed_metrics`, unknown entries excluded).
    """
    scores = predict(method, batches, device, amp)
    return score_metrics(scores, targets, class_names=class_names, observed=observed)


def score_metrics(scores: np.ndarray, targets: np.ndarray, *,
                  class_names: Sequence[str] | None = None, observed: bool = False,
                  unknown: str = "exclude") -> dict[str, float]:
    """The metric half of :func:`evaluate`, for scores already computed."""
    if len(scores) != len(targets):
        raise ValueError(f"{len(scores)} scored images but {len(targets)} label rows")
    if observed:
        return observed_metrics(scores, targets, unknown=unknown)
    return metrics.evaluate_scores(scores, targets, class_names=class_names)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def _method_state(method: Method) -> dict[str, torch.Tensor]:
    """What training changes: trainable parameters and buffers (memory banks, pseudo-label
    memories). Frozen parameters (e.g. a text tower a method holds) are rebuilt from the
    backbone, so they are not written into every checkpoint."""
    frozen = {name for name, p in method.named_parameters() if not p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in method.state_dict().items()
            if k not in frozen}


def _load_method_state(method: Method, state: dict[str, torch.Tensor], where: Path) -> None:
    missing, unexpected = method.load_state_dict(state, strict=False)
    frozen = {name for name, p in method.named_parameters() if not p.requires_grad}
    missing = [k for k in missing if k not in frozen]
    if missing or unexpected:
        raise TrainingError(f"{where}: checkpoint does not fit method "
                            f"{method.cfg.name!r} (missing {missing[:5]}, unexpected "
                            f"{unexpected[:5]})")


def _rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _config_diff(saved: dict[str, Any], cfg: RunConfig) -> list[str]:
    old = from_dict(saved).flat()
    new = cfg.flat()
    return [f"{k}: {old.get(k)!r} (checkpoint) != {new.get(k)!r} (requested)"
            for k in sorted(set(old) | set(new))
            if k not in NON_RESULT_FIELDS and old.get(k) != new.get(k)]


def default_out_dir(cfg: RunConfig) -> Path:
    """``runs/<dataset>-<method>-<protocol>[-p<p>]-s<seed>-<config hash>``."""
    d = cfg.data
    setting = f"{d.protocol}-p{d.proportion:g}" if d.protocol == "proportion" else d.protocol
    return runs_dir() / f"{d.dataset}-{cfg.method.name}-{setting}-s{cfg.train.seed}-" \
                        f"{config_hash(cfg)[:10]}"


def config_hash(cfg: RunConfig) -> str:
    """SHA-256 of the result-relevant config (what :data:`NON_RESULT_FIELDS` leaves out)."""
    import hashlib

    flat = {k: v for k, v in cfg.flat().items() if k not in NON_RESULT_FIELDS}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def _fmt_row(row: dict[str, Any], epochs: int) -> str:
    """One human line per epoch: ``epoch 3/12  lr 1.9e-03  loss 0.41  cls 0.30 ...``."""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    if "lr" in row:
        parts.append(f"lr {row['lr']:.2e}")
    if "loss" in row:
        parts.append(f"loss {row['loss']:.4f}")
    parts += [f"{k[6:]} {v:.4g}" for k, v in row.items() if k.startswith("train_")]
    parts += [f"{k} {_pct(row[k])}" for k in ("val_mAP", "val_mAP_hidden", "test_mAP")
              if k in row]
    skip = {"epoch", "lr", "loss", "val_mAP", "val_mAP_hidden", "test_mAP", "seconds"}
    parts += [f"{k} {v:.4g}" for k, v in row.items()
              if k not in skip and not k.startswith("train_") and isinstance(v, float)]
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.2f}"


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_write(path, newline="") as fh:
        pd.DataFrame(history).to_csv(fh, index=False)


def train(cfg: RunConfig, out_dir: str | Path | None = None, *, progress: bool | None = None,
          stop_after_epoch: int | None = None, resources: Resources | None = None,
          log: Log = print) -> RunResult:
    """Train ``cfg.method`` under ``cfg`` and return its :class:`RunResult`.

    ``out_dir``: the run folder (default ``cfg.train.out_dir`` or :func:`default_out_dir`).
    With ``cfg.train.resume`` a folder holding ``last.pt`` continues from it (the config must
    match apart from :data:`NON_RESULT_FIELDS`); a finished run is returned as stored.
    ``stop_after_epoch`` ends the run early after that epoch's checkpoint (an interruption on
    purpose, for tests and notebooks). ``resources`` shares backbones/features across runs.
    ``log`` receives the per-epoch lines (None: silent); they, not the optional tqdm bars
    (``progress``), carry the information, since ``tqdm.auto`` bars show only "0%" in executed
    notebooks. Methods with ``trainable=False``, or ``train.epochs=0``, are evaluated once as
    "epoch 0".
    """
    cfg = from_dict(cfg.to_dict()).validate()  # private copy: callers may reuse theirs
    main = distributed.init_distributed(cfg.train.device).is_main  # no-op without torchrun
    say = (log if main else None) or (lambda _msg: None)
    progress = (cfg.train.progress if progress is None else progress) and main
    out = Path(out_dir or cfg.train.out_dir or default_out_dir(cfg))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    last_path, best_path = out / "last.pt", out / "best.pt"
    ckpt = None
    if last_path.exists() and cfg.train.resume:
        ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        diff = _config_diff(ckpt["config"], cfg)
        if diff:
            raise TrainingError(f"{last_path}: cannot resume, the config differs: "
                                + "; ".join(diff)
                                + " — choose another out_dir or set train.resume=false")
        if (out / "result.json").exists():  # written only when a run is complete
            say(f"{out}: finished run found, not retraining")
            return load_result(out)

    seed = cfg.train.seed
    seed_everything(seed)
    session = Session.build(cfg, resources, progress=progress)
    device, data = session.device, session.data
    unknown = "negative" if cfg.data.protocol == "single_positive" else "exclude"
    has_val = len(data.val_idx) > 0
    if has_val and cfg.train.select_metric != "mAP":
        raise ConfigError(f"train.select_metric {cfg.train.select_metric!r} is not available "
                          f"on the partially labelled validation split (use 'mAP')")

    seed_everything(seed)  # the method's init must not depend on what the session consumed
    method = build_method(cfg.method, session.ctx).to(device)
    params = method.trainable_parameters()
    backbone_ids = {id(p) for p in session.backbone.parameters()} \
        if isinstance(session.backbone, nn.Module) else set()
    if any(id(p) in backbone_ids for p in params):
        raise TrainingError(f"method {cfg.method.name!r} lists frozen backbone parameters as "
                            f"trainable; only method parameters may receive gradients")
    final_epoch = cfg.train.epochs if (method.trainable and params) else 0
    optimizer = _make_optimizer(cfg.train, params) if final_epoch else None
    steps_per_epoch = max(1, math.ceil(len(data.train_idx) / cfg.train.batch_size))

    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    elapsed = 0.0
    start_epoch = 1 if final_epoch else 0
    if ckpt is not None:
        _load_method_state(method, ckpt["method"], last_path)
        if optimizer is not None and ckpt.get("optimizer"):
            optimizer.load_state_dict(ckpt["optimizer"])
        history, summary, elapsed = ckpt["history"], ckpt["summary"], ckpt["elapsed"]
        start_epoch = ckpt["epoch"] + 1
        _set_rng_state(ckpt["rng"])
        say(f"resuming {out} after epoch {ckpt['epoch']}")
    elif main:
        for stale in ("best.pt", "last.pt", "test_scores.npy", "result.json", "history.csv"):
            (out / stale).unlink(missing_ok=True)
    distributed.broadcast_module(method)  # every rank starts from rank 0's state
    if main:
        cfg.to_yaml(out / "config.yaml")
    say(f"{cfg.method.name} on {cfg.data.dataset} ({cfg.data.protocol}, p={cfg.data.proportion:g})"
        f": {len(data.train_idx)} train / {len(data.val_idx)} val / {len(data.test)} test images,"
        f" {sum(p.numel() for p in params):,} trainable parameters, {device}, "
        f"{'cached features' if cfg.train.use_cache else 'live images'} -> {out}")

    observed_t = torch.as_tensor(data.observed, dtype=torch.float32)
    full_t = torch.as_tensor(data.train.labels, dtype=torch.float32)
    amp = cfg.train.amp and device.type == "cuda"
    test_targets = data.test.labels
    epoch = start_epoch - 1
    for epoch in range(start_epoch, final_epoch + 1):
        t0 = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch}
        if epoch > 0:
            try:
                row.update(_train_epoch(method, optimizer, session, observed_t, full_t, epoch,
                                        steps_per_epoch, amp, progress))
            except TrainingError as err:
                kept = f"{last_path} (epoch {epoch - 1})" if last_path.exists() else "none yet"
                raise TrainingError(f"{err}; last good checkpoint kept: {kept}") from None
            row.update({k: float(v) for k, v in method.epoch_end(epoch).items()})
            distributed.broadcast_module(method, params=False)  # memory bank, pseudo-labels

        val: dict[str, float] = {}
        if has_val:
            val_scores = predict_split(method, session, "val", amp)
            val = observed_metrics(val_scores, data.observed[data.val_idx], unknown=unknown)
            # the same held-out images on their hidden full labels: never selects an epoch, but
            # at p = 0.1 the observed labels are too few to compare settings on (a handful of
            # positives per class), so studies of the embedded world read this one too
            val["mAP_hidden"] = metrics.mean_average_precision(
                val_scores, data.train.labels[data.val_idx]).value
            row["val_mAP"] = val["mAP"]
            row["val_mAP_hidden"] = val["mAP_hidden"]
        # Selection rank: an informative validation score beats none (ties keep the earlier
        # epoch); without one (no val split, or no class with both an observed positive and
        # negative) or with train.select=last the latest epoch wins.
        score = val.get(cfg.train.select_metric, math.nan) if cfg.train.select == "val" \
            else math.nan
        informative = bool(np.isfinite(score))
        rank = [1.0, score] if informative else [0.0, float(epoch)]
        improves = "best_epoch" not in summary or rank > summary["best_rank"]
        stopping = stop_after_epoch is not None and epoch >= stop_after_epoch
        # The test split is scored on the train.test_every schedule, at the last epoch (and
        # where the run is stopped on purpose), and whenever validation selects a new epoch;
        # only scored epochs can be reported, and test_oracle is the best of them.
        every = cfg.train.test_every
        scored = (epoch >= final_epoch or stopping or (every > 0 and epoch % every == 0)
                  or (informative and improves))
        test: dict[str, float] = {}
        if scored:
            test_scores = predict_split(method, session, "test", amp)
            test = metrics.evaluate_scores(test_scores, test_targets, data.test.class_names)
        row["test_mAP"] = test.get("mAP", math.nan)
        row["seconds"] = time.perf_counter() - t0
        history.append(row)

        if scored and improves:
            summary.update(best_epoch=epoch, best_rank=rank, val=val, test=test)
            if main:
                with atomic_path(out / "test_scores.npy") as tmp:
                    np.save(tmp, test_scores)
                _save(best_path, {"method": _method_state(method), "epoch": epoch,
                                  "config": cfg.to_dict(), "val": val, "test": test})
        if scored and ("oracle_epoch" not in summary
                       or test["mAP"] > summary["test_oracle"]["mAP"]):
            summary.update(oracle_epoch=epoch, test_oracle=test)

        elapsed_now = elapsed + time.perf_counter() - t_start
        if main:
            _write_history(out / "history.csv", history)
            _save(last_path, {
                "method": _method_state(method), "epoch": epoch, "config": cfg.to_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else {},
                "scheduler": {"step": epoch * steps_per_epoch,
                              "steps_per_epoch": steps_per_epoch},
                "history": history, "summary": summary, "rng": _rng_state(),
                "elapsed": elapsed_now})
        say(_fmt_row(row, final_epoch))
        if stopping and epoch < final_epoch:
            break

    distributed.barrier()  # rank 0's files (test_scores.npy) exist before any rank reads them
    wall = elapsed + time.perf_counter() - t_start
    complete = epoch >= final_epoch
    result = RunResult(
        config=cfg, history=pd.DataFrame(history),
        metrics={"val": summary["val"], "test": _strip_ap(summary["test"]),
                 "test_oracle": _strip_ap(summary["test_oracle"])},
        best_epoch=summary["best_epoch"], oracle_epoch=summary["oracle_epoch"], out_dir=out,
        wall_time=wall, per_class_ap={k[3:]: v for k, v in summary["test"].items()
                                      if k.startswith("AP/")},
        scores=np.load(out / "test_scores.npy"), epochs_done=epoch, complete=complete,
        provenance=provenance())
    if complete and main:
        write_json(out / "result.json", {
            "config": cfg.to_dict(), "metrics": result.metrics, "best_epoch": result.best_epoch,
            "oracle_epoch": result.oracle_epoch, "wall_time": wall,
            "per_class_ap": result.per_class_ap, "epochs_done": epoch,
            "provenance": result.provenance})
    say(result.summary())
    return result


def _strip_ap(m: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in m.items() if not k.startswith("AP/")}


def _make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _train_epoch(method: Method, optimizer: torch.optim.Optimizer, session: Session,
                 observed: torch.Tensor, full: torch.Tensor, epoch: int, steps_per_epoch: int,
                 amp: bool, progress: bool) -> dict[str, float]:
    """One pass over the training rows; returns the epoch means of the loss logs. Under
    ``torchrun`` each rank runs the forward on its share of every global batch and the loss on
    the gathered batch (module docstring)."""
    cfg, device = session.cfg, session.device
    order = epoch_order(session.data.train_idx, cfg.train.seed, epoch)
    plan = distributed.shard_batches(order, cfg.train.batch_size)  # [(global, this rank's)]
    ddp = distributed.is_distributed()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loader_gen = torch.Generator().manual_seed(
        int(np.random.SeedSequence([cfg.train.seed, epoch]).generate_state(1)[0]))
    method.train()
    method.epoch_start(epoch)
    sums: dict[str, float] = {}
    steps = 0
    lr = cfg.train.lr
    batches = session.train_source.batches_from([part for _, part in plan], loader_gen)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch}", leave=False)
    for step, feats in enumerate(batches):
        idx = feats["index"]
        batch = _to_device({**feats, "observed": observed[idx], "full": full[idx]}, device)
        lr = lr_at((epoch - 1) * steps_per_epoch + step, cfg.train, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with _autocast(device, amp):
            out = method(batch)
            if ddp:
                rows = torch.as_tensor(plan[step][0], dtype=torch.long)
                out = distributed.gather_outputs(out, distributed.shard_sizes(len(rows)))
                batch = _to_device({"observed": observed[rows], "full": full[rows],
                                    "index": rows}, device)
            loss, logs = method.loss(out, batch, epoch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"non-finite loss ({value}) at epoch {epoch}, step {step + 1}/{steps_per_epoch} "
                f"(logs: {logs}); training stopped")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(params)  # no-op in one process
        optimizer.step()
        sums["loss"] = sums.get("loss", 0.0) + value
        for key, v in logs.items():
            sums[f"train_{key}"] = sums.get(f"train_{key}", 0.0) + float(v)
        steps += 1
    row = {k: v / max(steps, 1) for k, v in sums.items()}
    row["lr"] = lr
    return row


# ---------------------------------------------------------------------------------------------
# Reloading a run (notebooks, `python -m trm_lib evaluate`)
# ---------------------------------------------------------------------------------------------

@dataclass
class LoadedRun:
    """A trained method rebuilt from its run folder, with the session that feeds it."""

    config: RunConfig
    method: Method
    session: Session
    epoch: int
    result: RunResult | None

    def batches(self, split: str = "test", indices: Sequence[int] | None = None,
                batch_size: int | None = None) -> Iterator[Batch]:
        return self.session.batches(split, indices, batch_size)

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Full-label metrics of ``split`` (for val/train these use the hidden labels: analysis,
        not model selection); val/train also get ``observed_mAP`` on the observed labels."""
        data = self.session.data
        dataset, rows = data.rows(split)
        amp = self.config.train.amp and self.session.device.type == "cuda"
        scores = predict(self.method, self.batches(split), self.session.device, amp)
        out = score_metrics(scores, dataset.labels[rows], class_names=dataset.class_names)
        if split != "test":
            unknown = "negative" if self.config.data.protocol == "single_positive" else "exclude"
            out["observed_mAP"] = observed_metrics(scores, data.observed[rows], unknown)["mAP"]
        return out

    @torch.no_grad()
    def unknown_entry_quality(self, split: str = "train",
                              query_range: tuple[float, float] | None = None
                              ) -> dict[str, dict[str, float]]:
        """:func:`trm_lib.metrics.unknown_entry_quality` of every view the method exposes
        (``entry_views``; TRM-ML) on the entries of ``split`` its label mask leaves unknown,
        scored against the hidden full labels; with ``query_range=(lo, hi)`` only on those
        whose query probability σ(s) lies strictly between lo and hi."""
        views_of = getattr(self.method, "entry_views", None)
        if views_of is None:
            raise ValueError(f"method {self.config.method.name!r} exposes no entry views "
                             f"(only trm_ml does)")
        if split == "test":
            raise ValueError("split 'test' has no label mask: use 'train' or 'val'")
        dataset, rows = self.session.data.rows(split)
        parts: dict[str, list[torch.Tensor]] = {}
        def views_with_index(out: Any, batch: Batch) -> dict[str, torch.Tensor]:
            # training-split indices keep an image from being its own memory neighbour; other
            # splits' images are not in the memory (and their indices mean other rows)
            return views_of(out, batch["index"] if split == "train" else None)

        for views in eval_outputs(self.method, self.batches(split), self.session.device,
                                  then=views_with_index):
            for name, v in views.items():
                parts.setdefault(name, []).append(v.cpu())
        views = {name: torch.cat(v).numpy() for name, v in parts.items()}
        where = None
        if query_range is not None:
            lo, hi = query_range
            where = (views["query"] > lo) & (views["query"] < hi)
        return metrics.unknown_entry_quality(views, self.session.data.observed[rows],
                                             dataset.labels[rows], where=where)


def load_run(out_dir: str | Path, checkpoint: str = "best", *, device: str | None = None,
             resources: Resources | None = None) -> LoadedRun:
    """Rebuild the method of run ``out_dir`` from ``best.pt`` (or ``last.pt``), in eval mode."""
    out_dir = Path(out_dir)
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    path = out_dir / f"{checkpoint}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint (is {out_dir} a run folder?)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = from_dict(ckpt["config"], source=str(path)).validate()
    if device is not None:
        cfg = cfg.with_overrides({"train.device": device})
    session = Session.build(cfg, resources)
    seed_everything(cfg.train.seed)
    method = build_method(cfg.method, session.ctx).to(session.device)
    _load_method_state(method, ckpt["method"], path)
    method.eval()
    result = load_result(out_dir) if (out_dir / "result.json").exists() else None
    return LoadedRun(cfg, method, session, int(ckpt["epoch"]), result)


# ---------------------------------------------------------------------------------------------
# Benchmark: python -m trm_lib bench train
# ---------------------------------------------------------------------------------------------

def _synthetic_jpegs(root: Path, n: int, size: tuple[int, int], num_classes: int,
                     seed: int = 0) -> MultiLabelDataset:
    """``n`` smooth random JPEGs of ``size`` (W, H) in the generic folder format: noise
    upsampled from 16x12 so files compress like photos rather than like white noise."""
    from PIL import Image

    from .datasets import read_generic, write_generic

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rel = []
    for i in range(n):
        small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(size, Image.BICUBIC)
        img.save(root / "images" / f"{i:05d}.jpg", quality=90)
        rel.append(f"images/{i:05d}.jpg")
    y = np.where(rng.random((n, num_classes)) < 0.1, 1, -1)
    y[np.arange(n), rng.integers(0, num_classes, n)] = 1
    write_generic(root, "bench", rel, y, [f"class{c}" for c in range(num_classes)])
    return read_generic(root, "bench")


def _timed(fn: Callable[[], Any], device: torch.device, iters: int) -> float:
    fn()  # warm-up (cudnn autotune, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def bench(argv: list[str]) -> int:
    """Images/s of (1) the frozen encoder alone, (2) a live training step (JPEG decode +
    augmentation + encoder + head forward/backward), (3) a head step on cached features, with
    their ratios to (1). CPU default: the tiny model; intended for GPU with
    ``--model RN101-quickgelu --size 448``."""
    p = argparse.ArgumentParser(prog="python -m trm_lib bench train", description=bench.__doc__)
    p.add_argument("--model", default=BackboneConfig.model)
    p.add_argument("--pretrained", default="none",
                   help="open_clip tag / weights file / tinyclip / none (random weights)")
    p.add_argument("--size", type=int, default=None, help="input resolution (default: native)")
    p.add_argument("--device", default="auto")
    p.add_argument("--method", default="trm_ml")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the live step")
    p.add_argument("--jpeg-size", default="640x480", help="W x H of the synthetic JPEGs")
    p.add_argument("--gpu-decode", action="store_true",
                   help="live step decodes JPEGs with nvJPEG on the GPU (PIL fallback on CPU)")
    args = p.parse_args(argv)

    from .backbone import FrozenCLIP

    device = resolve_device(args.device)
    bcfg = BackboneConfig(model=args.model, image_size=args.size,
                          pretrained=None if args.pretrained == "none" else args.pretrained)
    w, h = (int(v) for v in args.jpeg_size.lower().split("x"))
    torch.manual_seed(0)
    backbone = FrozenCLIP.from_config(bcfg, device)
    cfg = RunConfig(backbone=bcfg).with_overrides({"method.name": args.method})
    n_images = args.batch * (args.iters + 1)
    with tempfile.TemporaryDirectory(prefix="trm-bench-") as tmp:
        ds = _synthetic_jpegs(Path(tmp), n_images, (w, h), args.classes)
        ctx = MethodContext(
            class_names=ds.class_names,
            text_embeddings=backbone.encode_text(ds.class_names, bcfg.templates, None).float(),
            embed_dim=backbone.embed_dim, dense_dim=backbone.dense_dim, grid=tuple(backbone.grid),
            num_train=n_images, backbone=backbone)
        method = build_method(cfg.method, ctx).to(device)
        optimizer = _make_optimizer(cfg.train, method.trainable_parameters()) \
            if method.trainable_parameters() else None
        amp = device.type == "cuda"
        obs = torch.as_tensor(np.where(np.random.default_rng(0).random(ds.labels.shape) < 0.5,
                                       ds.labels, 0), dtype=torch.float32)
        size = backbone.transform(train=False, augment="none")(ds.load_image(0)).shape[-1]
        x = torch.randn(args.batch, 3, size, size, device=device)

        def encoder_only() -> None:
            with torch.no_grad():
                backbone.encode_images(x, raw=False)

        def head_step(feats: Batch) -> None:
            batch = {**feats, "observed": obs[feats["index"].cpu()].to(device),
                     "full": torch.as_tensor(ds.labels, dtype=torch.float32
                                             )[feats["index"].cpu()].to(device)}
            with _autocast(device, amp):
                out = method(batch)
                loss, _ = method.loss(out, batch, 1)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        from .decode import use_gpu_decode

        gpu = use_gpu_decode(args.gpu_decode, device)
        live = LiveFeatures(backbone, ds, backbone.transform(train=True, augment="crop_flip"),
                            device, False, args.workers, gpu)
        live_iter = iter(live.batches(np.arange(n_images), args.batch))

        def live_step() -> None:
            head_step(_to_device(next(live_iter), device))

        with torch.no_grad():
            cached = {k: v.float() for k, v in backbone.encode_images(x, raw=False).items()}
        cached["index"] = torch.arange(args.batch, device=device)

        t_enc = _timed(encoder_only, device, args.iters)
        t_live = _timed(live_step, device, args.iters)
        t_cached = _timed(lambda: head_step(cached), device, args.iters)
    rows = [("encoder forward only", t_enc), ("live train step (decode+augment+encoder+head)",
                                              t_live), ("cached-feature train step", t_cached)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"bench train: {args.model} @{size}px, method {args.method}, batch {args.batch}, "
          f"{args.iters} iters, {device} ({name}), JPEG {w}x{h}, workers {args.workers}"
          f"{', nvJPEG decode' if gpu else ''}")
    for label, t in rows:
        print(f"  {label:<48} {args.batch / t:>10.1f} img/s   x{t_enc / t:.2f} vs encoder")
    return 0


__all__ = ["CachedFeatures", "LiveFeatures", "LoadedRun", "Resources", "RunData", "RunResult",
           "Session", "TrainingError", "bench", "config_hash", "default_out_dir", "epoch_order",
           "evaluate", "load_result", "load_run", "lr_at", "observed_metrics", "predict",
           "predict_split", "prepare_data", "provenance", "score_metrics", "seed_everything",
           "train"]
