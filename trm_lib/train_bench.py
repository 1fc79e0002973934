"""``python -m trm_lib bench train``: what a training step costs, live images vs cached features."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import BackboneConfig, RunConfig
from .datasets import MultiLabelDataset
from .method_zoo import build_method
from .methods import MethodContext
from .session import Batch, LiveFeatures, autocast, resolve_device, to_device
from .trainer import make_optimizer


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
        optimizer = make_optimizer(cfg.train, method.trainable_parameters()) \
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
            with autocast(device, amp):
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
            head_step(to_device(next(live_iter), device))

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


__all__ = ["bench"]
