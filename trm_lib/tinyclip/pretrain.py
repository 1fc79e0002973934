"""TinyCLIP: the project's own contrastively pre-trained tiny CLIP (the analogue of web pre-training).

Nothing can be downloaded, and a random-weight CLIP makes every comparison meaningless, so the
embedded default world ships its own CLIP: a small open_clip model (``trm_lib/model_configs``)
trained with the CLIP objective on the SynthScenes *caption corpus* -- one or two large objects on
textured backgrounds with a few distractors, captioned ``"a photo of a red car."`` -- and never on
the scenes themselves (which hold many, often small, partly occluded objects).
Evaluated zero-shot on the cluttered multi-label scenes it is well above chance and well below the
ceiling: the regime where prompt tuning and text-region matching have something to add.

Choices, and why:

* **Multi-positive InfoNCE.** A batch of 20-class captions holds many captions of the same
  content; the standard CLIP loss would call them negatives of each other and ask for the
  impossible. :func:`multi_positive_clip_loss` spreads the target mass uniformly over all items
  with the same *group* (same class set by default) -- exactly the standard loss when every group
  is distinct.
* **Text-aligned regions, not only a text-aligned whole.** Trained with the CLIP loss alone, the
  attention pool learns to pick the object tokens and the tokens themselves drift out of the
  joint space (text-region zero-shot about 0.3 test mAP, far below the global 0.50), so every
  region-based method starts crippled -- unlike web CLIP, whose dense tokens are text-aligned
  (MaskCLIP). A second multi-positive loss (``region_weight``) on :func:`region_similarity`, the
  spatial-softmax pooled cosine between each text and the dense tokens, restores that property
  (text-region zero-shot 0.47) at no cost to the global zero-shot mAP.
* **Low training resolution.** The ResNet is trained at ``train_size`` px (the attention pool's
  positional embedding at ``train_size / 32`` squared) and saved at its native size with that
  embedding interpolated bicubically, so the saved folder is an ordinary open_clip model at
  224 px: ``create_model("local-dir:<folder>")`` with a 7x7 layer4 map, like RN101's 14x14 at 448.
  Cheap on a laptop CPU, and the caption objects at the training size have about the pixel size of
  scene objects at 224 px.
* **Deterministic.** Seeded init, data order and augmentation from one ``torch.Generator``,
  ``torch.use_deterministic_algorithms`` during training: the same config, torch version and
  thread count give bit-identical weights.

The result is cached in ``cache_dir()/tinyclip/<model>-<hash of the pre-training config>/`` as an
open_clip ``local-dir:`` folder (``open_clip_config.json`` + ``open_clip_model.safetensors``) plus
``pretrain.json`` (config, corpus checksum, losses, zero-shot mAP, wall and CPU time, versions).
``python -m trm_lib pretrain`` builds or locates it; ``--export`` writes the compact file that
ships in the package (:mod:`trm_lib.tinyclip.shipped`). Nothing else pre-trains: the default
``backbone.pretrained="tinyclip"`` loads the shipped file, the same model on every machine
(pre-training's result depends on the CPU's float rounding: ~1 zero-shot mAP point between an
EPYC and a Xeon).

Rooms: :mod:`trm_lib.tinyclip.config` (the config and the cache location),
:mod:`trm_lib.tinyclip.data` (corpus and augmentation), :mod:`trm_lib.tinyclip.check` (the zero-shot
check); this module holds the loss, the training loop, the cache (``ensure_tinyclip``, which it
registers as ``backbone.pretrained="tinyclip"`` in :mod:`trm_lib.backbone.weights`) and the CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trm_lib.backbone.weights import register_weights
from trm_lib.config.run_config import ConfigError
from trm_lib.utils.errors import FileError
from trm_lib.utils.io import atomic_dir, read_json, sha256_file, write_json
from trm_lib.utils.locks import file_lock

from .check import default_test_set, folder_backbone, zero_shot_map, zero_shot_result
from .config import (
    DEFAULT_CONFIGS,
    MANIFEST,
    PRETRAIN_VERSION,
    WEIGHTS_FILE,
    ZERO_SHOT_TEMPLATE,
    PretrainConfig,
    config_hash,
    default_config,
    model_config,
    tinyclip_dir,
)
from .data import augment, load_corpus
from .shipped import corpus_texts, export, has_shipped, shipped_file, shipped_folder

# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------

def multi_positive_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                             logit_scale: torch.Tensor | float,
                             groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE where every pair with the same ``groups`` id is a positive.

    Row ``i`` of the image-to-text logits ``s * <x_i, t_j>`` is scored by cross-entropy against
    the soft target ``m_ij / sum_j m_ij`` with ``m_ij = [g_i == g_j]``; likewise for text-to-image;
    the two are averaged. Features are expected L2-normalised. With all groups distinct
    (or ``groups=None``) the target is the identity: open_clip's ``ClipLoss``.
    """
    return _multi_positive_loss(logit_scale * image_features @ text_features.T, groups)


def _multi_positive_loss(logits: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    n = logits.shape[0]
    if groups is None:
        targets = torch.eye(n, dtype=logits.dtype, device=logits.device)
    else:
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {tuple(groups.shape)}")
        match = (groups[:, None] == groups[None, :]).to(logits.dtype)
        targets = match / match.sum(dim=1, keepdim=True)  # symmetric match: same for both sides
    loss_i = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (loss_i + loss_t) / 2


def region_similarity(dense: torch.Tensor, text_features: torch.Tensor,
                      sharpness: float) -> torch.Tensor:
    """(B_img, B_txt) similarity of every image's *regions* with every text: per pair, the
    spatial-softmax (sharpness ``sharpness``) weighted mean over the L tokens of cos(F~_l, t), the
    aggregation DualCoOp and TRM-ML's saliency maps use. ``dense`` (B, L, D), ``text`` (B, D),
    both L2-normalised."""
    sims = torch.einsum("bld,kd->bkl", dense, text_features)
    return (torch.softmax(sharpness * sims, dim=-1) * sims).sum(-1)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels, without filling every new tensor with NaN first: that debugging
    aid (``fill_uninitialized_memory``, on by default in this mode) changes no result and cost
    ~6 % of a pre-training step (measured: bit-identical weights, 0.49 -> 0.46 s per step)."""
    import torch.utils.deterministic as det

    prev, prev_fill = torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)
        det.fill_uninitialized_memory = prev_fill


def _encode(model: Any, images: torch.Tensor, text: torch.Tensor, dense: bool
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """L2-normalised global image (B, D), dense tokens (B, L, D) or None, and text (B, D)
    embeddings; the dense tokens are those of :class:`trm_lib.backbone.clip.FrozenCLIP`."""
    v = model.visual
    tokens = None
    if not dense:
        img = v(images)
    elif not hasattr(v, "attnpool"):
        raise ConfigError("PretrainConfig.region_weight > 0 needs a ResNet image tower")
    else:
        from trm_lib.backbone.clip import resnet_dense_tokens, resnet_feature_map

        fmap = resnet_feature_map(v, images)
        img = v.attnpool(fmap)
        tokens = F.normalize(resnet_dense_tokens(v.attnpool, fmap.flatten(2).transpose(1, 2)),
                             dim=-1)
    txt = F.normalize(model.encode_text(text), dim=-1)
    return F.normalize(img, dim=-1), tokens, txt


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's convention: no weight decay on gains, biases, norms and the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name \
            or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]


def _lr_at(step: int, total: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def _native_state_dict(model: torch.nn.Module, native: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The trained weights with the vision positional embedding resized to the native size."""
    from open_clip.modified_resnet import ModifiedResNet

    from trm_lib.backbone.clip import interpolate_pos_embed

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    size = native["vision_cfg"].get("image_size", 224)
    visual = model.visual
    if isinstance(visual, ModifiedResNet):
        key, grid = "visual.attnpool.positional_embedding", (size // 32, size // 32)
        old = None
    else:
        patch = native["vision_cfg"].get("patch_size", 16)
        key, grid = "visual.positional_embedding", (size // patch, size // patch)
        old = tuple(visual.grid_size)
    if state[key].shape[0] != grid[0] * grid[1] + 1:
        state[key] = interpolate_pos_embed(state[key], grid, old_grid=old).contiguous()
    return state


def _save_folder(folder: Path, model_cfg: dict[str, Any], state: dict[str, torch.Tensor],
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """An open_clip ``local-dir:`` folder: ``open_clip_config.json`` + safetensors weights."""
    from safetensors.torch import save_file

    size = model_cfg["vision_cfg"].get("image_size", 224)
    write_json(folder / "open_clip_config.json", {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"size": size, "mean": list(mean), "std": list(std),
                           "interpolation": "bicubic", "resize_mode": "squash"}})
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})


def _train_steps(model: Any, corpus: Any, cfg: PretrainConfig, progress: bool
                 ) -> tuple[list[dict[str, float]], int]:
    """The contrastive training loop (inside :func:`_deterministic`): ``(history, steps)``."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    gen = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(0.9, 0.98), eps=1e-6)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    n = len(corpus.tokens)
    steps_per_epoch = n // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    history: list[dict[str, float]] = []
    step = 0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        losses, accs = [], []
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            images = augment(corpus.images[idx].float() / 255, cfg.augment, gen)
            images = ((images - mean) / std).contiguous(memory_format=torch.channels_last)
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total, cfg)
            groups = corpus.groups[idx]
            img, dense, txt = _encode(model, images, corpus.tokens[idx], cfg.region_weight > 0)
            scale = model.logit_scale.exp()
            loss = multi_positive_clip_loss(img, txt, scale, groups)
            if dense is not None:
                region = region_similarity(dense, txt, cfg.region_sharpness)
                loss = loss + cfg.region_weight * _multi_positive_loss(scale * region, groups)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pre-training {cfg.model}: loss is {loss.item()} "
                                         f"at epoch {epoch} step {b} (lower PretrainConfig.lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
                top = (img @ txt.T).argmax(dim=1)
                accs.append((groups[top] == groups).float().mean().item())
            losses.append(loss.item())
            step += 1
        row = {"epoch": epoch, "loss": float(np.mean(losses)),
               "i2t_acc": float(np.mean(accs)),
               "temperature": float(1 / model.logit_scale.exp().item()),
               "seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        if progress:
            print(f"[pretrain {cfg.model}] epoch {epoch}/{cfg.epochs}  loss {row['loss']:.4f}"
                  f"  i2t acc {row['i2t_acc']:.3f}  T {row['temperature']:.4f}"
                  f"  {row['seconds']:.1f} s", flush=True)
    model.eval()
    return history, total


def _zero_shot_summary(cfg: PretrainConfig, folder: Path, evaluate: Any, progress: bool
                       ) -> dict[str, Any]:
    """Zero-shot mAP of the freshly written ``folder`` (what ``pretrain.json`` records)."""
    dataset = default_test_set(progress) if evaluate is True else evaluate
    # named like the `tinyclip` backbone so its cached features serve every later run
    res = zero_shot_result(folder_backbone(cfg.model, folder), dataset, progress=progress)
    return {"mAP": res.value, "dataset": dataset.name, "split": dataset.split,
            "images": len(dataset), "fingerprint": dataset.fingerprint(),
            "template": ZERO_SHOT_TEMPLATE,
            "per_class": dict(zip(dataset.class_names,
                                  [None if math.isnan(a) else float(a)
                                   for a in res.per_class])),
            "chance": float((dataset.labels == 1).mean())}


def pretrain(cfg: PretrainConfig, out_dir: str | os.PathLike, progress: bool = True, *,
             evaluate: bool | Any = True) -> dict[str, Any]:
    """Pre-train ``cfg.model`` on the caption corpus and write the folder ``out_dir``.

    ``out_dir`` is written atomically (a temporary sibling renamed into place; an existing folder
    is replaced). ``evaluate``: True = zero-shot mAP on the default SynthScenes test split,
    a :class:`~trm_lib.datasets.base.MultiLabelDataset` = on that one, False = skip.
    Returns the metrics that also go into ``pretrain.json``.
    """
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    t_start, cpu_start = time.perf_counter(), time.process_time()
    out_dir = Path(out_dir).expanduser()
    native = model_config(cfg.model)
    native_size = native["vision_cfg"].get("image_size", 224)
    size = cfg.train_size or native_size
    tokenizer = open_clip.get_tokenizer(cfg.model)
    context_length = native["text_cfg"].get("context_length", 77)
    corpus = load_corpus(cfg, size, tokenizer, context_length, progress)
    t_corpus = time.perf_counter() - t_start

    torch.manual_seed(cfg.seed)
    with _deterministic():
        model = open_clip.create_model(cfg.model, pretrained=None, force_image_size=size)
        # channels_last: oneDNN's convolution and batch-norm kernels are ~25 % faster on CPU
        model = model.to(memory_format=torch.channels_last)
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1 / cfg.init_temperature))
        history, total = _train_steps(model, corpus, cfg, progress)
    t_train = time.perf_counter() - t_start - t_corpus
    cpu_train = time.process_time() - cpu_start

    with atomic_dir(out_dir) as tmp:
        _save_folder(tmp, native, _native_state_dict(model, native), OPENAI_DATASET_MEAN,
                     OPENAI_DATASET_STD)
        t0 = time.perf_counter()
        zero_shot = None if evaluate is False else _zero_shot_summary(cfg, tmp, evaluate,
                                                                       progress)
        t_eval = time.perf_counter() - t0 if zero_shot is not None else 0.0
        metrics = {
            "name": "tinyclip", "model": cfg.model, "version": PRETRAIN_VERSION,
            "config": asdict(cfg), "config_hash": config_hash(cfg), "seed": cfg.seed,
            "model_cfg": native, "train_size": size, "corpus": corpus.info,
            "steps": total, "history": history, "final_loss": history[-1]["loss"],
            "zero_shot": zero_shot,
            "wall_seconds": {"corpus": round(t_corpus, 2), "train": round(t_train, 2),
                             "eval": round(t_eval, 2),
                             "total": round(time.perf_counter() - t_start, 2)},
            "cpu_seconds": {"corpus_and_train": round(cpu_train, 2),
                            "total": round(time.process_time() - cpu_start, 2)},
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "open_clip": open_clip.__version__, "python": platform.python_version(),
            "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(tmp / MANIFEST, metrics)
    return metrics


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------

def _lock(target: Path) -> contextlib.AbstractContextManager[Path]:
    """Inter-process lock per cache folder (:func:`trm_lib.utils.locks.file_lock`): two notebooks
    asking at once train once."""
    return file_lock(target.parent / f".{target.name}.lock", what=f"TinyCLIP cache {target}")


def ensure_tinyclip(model_name: str = "TinyCLIP-RN", *, force: bool = False,
                    progress: bool = True, config: PretrainConfig | None = None,
                    evaluate: bool = True, shipped: bool = True) -> Path:
    """The ``local-dir`` folder of ``model_name``'s TinyCLIP.

    Default (``shipped``, the shipped recipe, no ``force``): the weights that ship in the package
    (:mod:`trm_lib.tinyclip.shipped`), checksum-verified, never pre-trained here, so every
    machine has the same model. Otherwise the recipe's cached folder, pre-training it first if it
    is missing (or ``force``); ``config`` overrides the recipe; ``evaluate=False`` skips the
    zero-shot evaluation of a fresh pre-training (no world needed)."""
    cfg = config or default_config(model_name)
    if config is not None and config.model != model_name:
        cfg = replace(config, model=model_name)
    if shipped and not force and cfg == default_config(model_name) and has_shipped(model_name):
        return shipped_folder(model_name)
    folder = tinyclip_dir(cfg)
    if not force and (folder / MANIFEST).exists() and (folder / WEIGHTS_FILE).exists():
        _check_cached(folder, cfg)  # complete: no lock (a read-only cache cannot create one)
        return folder
    with _lock(folder):
        if folder.exists() and not force:
            _check_cached(folder, cfg)
            return folder
        pretrain(cfg, folder, progress=progress, evaluate=evaluate)
    return folder


register_weights("tinyclip", ensure_tinyclip)  # backbone.pretrained="tinyclip" resolves here


def _check_cached(folder: Path, cfg: PretrainConfig) -> None:
    manifest = folder / MANIFEST
    if not manifest.exists() or not (folder / WEIGHTS_FILE).exists():
        raise FileNotFoundError(f"{manifest}: {folder} exists but is not a complete TinyCLIP "
                                f"folder (delete it or pass force=True)")
    have = read_json(manifest).get("config_hash")
    if have != config_hash(cfg):
        raise FileError(f"{manifest}: config_hash {have!r} does not match the requested "
                         f"config ({config_hash(cfg)}); delete the folder or pass force=True")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def cli(argv: list[str] | None = None) -> int:
    """``python -m trm_lib pretrain``: the recipe that produced the shipped TinyCLIP weights.
    Pre-trains (or locates) the recipe's cached folder and prints its per-epoch losses, zero-shot
    mAP on the SynthScenes test split and wall/CPU time; ``--export`` then writes the compact
    shipped file (default: the package's own) and its checksum."""
    p = argparse.ArgumentParser(prog="python -m trm_lib pretrain", description=cli.__doc__)
    p.add_argument("--model", default="TinyCLIP-RN", help="model config name")
    p.add_argument("--force", action="store_true", help="re-train even if cached")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-eval", action="store_true",
                   help="skip the zero-shot evaluation (needs no SynthScenes world)")
    p.add_argument("--export", nargs="?", const="", default=None, metavar="FILE",
                   help="write the compact weights file (default: the package's shipped file "
                        "of --model) and its SHA-256 into SHA256SUMS beside it")
    overridable = [f.name for f in fields(PretrainConfig) if f.name != "model"]
    for name in overridable:
        kind = type(getattr(PretrainConfig(), name))
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help="(default: the model's recipe)")
    a = p.parse_args(list(argv or []))
    if a.threads:
        torch.set_num_threads(a.threads)
    base = default_config(a.model)
    over = {k: getattr(a, k) for k in overridable if getattr(a, k) is not None}
    cfg = replace(base, **over)
    folder = tinyclip_dir(cfg)
    cached = folder.exists() and not a.force
    t0, c0 = time.perf_counter(), time.process_time()
    folder = ensure_tinyclip(a.model, force=a.force, progress=not a.quiet, config=cfg,
                             evaluate=not a.no_eval, shipped=False)
    m = read_json(folder / MANIFEST)
    print(folder)
    if cached:
        for row in m["history"]:
            print(f"  epoch {row['epoch']}/{len(m['history'])}  loss {row['loss']:.4f}  "
                  f"i2t acc {row['i2t_acc']:.3f}")
    zs = m.get("zero_shot") or {}
    if zs:
        print(f"  zero-shot mAP on {zs['dataset']}/{zs['split']} ({zs['images']} images, "
              f"\"{zs['template']}\"): {zs['mAP']:.4f}  (chance ~ {zs['chance']:.3f})")
    w, c = m["wall_seconds"], m["cpu_seconds"]
    print(f"  pre-training: {w['corpus'] + w['train']:.1f} s wall ({w['corpus']:.1f} s corpus), "
          f"{c['corpus_and_train']:.1f} s CPU, {m['threads']} threads; eval {w['eval']:.1f} s")
    if a.export is not None:
        out = Path(a.export) if a.export else shipped_file(a.model)
        digest = export(folder, out, corpus_texts(cfg))
        print(f"  exported {out} ({out.stat().st_size / 1e6:.2f} MB), sha256 {digest}")
    if cached:
        print(f"  (cached; this call took {time.perf_counter() - t0:.1f} s, "
              f"{time.process_time() - c0:.1f} s CPU)")
    return 0


__all__ = ["DEFAULT_CONFIGS", "PretrainConfig", "cli", "config_hash", "default_config",
           "ensure_tinyclip", "model_config", "multi_positive_clip_loss", "pretrain",
           "tinyclip_dir", "zero_shot_map"]

