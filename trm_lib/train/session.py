"""What a run runs on: device, seeds, the data with its label mask and validation split,
and the frozen backbone's feature batches (from the cache, or live images with augmentation).

:class:`Session` is built the same way by training (:mod:`trm_lib.train.trainer`) and by reloading a
run (:mod:`trm_lib.train.runs`), so a reloaded method sees exactly the features it was trained on.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trm_lib.config.run_config import BackboneConfig, ConfigError, RunConfig
from trm_lib.core.methods import MethodContext
from trm_lib.datasets import MultiLabelDataset, labels
from trm_lib.datasets import load as load_dataset
from trm_lib.utils import distributed

Batch = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Seeds, devices, precision
# ---------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a device; under ``torchrun`` ``auto``/``cuda`` mean the rank's GPU
    (:func:`trm_lib.utils.distributed.local_device`)."""
    if name != "auto" and torch.device(name).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available (use 'auto' or 'cpu')")
    try:
        return distributed.local_device(name)
    except distributed.DistributedError as err:
        raise ConfigError(f"train.device: {err}") from None


def autocast(device: torch.device, enabled: bool, cpu_bf16: bool = False
             ) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``enabled``, on the CPU when ``cpu_bf16``; else a no-op."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: Batch, device: torch.device | None) -> Batch:
    """``batch`` on ``device`` (unchanged when ``device`` is None)."""
    if device is None:
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


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
    if d.protocol != "full" and not (observed[train_idx] == 1).any():
        # e.g. data.proportion=1e-300: a "result" trained on no label at all (issue 29)
        setting = f"data.proportion={d.proportion:g}" if d.protocol == "proportion" \
            else f"data.protocol={d.protocol}"
        raise labels.LabelError(
            f"{setting} leaves no observed positive label among the {len(train_idx)} training "
            f"images of {d.dataset} ({train_ds.num_classes} classes): nothing to learn from; "
            f"raise data.proportion or use more images")
    empty = [n for n, has in zip(train_ds.class_names, (observed[train_idx] == 1).any(0))
             if not has]
    if d.protocol != "full" and empty:  # trains, but those classes learn from no positive
        print(f"warning: {len(empty)} of {train_ds.num_classes} classes have no observed positive "
              f"among the training images ({', '.join(empty[:8])}{' ...' if len(empty) > 8 else ''}"
              f"): their test AP measures what the method guesses without a single example",
              file=sys.stderr)
    return RunData(train_ds, test_ds, observed, train_idx, val_idx)


def _chunks(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [np.asarray(order[s:s + batch_size]) for s in range(0, len(order), batch_size)]


class CachedFeatures:
    """Feature batches read from a :class:`trm_lib.backbone.features.FeatureStore` (no augmentation)."""

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
    ``gpu_decode``: JPEGs decoded and transformed on the GPU (:mod:`trm_lib.backbone.decode`)."""

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
        from trm_lib.backbone.decode import image_batches

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
    by :mod:`trm_lib.backbone.features`; this saves re-loading them per run."""

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
            from trm_lib.backbone.clip import FrozenCLIP
            from trm_lib.tinyclip import pretrain  # noqa: F401  registers backbone.pretrained="tinyclip"

            self._backbones[key] = FrozenCLIP.from_config(cfg, device)
        return self._backbones[key]

    def features(self, cfg: BackboneConfig, backbone: Any, dataset: MultiLabelDataset,
                 raw: bool, progress: bool, gpu_decode: bool = False) -> Any:
        # the root too: SynthScenes worlds of different difficulty share classes, relative
        # paths and labels (hence the fingerprint) and differ only in their pixels and folder
        key = self._key(cfg.__dict__, dataset.name, dataset.split, str(dataset.root),
                        dataset.fingerprint(), raw, gpu_decode)
        if key not in self._stores:
            from trm_lib.backbone.features import compute_features

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
        from trm_lib.backbone.decode import use_gpu_decode

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
            prompt_names=prompt_words(data.train),
            all_observed=bool((data.observed[data.train_idx] != 0).all()))
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


__all__ = ["Batch", "CachedFeatures", "LiveFeatures", "Resources", "RunData", "Session",
           "autocast", "prepare_data", "prompt_names", "prompt_words", "resolve_device",
           "seed_everything", "to_device"]
