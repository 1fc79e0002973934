"""``python -m trm_lib bench train``: what a training epoch costs on cached features vs a live
backbone, each method's head throughput as a share of the machine's GEMM peak measured in the
same process (:mod:`trm_lib.train.hardware`), and peak resident memory."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
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

from . import hardware
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
    ctx: MethodContext
    cfg: RunConfig
    bf16: bool = False  # CPU bf16 autocast of the head step


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
    p.add_argument("--methods", default="trm_ml,dualcoop",
                   help="methods whose head throughput is set against the GEMM peak")
    p.add_argument("--steps", type=int, default=10, help="timed head steps per method")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for everything (default: torch's setting)")
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
    cfg = RunConfig(backbone=bcfg)
    observed = torch.as_tensor(np.where(np.random.default_rng(0).random(ds.labels.shape) < 0.5,
                                        ds.labels, 0), dtype=torch.float32)
    size = backbone.transform(train=False, augment="none")(ds.load_image(0)).shape[-1]
    rig = _Rig(backbone, ds, None, None, observed, device, int(size), ctx, cfg)
    return _with_method(rig, args.method)


def _with_method(rig: _Rig, name: str, bf16: bool = False) -> _Rig:
    """``rig`` with a freshly built (seeded) ``name`` and its optimiser."""
    torch.manual_seed(0)
    cfg = rig.cfg.with_overrides({"method.name": name})
    method = build_method(cfg.method, rig.ctx).to(rig.device)
    _fill_rings(method)
    params = method.trainable_parameters()
    optimizer = make_optimizer(cfg.train, params) if params else None
    return replace(rig, method=method, optimizer=optimizer, bf16=bf16)


def _fill_rings(method: torch.nn.Module) -> None:
    """Fill every instance-memory ring as training leaves it at p >= 0.5 (all slots hold other
    images), so the k-NN product is timed at its training size: the bench's few images would
    otherwise leave the rings nearly empty, and the product skips empty slots."""
    from trm_lib.core.prototypes import InstanceMemory

    g = torch.Generator().manual_seed(0)
    for mem in (m for m in method.modules() if isinstance(m, InstanceMemory)):
        for name in mem.POLARITIES:
            feats, index, _ = mem._buffers_of(name)
            rows = torch.randn(feats.shape, generator=g)
            feats.copy_(torch.nn.functional.normalize(rows, dim=-1))
            # indices past the bench's images: never the batch's own image
            index.copy_(10**6 + torch.arange(index.numel()).view_as(index))


def _head_step(rig: _Rig, feats: Batch) -> None:
    """One optimiser step of the method on a feature batch (what the trainer does per batch)."""
    idx = feats["index"].cpu()
    batch = {**to_device(feats, rig.device), "observed": rig.observed[idx].to(rig.device),
             "full": torch.as_tensor(rig.dataset.labels, dtype=torch.float32)[idx].to(rig.device)}
    with autocast(rig.device, rig.device.type == "cuda", cpu_bf16=rig.bf16):
        out = rig.method(batch)
        loss, _ = rig.method.loss(out, batch, 1)
    if rig.optimizer is not None:
        rig.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        rig.optimizer.step()


def _timed_epoch(rig: _Rig, batches: Iterable[Batch],
                 now: Callable[[], float] = time.perf_counter) -> float:
    """Seconds (of ``now``) to train one epoch over ``batches`` (reading / computing them
    included)."""
    if rig.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = now()
    for feats in batches:
        _head_step(rig, feats)
    if rig.device.type == "cuda":
        torch.cuda.synchronize()
    return now() - t0


def _head_throughput(rig: _Rig, batches: list[Batch], steps: int) -> dict[str, Any]:
    """Seconds per head step (best of two passes over ``steps`` steps cycling ``batches``, after
    a warm-up) and the step's matrix products."""
    for feats in batches[:2]:
        _head_step(rig, feats)
    gemms = hardware.record_gemms(lambda: _head_step(rig, batches[0]))
    best, now = float("inf"), hardware.clock(rig.device)[0]
    for _ in range(3):
        t = _timed_epoch(rig, (batches[i % len(batches)] for i in range(steps)), now)
        best = min(best, t / steps)
    return {"step": best, "gemms": gemms, "flops": hardware.step_flops(gemms)}


def _print_throughput(args: argparse.Namespace, rig: _Rig, batches: list[Batch]) -> None:
    """Each method's head step against the fp32 (and bf16) GEMM peak at its own shapes."""
    bf16 = hardware.bf16_supported(rig.device)
    rows, gemms = [], []
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        r = _head_throughput(_with_method(rig, name), batches, args.steps)
        if bf16 and rig.device.type == "cpu":
            r["bf16"] = _head_throughput(_with_method(rig, name, bf16=True), batches,
                                         args.steps)["step"]
        rows.append((name, r))
        gemms += list(r["gemms"].elements())
    if not rows:
        return
    peak = hardware.gemm_peak(gemms, torch.float32, rig.device)
    g = peak["shape"]
    line = (f"GEMM peak at the heads' shapes, {torch.get_num_threads()} thread(s): fp32 "
            f"{peak['peak'] / 1e9:.1f} GFLOP/s (at {g.batch}x{g.m}x{g.k}x{g.n})")
    if bf16:
        pb = hardware.gemm_peak(gemms, torch.bfloat16, rig.device)
        line += f", bf16 {pb['peak'] / 1e9:.1f} GFLOP/s"
    print(line)
    print(f"head training steps on cached features, batch {args.batch}, {rig.ctx.grid[0]}x"
          f"{rig.ctx.grid[1]} tokens, {len(rig.ctx.class_names)} classes (timed by "
          f"{hardware.clock(rig.device)[1]}, best of 3 x {args.steps} steps):")
    print(f"  {'method':<12} {'ms/step':>8} {'img/s':>8} {'GFLOP/step':>10} {'GFLOP/s':>8} "
          f"{'% fp32 peak':>11} {'GEMM share':>10}" + (f" {'bf16 ms':>8} {'bf16 x':>6}"
                                                        if bf16 else ""))
    for name, r in rows:
        rate = r["flops"] / r["step"]
        alone = hardware.gemm_peak(r["gemms"], torch.float32, rig.device)["at_shapes"]
        extra = (f" {1e3 * r['bf16']:>8.2f} {r['step'] / r['bf16']:>5.2f}x"
                 if "bf16" in r else "")
        print(f"  {name:<12} {1e3 * r['step']:>8.2f} {args.batch / r['step']:>8.0f} "
              f"{r['flops'] / 1e9:>10.3f} {rate / 1e9:>8.1f} {100 * rate / peak['peak']:>10.1f}% "
              f"{100 * alone / r['step']:>9.0f}%{extra}")


def bench(argv: list[str]) -> int:
    """The cost of not caching: one training epoch over the same synthetic JPEGs (same method,
    batches and order) on cached features, and with the frozen backbone run live on every batch
    (decode + augmentation + encoder forward, what the peers do every epoch), and the ratio of
    their times. The one-time cost of building the feature cache is printed beside them.
    Then, per ``--methods``, a head training step's FLOP rate as a share of the GEMM peak
    measured here at the step's own shapes (``GEMM share``: the step's matrix products at their
    isolated speed, as a share of the step; ``bf16``: the step under CPU autocast, where the CPU
    has bf16), and the peak resident memory of the cached-feature epoch and of reading the
    feature store. CPU default: the tiny model with random weights; on a GPU e.g. ``--model
    RN101-quickgelu --size 448 --images 1024 --batch 64``."""
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.jpeg_size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="trm-bench-") as tmp:
        rig = _rig(args, Path(tmp) / "jpegs", (w, h))
        order = np.random.default_rng(0).permutation(args.images)
        t0 = time.perf_counter()
        with hardware.peak_rss() as mem_build:
            store = compute_features(rig.backbone, rig.dataset, batch_size=args.batch,
                                     cache_root=Path(tmp) / "cache", progress=False)
        t_build = time.perf_counter() - t0
        cached = CachedFeatures(store)
        _head_step(rig, next(iter(cached.batches(order, args.batch))))  # warm-up
        with hardware.peak_rss() as mem_epoch:
            t_cached = _timed_epoch(rig, cached.batches(order, args.batch))
        with hardware.peak_rss() as mem_store:
            batches = list(cached.batches(order, args.batch))
        store_bytes = sum(f.stat().st_size for f in Path(store.path).rglob("*") if f.is_file())
        gpu = use_gpu_decode(args.gpu_decode, rig.device)
        live = LiveFeatures(rig.backbone, rig.dataset,
                            rig.backbone.transform(train=True, augment="crop_flip"), rig.device,
                            False, args.workers, gpu)
        t_live = _timed_epoch(rig, live.batches(order, args.batch))
        name = torch.cuda.get_device_name(rig.device) if rig.device.type == "cuda" else "cpu"
        print(f"bench train: {args.model} @{rig.size}px, method {args.method}, {args.images} "
              f"JPEGs {w}x{h}, batch {args.batch}, {rig.device} ({name}), workers "
              f"{args.workers}{', nvJPEG decode' if gpu else ''}, {torch.get_num_threads()} "
              f"torch thread(s)")
        for label, t in (("feature cache, built once", t_build),
                         ("cached-feature epoch", t_cached), ("live-backbone epoch", t_live)):
            print(f"  {label:<28} {t:>9.3f} s   {args.images / t:>9.1f} img/s")
        print(f"  live / cached epoch time: {t_live / t_cached:.1f}x")
        _print_memory(mem_build, mem_epoch, mem_store, store_bytes)
        _print_throughput(args, rig, batches)
    return 0


def _print_memory(build: dict[str, float | None], epoch: dict[str, float | None],
                  store: dict[str, float | None], store_bytes: int) -> None:
    """Peak resident memory (MiB) of each phase, with what the process held when it began."""
    def mib(m: dict[str, float | None]) -> str:
        if m["peak"] is None or m["before"] is None:
            return "n/a"
        return f"{m['peak']:.0f} MiB (+{max(0.0, m['peak'] - m['before']):.0f})"

    print(f"  peak resident memory: building the feature store {mib(build)}, cached-feature "
          f"epoch {mib(epoch)}, reading the whole store {mib(store)}; store "
          f"{store_bytes / 2**20:.1f} MiB on disk (memory-mapped)")


__all__ = ["bench"]
