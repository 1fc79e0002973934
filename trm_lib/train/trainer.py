"""The one trainer and the one evaluator for every method (TRM-ML and the baselines).

Every method goes through :func:`train`: same data, same label mask, same validation split,
same features, same schedule, same evaluator. That is what makes a comparison fair, so nothing
here knows which method it runs (see :mod:`trm_lib.core.methods` for the contract).

Data flows one way::

    dataset ──labels.observed_labels──▶ {1,-1,0} mask on the whole training set
       │                                 └─ labels.train_val_split ─▶ train rows | val rows
       └─ frozen backbone ─▶ feature batches (cache, or live images with augmentation)
                               └─ method ─▶ loss (train rows) / scores ─▶ metrics

Model selection is honest: the epoch is chosen on a validation split carved from the training
set, whose labels are *as incomplete as the training labels*. Its mAP is computed on the observed
entries only (per class, rows whose entry is unknown are left out), because that is all a user
of partial labels has. Under protocol B (one positive per image, no observed negatives) that
would give every class an AP of 1, so there unknown entries count as negatives — the
"assume negative" estimate, biased low but the only informative one. The test split is scored
on full labels; ``test`` is the number *at the selected epoch*, ``test_oracle`` the best test
number over epochs (what the peers report, selected on test), labelled as such.

A run folder (:mod:`trm_lib.train.runs`) holds ``config.yaml``, ``history.csv`` (one row per epoch), ``last.pt`` (resume
point), ``best.pt`` (selected epoch), ``test_scores.npy`` (test probabilities at the selected
epoch) and, once finished, ``result.json``. Every file is written atomically; checkpoints load
with ``torch.load(weights_only=True)``. TensorBoard event files (``events.out.tfevents.*``,
:mod:`trm_lib.train.tensorboard`) carry the same per-epoch numbers and the config as hparams.

Multi-GPU: ``torchrun --nproc_per_node=N -m trm_lib train ...`` runs N processes (one GPU each,
:mod:`trm_lib.utils.distributed`) that compute what one process computes:

- ``train.batch_size`` stays the *global* batch: every rank draws the same (seed, epoch)
  permutation, cuts the same global batches and runs the method's forward on its contiguous
  ~``batch_size / N`` share. The learning-rate schedule and the number of steps do not change.
- The method's outputs are gathered (with a gradient path back to each rank's share) and every
  rank computes ``method.loss`` on the whole global batch, then gradients of
  ``method.trainable_parameters()`` are averaged over ranks. This, not
  ``DistributedDataParallel``, because TRM-ML's loss is not a sum of per-sample terms: the
  contrastive term compares all anchors of the batch, and the memory bank and pseudo-label
  buffer are updated from the batch inside ``loss``. A DDP-wrapped forward would give each
  rank its own batch statistics and its own memory state; here the loss value, the logs and
  all per-sample state are those of the single-process run (exact up to float summation order;
  method buffers are also re-broadcast from rank 0 after every epoch). Under DDP ``loss`` sees
  the label keys (``observed``, ``full``, ``index``) of the global batch; the feature tensors
  are not gathered (no method's loss reads them).
- Validation and test rows are split across ranks and the scores all-gathered, so the one
  evaluator runs on the full score matrix (on every rank, which keeps the selection state
  identical); only rank 0 prints and writes files. The run folder must be visible to every
  rank for a resume (one node: always).
- Not bit-identical to one process: dropout masks (each rank draws its own) and live-image
  augmentation (each rank's transforms draw from its own RNG stream) -- equal in distribution.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from trm_lib.config.run_config import ConfigError, RunConfig, TrainConfig, from_dict
from trm_lib.core import build_method, metrics
from trm_lib.core.methods import Method, method_class
from trm_lib.utils import distributed
from trm_lib.utils.errors import FileError, TrainingError
from trm_lib.utils.io import atomic_path, disk_full, is_disk_full, remove_orphans, write_json

from .evaluation import observed_metrics, predict_split
from .runs import (
    RunResult,
    check_identity,
    config_diff,
    default_out_dir,
    finished_result,
    load_checkpoint,
    load_method_state,
    method_state,
    pct,
    provenance,
    rng_state,
    run_lock,
    save_checkpoint,
    set_rng_state,
    write_history,
)
from .session import Resources, Session, autocast, seed_everything, to_device
from .tensorboard import NoEventLog, open_event_log

Log = Callable[[str], None] | None


# ---------------------------------------------------------------------------------------------
# Schedule and order
# ---------------------------------------------------------------------------------------------

def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning rate of global iteration ``step`` (0-based): a constant warm-up at
    ``warmup_lr`` for ``warmup_epochs`` (the lineage's ConstantWarmupScheduler), then cosine
    from ``lr`` to 0 over the remaining iterations, or constant ``lr``."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.warmup_lr
    if cfg.scheduler == "constant":
        return cfg.lr
    rest = max(1, cfg.epochs * steps_per_epoch - warm)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(step - warm, rest) / rest))


def epoch_order(indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) only, so a resumed run
    sees exactly the batches of an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(np.asarray(indices))


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def _fmt_row(row: dict[str, Any], epochs: int) -> str:
    """One human line per epoch: ``epoch 3/12  lr 1.9e-03  loss 0.41  cls 0.30 ...``."""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    if "lr" in row:
        parts.append(f"lr {row['lr']:.2e}")
    if "loss" in row:
        parts.append(f"loss {row['loss']:.4f}")
    parts += [f"{k[6:]} {v:.4g}" for k, v in row.items() if k.startswith("train_")]
    parts += [f"{k} {pct(row[k])}" for k in ("val_mAP", "val_mAP_hidden", "test_mAP")
              if k in row]
    skip = {"epoch", "lr", "loss", "val_mAP", "val_mAP_hidden", "test_mAP", "seconds"}
    parts += [f"{k} {v:.4g}" for k, v in row.items()
              if k not in skip and not k.startswith("train_") and isinstance(v, float)]
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


@dataclass
class _Loop:
    """The state one call of :func:`train` carries from epoch to epoch."""

    cfg: RunConfig
    out: Path
    session: Session
    method: Method
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer | None
    final_epoch: int
    steps_per_epoch: int
    main: bool
    say: Callable[[str], None]
    progress: bool
    observed: torch.Tensor  # (N_train, C) the label mask, as the loss reads it
    full: torch.Tensor  # (N_train, C) hidden full labels (logging only)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0  # wall time of earlier sessions of a resumed run
    start_epoch: int = 1
    events: Any = field(default_factory=NoEventLog)  # TensorBoard events, rank 0 (.tensorboard)

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def amp(self) -> bool:
        return self.cfg.train.amp and self.session.device.type == "cuda"


def train(cfg: RunConfig, out_dir: str | Path | None = None, *, progress: bool | None = None,
          stop_after_epoch: int | None = None, resources: Resources | None = None,
          log: Log = print) -> RunResult:
    """Train ``cfg.method`` under ``cfg`` and return its :class:`RunResult`.

    ``out_dir``: the run folder (default ``cfg.train.out_dir`` or :func:`default_out_dir`).
    With ``cfg.train.resume`` a folder holding ``last.pt`` continues from it (the config must
    match apart from :data:`NON_RESULT_FIELDS`); a finished run is returned as stored.
    ``stop_after_epoch`` ends the run early after that epoch's checkpoint (an interruption on
    purpose, for tests and notebooks). ``resources`` shares backbones/features across runs.
    ``log`` receives the per-epoch lines (None: silent); they, not the optional tqdm bars
    (``progress``), carry the information, since ``tqdm.auto`` bars show only "0%" in executed
    notebooks. Methods with ``trainable=False``, or ``train.epochs=0``, are evaluated once as
    "epoch 0".
    """
    cfg = from_dict(cfg.to_dict()).validate()  # private copy: callers may reuse theirs
    method_class(cfg.method.name)  # an unknown method fails here, before any data is read
    main = distributed.init_distributed(cfg.train.device).is_main  # no-op without torchrun
    say = (log if main else None) or (lambda _msg: None)
    progress = (cfg.train.progress if progress is None else progress) and main
    out = Path(out_dir or cfg.train.out_dir or default_out_dir(cfg))
    t_start = time.perf_counter()
    if out.exists() and not out.is_dir():  # --out at a file or /dev/null: say so before work
        raise FileError(f"{out}: the run folder is a file, not a folder; choose another --out "
                        f"/ train.out_dir")

    done = finished_result(cfg, out)  # result.json is written last; last.pt is not read
    if done is not None:
        say(f"{out}: finished run found, not retraining")
        return done
    loop = _start(cfg, out, resources, main, say, progress)  # the dataset is valid past here
    _make_run_folder(out)
    # one writer per run folder: a second one (another grid, resume=false) waits its turn
    with run_lock(out, say) if main else contextlib.nullcontext():
        if main:  # temp files of a writer killed mid-write (the lock excludes live ones)
            remove_orphans(out, RUN_FILES)
        done = None if distributed.is_distributed() else finished_result(cfg, out)
        if done is not None:  # the process we waited for finished this very run
            say(f"{out}: finished run found, not retraining")
            return done
        ckpt = _resume_point(cfg, out)
        _restore_or_clean(loop, ckpt)
        loop.events = open_event_log(out, loop.start_epoch, ckpt is not None, main,
                                     loop.method.loss_terms)
        try:
            epoch = loop.start_epoch - 1
            for epoch in range(loop.start_epoch, loop.final_epoch + 1):
                stopping = stop_after_epoch is not None and epoch >= stop_after_epoch
                _run_epoch(loop, epoch, stopping, t_start)
                if stopping and epoch < loop.final_epoch:
                    break
            return _finish(loop, epoch, t_start)
        finally:
            loop.events.close()


#: the files a run writes into its folder, all atomically
RUN_FILES = ("config.yaml", "history.csv", "last.pt", "best.pt", "test_scores.npy",
             "result.json")


def _make_run_folder(out: Path) -> None:
    """Create the run folder, or one error naming it (a parent that is a file, a read-only
    folder) instead of mkdir's traceback."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full(out / ".lock") from None
        raise FileError(f"{out}: cannot create the run folder ({err.strerror}); choose a "
                        f"writable --out / train.out_dir (or set TRM_RUNS)") from None


def _resume_point(cfg: RunConfig, out: Path) -> dict[str, Any] | None:
    """The ``last.pt`` a resumed run continues from (None: a fresh start); refuses a checkpoint
    whose config differs in a field that changes the numbers."""
    last_path = out / "last.pt"
    if not (last_path.exists() and cfg.train.resume):
        return None
    ckpt = load_checkpoint(last_path)
    diff = config_diff(ckpt["config"], cfg)
    if diff:
        raise TrainingError(f"{last_path}: cannot resume, the config differs: " + "; ".join(diff)
                            + " — choose another out_dir or set train.resume=false")
    return ckpt


def _start(cfg: RunConfig, out: Path, resources: Resources | None, main: bool,
           say: Callable[[str], None], progress: bool) -> _Loop:
    """Session, method and optimizer of a run, seeded so that the method's initial state does
    not depend on what building the session consumed."""
    seed_everything(cfg.train.seed)
    session = Session.build(cfg, resources, progress=progress)
    if len(session.data.val_idx) > 0 and cfg.train.select_metric != "mAP":
        raise ConfigError(f"train.select_metric {cfg.train.select_metric!r} is not available "
                          f"on the partially labelled validation split (use 'mAP')")
    seed_everything(cfg.train.seed)  # the method's init must not depend on what the session used
    method = build_method(cfg.method, session.ctx).to(session.device)
    params = method.trainable_parameters()
    backbone_ids = {id(p) for p in session.backbone.parameters()} \
        if isinstance(session.backbone, nn.Module) else set()
    if any(id(p) in backbone_ids for p in params):
        raise TrainingError(f"method {cfg.method.name!r} lists frozen backbone parameters as "
                            f"trainable; only method parameters may receive gradients")
    final_epoch = cfg.train.epochs if (method.trainable and params) else 0
    optimizer = make_optimizer(cfg.train, params) if final_epoch else None
    steps_per_epoch = max(1, math.ceil(len(session.data.train_idx) / cfg.train.batch_size))
    return _Loop(cfg, out, session, method, params, optimizer, final_epoch, steps_per_epoch,
                 main, say, progress,
                 observed=torch.as_tensor(session.data.observed, dtype=torch.float32),
                 full=torch.as_tensor(session.data.train.labels, dtype=torch.float32),
                 start_epoch=1 if final_epoch else 0)


def _restore_or_clean(loop: _Loop, ckpt: dict[str, Any] | None) -> None:
    """Continue from ``ckpt`` (method, optimizer, history, RNG streams), or remove what a
    previous run left in the folder; then every rank holds rank 0's method state."""
    cfg, out, data = loop.cfg, loop.out, loop.session.data
    if ckpt is not None:
        check_identity(ckpt, loop.last_path, None, data.train.class_names)
        load_method_state(loop.method, ckpt["method"], loop.last_path)
        if loop.optimizer is not None and ckpt.get("optimizer"):
            loop.optimizer.load_state_dict(ckpt["optimizer"])
        loop.history, loop.summary, loop.elapsed = ckpt["history"], ckpt["summary"], \
            ckpt["elapsed"]
        loop.start_epoch = ckpt["epoch"] + 1
        set_rng_state(ckpt["rng"])
        loop.say(f"resuming {out} after epoch {ckpt['epoch']}")
    elif loop.main:
        for stale in ("best.pt", "last.pt", "test_scores.npy", "result.json", "history.csv",
                      *(p.name for p in out.glob("events.out.tfevents.*"))):
            (out / stale).unlink(missing_ok=True)
    distributed.broadcast_module(loop.method)  # every rank starts from rank 0's state
    if loop.main:
        cfg.to_yaml(out / "config.yaml")
    loop.say(f"{cfg.method.name} on {cfg.data.dataset} ({cfg.data.protocol}, "
             f"p={cfg.data.proportion:g}): {len(data.train_idx)} train / {len(data.val_idx)} "
             f"val / {len(data.test)} test images, "
             f"{sum(p.numel() for p in loop.params):,} trainable parameters, "
             f"{loop.session.device}, "
             f"{'cached features' if cfg.train.use_cache else 'live images'} -> {out}")


def _run_epoch(loop: _Loop, epoch: int, stopping: bool, t_start: float) -> None:
    """Train one epoch (epoch 0: evaluate only), validate, select, score the test split when
    due, and write history and checkpoints."""
    cfg, session, method = loop.cfg, loop.session, loop.method
    t0 = time.perf_counter()
    row: dict[str, Any] = {"epoch": epoch}
    if epoch > 0:
        try:
            row.update(_train_epoch(method, loop.optimizer, session, loop.observed, loop.full,
                                    epoch, loop.steps_per_epoch, loop.amp, loop.progress))
        except TrainingError as err:
            kept = f"{loop.last_path} (epoch {epoch - 1})" if loop.last_path.exists() \
                else "none yet"
            raise TrainingError(f"{err}; last good checkpoint kept: {kept}") from None
        row.update({k: float(v) for k, v in method.epoch_end(epoch).items()})
        distributed.broadcast_module(method, params=False)  # memory bank, pseudo-labels
    val = _validate(loop, row)
    # Selection rank: an informative validation score beats none (ties keep the earlier
    # epoch); without one (no val split, or no class with both an observed positive and
    # negative) or with train.select=last the latest epoch wins.
    score = val.get(cfg.train.select_metric, math.nan) if cfg.train.select == "val" \
        else math.nan
    informative = bool(np.isfinite(score))
    rank = [1.0, score] if informative else [0.0, float(epoch)]
    improves = "best_epoch" not in loop.summary or rank > loop.summary["best_rank"]
    # The test split is scored on the train.test_every schedule, at the last epoch (and
    # where the run is stopped on purpose), and whenever validation selects a new epoch;
    # only scored epochs can be reported, and test_oracle is the best of them. With
    # test_every=0 a selected epoch is not scored when it is selected but once, from best.pt,
    # when the run ends (_score_best): the same numbers, without scoring every epoch that
    # validation selects on the way (train.select=val; with select=last only the last epoch
    # is ever scored anyway).
    every = cfg.train.test_every
    scored = (epoch >= loop.final_epoch or stopping or (every > 0 and epoch % every == 0)
              or (every > 0 and informative and improves))
    test: dict[str, float] = {}
    if scored:
        test_scores = predict_split(method, session, "test", loop.amp)
        test = metrics.evaluate_scores(test_scores, session.data.test.labels,
                                       session.data.test.class_names)
    row["test_mAP"] = test.get("mAP", math.nan)
    row["seconds"] = time.perf_counter() - t0
    loop.history.append(row)
    if improves and (scored or informative):  # an uninformative epoch is superseded anyway
        loop.summary.update(best_epoch=epoch, best_rank=rank, val=val, test=test)
        if loop.main:
            if scored:
                with atomic_path(loop.out / "test_scores.npy") as tmp:
                    np.save(tmp, test_scores)
            save_checkpoint(loop.out / "best.pt", {
                "method": method_state(method), "epoch": epoch, "config": cfg.to_dict(),
                "classes": list(session.data.train.class_names), "val": val, "test": test})
    if scored:
        _update_oracle(loop, epoch, test)
    if loop.main:
        # events first: a run killed between the two redoes this epoch, and the resumed
        # writer's purge_step drops these events (trm_lib.train.tensorboard)
        loop.events.epoch(epoch, row, val, test)
        _write_epoch(loop, epoch, loop.elapsed + time.perf_counter() - t_start)
    loop.say(_fmt_row(row, loop.final_epoch))


def _validate(loop: _Loop, row: dict[str, Any]) -> dict[str, float]:
    """Validation metrics on the observed labels of the held-out rows (empty without a
    validation split); ``row`` gets ``val_mAP`` and ``val_mAP_hidden``."""
    data = loop.session.data
    if len(data.val_idx) == 0:
        return {}
    unknown = "negative" if loop.cfg.data.protocol == "single_positive" else "exclude"
    val_scores = predict_split(loop.method, loop.session, "val", loop.amp)
    val = observed_metrics(val_scores, data.observed[data.val_idx], unknown=unknown)
    # the same held-out images on their hidden full labels: never selects an epoch, but
    # at p = 0.1 the observed labels are too few to compare settings on (a handful of
    # positives per class), so studies of the embedded world read this one too
    val["mAP_hidden"] = metrics.mean_average_precision(
        val_scores, data.train.labels[data.val_idx]).value
    row["val_mAP"] = val["mAP"]
    row["val_mAP_hidden"] = val["mAP_hidden"]
    return val


def _write_epoch(loop: _Loop, epoch: int, elapsed: float) -> None:
    """history.csv and the resume point ``last.pt`` after ``epoch`` (rank 0)."""
    write_history(loop.out / "history.csv", loop.history)
    save_checkpoint(loop.last_path, {
        "method": method_state(loop.method), "epoch": epoch, "config": loop.cfg.to_dict(),
        "classes": list(loop.session.data.train.class_names),
        "optimizer": loop.optimizer.state_dict() if loop.optimizer is not None else {},
        "scheduler": {"step": epoch * loop.steps_per_epoch,
                      "steps_per_epoch": loop.steps_per_epoch},
        "history": loop.history, "summary": loop.summary, "rng": rng_state(),
        "elapsed": elapsed})


def _finish(loop: _Loop, epoch: int, t_start: float) -> RunResult:
    """The :class:`RunResult` of the selected epoch; ``result.json`` once the run is complete."""
    cfg, out, summary = loop.cfg, loop.out, loop.summary
    distributed.barrier()  # rank 0's files (best.pt, test_scores.npy) exist before any reads
    if not summary["test"]:
        _score_best(loop)
    wall = loop.elapsed + time.perf_counter() - t_start
    complete = epoch >= loop.final_epoch
    result = RunResult(
        config=cfg, history=pd.DataFrame(loop.history),
        metrics={"val": summary["val"], "test": _strip_ap(summary["test"]),
                 "test_oracle": _strip_ap(summary["test_oracle"])},
        best_epoch=summary["best_epoch"], oracle_epoch=summary["oracle_epoch"], out_dir=out,
        wall_time=wall, per_class_ap={k[3:]: v for k, v in summary["test"].items()
                                      if k.startswith("AP/")},
        scores=np.load(out / "test_scores.npy"), epochs_done=epoch, complete=complete,
        provenance=provenance())
    if complete and loop.main:
        write_json(out / "result.json", {
            "config": cfg.to_dict(), "metrics": result.metrics, "best_epoch": result.best_epoch,
            "oracle_epoch": result.oracle_epoch, "wall_time": wall,
            "per_class_ap": result.per_class_ap, "epochs_done": epoch,
            "provenance": result.provenance})
        loop.events.final(cfg.to_dict(), result.metrics, epoch)
    loop.say(result.summary())
    return result


def _update_oracle(loop: _Loop, epoch: int, test: dict[str, float]) -> None:
    """``test_oracle``: the best test mAP over the scored epochs (ties keep the earlier)."""
    oracle = loop.summary.get("test_oracle")
    if oracle is None or test["mAP"] > oracle["mAP"] or (
            test["mAP"] == oracle["mAP"] and epoch < loop.summary["oracle_epoch"]):
        loop.summary.update(oracle_epoch=epoch, test_oracle=test)


def _score_best(loop: _Loop) -> None:
    """Score the test split at the selected epoch from ``best.pt`` (test_every=0 leaves it
    unscored until the run ends): its scores, best.pt's test entry and the history row then read
    as if the epoch had been scored when it was selected."""
    summary, best = loop.summary, loop.out / "best.pt"
    ckpt = load_checkpoint(best)
    load_method_state(loop.method, ckpt["method"], best)
    test_scores = predict_split(loop.method, loop.session, "test", loop.amp)
    test = metrics.evaluate_scores(test_scores, loop.session.data.test.labels,
                                   loop.session.data.test.class_names)
    summary["test"] = test
    _update_oracle(loop, summary["best_epoch"], test)
    for row in loop.history:
        if row["epoch"] == summary["best_epoch"]:
            row["test_mAP"] = test["mAP"]
    if loop.main:
        with atomic_path(loop.out / "test_scores.npy") as tmp:
            np.save(tmp, test_scores)
        save_checkpoint(best, {**ckpt, "test": test})
        # history only: last.pt keeps the last epoch's state (the method now holds best.pt's),
        # and a resumed run scores its selected epoch again when it ends
        write_history(loop.out / "history.csv", loop.history)
    distributed.barrier()


def _strip_ap(m: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in m.items() if not k.startswith("AP/")}


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    # the fused kernel: one pass over every parameter instead of ~10 ops each (a TRM-ML step
    # 1.5 -> 0.5 ms on one CPU thread); the same update up to float rounding
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             fused=fused or None)


def _train_epoch(method: Method, optimizer: torch.optim.Optimizer, session: Session,
                 observed: torch.Tensor, full: torch.Tensor, epoch: int, steps_per_epoch: int,
                 amp: bool, progress: bool) -> dict[str, float]:
    """One pass over the training rows; returns the epoch means of the loss logs. Under
    ``torchrun`` each rank runs the forward on its share of every global batch and the loss on
    the gathered batch (module docstring)."""
    cfg, device = session.cfg, session.device
    order = epoch_order(session.data.train_idx, cfg.train.seed, epoch)
    plan = distributed.shard_batches(order, cfg.train.batch_size)  # [(global, this rank's)]
    ddp = distributed.is_distributed()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loader_gen = torch.Generator().manual_seed(
        int(np.random.SeedSequence([cfg.train.seed, epoch]).generate_state(1)[0]))
    method.train()
    method.epoch_start(epoch)
    sums: dict[str, float] = {}
    steps = 0
    lr = cfg.train.lr
    batches = session.train_source.batches_from([part for _, part in plan], loader_gen)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch}", leave=False)
    # train.precision=bf16: CPU autocast for the methods measured faster under it
    cpu_bf16 = cfg.train.precision == "bf16" and bool(getattr(method, "cpu_bf16", False))
    for step, feats in enumerate(batches):
        idx = feats["index"]
        batch = to_device({**feats, "observed": observed[idx], "full": full[idx]}, device)
        lr = lr_at((epoch - 1) * steps_per_epoch + step, cfg.train, steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast(device, amp, cpu_bf16):
            out = method(batch)
            if ddp:
                rows = torch.as_tensor(plan[step][0], dtype=torch.long)
                out = distributed.gather_outputs(out, distributed.shard_sizes(len(rows)))
                batch = to_device({"observed": observed[rows], "full": full[rows],
                                    "index": rows}, device)
            loss, logs = method.loss(out, batch, epoch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"non-finite loss ({value}) at epoch {epoch}, step {step + 1}/{steps_per_epoch} "
                f"(logs: {logs}); training stopped")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(params)  # no-op in one process
        optimizer.step()
        sums["loss"] = sums.get("loss", 0.0) + value
        for key, v in logs.items():  # one column per term / counter; the total is `loss`
            if key != "loss":
                sums[f"train_{key}"] = sums.get(f"train_{key}", 0.0) + float(v)
        steps += 1
    row = {k: v / max(steps, 1) for k, v in sums.items()}
    row["lr"] = lr
    return row


__all__ = ["epoch_order", "lr_at", "train"]
