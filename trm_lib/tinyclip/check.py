"""Zero-shot mAP of a CLIP folder or backbone on a multi-label split: the check every fresh
TinyCLIP gets (cosine of the global image embedding and the class prompt embeddings).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import ZERO_SHOT_TEMPLATE

# ---------------------------------------------------------------------------------------------
# Zero-shot evaluation
# ---------------------------------------------------------------------------------------------

def default_test_set(progress: bool) -> Any:
    from trm_lib.datasets import load

    return load("synthscenes", split="test", progress=progress)


def folder_backbone(model: str, folder: str | os.PathLike, batch_size: int = 128) -> Any:
    from trm_lib.backbone.clip import FrozenCLIP

    return FrozenCLIP(model, pretrained=f"local-dir:{Path(folder).expanduser()}",
                      batch_size=batch_size)


def zero_shot_result(folder_or_model: Any, dataset: Any, template: str = ZERO_SHOT_TEMPLATE,
               batch_size: int = 128, progress: bool = False) -> Any:
    """Zero-shot scores from the global embeddings in the feature cache: the features of the
    TinyCLIP's test split are computed here once and reused by every method afterwards."""
    from trm_lib.backbone.clip import FrozenCLIP
    from trm_lib.backbone.features import compute_features
    from trm_lib.core.metrics import mean_average_precision
    from trm_lib.synth.pictograms import prompt_name

    if isinstance(folder_or_model, FrozenCLIP):
        backbone = folder_or_model
    else:
        path = str(folder_or_model)
        path = path if path.startswith("local-dir:") else f"local-dir:{Path(path).expanduser()}"
        backbone = FrozenCLIP(path, batch_size=batch_size)
    text = backbone.encode_text(dataset.class_names, [template], name_map=prompt_name)
    store = compute_features(backbone, dataset, batch_size=batch_size, progress=progress)
    image = F.normalize(torch.from_numpy(np.asarray(store.global_feats, dtype=np.float32)), dim=-1)
    scores = image @ F.normalize(text.to(torch.float32), dim=-1).T
    return mean_average_precision(scores.numpy(), dataset.labels)


def zero_shot_map(folder_or_model: str | os.PathLike | Any, dataset: Any = None,
                  template: str = ZERO_SHOT_TEMPLATE, batch_size: int = 128,
                  progress: bool = False) -> float:
    """Zero-shot mAP: per class, the AP of cosine(global image embedding, embedding of
    ``template`` filled with the class's prompt name), averaged over classes.

    ``folder_or_model``: a ``local-dir`` folder (path or ``"local-dir:..."``) or a
    :class:`~trm_lib.backbone.clip.FrozenCLIP`; ``dataset``: default the SynthScenes test split.
    """
    dataset = dataset if dataset is not None else default_test_set(progress)
    return float(zero_shot_result(folder_or_model, dataset, template, batch_size, progress).value)
