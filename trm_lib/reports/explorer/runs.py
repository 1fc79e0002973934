"""Notebook 06's explorer, the model side: a setting of the controls -> its run (trained once
on cached features, then kept) -> metrics, tables and the Figure-4 maps. The widgets live in
:mod:`.widgets`."""


from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from trm_lib import viz
from trm_lib.config.run_config import ConfigError, MethodConfig, RunConfig, from_dict
from trm_lib.core import list_methods, method_label
from trm_lib.datasets import MultiLabelDataset
from trm_lib.datasets.labels import masks_written_to
from trm_lib.train import (
    LoadedRun,
    Resources,
    RunResult,
    config_hash,
    default_out_dir,
    load_result,
    load_run,
    prepare_data,
    train,
)
from trm_lib.utils.paths import runs_dir

__all__ = ["CONTROLS", "EXPLORER_OVERRIDES", "FIGURE_ROWS", "METHODS", "PROPORTIONS", "Explorer",
           "ExplorerRun", "Setting", "View", "explorer_config", "static_figure", "tidy"]


#: methods the explorer offers (every registered one), with their display names
METHODS = {name: method_label(name) for name in list_methods()}
#: the label proportions of the benchmark (protocol A)
PROPORTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: rows of the attention figure: (row title, method) — the paper's Figure 4 order
FIGURE_ROWS = ((f"{method_label('dualcoop')} (pixel)", "dualcoop"),
               (f"{method_label('trm_ml')} (region)", "trm_ml"))
#: the explorer's short schedule: a click on a new setting answers in seconds on a CPU
#: (no warm-up epoch at 1e-5: in a 4-epoch run it would waste a quarter of the schedule)
EXPLORER_OVERRIDES: dict[str, Any] = {"train.epochs": 4, "train.warmup_epochs": 0,
                                      "method.pseudo_warmup": 2}

Controls = dict[str, Any]


def explorer_config(overrides: Mapping[str, Any] | None = None,
                    base: RunConfig | None = None) -> RunConfig:
    """The explorer's base config: ``base`` (default :class:`RunConfig`), then the short schedule
    :data:`EXPLORER_OVERRIDES`, then ``overrides`` (dotted keys).

    ``method.pseudo_warmup`` is capped at ``train.epochs`` so that pseudo-labels (and their
    precision/recall) appear at least in the last epoch, even in a one-epoch smoke run."""
    cfg = (base or RunConfig()).with_overrides({**EXPLORER_OVERRIDES, **(overrides or {})})
    if cfg.method.pseudo_warmup > cfg.train.epochs:
        cfg = cfg.with_overrides({"method.pseudo_warmup": max(1, cfg.train.epochs)})
    return cfg


@dataclass(frozen=True)
class Setting:
    """One position of the run-determining controls (the picked image is not one of them).

    Always *normalised* by :meth:`Explorer.setting`: switches of a baseline and thresholds of
    a run without pseudo-labels hold the base config's values, so they cannot split one run
    into several keys."""

    proportion: float
    method: str
    kd: bool
    mcl: bool
    pseudo: bool
    pseudo_high: float
    pseudo_low: float
    seed: int = 0  # train.seed and data.mask_seed: the run's repetition

    def variant(self) -> str:
        """The switches as a name: ``"kd+mcl+pseudo(0.90/0.02)"`` for TRM-ML, ``"default"``
        for a baseline (which has none)."""
        if self.method != "trm_ml":
            return "default"
        parts = [s for s in ("kd", "mcl") if getattr(self, s)]
        if self.pseudo:
            parts.append(f"pseudo({self.pseudo_high:.2f}/{self.pseudo_low:.2f})")
        return "+".join(parts) or "no kd/mcl/pseudo"

    def label(self) -> str:
        """``"TRM-ML, p=10%, kd+mcl+pseudo(0.90/0.02)"`` — names a row of the metrics table."""
        name = f"{METHODS.get(self.method, self.method)}, p={self.proportion:.0%}"
        return name if self.method != "trm_ml" else f"{name}, {self.variant()}"


CONTROLS = tuple(f.name for f in fields(Setting))


@dataclass
class ExplorerRun:
    """A finished run of one setting: its result (metrics, history) and the reloaded method."""

    key: str  # config hash: the identity of the run
    setting: Setting
    config: RunConfig
    result: RunResult
    loaded: LoadedRun
    source: str  # "trained" (by this explorer) | "read back" (finished run folder found) |
    # "reused (...)": a threshold twin's run (:meth:`Explorer._twin`)
    seconds: float  # wall time of getting it (training or reading back)
    #: the setting whose run this is, when it is another one's: soft pseudo-labels at other
    #: thresholds (the thresholds do not change training, only the pseudo-label statistics)
    reused_from: Setting | None = None


@dataclass
class View:
    """What one position of all controls shows: the metrics table and the attention figure."""

    setting: Setting
    image: int
    table: pd.DataFrame
    figure: Figure
    seconds: float


class Explorer:
    """The explorer's state model: settings → runs (trained once, then cached) → metrics and
    figures. See the module docstring.

    ``base``: the run config every setting starts from (see :func:`explorer_config`); it is
    forced onto cached features, label-proportion protocol and no progress bars. ``runs_root``:
    where run folders go (default ``runs/explorer``); a folder is named like
    :func:`trm_lib.train.default_out_dir`, i.e. by dataset, method, p, seed and config hash.
    ``log`` receives the trainer's per-epoch lines (None: silent)."""

    def __init__(self, base: RunConfig, runs_root: str | Path | None = None, *,
                 resources: Resources | None = None, log: Callable[[str], None] | None = None):
        self.base = from_dict(base.to_dict()).with_overrides({
            "data.protocol": "proportion", "train.use_cache": True, "train.progress": False,
            "train.resume": True, "train.out_dir": None})
        self.runs_root = Path(runs_root) if runs_root is not None else runs_dir() / "explorer"
        self.resources = resources or Resources()
        self.log = log
        self.trained: list[str] = []  # keys this explorer trained (the rest were read back)
        self._runs: dict[str, ExplorerRun] = {}
        self._test: MultiLabelDataset | None = None

    # ----------------------------------------------------------------------------- settings
    def setting(self, **controls: Any) -> Setting:
        """The normalised :class:`Setting` of ``controls`` (any of :data:`CONTROLS`; missing
        ones take the base config's values). Raises ConfigError naming a bad control."""
        unknown = sorted(set(controls) - set(CONTROLS))
        if unknown:
            raise ConfigError(f"explorer: unknown control(s) {unknown} (known: "
                              f"{', '.join(CONTROLS)}, image)")
        m = self.base.method
        defaults = Setting(proportion=self.base.data.proportion, method=m.name,
                           kd=m.kd != "none", mcl=m.mcl, pseudo=m.pseudo,
                           pseudo_high=m.pseudo_high, pseudo_low=m.pseudo_low,
                           seed=self.base.train.seed)
        s = replace(defaults, **controls)
        if s.method not in METHODS:
            raise ConfigError(f"explorer: method must be one of {list(METHODS)}, got "
                              f"{s.method!r}")
        for name in ("kd", "mcl", "pseudo"):
            if not isinstance(getattr(s, name), bool | np.bool_):
                raise ConfigError(f"explorer: {name} must be True/False, got "
                                  f"{getattr(s, name)!r}")
        for name in ("proportion", "pseudo_high", "pseudo_low"):
            value = getattr(s, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ConfigError(f"explorer: {name} must be a number, got {value!r}")
        if isinstance(s.seed, bool) or not isinstance(s.seed, int | np.integer) or s.seed < 0:
            raise ConfigError(f"explorer: seed must be an integer >= 0, got {s.seed!r}")
        # Round the floats so that 0.1 from a slider and 0.1000000001 from arithmetic are one run.
        s = replace(s, proportion=round(float(s.proportion), 4), kd=bool(s.kd), mcl=bool(s.mcl),
                    pseudo=bool(s.pseudo), pseudo_high=round(float(s.pseudo_high), 4),
                    pseudo_low=round(float(s.pseudo_low), 4), seed=int(s.seed))
        if s.method != "trm_ml":
            s = replace(s, kd=defaults.kd, mcl=defaults.mcl, pseudo=defaults.pseudo)
        if s.method != "trm_ml" or not s.pseudo:
            s = replace(s, pseudo_high=defaults.pseudo_high, pseudo_low=defaults.pseudo_low)
        self._config(s)  # validates ranges (proportion, low < high) with the config's messages
        return s

    def _config(self, s: Setting) -> RunConfig:
        from trm_lib.experiments import method_config

        # the kd control switches the base's distillation form on or off (the default form when
        # the base has none)
        kd = self.base.method.kd if self.base.method.kd != "none" else MethodConfig().kd
        flat = self.base.flat()
        # a baseline's own settings as in the fidelity grid; the explorer's short schedule and the
        # controls are the caller's overrides, which win (the grid's precedence)
        return method_config(s.method, {
            **{k: flat[k] for k in EXPLORER_OVERRIDES},
            "data.proportion": s.proportion,
            "method.kd": kd if s.kd else "none", "method.mcl": s.mcl, "method.pseudo": s.pseudo,
            "method.pseudo_high": s.pseudo_high, "method.pseudo_low": s.pseudo_low,
            "train.seed": s.seed, "data.mask_seed": s.seed},
            base=self.base)

    def config(self, **controls: Any) -> RunConfig:
        """The complete run config of a setting."""
        return self._config(self.setting(**controls))

    def run_key(self, **controls: Any) -> str:
        """The identity of a setting's run: the hash of its result-relevant config."""
        return config_hash(self.config(**controls))

    def run_dir(self, **controls: Any) -> Path:
        return self.runs_root / default_out_dir(self.config(**controls)).name

    # ---------------------------------------------------------------------------------- runs
    def run(self, **controls: Any) -> ExplorerRun:
        """The finished run of a setting: from memory, else read back from its folder, else
        trained now (on cached features, by the one trainer)."""
        return self._run(self.setting(**controls))

    def _run(self, s: Setting, exact: bool = False) -> ExplorerRun:
        """``exact``: the setting's own run, never a threshold twin's (:meth:`_twin`), so its
        pseudo-label statistics exist (a twin held in memory is replaced)."""
        cfg = self._config(s)
        key = config_hash(cfg)
        if key in self._runs and not (exact and self._runs[key].reused_from is not None):
            return self._runs[key]
        out = self.runs_root / default_out_dir(cfg).name
        if not exact and not (out / "result.json").exists():
            twin = self._twin(s, cfg, on_disk=True)
            if twin is not None:
                run = replace(twin, key=key, setting=s, config=cfg, seconds=0.0,
                              reused_from=twin.setting,
                              source=f"reused (trained at {twin.setting.pseudo_high:.2f}/"
                                     f"{twin.setting.pseudo_low:.2f})")
                self._runs[key] = run
                return run
        t0 = time.perf_counter()
        with masks_written_to(self.runs_root / "masks"):  # never into a shared cache
            if (out / "result.json").exists():
                result, source = load_result(out), "read back"
            else:
                result = train(cfg, out, progress=False, resources=self.resources, log=self.log)
                source = "trained"
                self.trained.append(key)
            loaded = load_run(out, resources=self.resources)
        run = ExplorerRun(key, s, cfg, result, loaded, source, time.perf_counter() - t0)
        self._runs[key] = run
        return run

    def _twin(self, s: Setting, cfg: RunConfig, on_disk: bool = False) -> ExplorerRun | None:
        """A finished run that differs from ``s`` only in the pseudo-label thresholds, when the
        pseudo-labels are soft: the thresholds then only define the *logged* thresholded form
        (its precision / recall / coverage) — soft targets are the scores themselves and
        ``pseudo_agree`` is off (:class:`trm_lib.core.model` builds the labeler so) — so training
        is the same run. Looked up in memory, then (``on_disk``) at the base thresholds' folder.

        Its pseudo-label statistics are not recomputed at ``s``'s thresholds: they were counted
        per training step from scores that are not stored, so :func:`_run_metrics` reports them
        as NaN ("–") rather than show the twin's numbers for thresholds they do not describe."""
        if s.method != "trm_ml" or not s.pseudo or not cfg.method.pseudo_soft:
            return None
        same = _without_thresholds(cfg)
        for run in self._runs.values():
            if run.reused_from is None and _without_thresholds(run.config) == same:
                return run
        m = self.base.method
        sibling = replace(s, pseudo_high=m.pseudo_high, pseudo_low=m.pseudo_low)
        if not on_disk or sibling == s:
            return None
        if (self.runs_root / default_out_dir(self._config(sibling)).name
                / "result.json").exists():
            return self._run(sibling)
        return None

    @property
    def cached_keys(self) -> list[str]:
        """Keys of the runs held in memory (answered without touching disk)."""
        return list(self._runs)

    # ------------------------------------------------------------------------------- metrics
    def metrics(self, **controls: Any) -> dict[str, float]:
        """Live numbers of a setting's run (fractions, NaN where not applicable): test ``mAP``,
        ``CF1``, ``OF1`` at the selected epoch, ``mAP_oracle`` (best test epoch, the peers'
        number), ``val_mAP`` (observed labels), the last epoch's ``pseudo_precision``,
        ``pseudo_recall``, ``pseudo_coverage``, and ``best_epoch``, ``epochs``, ``wall_time``."""
        return _run_metrics(self.run(**controls))

    def compare(self, settings: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """One row of :meth:`metrics` per setting (each trained or read back once), with the
        normalised controls as columns — a static tour of what the controls do. Every setting
        gets its own run (``exact``): a tour over thresholds is there to show the pseudo-label
        statistics they define, which a reused twin cannot give."""
        rows = []
        for controls in settings:
            s = self.setting(**controls)
            run = self._run(s, exact=True)
            rows.append({**_controls(s), "variant": s.variant(), "label": s.label(),
                         **_run_metrics(run), "seed": run.config.train.seed,
                         "key": run.key[:12]})
        return pd.DataFrame(rows)

    def table(self, **controls: Any) -> pd.DataFrame:
        """The metrics table of a view: the selected setting's run and the two runs the
        attention figure compares (same proportion), one row per distinct run. Test metrics in %
        at the selected epoch, ``mAP (oracle)`` at the best test epoch; pseudo-label precision,
        recall and coverage (%) of the last epoch (NaN for a reused soft-pseudo-label run at other
        thresholds, :meth:`_twin`); ``train s``: the run's training wall time;
        ``source``: trained by this explorer or read back from its run folder."""
        rows: dict[str, dict[str, Any]] = {}
        for role, s in self._view_settings(self.setting(**controls)):
            run = self._run(s)
            if run.key in rows:
                rows[run.key]["role"] += f" + {role}"
                continue
            m = _run_metrics(run)
            rows[run.key] = {
                "run": s.label(), "role": role,
                **{k: round(100 * m[k], 2) for k in ("mAP", "CF1", "OF1")},
                "mAP (oracle)": round(100 * m["mAP_oracle"], 2),
                **{f"pseudo {k}": round(100 * m[f"pseudo_{k}"], 2)
                   for k in ("precision", "recall", "coverage")},
                "epochs": int(m["epochs"]), "train images": int(m["train_images"]),
                "seed": s.seed, "train s": round(m["wall_time"], 1), "source": run.source}
        return pd.DataFrame(list(rows.values())).set_index("run")

    def scale(self, **controls: Any) -> str:
        """What a setting's numbers come from, said beside them: training images, epochs and
        seed (the explorer's short schedule: its numbers are not the notebooks' larger runs)."""
        run = self.run(**controls)
        m = _run_metrics(run)
        text = (f"{int(m['train_images'])} training images, {int(m['epochs'])} epochs, "
                f"seed {run.setting.seed}")
        if run.reused_from is not None:
            t = run.reused_from
            text += (f"; pseudo-labels are soft, so thresholds {run.setting.pseudo_high:.2f}/"
                     f"{run.setting.pseudo_low:.2f} do not change training: this is the run "
                     f"trained at {t.pseudo_high:.2f}/{t.pseudo_low:.2f}, and its pseudo-label "
                     f"precision/recall/coverage are not recomputed for the new thresholds (–)")
        return text

    def visited(self, floor: bool = True) -> pd.DataFrame:
        """One row per setting run so far, seeds pooled: ``seeds``, test ``mAP`` (mean over the
        seeds, %), ``± sd`` (sample standard deviation over seeds; NaN with one seed: a single
        run says nothing about noise), ``n`` and, with ``floor``, zero-shot CLIP's mAP at the
        same proportion and seeds (evaluated on first need) and ``below zero-shot``: a trained
        method whose mean ends under it is flagged (broken, not beaten)."""
        groups: dict[Setting, list[ExplorerRun]] = {}
        for run in list(self._runs.values()):
            groups.setdefault(replace(run.setting, seed=0), []).append(run)
        rows = []
        for key, runs in groups.items():
            maps = [100 * _run_metrics(r)["mAP"] for r in runs]
            seeds = sorted(r.setting.seed for r in runs)
            row = {"run": key.label(), "seeds": ", ".join(map(str, seeds)), "n": len(runs),
                   "mAP": round(float(np.mean(maps)), 2),
                   "± sd": round(float(np.std(maps, ddof=1)), 2) if len(maps) > 1 else math.nan}
            if floor and key.method != "zero_shot":
                zs = [100 * _run_metrics(self._run(self.setting(
                    proportion=key.proportion, method="zero_shot", seed=sd)))["mAP"]
                    for sd in seeds]
                row["zero-shot mAP"] = round(float(np.mean(zs)), 2)
                row["below zero-shot"] = "⚠ yes" if np.mean(maps) < np.mean(zs) else "no"
            rows.append(row)
        cols = ["run", "seeds", "n", "mAP", "± sd"] + (["zero-shot mAP", "below zero-shot"]
                                                       if floor else [])
        return pd.DataFrame(rows, columns=cols).set_index("run")

    def pending(self, **controls: Any) -> list[Setting]:
        """The settings a :meth:`view` of ``controls`` needs that are not in memory yet (each
        will be read back from its folder or trained)."""
        out: list[Setting] = []
        for _, s in self._view_settings(self.setting(**controls)):
            cfg = self._config(s)
            if config_hash(cfg) not in self._runs and s not in out \
                    and self._twin(s, cfg) is None:
                out.append(s)
        return out

    def _view_settings(self, s: Setting) -> list[tuple[str, Setting]]:
        """(role, setting) of the selected run and the figure's runs."""
        out = [("selected", s)]
        for row, method in FIGURE_ROWS:
            out.append((f"figure: {row}", self.setting(**{**_controls(s), "method": method})))
        return out

    # ------------------------------------------------------------------------------- figures
    @property
    def test_set(self) -> MultiLabelDataset:
        """The test split the picked image indexes (the same for every setting: only the label
        mask of the *training* split depends on the proportion)."""
        if self._test is None:
            with masks_written_to(self.runs_root / "masks"):
                self._test = prepare_data(self.base).test
        return self._test

    def n_images(self) -> int:
        return len(self.test_set)

    def image_labels(self, image: int) -> list[str]:
        """Names of the classes present in test image ``image`` (full labels)."""
        ds = self.test_set
        idx = self._check_image(image, len(ds))
        return [c for c, y in zip(ds.class_names, ds.labels[idx]) if y > 0]

    @staticmethod
    def _check_image(image: Any, n: int) -> int:
        if isinstance(image, bool) or not isinstance(image, int | np.integer) \
                or not 0 <= image < n:
            raise ConfigError(f"explorer: image must be an integer test index in [0, {n - 1}], "
                              f"got {image!r}")
        return int(image)

    def maps(self, image: int = 0, **controls: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(maps (C, L), scores (C,))`` of a setting's method on test image ``image``: the
        method's spatial saliency (TRM-ML: region attention; DualCoOp: pixel weights) and its
        class probabilities. Raises ValueError for methods without maps."""
        return _image_maps(self.run(**controls), self._check_image(image, len(self.test_set)))

    def figure(self, image: int = 0, **controls: Any) -> Figure:
        """Figure 4 for the picked image at this setting: its top-3 classes by TRM-ML's scores,
        DualCoOp's pixel maps (row 1) and TRM-ML's region maps (row 2). TRM-ML uses this
        setting's switches; DualCoOp the same proportion."""
        s = self.setting(**controls)
        idx = self._check_image(image, len(self.test_set))
        rows: dict[str, np.ndarray] = {}
        scores: dict[str, np.ndarray] = {}
        runs: dict[str, ExplorerRun] = {}
        for title, method in FIGURE_ROWS:
            runs[method] = self._run(self.setting(**{**_controls(s), "method": method}))
            rows[title], scores[method] = _image_maps(runs[method], idx)
        ds = self.test_set
        fig = viz.plot_attention_rows(ds.load_image(idx), rows, ds.class_names, scores["trm_ml"],
                                      tuple(runs["trm_ml"].loaded.session.ctx.grid), top_k=3)
        truth = ", ".join(self.image_labels(idx)) or "none"
        fig.suptitle(f"test image {idx} (true: {truth}); p = {s.proportion:.0%}; top-3 by "
                     f"TRM-ML, scores in brackets", fontsize=9)
        return fig

    def view(self, image: int = 0, **controls: Any) -> View:
        """Everything one position of the controls shows: metrics table and figure."""
        t0 = time.perf_counter()
        s = self.setting(**controls)
        table = self.table(**_controls(s))
        fig = self.figure(image, **_controls(s))
        return View(s, int(image), table, fig, time.perf_counter() - t0)


def _controls(s: Setting) -> Controls:
    return {c: getattr(s, c) for c in CONTROLS}


def _last(history: pd.DataFrame, column: str) -> float:
    """The last non-NaN value of ``column`` (NaN if the column is absent or empty)."""
    if column not in history.columns:
        return math.nan
    values = pd.to_numeric(history[column], errors="coerce").dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def _without_thresholds(cfg: RunConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.flat().items()
            if k not in ("method.pseudo_high", "method.pseudo_low")}


def _run_metrics(run: ExplorerRun) -> dict[str, float]:
    r = run.result
    test, oracle = r.metrics["test"], r.metrics["test_oracle"]
    # a reused run's pseudo-label statistics describe its own thresholds, not this setting's
    def stats(column: str) -> float:
        return math.nan if run.reused_from is not None else _last(r.history, column)

    return {"mAP": float(test["mAP"]), "CF1": float(test["CF1"]), "OF1": float(test["OF1"]),
            "mAP_oracle": float(oracle["mAP"]),
            "val_mAP": float(r.metrics["val"].get("mAP", math.nan)),
            "pseudo_precision": stats("pseudo_precision"),
            "pseudo_recall": stats("pseudo_recall"),
            "pseudo_coverage": stats("pseudo_coverage"),
            "best_epoch": float(r.best_epoch), "epochs": float(r.epochs_done),
            "wall_time": float(r.wall_time),
            "train_images": float(len(run.loaded.session.data.train_idx))}


@torch.no_grad()
def _image_maps(run: ExplorerRun, idx: int) -> tuple[np.ndarray, np.ndarray]:
    loaded = run.loaded
    batch = next(iter(loaded.batches("test", indices=[idx], batch_size=1)))
    batch = {k: v.to(loaded.session.device) for k, v in batch.items()}
    method = loaded.method
    method.eval()
    out = method(batch)
    if "maps" not in out:
        raise ValueError(f"method {run.setting.method!r} returns no spatial maps (only "
                         f"{', '.join(m for _, m in FIGURE_ROWS)} do)")
    return (out["maps"][0].float().cpu().numpy(),
            method.scores(out)[0].float().cpu().numpy())


def tidy(compare_df: pd.DataFrame, metrics: Sequence[str] = ("mAP", "CF1", "OF1")
         ) -> pd.DataFrame:
    """:meth:`Explorer.compare` rows in the package's tidy results schema (``method, variant,
    protocol, proportion, seed, split, metric, value``; test split), for the plots and tables of
    :mod:`trm_lib.viz` (e.g. :func:`~trm_lib.viz.plot_ablation`)."""
    missing = [c for c in ("method", "variant", "proportion", "seed", *metrics)
               if c not in compare_df.columns]
    if missing:
        raise ValueError(f"tidy: compare table lacks column(s) {missing}")
    rows = [{"method": r["method"], "variant": r["variant"], "protocol": "proportion",
             "proportion": float(r["proportion"]), "seed": int(r["seed"]), "split": "test",
             "metric": metric, "value": float(r[metric])}
            for _, r in compare_df.iterrows() for metric in metrics]
    return pd.DataFrame(rows)


def static_figure(explorer: Explorer, **state: Any) -> Figure:
    """The figure the widgets show for ``state`` (controls + ``image``), for headless reports."""
    return explorer.figure(**state)


