"""Rank 3, the paper's method — what a course reads to learn TRM-ML, and nothing else.

- :mod:`.methods` — the method contract (feature batch in, logits and loss terms out) and the
  registry :data:`METHODS`; :func:`build_method` is the one way a method is built by name
- :mod:`.model` — the TRM-ML head: category queries, :mod:`.cross_attention` over the dense
  region tokens, the MLP, one-to-one text-region matching
- :mod:`.losses` — partial-label ASL/BCE, distillation, multimodal contrastive, AN/LL-R/EM
- :mod:`.prototypes` — multimodal prototypes, the instance memory and pseudo-labels
- :mod:`.prompts`, :mod:`.baselines` — learnable prompts; zero-shot CLIP, DualCoOp, linear probe
- :mod:`.metrics`, :mod:`.diagnostics` — mAP and CP/CR/CF1/OP/OR/OF1; training diagnostics

The registry never imports what registers into it; this package imports each implementation
once, so ``method.name`` resolves as soon as anything of ``trm_lib.core`` is imported.
A new method: a module with a ``@register_method("name", label=...)`` class, imported here.
"""

from __future__ import annotations

from . import baselines, model  # noqa: F401  each registers its methods on import
from .methods import (
    METHODS,
    build_method,
    list_methods,
    loss_terms,
    method_class,
    method_label,
)

__all__ = ["METHODS", "build_method", "list_methods", "loss_terms", "method_class", "method_label"]
