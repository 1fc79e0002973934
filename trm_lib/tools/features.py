"""``python -m trm_lib features`` and ``python -m trm_lib bench features``.

The command line of the feature cache (:mod:`trm_lib.backbone.features`) lives here, above both the cache
and pre-training: its default backbone is the cached TinyCLIP, which :mod:`trm_lib.tinyclip.pretrain`
provides (and pre-training itself computes features for its zero-shot check).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trm_lib.backbone.clip import FrozenCLIP, register_model_configs
from trm_lib.backbone.features import compute_features
from trm_lib.config.run_config import BackboneConfig
from trm_lib.tinyclip import pretrain as _pretrain  # noqa: F401  registers pretrained='tinyclip'
from trm_lib.utils import distributed
from trm_lib.utils.io import write_json

# ---------------------------------------------------------------------------------------------
# Command line: `python -m trm_lib features ...` and `python -m trm_lib bench features`
# ---------------------------------------------------------------------------------------------

def _backbone_args(parser: argparse.ArgumentParser) -> None:
    d = BackboneConfig()
    parser.add_argument("--model", default=d.model, help=f"open_clip model (default {d.model})")
    parser.add_argument("--pretrained", default=d.pretrained,
                        help="tag | weights file | local-dir:PATH | tinyclip | none "
                             f"(default {d.pretrained})")
    parser.add_argument("--image-size", type=int, default=d.image_size)
    parser.add_argument("--precision", default=d.precision)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--device", default="auto",
                        help="auto | cpu | cuda | cuda:N (under torchrun: auto/cuda = the rank's "
                             "GPU)")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--gpu-decode", action="store_true",
                        help="decode JPEGs with nvJPEG on the GPU (PIL fallback without CUDA)")


def _build_backbone(args: argparse.Namespace) -> FrozenCLIP:
    pretrained = None if str(args.pretrained).lower() in ("none", "") else args.pretrained
    return FrozenCLIP(args.model, pretrained, args.image_size,
                      device=distributed.local_device(args.device), precision=args.precision,
                      batch_size=args.batch_size)


def cli(argv: list[str]) -> int:
    """Compute (or locate) the feature store of one dataset split and print where it is.
    Under ``torchrun`` the ranks share the work (module docstring); rank 0 prints."""
    from trm_lib.datasets import load

    parser = argparse.ArgumentParser(prog="python -m trm_lib features",
                                     description="compute / locate the frozen-feature cache")
    parser.add_argument("--dataset", default="synthscenes")
    parser.add_argument("--root", default=None, help="dataset root (default: the loader's)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--raw", action="store_true", help="also cache the unprojected map")
    parser.add_argument("--cache-root", default=None, help="default: the trm cache folder")
    parser.add_argument("--quiet", action="store_true")
    _backbone_args(parser)
    args = parser.parse_args(argv)
    distributed.init_distributed(args.device)
    with distributed.main_first():  # a loader may generate its world or weights on first use
        dataset = load(args.dataset, root=args.root, split=args.split)  # a bad name fails fast
        backbone = _build_backbone(args)
    t0 = time.perf_counter()
    store = compute_features(backbone, dataset, batch_size=args.batch_size, raw=args.raw,
                             num_workers=args.num_workers, cache_root=args.cache_root,
                             progress=not args.quiet, gpu_decode=args.gpu_decode)
    if not distributed.is_main():
        return 0
    print(f"{store.path}\n  images {len(store)}  global {tuple(store.global_feats.shape)}  "
          f"dense {tuple(store.dense.shape)}  grid {store.grid}"
          + (f"  dense_raw {tuple(store.dense_raw.shape)}" if store.dense_raw is not None else "")
          + f"\n  backbone {store.key['backbone']}\n  ready in {time.perf_counter() - t0:.2f}s")
    return 0


# A small random ResNet used by the benchmark until the project's TinyCLIP exists.
BENCH_FALLBACK_CONFIG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 128, "layers": [1, 1, 2, 1], "width": 32, "head_width": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 1},
}


def _default_world_available() -> bool:
    import importlib.util

    return (importlib.util.find_spec("trm_lib.tinyclip.pretrain") is not None
            and importlib.util.find_spec("trm_lib.synth.world") is not None
            and BackboneConfig().model in register_model_configs())


def _write_bench_images(root: Path, n: int, size: int = 256, seed: int = 0) -> None:
    """n JPEGs of random coloured shapes in the generic folder format (decode cost ~ real)."""
    from PIL import Image, ImageDraw

    from trm_lib.datasets import write_generic

    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(8)]
    (root / "images").mkdir(parents=True, exist_ok=True)
    rel, labels = [], np.full((n, len(names)), -1, dtype=np.int8)
    for i in range(n):
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(im)
        for c in rng.choice(len(names), size=3, replace=False):
            x, y = rng.integers(0, size - 40, 2)
            w, h = rng.integers(20, 120, 2)
            draw.ellipse([int(x), int(y), int(x + w), int(y + h)],
                         fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            labels[i, c] = 1
        rel.append(f"images/{i:05d}.jpg")
        im.save(root / rel[-1], quality=90)
    write_generic(root, "bench", rel, labels, names)


def _bench_inputs(args: argparse.Namespace, tmp: Path) -> tuple[Any, FrozenCLIP]:
    """The dataset and backbone ``bench features`` measures, resolving ``auto``: SynthScenes and
    the default TinyCLIP when their code exists, else generated JPEGs and a random tiny ResNet."""
    from trm_lib.datasets import load, read_generic

    world = _default_world_available()
    if args.model == "auto":
        if world:
            args.model, args.pretrained = BackboneConfig().model, BackboneConfig().pretrained
        else:
            write_json(tmp / "configs" / "bench-RN.json", BENCH_FALLBACK_CONFIG)
            register_model_configs(tmp / "configs")
            args.model, args.pretrained = "bench-RN", None
            print("NOTE: the default TinyCLIP is not available yet; measuring a random tiny "
                  "ResNet (bench-RN: layers [1,1,2,1], width 32, 128 px)")
    if args.pretrained == "auto":
        args.pretrained = None
    if args.dataset == "auto":
        args.dataset = "synthscenes" if world else "generated"
        if not world:
            print("NOTE: SynthScenes is not available yet; using generated JPEGs")
    if args.dataset == "generated":
        _write_bench_images(tmp / "data", args.n)
        dataset = read_generic(tmp / "data", "bench", name="generated")
        print(f"dataset: {args.n} generated 256x256 JPEGs (random ellipses)")
    else:
        dataset = load(args.dataset, root=args.root, split=args.split)
    return dataset.subset(range(min(args.n, len(dataset)))), _build_backbone(args)


def bench(argv: list[str]) -> int:
    """Images/s of an uncached epoch (JPEG decode + transform + backbone) vs a cached epoch
    (``FeatureStore.batch`` over shuffled indices), and their ratio."""
    parser = argparse.ArgumentParser(prog="python -m trm_lib bench features")
    parser.add_argument("--dataset", default="auto",
                        help="registry name | generated (n random-shape 256 px JPEGs) | auto "
                             "(synthscenes if its loader exists, else generated)")
    parser.add_argument("--root", default=None)
    parser.add_argument("--split", default="train")
    parser.add_argument("--n", type=int, default=256, help="images measured")
    parser.add_argument("--train-batch", type=int, default=64, help="batch of the cached read")
    parser.add_argument("--raw", action="store_true")
    _backbone_args(parser)
    parser.set_defaults(model="auto", pretrained="auto")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="trm-bench-") as tmp:
        tmp = Path(tmp)
        dataset, backbone = _bench_inputs(args, tmp)
        n = len(dataset)
        print(f"backbone {backbone.identity()} on {backbone.device}, grid {backbone.grid}; "
              f"dataset {dataset.name}/{dataset.split}, {n} images; "
              f"torch threads {torch.get_num_threads()}")

        from trm_lib.backbone.decode import image_batches, use_gpu_decode

        gpu = use_gpu_decode(args.gpu_decode, backbone.device)

        def epoch() -> Iterator[tuple[torch.Tensor | None, torch.Tensor]]:
            return image_batches(dataset, backbone.transform(),
                                 [range(i, min(i + args.batch_size, n))
                                  for i in range(0, n, args.batch_size)],
                                 device=backbone.device, gpu_decode=gpu,
                                 num_workers=args.num_workers)

        warm = next(epoch())[0]  # first-call allocations and thread start-up
        backbone.encode_images(warm, raw=args.raw)
        t0 = time.perf_counter()
        for images, _ in epoch():
            out = backbone.encode_images(images, raw=args.raw)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        live = n / (time.perf_counter() - t0)
        del out

        t0 = time.perf_counter()
        store = compute_features(backbone, dataset, batch_size=args.batch_size, raw=args.raw,
                                 num_workers=args.num_workers, cache_root=tmp / "cache",
                                 progress=False, gpu_decode=gpu)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        compute_features(backbone, dataset, batch_size=args.batch_size, raw=args.raw,
                         cache_root=tmp / "cache", progress=False, gpu_decode=gpu)
        reuse = time.perf_counter() - t0

        perm = np.random.default_rng(0).permutation(n)
        reps = max(1, int(2048 // n))  # a few passes so that tiny stores time reliably
        t0 = time.perf_counter()
        for _ in range(reps):
            for i in range(0, n, args.train_batch):
                store.batch(perm[i:i + args.train_batch])
        cached = reps * n / (time.perf_counter() - t0)

        print(f"uncached epoch (decode + transform + backbone): {live:10.1f} images/s"
              f"{'  (nvJPEG decode)' if gpu else ''}")
        print(f"compute_features, first call (incl. writing):   {n / first:10.1f} images/s")
        print(f"compute_features, reuse:                         {reuse * 1e3:10.1f} ms")
        print(f"cached epoch (shuffled batch() of {args.train_batch}):        "
              f"{cached:10.1f} images/s")
        print(f"speed-up per epoch: {cached / live:.1f}x (target >= 30x for SynthScenes + "
              f"TinyCLIP)")
    return 0


__all__ = ["bench", "cli"]
