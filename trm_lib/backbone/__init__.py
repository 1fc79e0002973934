"""Rank 2: the frozen CLIP towers and what feeds the head from them — :class:`FrozenCLIP`
(global + dense text-aligned tokens), weight resolution, JPEG decoding, feature extraction and
the checksummed feature store."""

from __future__ import annotations

from .clip import (
    AUGMENTS,
    MODEL_CONFIG_DIR,
    PRECISIONS,
    BackboneError,
    FrozenCLIP,
    interpolate_pos_embed,
    register_model_configs,
    resnet_dense_tokens,
    resnet_feature_map,
)

__all__ = ["AUGMENTS", "BackboneError", "FrozenCLIP", "MODEL_CONFIG_DIR", "PRECISIONS",
           "interpolate_pos_embed", "register_model_configs", "resnet_dense_tokens",
           "resnet_feature_map"]
