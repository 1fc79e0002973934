"""TensorBoard event files for every run: what researchers already compare runs with.

Each run folder gets ``events.out.tfevents.*`` files (``torch.utils.tensorboard.SummaryWriter``)
beside its ``history.csv``, so ``tensorboard --logdir runs`` (or ``python -m trm_lib
tensorboard``) shows every run of a grid as one TensorBoard run. Per epoch (step = epoch):

- ``loss/total`` and one ``loss/<term>`` per loss term the method declares
  (``Method.loss_terms``), ``train/<key>`` for its other per-step logs (gradient norms,
  counters), ``lr``;
- ``val/<metric>`` (observed-label metrics of the validation split, ``val/mAP_hidden``),
  ``test/<metric>`` at the epochs where the test split is scored (mAP, CF1, OF1, ...; per-class
  AP is left to the run folder);
- ``pseudo/<key>`` for the pseudo-label statistics (precision / recall against the hidden
  labels), ``epoch/<key>`` for the rest of the method's epoch-end values, ``time/seconds``.

When the run is complete its config is written as TensorBoard hparams with the final metrics
(``final/test_mAP``, ``final/val_mAP``, ``final/test_oracle_mAP``), so the HParams tab compares
the runs of a grid. Writing reads the numbers the trainer already has: it draws no random
number and changes nothing the run computes.

Resuming: an epoch's events are flushed *before* its ``last.pt`` is written, and a resumed run
opens its writer with ``purge_step`` = the first epoch it trains again. TensorBoard's readers
then drop whatever an interrupted session wrote for that epoch or later, so the events of a
killed-and-resumed run read like those of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

#: history-row keys that are not scalars of the run (or are written under another name)
_SKIP = {"epoch", "loss", "lr", "seconds", "val_mAP", "val_mAP_hidden", "test_mAP"}


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def epoch_scalars(row: Mapping[str, Any], val: Mapping[str, float], test: Mapping[str, float],
                  loss_terms: Collection[str] | None = None) -> dict[str, float]:
    """The tags and values of one epoch: a history row plus that epoch's validation and test
    metrics (empty where not computed); NaN and non-numbers are left out. ``loss_terms``: the
    method's (None: every per-step log counts as one)."""
    out: dict[str, Any] = {"loss/total": row.get("loss"), "lr": row.get("lr"),
                           "time/seconds": row.get("seconds")}
    for key, value in row.items():
        if key in _SKIP:
            continue
        if key.startswith("train_"):
            term = key[len("train_"):]
            is_loss = loss_terms is None or term in loss_terms
            out[("loss/" if is_loss else "train/") + term] = value
        elif key.startswith("pseudo_"):
            out[f"pseudo/{key[len('pseudo_'):]}"] = value
        else:
            out[f"epoch/{key}"] = value
    out.update({f"val/{k}": v for k, v in val.items()})
    if "val/mAP" not in out:
        out["val/mAP"] = row.get("val_mAP")
    out.update({f"test/{k}": v for k, v in test.items() if not k.startswith("AP/")})
    if "test/mAP" not in out:
        out["test/mAP"] = row.get("test_mAP")
    return {k: f for k, v in out.items() if (f := _finite(v)) is not None}


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as TensorBoard hparams: dotted keys; bool/int/float/str values kept,
    None as ``"none"``, anything else (lists, dicts of a key) as JSON text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, f"{name}."))
        elif value is None:
            out[name] = "none"
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = json.dumps(value, sort_keys=True)
    return out


def _after_earlier_sessions(out_dir: Path) -> None:
    """Wait until this session's event file sorts after the folder's earlier ones.

    Readers take a run's files in name order, ``events.out.tfevents.<whole seconds>.<host>.<pid>
    .<n>``: a session resumed within the second its predecessor started (a short epoch) could
    sort first, and its purge would then drop nothing. At most one second, only on resume."""
    stamps = [int(m.group(1)) for f in out_dir.glob("events.out.tfevents.*")
              if (m := re.match(r"events\.out\.tfevents\.(\d+)\.", f.name))]
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.05)


class EventLog:
    """The event writer of one run folder (rank 0 only; a no-op object elsewhere)."""

    def __init__(self, out_dir: str | Path, first_epoch: int, resumed: bool,
                 loss_terms: Collection[str] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.loss_terms = loss_terms
        _after_earlier_sessions(Path(out_dir))
        # purge_step: readers drop earlier sessions' events from this epoch on (module docstring)
        self.writer = SummaryWriter(log_dir=str(out_dir), purge_step=first_epoch if resumed
                                    else None)

    def epoch(self, epoch: int, row: Mapping[str, Any], val: Mapping[str, float],
              test: Mapping[str, float]) -> None:
        """Write one epoch's scalars and flush them to disk (before ``last.pt`` is written)."""
        for tag, value in epoch_scalars(row, val, test, self.loss_terms).items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def final(self, config: Mapping[str, Any], metrics: Mapping[str, Mapping[str, float]],
              epoch: int) -> None:
        """The run's config as hparams with its final metrics (the HParams tab of a grid)."""
        from torch.utils.tensorboard.summary import hparams

        final = {f"final/{split}_{k}": f for split in ("val", "test", "test_oracle")
                 for k, v in (metrics.get(split) or {}).items()
                 if not k.startswith("AP/") and (f := _finite(v)) is not None}
        exp, ssi, sei = hparams(flat_hparams(config), final)
        writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            writer.add_summary(summary, epoch)
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NoEventLog:
    """What ranks other than 0 hold: the same methods, writing nothing."""

    def epoch(self, *args: Any) -> None:
        pass

    def final(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


def open_event_log(out_dir: str | Path, first_epoch: int, resumed: bool, main: bool = True,
                   loss_terms: Collection[str] | None = None) -> EventLog | NoEventLog:
    """The run's :class:`EventLog` on rank 0, a :class:`NoEventLog` on the other ranks."""
    return EventLog(out_dir, first_epoch, resumed, loss_terms) if main else NoEventLog()


__all__ = ["EventLog", "NoEventLog", "epoch_scalars", "flat_hparams", "open_event_log"]
