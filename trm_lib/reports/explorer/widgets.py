"""Notebook 06's explorer, the widget side: the ipywidgets board that calls
:class:`~trm_lib.reports.explorer.runs.Explorer` on every control change, and the PNG bytes it
shows (the browser tests compare them with the library's)."""


from __future__ import annotations

import html
import io
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets
import pandas as pd
from matplotlib.figure import Figure

from trm_lib.config.run_config import ConfigError

from .runs import METHODS, PROPORTIONS, Explorer, View

__all__ = ["ExplorerWidgets", "build_widgets", "figure_png"]


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The PNG bytes the widgets show for ``fig`` (fixed metadata, so equal figures give equal
    bytes: the browser tests compare the page's image with the library's)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _html_table(df: pd.DataFrame) -> str:
    note = ("<div style='font-size:85%;color:#555'>test metrics in % at the epoch selected on "
            "validation (oracle: best test epoch); pseudo-labels of the last epoch, in %; "
            "–: not applicable or none made</div>")
    return note + df.reset_index().to_html(
        index=False, na_rep="–", float_format=lambda v: f"{v:.2f}", border=0,
        classes="trm-explorer-table")


#: trainer lines the log panel shows (the newest at the bottom)
LOG_TAIL = 12


def _visited_html(df: pd.DataFrame) -> str:
    note = ("<div style='font-size:85%;color:#555'><b>settings visited</b>: test mAP in %, mean "
            "over the seeds run (± sample sd once two or more seeds ran; with one seed a "
            "1-point difference can be noise); pick another seed to see the spread</div>")
    return note + df.reset_index().to_html(index=False, na_rep="–",
                                           float_format=lambda v: f"{v:.2f}", border=0,
                                           classes="trm-explorer-visited")


class ExplorerWidgets(widgets.VBox):
    """The explorer's UI: every control change calls :meth:`Explorer.view` and shows its metrics
    table (HTML) and figure (PNG image); trainer lines go to a log area.

    Parts, for tests and customisation: ``controls`` (name → widget: ``proportion``, ``method``,
    ``kd``, ``mcl``, ``pseudo``, ``pseudo_high``, ``pseudo_low``, ``seed``, ``image``),
    ``status`` (the setting, its scale, epoch progress while training), ``table`` (HTML),
    ``figure`` (PNG image), ``visited`` (every setting run so far, with its seed spread and the
    zero-shot floor), ``log_area`` (the newest trainer lines; all in ``log_lines``), ``truth`` (the
    image's true labels), ``last_view`` and ``updates`` (completed refreshes). The figure and table are set
    as widget values (not printed into an Output), so they update the same way in a live
    kernel, in a test and in a saved widget state."""

    def __init__(self, explorer: Explorer, **state: Any):
        self.explorer = explorer
        image = int(state.pop("image", 0))
        s = explorer.setting(**state)
        n = explorer.n_images()
        props = sorted({*PROPORTIONS, s.proportion})
        slider = {"continuous_update": False, "style": {"description_width": "initial"}}
        self.controls: dict[str, widgets.ValueWidget] = {
            "proportion": widgets.SelectionSlider(
                options=[(f"{p:.0%}", p) for p in props], value=s.proportion,
                description="label proportion p", **slider),
            "method": widgets.Dropdown(options=[(v, k) for k, v in METHODS.items()],
                                       value=s.method, description="method"),
            "seed": widgets.Dropdown(options=sorted({*range(5), s.seed}), value=s.seed,
                                     description="seed", layout={"width": "9em"}),
            "kd": widgets.Checkbox(value=s.kd, description="knowledge distillation (kd)"),
            "mcl": widgets.Checkbox(value=s.mcl, description="multimodal contrastive (mcl)"),
            "pseudo": widgets.Checkbox(value=s.pseudo, description="pseudo-labels"),
            "pseudo_high": widgets.FloatSlider(value=s.pseudo_high, min=0.5, max=0.99, step=0.01,
                                               description="pseudo-positive ≥", **slider),
            "pseudo_low": widgets.FloatSlider(value=s.pseudo_low, min=0.0, max=0.49, step=0.01,
                                              description="pseudo-negative ≤", **slider),
            "image": widgets.IntSlider(value=image, min=0, max=max(0, n - 1),
                                       description=f"test image (of {n})", **slider),
        }
        self.truth = widgets.HTML()
        self.status = widgets.HTML()
        self.table = widgets.HTML()
        self.figure = widgets.Image(format="png", layout={"max_width": "100%"})
        self.visited = widgets.HTML()
        self.log_lines: list[str] = []  # every trainer line of this session
        self.log_area = widgets.HTML()  # the newest lines: the panel follows the training
        self.last_view: View | None = None
        self.updates = 0  # completed refreshes (figure and table set)
        c = self.controls
        rows = [widgets.HBox([c["proportion"], c["method"], c["seed"]]),
                widgets.HBox([c["kd"], c["mcl"], c["pseudo"]]),
                widgets.HBox([c["pseudo_high"], c["pseudo_low"]]),
                widgets.HBox([c["image"], self.truth]),
                self.status, self.table, self.figure, self.visited,
                widgets.Accordion(children=[self.log_area], titles=("training log",),
                                  selected_index=0)]
        super().__init__(children=rows)
        for w in c.values():
            w.observe(self._changed, names="value")
        self.refresh()

    def state(self) -> dict[str, Any]:
        """The current control values (controls + ``image``)."""
        return {name: w.value for name, w in self.controls.items()}

    def _changed(self, _change: Mapping[str, Any]) -> None:
        self.refresh()

    @contextmanager
    def _logging(self) -> Iterator[None]:
        saved = self.explorer.log

        def log(line: str) -> None:
            self.log_lines.append(line)
            tail = "\n".join(self.log_lines[-LOG_TAIL:])
            self.log_area.value = (f"<pre style='font-size:85%;margin:0'>{html.escape(tail)}"
                                   f"</pre>")
            self.status.value = f"<i>training: {html.escape(line.strip()[:120])}…</i>"

        self.explorer.log = log
        try:
            yield
        finally:
            self.explorer.log = saved

    def refresh(self) -> None:
        """Recompute the view of the current controls; errors (e.g. thresholds that cross) are
        shown in the status line instead of raising inside a widget callback."""
        state = self.state()
        c = self.controls
        is_trm = state["method"] == "trm_ml"
        for name in ("kd", "mcl", "pseudo"):
            c[name].disabled = not is_trm
        for name in ("pseudo_high", "pseudo_low"):
            c[name].disabled = not (is_trm and state["pseudo"])
        controls = {k: v for k, v in state.items() if k != "image"}
        try:
            new = self.explorer.pending(**controls)
        except ConfigError:
            new = []  # reported below by view()
        self.status.value = (f"<i>getting {len(new)} run(s) (trained on cached features unless "
                             f"stored)…</i>" if new else "<i>updating…</i>")
        try:
            with self._logging():
                view = self.explorer.view(**state)
                labels = self.explorer.image_labels(state["image"])
        except (ConfigError, ValueError) as err:
            self.status.value = f"<b style='color:#b00020'>{html.escape(str(err))}</b>"
            return
        self.truth.value = f"true labels: <b>{html.escape(', '.join(labels) or 'none')}</b>"
        try:
            with self._logging():
                visited = self.explorer.visited()
            scale = self.explorer.scale(**controls)
        except (ConfigError, ValueError) as err:
            visited, scale = None, f"(not available: {err})"
        self.table.value = _html_table(view.table)
        self.figure.value = figure_png(view.figure)
        if visited is not None:
            self.visited.value = _visited_html(visited)
        self.last_view = view
        self.updates += 1
        self.status.value = (f"{html.escape(view.setting.label())}, image {view.image}: "
                             f"{view.seconds:.1f} s ({len(new)} new run(s)) · "
                             f"{html.escape(scale)}")


def build_widgets(explorer: Explorer, **state: Any) -> ExplorerWidgets:
    """The explorer's widget tree, showing ``state`` (controls + ``image``) first."""
    return ExplorerWidgets(explorer, **state)
