"""The interactive explorer of notebook 06: a setting of the controls → its run → live metrics and
the Figure-4 attention rows.

Two layers, so that what a headless report shows is what an interactive session shows (headless,
``ipywidgets.interact`` runs once and its output lives only in widget state):

- :class:`Explorer` — plain Python, no widgets. A *setting* (label proportion, method, the TRM-ML
  switches kd / mcl / pseudo and the pseudo-label thresholds) becomes a complete
  :class:`~trm_lib.config.run_config.RunConfig`. Its run is trained on cached features by the one trainer
  (:func:`trm_lib.train.train`) into a folder named by the config hash, or read back when that
  folder already holds the finished run, and then kept in memory: revisiting a setting is
  instant. Controls that cannot change what a run computes (a TRM-ML switch while a baseline is
  selected, the thresholds while pseudo-labels are off, the picked image) do not change the key.
- :func:`build_widgets` — ipywidgets controls that call the same :class:`Explorer`, and
  :func:`static_figure` — the same figure for a headless report.

Metrics are the trainer's own (:func:`trm_lib.core.metrics.evaluate_scores` on the full test labels at
the epoch selected on the partially labelled validation split, as every run records them),
pseudo-label precision / recall / coverage are the last epoch's pseudo-label statistics against
the hidden full labels (with the default soft pseudo-labels the thresholds define which entries
count as pseudo-positive / negative there; training learns the scores themselves), and the figure
is :func:`trm_lib.viz.plot_attention_rows`.
"""

from __future__ import annotations

from .runs import (
    CONTROLS,
    EXPLORER_OVERRIDES,
    FIGURE_ROWS,
    METHODS,
    PROPORTIONS,
    Explorer,
    ExplorerRun,
    Setting,
    View,
    explorer_config,
    static_figure,
    tidy,
)
from .widgets import ExplorerWidgets, build_widgets, figure_png

__all__ = ["CONTROLS", "EXPLORER_OVERRIDES", "FIGURE_ROWS", "METHODS", "PROPORTIONS", "Explorer",
           "ExplorerRun", "ExplorerWidgets", "Setting", "View", "build_widgets", "explorer_config",
           "figure_png", "static_figure", "tidy"]
