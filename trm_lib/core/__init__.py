"""Every built-in method, registered: the one module that imports the implementations.

The registry (:mod:`trm_lib.core.methods`) never imports what registers into it; code that builds a
method by name, or lists the names (config validation, the explorer, experiment grids), imports
this module, which imports each implementation once so that its ``@register_method`` has run.
A new method: a module with a ``@register_method("name", label=...)`` class, imported here.
"""

from __future__ import annotations

from . import baselines, model  # noqa: F401  each registers its methods on import
from .methods import build_method, list_methods, loss_terms, method_class, method_label

__all__ = ["build_method", "list_methods", "loss_terms", "method_class", "method_label"]
