"""Run folders: where a run lives, what it wrote, and how it is read back.

A run folder holds ``config.yaml``, ``history.csv`` (one row per epoch), ``last.pt`` (resume
point), ``best.pt`` (selected epoch), ``test_scores.npy`` (test probabilities at the selected
epoch) and, once finished, ``result.json``. Its name carries :func:`config_hash`, the hash of
what changes the numbers (:data:`NON_RESULT_FIELDS` excluded). Every file is written
atomically; checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import errno
import pickle
import random
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from trm_lib import __version__
from trm_lib.config.run_config import ConfigError, RunConfig, from_dict, load_config
from trm_lib.core import build_method, metrics
from trm_lib.core.diagnostics import precision_coverage
from trm_lib.core.methods import Method
from trm_lib.utils.errors import FileError, TrainingError
from trm_lib.utils.io import atomic_path, atomic_write, disk_full, read_json, stable_hash
from trm_lib.utils.locks import waiting_lock
from trm_lib.utils.paths import git_revision, runs_dir

from .evaluation import eval_outputs, observed_metrics, predict, score_metrics
from .session import Batch, Resources, Session, seed_everything

# Config fields that do not change what a run computes: a resumed run may differ in these.
NON_RESULT_FIELDS = ("train.out_dir", "train.resume", "train.progress", "train.num_workers",
                     "backbone.batch_size", "train.test_every")
# fields added after runs were recorded leave the hash alone at the value that was implicit
# before them, so existing run folders keep their names
HASH_OMITTED_DEFAULTS = {"train.precision": "fp32"}
# train.test_every only decides on which extra epochs the test split is *scored*: training, the
# selected epoch and its test numbers are the same for every value (the selected epoch is always
# scored); only test_oracle's resolution changes. So runs that differ in it share a run folder.


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    """What one run produced. ``metrics`` has the splits ``val`` (observed labels, selected
    epoch), ``test`` (full labels at the selected epoch — the honest number) and ``test_oracle``
    (full labels at the epoch with the best test mAP — the number the peers report)."""

    config: RunConfig
    history: pd.DataFrame
    metrics: dict[str, dict[str, float]]
    best_epoch: int
    oracle_epoch: int
    out_dir: Path
    wall_time: float
    per_class_ap: dict[str, float] = field(default_factory=dict)  # test AP per class, selected
    scores: np.ndarray | None = None  # test probabilities (N_test, C) at the selected epoch
    epochs_done: int = 0
    complete: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        m = self.metrics
        tag = "" if self.complete else f" (stopped after epoch {self.epochs_done})"
        return (f"{self.config.method.name}: best epoch {self.best_epoch}, "
                f"val mAP {pct(m['val'].get('mAP'))}, test mAP {pct(m['test'].get('mAP'))}, "
                f"test-oracle mAP {pct(m['test_oracle'].get('mAP'))} (epoch {self.oracle_epoch})"
                f"{tag}; {self.wall_time:.1f}s; {self.out_dir}")


def load_result(out_dir: str | Path) -> RunResult:
    """Rebuild the :class:`RunResult` of a finished run from its folder (no computation); a
    damaged ``result.json`` / ``history.csv`` / ``test_scores.npy`` raises
    :class:`~trm_lib.utils.errors.FileError` naming the file."""
    out_dir = Path(out_dir)
    where = out_dir / "result.json"
    info = read_json(where)
    scores_file = out_dir / "test_scores.npy"
    try:
        config = from_dict(info["config"], source=str(where))
        fields = {k: info[k] for k in ("metrics", "best_epoch", "oracle_epoch", "wall_time",
                                       "per_class_ap", "epochs_done", "provenance")}
    except (KeyError, TypeError) as err:
        raise FileError(f"{where}: not a finished run's result (missing {err}); delete it to "
                        f"retrain the run") from None
    where = out_dir / "history.csv"
    try:
        history = pd.read_csv(where)
        where = scores_file
        scores = np.load(scores_file, allow_pickle=False) if scores_file.exists() else None
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise FileError(f"{where}: damaged ({str(err).strip().splitlines()[0] or type(err)}); "
                        f"delete {out_dir / 'result.json'} to retrain the run") from None
    return RunResult(config=config, history=history, out_dir=out_dir, scores=scores,
                     complete=True, **fields)


def finished_result(cfg: RunConfig, out_dir: Path) -> RunResult | None:
    """The stored result of ``out_dir`` when ``cfg.train.resume`` and the run finished
    (``result.json``, written last), without touching the checkpoints; a stored config that
    differs in a field that changes the numbers is refused, as for a resume."""
    where = out_dir / "result.json"
    if not (cfg.train.resume and where.exists()):
        return None
    info = read_json(where)
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        raise FileError(f"{where}: not a finished run's result; delete it to retrain the run")
    diff = config_diff(info["config"], cfg)
    if diff:
        raise TrainingError(f"{out_dir}: holds a finished run of another config: "
                            + "; ".join(diff) + " — choose another out_dir or set "
                            "train.resume=false")
    return load_result(out_dir)


def provenance() -> dict[str, Any]:
    """Git revision (:func:`trm_lib.utils.paths.git_revision`) and library versions."""
    import open_clip

    return {"git_rev": git_revision(), "versions": {"torch": torch.__version__,
                                                    "open_clip": open_clip.__version__,
                                                    "trm_lib": __version__}}


def pct(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.2f}"


# ---------------------------------------------------------------------------------------------
# Checkpoints and run folders
# ---------------------------------------------------------------------------------------------

def method_state(method: Method) -> dict[str, torch.Tensor]:
    """What training changes: trainable parameters and buffers (memory banks, pseudo-label
    memories). Frozen parameters (e.g. a text tower a method holds) are rebuilt from the
    backbone, so they are not written into every checkpoint."""
    frozen = {name for name, p in method.named_parameters() if not p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in method.state_dict().items()
            if k not in frozen}


def load_method_state(method: Method, state: dict[str, torch.Tensor], where: Path) -> None:
    """Load a checkpoint's method state; a state of another shape (a 5-class checkpoint in a
    20-class run) is one :class:`TrainingError` naming the file, not torch's RuntimeError."""
    try:
        missing, unexpected = method.load_state_dict(state, strict=False)
    except RuntimeError as err:
        sizes = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        raise TrainingError(f"{where}: checkpoint does not fit method {method.cfg.name!r} of "
                            f"this run ({(sizes or [str(err).splitlines()[0]])[0][:200]}); it "
                            f"was trained on another dataset or config") from None
    frozen = {name for name, p in method.named_parameters() if not p.requires_grad}
    missing = [k for k in missing if k not in frozen]
    if missing or unexpected:
        raise TrainingError(f"{where}: checkpoint does not fit method "
                            f"{method.cfg.name!r} (missing {missing[:5]}, unexpected "
                            f"{unexpected[:5]})")


def rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


#: keys every checkpoint of :func:`save_checkpoint` holds
CHECKPOINT_KEYS = ("config", "method", "epoch")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically; a full disk is :class:`~trm_lib.utils.errors.DiskFullError`
    naming the folder (torch reports it as "file write failed" or "basic_ios::clear:
    iostream error", a RuntimeError that names nothing)."""
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except RuntimeError as err:
        if _write_failed(err, path):
            raise disk_full(path) from None
        raise


def _write_failed(err: RuntimeError, path: Path) -> bool:
    """True when torch.save's RuntimeError is a failed write (out of space), not a bug."""
    import shutil

    text = str(err)
    if any(s in text for s in ("write failed", "iostream error", "unexpected pos", "No space")):
        return True
    with contextlib.suppress(OSError):
        return shutil.disk_usage(path.parent).free < (1 << 20)
    return False


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, loaded with ``weights_only=True``.

    An empty, truncated or foreign file raises :class:`~trm_lib.utils.errors.FileError` naming it
    and saying what to do, instead of torch's RuntimeError / EOFError / UnpicklingError (a
    crafted pickle is refused the same way: it is never executed)."""
    what = "delete it to restart the run" if path.name == "last.pt" else \
        "retrain the run (train.resume=false, or delete the run folder)"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.EISDIR):
            raise FileError(f"{path}: cannot read the checkpoint ({err.strerror}); "
                            f"{what}") from None
        raise FileError(f"{path}: damaged or not a checkpoint of this library "
                        f"({err.strerror or err}); {what}") from None
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile,
            AttributeError, KeyError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise FileError(f"{path}: damaged or not a checkpoint of this library ({first}); "
                        f"{what}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        raise FileError(f"{path}: not a checkpoint of this library (no "
                        f"{'/'.join(CHECKPOINT_KEYS)}); {what}")
    _check_fields(ckpt, path, what)
    return ckpt


def _check_fields(ckpt: dict[str, Any], path: Path, what: str) -> None:
    """What every checkpoint must hold before anything uses it: a whole-number ``epoch``, a
    config mapping, a method state of finite tensors (NaN weights would score as a result)."""
    epoch = ckpt["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise FileError(f"{path}: field 'epoch' must be a whole number >= 0, got {epoch!r}; "
                        f"{what}")
    if not isinstance(ckpt["config"], dict):
        raise FileError(f"{path}: field 'config' is not a mapping; {what}")
    classes = ckpt.get("classes")
    if classes is not None and (not isinstance(classes, list)
                                or not all(isinstance(c, str) for c in classes)):
        raise FileError(f"{path}: field 'classes' is not a list of class names; {what}")
    state = ckpt["method"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise FileError(f"{path}: field 'method' is not a state dict of tensors; {what}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FileError(f"{path}: non-finite (NaN/inf) weights in {', '.join(bad[:3])}"
                        f"{' ...' if len(bad) > 3 else ''}; {what}")


def check_identity(ckpt: dict[str, Any], path: Path, cfg: RunConfig | None,
                   class_names: Sequence[str] | None) -> RunConfig:
    """The one identity check of a checkpoint against the run that uses it: its config must
    equal ``cfg`` (the run folder's ``config.yaml`` for ``evaluate``, the requested config on
    resume) in every field that changes the numbers, and the class names it was trained on
    (recorded since issue 29) must be the dataset's. Returns the checkpoint's validated config.
    A ``best.pt`` copied from another run, or a dataset whose classes changed under a run, is
    one :class:`TrainingError` instead of another dataset's number printed as this one's."""
    try:
        saved = from_dict(ckpt["config"], source=str(path)).validate()
    except ConfigError as err:
        raise FileError(f"{path}: its config is not valid ({err}); retrain the run") from None
    if cfg is not None:
        diff = config_diff(ckpt["config"], cfg)
        if diff:
            raise TrainingError(f"{path}: the checkpoint belongs to another run, its config "
                                f"differs: " + "; ".join(diff[:4])
                                + (" ..." if len(diff) > 4 else ""))
    classes = ckpt.get("classes")
    if class_names is not None and classes is not None and list(classes) != list(class_names):
        extra = sorted(set(map(str, classes)) ^ set(class_names))[:4]
        raise TrainingError(f"{path}: trained on {len(classes)} classes, the dataset now has "
                            f"{len(class_names)} (differing: {', '.join(extra) or 'order'}); "
                            f"retrain the run")
    return saved


def run_lock_path(out_dir: Path) -> Path:
    """The lock file a training holds in its run folder (``.lock``)."""
    return Path(out_dir) / ".lock"


@contextlib.contextmanager
def run_lock(out_dir: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold ``out_dir``'s lock while training: a second writer of the folder (two grids sharing
    a run, a ``resume=false`` retrain) waits for the first instead of deleting its files, and
    says so in one line naming the folder."""
    with waiting_lock(run_lock_path(out_dir), f"run folder {out_dir}",
                      f"{out_dir}: another process is training in this run folder; waiting for it",
                      say):
        yield


def config_diff(saved: dict[str, Any], cfg: RunConfig) -> list[str]:
    old = from_dict(saved).flat()
    new = cfg.flat()
    return [f"{k}: {old.get(k)!r} (checkpoint) != {new.get(k)!r} (requested)"
            for k in sorted(set(old) | set(new))
            if k not in NON_RESULT_FIELDS and old.get(k) != new.get(k)]


def default_out_dir(cfg: RunConfig) -> Path:
    """``runs/<dataset>-<method>-<protocol>[-p<p>]-s<seed>-<config hash>``."""
    d = cfg.data
    setting = f"{d.protocol}-p{d.proportion:g}" if d.protocol == "proportion" else d.protocol
    return runs_dir() / f"{d.dataset}-{cfg.method.name}-{setting}-s{cfg.train.seed}-" \
                        f"{config_hash(cfg)[:10]}"


def config_hash(cfg: RunConfig) -> str:
    """:func:`~trm_lib.utils.io.stable_hash` of the result-relevant config (what
    :data:`NON_RESULT_FIELDS` leaves out): runs that would give the same results share it."""
    return stable_hash({k: v for k, v in cfg.flat().items() if k not in NON_RESULT_FIELDS
                        and not (k in HASH_OMITTED_DEFAULTS and v == HASH_OMITTED_DEFAULTS[k])})


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_write(path, newline="") as fh:
        pd.DataFrame(history).to_csv(fh, index=False)


# ---------------------------------------------------------------------------------------------
# Reloading a run (notebooks, `python -m trm_lib evaluate`)
# ---------------------------------------------------------------------------------------------

@dataclass
class LoadedRun:
    """A trained method rebuilt from its run folder, with the session that feeds it."""

    config: RunConfig
    method: Method
    session: Session
    epoch: int
    result: RunResult | None

    def batches(self, split: str = "test", indices: Sequence[int] | None = None,
                batch_size: int | None = None) -> Iterator[Batch]:
        return self.session.batches(split, indices, batch_size)

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Full-label metrics of ``split`` (for val/train these use the hidden labels: analysis,
        not model selection); val/train also get ``observed_mAP`` on the observed labels."""
        data = self.session.data
        dataset, rows = data.rows(split)
        if len(rows) == 0:  # e.g. split val of a run with data.val_fraction=0
            raise ConfigError(f"split {split!r} of this run has no images (data.val_fraction="
                              f"{self.config.data.val_fraction:g}); choose another --split")
        amp = self.config.train.amp and self.session.device.type == "cuda"
        scores = predict(self.method, self.batches(split), self.session.device, amp)
        out = score_metrics(scores, dataset.labels[rows], class_names=dataset.class_names)
        if split != "test":
            unknown = "negative" if self.config.data.protocol == "single_positive" else "exclude"
            out["observed_mAP"] = observed_metrics(scores, data.observed[rows], unknown)["mAP"]
        return out

    @torch.no_grad()
    def entry_views(self, split: str = "train") -> tuple[dict[str, np.ndarray], np.ndarray,
                                                          np.ndarray]:
        """``(views, observed, full)`` of ``split``: the (N, C) probability of every entry under
        each view the method exposes (``entry_views``; TRM-ML: query, region, ensemble,
        prototype, memory), its {1, -1, 0} label mask and its hidden full labels."""
        views_of = getattr(self.method, "entry_views", None)
        if views_of is None:
            raise ConfigError(f"method {self.config.method.name!r} exposes no entry views "
                             f"(only trm_ml does)")
        if split == "test":
            raise ConfigError("split 'test' has no label mask: use 'train' or 'val'")
        dataset, rows = self.session.data.rows(split)
        parts: dict[str, list[torch.Tensor]] = {}

        def views_with_index(out: Any, batch: Batch) -> dict[str, torch.Tensor]:
            # training-split indices keep an image from being its own memory neighbour; other
            # splits' images are not in the memory (and their indices mean other rows)
            return views_of(out, batch["index"] if split == "train" else None)

        for views in eval_outputs(self.method, self.batches(split), self.session.device,
                                  then=views_with_index):
            for name, v in views.items():
                parts.setdefault(name, []).append(v.cpu())
        views = {name: torch.cat(v).numpy() for name, v in parts.items()}
        return views, np.asarray(self.session.data.observed[rows]), np.asarray(
            dataset.labels[rows])

    def unknown_entry_quality(self, split: str = "train",
                              query_range: tuple[float, float] | None = None
                              ) -> dict[str, dict[str, float]]:
        """:func:`trm_lib.core.metrics.unknown_entry_quality` of every view the method exposes
        (:meth:`entry_views`) on the entries of ``split`` its label mask leaves unknown,
        scored against the hidden full labels; with ``query_range=(lo, hi)`` only on those
        whose query probability σ(s) lies strictly between lo and hi."""
        views, observed, full = self.entry_views(split)
        where = None
        if query_range is not None:
            lo, hi = query_range
            where = (views["query"] > lo) & (views["query"] < hi)
        return metrics.unknown_entry_quality(views, observed, full, where=where)

    def precision_coverage(self, view: str = "memory", split: str = "train",
                           against: str = "hidden") -> pd.DataFrame:
        """:func:`trm_lib.core.diagnostics.precision_coverage` of the rule ``view ≥ t`` on ``split``.
        ``against="hidden"``: its unknown entries against the hidden labels (the pseudo-labels'
        real quality, for analysis); ``"observed"``: every entry against the observed labels,
        unknown counted negative (a lower bound on precision: what a threshold may be chosen
        on, on split val)."""
        views, observed, full = self.entry_views(split)
        if view not in views:
            raise ValueError(f"view {view!r} not among this run's entry views {sorted(views)}")
        if against == "hidden":
            return precision_coverage(views[view], full, observed == 0)
        if against == "observed":
            return precision_coverage(views[view], observed)
        raise ValueError(f"against must be hidden|observed, got {against!r}")


def pseudo_label_curves(results: pd.DataFrame, curves: dict[str, dict[str, Any]],
                        view: str = "memory", checkpoint: str = "best") -> pd.DataFrame:
    """Stacked precision–coverage curves (:meth:`LoadedRun.precision_coverage`, hidden labels
    of the unknown training entries) of one run per named selection of a results table, e.g.
    ``{"protocol A, p=0.1": {"protocol": "proportion", "proportion": 0.1, "seed": 0},
    "protocol B": {"protocol": "single_positive", "seed": 0}}``; column ``curve`` names it.
    A selection must match exactly one run folder."""
    frames = []
    for name, where in curves.items():
        sel = results
        for key, value in where.items():
            sel = sel[sel[key] == value]
        dirs = sorted(set(sel["run_dir"].dropna()))
        if len(dirs) != 1:
            raise ValueError(f"pseudo_label_curves: {name!r} ({where}) matches {len(dirs)} run "
                             f"folders, expected 1")
        run = load_run(dirs[0], checkpoint)
        frames.append(run.precision_coverage(view).assign(curve=name))
    return pd.concat(frames, ignore_index=True)


def load_run(out_dir: str | Path, checkpoint: str = "best", *, device: str | None = None,
             resources: Resources | None = None) -> LoadedRun:
    """Rebuild the method of run ``out_dir`` from ``best.pt`` (or ``last.pt``), in eval mode."""
    out_dir = Path(out_dir)
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    path = out_dir / f"{checkpoint}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint (is {out_dir} a run folder?)")
    ckpt = load_checkpoint(path)
    recorded = out_dir / "config.yaml"
    cfg = check_identity(ckpt, path, load_config(recorded) if recorded.exists() else None, None)
    if device is not None:
        cfg = cfg.with_overrides({"train.device": device})
    session = Session.build(cfg, resources)
    check_identity(ckpt, path, None, session.data.train.class_names)
    seed_everything(cfg.train.seed)
    method = build_method(cfg.method, session.ctx).to(session.device)
    load_method_state(method, ckpt["method"], path)
    method.eval()
    result = load_result(out_dir) if (out_dir / "result.json").exists() else None
    return LoadedRun(cfg, method, session, int(ckpt["epoch"]), result)


__all__ = ["CHECKPOINT_KEYS", "NON_RESULT_FIELDS", "LoadedRun", "RunResult", "check_identity",
           "config_hash",
           "default_out_dir", "finished_result", "load_checkpoint", "load_result", "load_run",
           "provenance", "pseudo_label_curves", "run_lock", "run_lock_path", "save_checkpoint"]
