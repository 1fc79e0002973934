"""Every figure and table of the report comes from one function here.

Notebooks call these once and save the result with :func:`save_figure` / :func:`save_table`;
ipywidgets explorers wrap the same functions, so what a static report shows is what an
interactive session shows.

Conventions:

- Functions build a :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: nothing
  is registered globally (no leaks in long loops or tests, no ``plt.show``), and any backend
  works, Agg included. In a notebook, run ``%matplotlib inline`` once; then a returned figure
  displays when it is the last expression of a cell.
- Saved files are byte-stable across runs: fixed SVG hash salt, no software/version stamps, and a
  date only when ``SOURCE_DATE_EPOCH`` fixes it (the reproducible-builds convention).
- Label colours are shared by every label figure: positive, negative, unknown.
- Results use the tidy schema ``method, variant, protocol, proportion, seed, split, metric, value``
  (one row per number); spreads are the sample standard deviation over seeds (ddof=1, shown as
  0 for a single seed).
"""

from __future__ import annotations

from .attention import overlay_map, plot_attention_rows, pointing_game, saliency_maps, upsample_map
from .common import HIDDEN_POSITIVE_COLOR, LABEL_COLORS, STYLE, SVG_HASHSALT
from .data import (
    plot_cooccurrence,
    plot_label_stats,
    plot_mask,
    plot_mask_comparison,
    sample_titles,
    show_images,
)
from .results import (
    COMPONENT_LABELS,
    plot_ablation,
    plot_forest,
    plot_gains_vs_p,
    plot_gains_vs_world,
    plot_per_class_ap,
    plot_proportion_curves,
    results_table,
)
from .saving import FORMATS, markdown_table, save_figure, save_table
from .training import plot_precision_coverage, plot_training_curves, plot_training_diagnostic

__all__ = [
    "COMPONENT_LABELS", "FORMATS", "HIDDEN_POSITIVE_COLOR", "LABEL_COLORS", "STYLE",
    "SVG_HASHSALT", "markdown_table", "overlay_map", "plot_ablation", "plot_attention_rows",
    "plot_cooccurrence", "plot_forest", "plot_gains_vs_p", "plot_gains_vs_world",
    "plot_label_stats", "plot_mask",
    "plot_mask_comparison", "plot_per_class_ap", "plot_precision_coverage",
    "plot_proportion_curves", "plot_training_curves",
    "plot_training_diagnostic", "pointing_game", "results_table", "saliency_maps",
    "sample_titles", "save_figure", "save_table", "show_images", "upsample_map",
]
