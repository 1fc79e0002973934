"""TensorBoard events of a run, read back with TensorBoard's own ``EventAccumulator``: the
per-epoch scalars are the history's numbers, the config arrives as hparams with the final
metrics, and a killed-then-resumed run reads like an uninterrupted one."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
from test_train import LinearHead, tiny_config
from test_train import world as world  # noqa: F401  (the module fixture)

import trm_lib.train as T
import trm_lib.train.trainer as TR
from trm_lib.train.tensorboard import epoch_scalars, flat_hparams


@pytest.fixture
def head(monkeypatch):
    monkeypatch.setattr(TR, "build_method", lambda cfg, ctx: LinearHead(cfg, ctx))


def _events(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every event
    acc.Reload()
    return acc


def _series(acc: EventAccumulator, tag: str) -> dict[int, float]:
    events = acc.Scalars(tag)
    steps = [e.step for e in events]
    assert len(steps) == len(set(steps)), f"{tag}: a step written twice {steps}"
    return {e.step: e.value for e in events}


def _f32(x: float) -> float:
    return float(np.float32(x))  # event files store float32


def test_events_carry_the_history_and_the_config_as_hparams(world, tmp_path, head):  # noqa: F811
    cfg = tiny_config(world, **{"train.select": "val"})
    res = T.train(cfg, tmp_path / "run", log=None)
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    acc = _events(tmp_path / "run")
    tags = set(acc.Tags()["scalars"])
    assert {"loss/total", "loss/cls", "lr", "val/mAP", "val/mAP_hidden", "test/mAP", "test/CF1",
            "epoch/seen_mean", "final/test_mAP", "final/val_mAP"} <= tags
    hist = pd.read_csv(tmp_path / "run" / "history.csv").set_index("epoch")
    for tag, col in (("loss/total", "loss"), ("loss/cls", "train_cls"), ("lr", "lr"),
                     ("val/mAP", "val_mAP"), ("test/mAP", "test_mAP"),
                     ("epoch/seen_mean", "seen_mean")):
        assert _series(acc, tag) == {e: _f32(v) for e, v in hist[col].items()}, tag
    assert _series(acc, "final/test_mAP") == {3: _f32(res.metrics["test"]["mAP"])}
    assert _series(acc, "final/test_oracle_mAP") == {3: _f32(res.metrics["test_oracle"]["mAP"])}
    # the HParams plugin's three summaries (experiment, session start, session end)
    assert set(acc.PluginTagToContent("hparams")) == {
        "_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}


def test_a_resumed_run_appends_its_events_like_an_uninterrupted_one(world, tmp_path, head):  # noqa: F811
    cfg = tiny_config(world)
    T.train(cfg, tmp_path / "full", log=None)
    cut = tmp_path / "cut"
    T.train(cfg, cut, stop_after_epoch=1, log=None)
    shutil.copy(cut / "last.pt", tmp_path / "epoch1.pt")
    T.train(cfg, cut, stop_after_epoch=2, log=None)
    # killed after epoch 2's events were flushed, before its last.pt replaced epoch 1's
    shutil.copy(tmp_path / "epoch1.pt", cut / "last.pt")
    T.train(cfg, cut, log=None)
    files = sorted(f.name for f in cut.glob("events.out.tfevents.*"))  # the readers' order
    stamps = [int(name.split(".")[3]) for name in files]
    assert len(files) == 3 and stamps == sorted(set(stamps)), files  # sessions in order
    full, resumed = _events(tmp_path / "full"), _events(cut)
    tags = set(full.Tags()["scalars"]) - {"time/seconds"}
    assert tags == set(resumed.Tags()["scalars"]) - {"time/seconds"}
    for tag in sorted(tags):
        assert _series(resumed, tag) == _series(full, tag), tag
    assert sorted(_series(resumed, "loss/total")) == [1, 2, 3]


def test_epoch_scalars_name_every_kind_of_column_and_drop_nan():
    row = {"epoch": 2, "loss": 0.5, "train_cls": 0.3, "train_kd": 0.2, "train_grad_cls": 1.5,
           "train_n_memory_in": 3.0, "lr": 0.01, "pseudo_precision": 0.9,
           "pseudo_recall": float("nan"), "memory_fill": 0.1, "val_mAP": 0.7,
           "val_mAP_hidden": 0.6, "test_mAP": float("nan"), "seconds": 1.0}
    got = epoch_scalars(row, {"mAP": 0.7, "mAP_hidden": 0.6}, {}, loss_terms=("cls", "kd"))
    assert got == {"loss/total": 0.5, "loss/cls": 0.3, "loss/kd": 0.2, "train/grad_cls": 1.5,
                   "train/n_memory_in": 3.0, "lr": 0.01, "pseudo/precision": 0.9,
                   "epoch/memory_fill": 0.1, "val/mAP": 0.7, "val/mAP_hidden": 0.6,
                   "time/seconds": 1.0}
    scored = epoch_scalars(row, {}, {"mAP": 0.4, "CF1": 0.5, "AP/cat": 0.1})
    assert scored["loss/grad_cls"] == 1.5  # without declared terms every log is a loss term
    assert scored["test/mAP"] == 0.4 and scored["test/CF1"] == 0.5 and "test/AP/cat" not in scored


def test_flat_hparams_keeps_tensorboard_types():
    flat = flat_hparams({"train": {"lr": 0.01, "epochs": 3, "amp": True, "out_dir": None},
                         "data": {"dataset": "folder", "classes": ["a", "b"]}})
    assert flat == {"train.lr": 0.01, "train.epochs": 3, "train.amp": True,
                    "train.out_dir": "none", "data.dataset": "folder",
                    "data.classes": '["a", "b"]'}
