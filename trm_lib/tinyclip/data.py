"""The caption corpus as pre-training reads it: images and tokenised captions in memory, caption
groups for the multi-positive loss, and the augmentations.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trm_lib.utils.io import read_json

from .config import CROP_MIN, PretrainConfig

# ---------------------------------------------------------------------------------------------
# Corpus in memory
# ---------------------------------------------------------------------------------------------

@dataclass
class Corpus:
    images: torch.Tensor  # (N, 3, S, S) uint8
    tokens: torch.Tensor  # (N, context_length) int64
    groups: torch.Tensor  # (N,) int64
    info: dict[str, Any]


def load_corpus(cfg: PretrainConfig, size: int, tokenizer: Any, context_length: int,
                 progress: bool) -> Corpus:
    """The caption corpus (generated if missing), decoded once to ``size`` px uint8 in memory."""
    from PIL import Image

    from trm_lib.datasets.base import DatasetError, open_image
    from trm_lib.synth.world import ensure_captions, load_captions

    root = ensure_captions(cfg.caption_config(), progress=progress)
    df = load_captions(root)
    captions = [str(c) for c in df["caption"]]
    encode = getattr(tokenizer, "encode", None)
    if encode is not None:
        for i, text in enumerate(captions):
            if len(encode(text)) + 2 > context_length:
                raise DatasetError(f"{root / 'captions.csv'}: caption {i} {text!r} does not fit "
                                   f"the text context length {context_length} of {cfg.model!r}")
    images = np.empty((len(df), size, size, 3), dtype=np.uint8)

    def decode(i: int) -> None:
        im = open_image(df["path"].iat[i])
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC, reducing_gap=None)
        images[i] = np.asarray(im)

    # PIL releases the GIL while decoding and resizing, so threads use every core
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        list(pool.map(decode, range(len(df))))
    meta = read_json(root / "corpus.json")
    info = {"root": str(root), "images": len(df), "config_hash": meta.get("config_hash"),
            "captions_sha256": meta.get("captions_sha256"),
            "distinct_captions": len(set(captions)),
            "distinct_groups": int(group_ids(captions, list(df["classes"]),
                                              cfg.positives).max()) + 1}
    return Corpus(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                   tokenizer(captions), group_ids(captions, list(df["classes"]), cfg.positives),
                   info)


def augment(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Batch augmentation on float images (B, 3, S, S), driven by ``gen`` only."""
    if mode == "none":
        return x
    B, _, S, _ = x.shape
    if mode == "shift_flip":  # random translation by up to 1/16 of the side (reflect padding)
        pad = max(1, S // 16)
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        off = torch.randint(0, 2 * pad + 1, (B, 2), generator=gen)
        x = torch.stack([padded[b, :, off[b, 0]:off[b, 0] + S, off[b, 1]:off[b, 1] + S]
                         for b in range(B)])
    elif mode == "crop_flip":
        # a random square crop of CROP_MIN..1 of the side, resized back (bilinear): caption
        # objects are drawn a little smaller in the frame than the world's objects appear at
        # 224 px, so the model should also see them larger (and cut by the frame)
        side = CROP_MIN + (1 - CROP_MIN) * torch.rand(B, generator=gen)
        shift = (1 - side)[:, None] * (2 * torch.rand(B, 2, generator=gen) - 1)
        theta = torch.zeros(B, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = side
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    flip = torch.rand(B, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def group_ids(captions: list[str], classes: list[list[str]], mode: str) -> torch.Tensor:
    if mode == "none":
        return torch.arange(len(captions))
    keys = [" ".join(sorted(c)) for c in classes] if mode == "classes" else captions
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(k, len(index)) for k in keys])
