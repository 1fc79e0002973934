"""``python -m trm_lib bench train``: what a training epoch costs on cached features vs a live backbone."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trm_lib.backbone.decode import use_gpu_decode
from trm_lib.backbone.features import compute_features
from trm_lib.config.run_config import BackboneConfig, RunConfig
from trm_lib.core import build_method
from trm_lib.core.methods import MethodContext
from trm_lib.datasets import MultiLabelDataset

from .session import Batch, CachedFeatures, LiveFeatures, autocast, resolve_device, to_device
from .trainer import make_optimizer


def _synthetic_jpegs(root: Path, n: int, size: tuple[int, int], num_classes: int,
                     seed: int = 0) -> MultiLabelDataset:
    """``n`` smooth random JPEGs of ``size`` (W, H) in the generic folder format: noise
    upsampled from 16x12 so files compress like photos rather than like white noise."""
    from PIL import Image

    from trm_lib.datasets import read_generic, write_generic

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


@dataclass
class _Rig:
    """What both epochs share: the backbone, the JPEG dataset, one method and its optimiser."""

    backbone: Any
    dataset: MultiLabelDataset
    method: Any
    optimizer: torch.optim.Optimizer | None
    observed: torch.Tensor
    device: torch.device
    size: int


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trm_lib bench train", description=bench.__doc__)
    p.add_argument("--model", default=BackboneConfig.model)
    p.add_argument("--pretrained", default="none",
                   help="open_clip tag / weights file / tinyclip / none (random weights)")
    p.add_argument("--size", type=int, default=None, help="input resolution (default: native)")
    p.add_argument("--device", default="auto")
    p.add_argument("--method", default="trm_ml")
    p.add_argument("--images", type=int, default=64, help="images in the epoch")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the live epoch")
    p.add_argument("--jpeg-size", default="640x480", help="W x H of the synthetic JPEGs")
    p.add_argument("--gpu-decode", action="store_true",
                   help="live epoch decodes JPEGs with nvJPEG on the GPU (PIL fallback on CPU)")
    return p


def _rig(args: argparse.Namespace, root: Path, jpeg: tuple[int, int]) -> _Rig:
    from trm_lib.backbone.clip import FrozenCLIP

    device = resolve_device(args.device)
    bcfg = BackboneConfig(model=args.model, image_size=args.size,
                          pretrained=None if args.pretrained == "none" else args.pretrained)
    torch.manual_seed(0)
    backbone = FrozenCLIP.from_config(bcfg, device)
    ds = _synthetic_jpegs(root, args.images, jpeg, args.classes)
    ctx = MethodContext(
        class_names=ds.class_names,
        text_embeddings=backbone.encode_text(ds.class_names, bcfg.templates, None).float(),
        embed_dim=backbone.embed_dim, dense_dim=backbone.dense_dim, grid=tuple(backbone.grid),
        num_train=args.images, backbone=backbone)
    cfg = RunConfig(backbone=bcfg).with_overrides({"method.name": args.method})
    method = build_method(cfg.method, ctx).to(device)
    params = method.trainable_parameters()
    optimizer = make_optimizer(cfg.train, params) if params else None
    observed = torch.as_tensor(np.where(np.random.default_rng(0).random(ds.labels.shape) < 0.5,
                                        ds.labels, 0), dtype=torch.float32)
    size = backbone.transform(train=False, augment="none")(ds.load_image(0)).shape[-1]
    return _Rig(backbone, ds, method, optimizer, observed, device, int(size))


def _head_step(rig: _Rig, feats: Batch) -> None:
    """One optimiser step of the method on a feature batch (what the trainer does per batch)."""
    idx = feats["index"].cpu()
    batch = {**to_device(feats, rig.device), "observed": rig.observed[idx].to(rig.device),
             "full": torch.as_tensor(rig.dataset.labels, dtype=torch.float32)[idx].to(rig.device)}
    with autocast(rig.device, rig.device.type == "cuda"):
        out = rig.method(batch)
        loss, _ = rig.method.loss(out, batch, 1)
    if rig.optimizer is not None:
        rig.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        rig.optimizer.step()


def _timed_epoch(rig: _Rig, batches: Iterable[Batch]) -> float:
    """Seconds to train one epoch over ``batches`` (reading / computing them included)."""
    if rig.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for feats in batches:
        _head_step(rig, feats)
    if rig.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench(argv: list[str]) -> int:
    """The cost of not caching: one training epoch over the same synthetic JPEGs (same method,
    batches and order) on cached features, and with the frozen backbone run live on every batch
    (decode + augmentation + encoder forward, what the peers do every epoch), and the ratio of
    their times. The one-time cost of building the feature cache is printed beside them. CPU
    default: the tiny model with random weights; on a GPU e.g. ``--model RN101-quickgelu
    --size 448 --images 1024 --batch 64``."""
    args = _parser().parse_args(argv)
    w, h = (int(v) for v in args.jpeg_size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="trm-bench-") as tmp:
        rig = _rig(args, Path(tmp) / "jpegs", (w, h))
        order = np.random.default_rng(0).permutation(args.images)
        t0 = time.perf_counter()
        store = compute_features(rig.backbone, rig.dataset, batch_size=args.batch,
                                 cache_root=Path(tmp) / "cache", progress=False)
        t_build = time.perf_counter() - t0
        cached = CachedFeatures(store)
        _head_step(rig, next(iter(cached.batches(order, args.batch))))  # warm-up
        t_cached = _timed_epoch(rig, cached.batches(order, args.batch))
        gpu = use_gpu_decode(args.gpu_decode, rig.device)
        live = LiveFeatures(rig.backbone, rig.dataset,
                            rig.backbone.transform(train=True, augment="crop_flip"), rig.device,
                            False, args.workers, gpu)
        t_live = _timed_epoch(rig, live.batches(order, args.batch))
    name = torch.cuda.get_device_name(rig.device) if rig.device.type == "cuda" else "cpu"
    print(f"bench train: {args.model} @{rig.size}px, method {args.method}, {args.images} JPEGs "
          f"{w}x{h}, batch {args.batch}, {rig.device} ({name}), workers {args.workers}"
          f"{', nvJPEG decode' if gpu else ''}")
    for label, t in (("feature cache, built once", t_build), ("cached-feature epoch", t_cached),
                     ("live-backbone epoch", t_live)):
        print(f"  {label:<28} {t:>9.3f} s   {args.images / t:>9.1f} img/s")
    print(f"  live / cached epoch time: {t_live / t_cached:.1f}x")
    return 0


__all__ = ["bench"]
