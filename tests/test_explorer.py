"""The explorer (notebook 06): settings → run keys, cached revisits, metrics from the one evaluator
(checked against sklearn), the attention figure, and widget callbacks driving the explorer.

A 4-class world of coloured squares in the generic folder format and a random-weight
TinyCLIP-RN at 64 px (a 2x2 token grid): no pre-training, seconds per run on one core.
"""

from __future__ import annotations

import html
import math

import fixture_writers as fx
import ipywidgets as widgets
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score

import trm_lib.reports.explorer as E
from trm_lib.config.run_config import ConfigError
from trm_lib.train import predict

CLASSES = fx.SQUARE_CLASSES


def _world(root, n_train: int = 40, n_test: int = 16, seed: int = 0):
    return fx.write_square_world(root, n_train, n_test, seed)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(base config, runs root): a private cache, one CPU thread, 2 epochs with pseudo-labels
    from epoch 1 and an open memory gate, so pseudo-label statistics exist even at random init."""
    world = _world(tmp_path_factory.mktemp("world"))
    cache = tmp_path_factory.mktemp("cache")
    runs = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRM_CACHE", str(cache))
        base = E.explorer_config({
            "data.dataset": "folder", "data.root": str(world), "data.proportion": 0.5,
            "data.val_fraction": 0.25, "backbone.pretrained": None, "backbone.image_size": 64,
            "backbone.batch_size": 32, "train.epochs": 2, "train.batch_size": 16,
            "train.device": "cpu", "method.pseudo_warmup": 1, "method.proto_gate": 0.0,
            "method.n_ctx": 4})
        yield base, runs
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def explorer(env):
    base, runs = env
    return E.Explorer(base, runs)


def test_explorer_config_short_schedule_and_warmup_cap():
    cfg = E.explorer_config({"train.epochs": 1})
    assert cfg.train.epochs == 1 and cfg.train.warmup_epochs == 0
    assert cfg.method.pseudo_warmup == 1  # capped so a 1-epoch run still pseudo-labels
    assert E.explorer_config().train.epochs == E.EXPLORER_OVERRIDES["train.epochs"]


def test_every_control_changes_the_key_and_irrelevant_ones_do_not(env):
    explorer = E.Explorer(*env)
    base = explorer.run_key()
    changed = {"proportion": 0.2, "method": "dualcoop", "kd": False, "mcl": False,
               "pseudo": False, "pseudo_high": 0.8, "pseudo_low": 0.1, "seed": 1}
    keys = {name: explorer.run_key(**{name: value}) for name, value in changed.items()}
    assert base not in keys.values()
    assert len(set(keys.values())) == len(keys)
    # the key is the config hash, and the config carries the control
    assert explorer.config(kd=False).method.kd == "none"
    assert explorer.config(proportion=0.2).data.proportion == 0.2
    assert explorer.config(seed=3).train.seed == 3 and explorer.config(seed=3).data.mask_seed == 3
    # switches do not exist for a baseline, thresholds not without pseudo-labels
    dual = explorer.run_key(method="dualcoop")
    assert explorer.run_key(method="dualcoop", kd=False, pseudo_high=0.7) == dual
    no_pseudo = explorer.run_key(pseudo=False)
    assert explorer.run_key(pseudo=False, pseudo_high=0.7, pseudo_low=0.3) == no_pseudo
    # float noise from arithmetic is the same setting
    assert explorer.run_key(proportion=0.1 + 0.2) == explorer.run_key(proportion=0.3)
    assert explorer.run_dir().name.endswith(base[:10])
    assert explorer.trained == []  # keys are computed without training


def test_bad_controls_raise_naming_the_control(explorer):
    with pytest.raises(ConfigError, match="unknown control.*colour"):
        explorer.setting(colour=1)
    with pytest.raises(ConfigError, match="method must be one of"):
        explorer.setting(method="resnet")
    with pytest.raises(ConfigError, match="pseudo_low"):
        explorer.setting(pseudo_high=0.5, pseudo_low=0.6)
    with pytest.raises(ConfigError, match="data.proportion"):
        explorer.setting(proportion=0.0)
    with pytest.raises(ConfigError, match="kd must be True/False"):
        explorer.setting(kd="yes")
    with pytest.raises(ConfigError, match=r"image must be an integer test index in \[0, 15\]"):
        explorer.figure(image=16)


def test_revisit_is_cached_in_memory_and_on_disk(env, explorer, monkeypatch, tmp_path):
    base, _ = env
    first = E.Explorer(base, tmp_path, resources=explorer.resources)
    run = first.run()
    assert run.source == "trained" and first.trained == [run.key]
    assert first.run() is run and first.trained == [run.key]  # memory, no retraining
    assert first.cached_keys == [run.key]
    assert (first.run_dir() / "result.json").exists()

    def no_training(*_a, **_k):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(E.runs, "train", no_training)  # the model side trains
    again = E.Explorer(base, tmp_path, resources=explorer.resources)
    other = again.run()
    assert other.source == "read back" and again.trained == []
    assert other.key == run.key and other.loaded.epoch == run.loaded.epoch
    assert again.metrics() == pytest.approx(first.metrics(), nan_ok=True)


def test_metrics_are_the_evaluators_and_match_sklearn(explorer):
    run = explorer.run()
    m = explorer.metrics()
    loaded = run.loaded
    scores = predict(loaded.method, loaded.batches("test"), loaded.session.device)
    Y = loaded.session.data.test.labels
    ap = [average_precision_score(Y[:, c] == 1, scores[:, c]) for c in range(Y.shape[1])
          if (Y[:, c] == 1).any()]
    assert m["mAP"] == pytest.approx(float(np.mean(ap)), abs=1e-6)
    assert m["mAP"] == run.result.metrics["test"]["mAP"]
    assert m["epochs"] == 2
    # pseudo-label statistics: the last epoch's, finite with the open gate of this fixture
    last = run.result.history.iloc[-1]
    for key in ("pseudo_recall", "pseudo_coverage"):
        assert math.isfinite(m[key]) and m[key] == pytest.approx(float(last[key]))
    assert 0.0 <= m["pseudo_coverage"] <= 1.0
    # a run without pseudo-labels has none to report
    assert math.isnan(explorer.metrics(method="linear_probe")["pseudo_recall"])


def test_table_lists_the_selected_and_the_figure_runs_in_percent(explorer):
    table = explorer.table(method="linear_probe")
    assert list(table.index) == ["linear probe, p=50%", "DualCoOp, p=50%",
                                 "TRM-ML, p=50%, kd+mcl+pseudo(0.90/0.02)"]
    m = explorer.metrics(method="linear_probe")
    assert table.loc["linear probe, p=50%", "mAP"] == round(100 * m["mAP"], 2)
    assert math.isnan(table.loc["linear probe, p=50%", "pseudo recall"])
    merged = explorer.table()  # TRM-ML selected is also the figure's TRM-ML row
    assert len(merged) == 2
    assert merged["role"].iloc[0] == "selected + figure: TRM-ML (region)"


def test_static_figure_shows_top3_of_trm_ml_over_both_methods(explorer):
    fig = E.static_figure(explorer, image=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 4  # DualCoOp and TRM-ML rows x (image + top-3)
    maps, scores = explorer.maps(image=3)
    assert maps.shape == (len(CLASSES), 4)  # 2x2 token grid at 64 px
    np.testing.assert_allclose(maps.sum(1), 1.0, atol=1e-5)  # attention rows
    top = np.argsort(-scores, kind="stable")[:3]
    titles = [ax.get_title() for ax in fig.axes[1:4]]
    assert titles == [f"{CLASSES[c]} ({scores[c]:.2f})" for c in top]
    assert ", ".join(explorer.image_labels(3)) in fig.get_suptitle()
    dual_maps, _ = explorer.maps(image=3, method="dualcoop")
    assert not np.allclose(dual_maps, maps)
    with pytest.raises(ValueError, match="no spatial maps"):
        explorer.maps(image=3, method="linear_probe")


def test_compare_gives_one_row_per_setting(explorer):
    df = explorer.compare([{}, {"method": "zero_shot"}])
    assert list(df["method"]) == ["trm_ml", "zero_shot"]
    assert df.loc[0, "mAP"] == explorer.metrics()["mAP"]
    assert {"pseudo_precision", "pseudo_recall", "label", "key"} <= set(df.columns)
    assert list(df["variant"]) == ["kd+mcl+pseudo(0.90/0.02)", "default"]
    long = E.tidy(df, metrics=("mAP",))
    assert list(long.columns) == ["method", "variant", "protocol", "proportion", "seed", "split",
                                  "metric", "value"]
    assert long["value"].tolist() == df["mAP"].tolist()
    with pytest.raises(ValueError, match="lacks column"):
        E.tidy(df.drop(columns="variant"))


def test_widgets_call_the_explorer_and_update_the_outputs(explorer, monkeypatch):
    calls: list[dict] = []
    view = explorer.view

    def spy(**state):
        calls.append(state)
        return view(**state)

    monkeypatch.setattr(explorer, "view", spy)
    ui = E.build_widgets(explorer, image=1)
    assert isinstance(ui, widgets.Widget)
    assert set(ui.controls) == {*E.CONTROLS, "image"}
    assert calls[-1]["image"] == 1 and ui.updates == 1
    assert bytes(ui.figure.value).startswith(b"\x89PNG")
    assert "TRM-ML, p=50%" in ui.table.value and "DualCoOp, p=50%" in ui.table.value

    before_png, before_table = bytes(ui.figure.value), ui.table.value
    ui.controls["proportion"].value = 0.9
    assert calls[-1]["proportion"] == 0.9 and ui.updates == 2
    assert "TRM-ML, p=90%" in ui.table.value and ui.table.value != before_table
    assert bytes(ui.figure.value) != before_png
    assert "epoch 2/2" in "\n".join(ui.log_lines)
    assert html.escape(ui.log_lines[-1]) in ui.log_area.value  # the panel follows the newest
    assert "30 training images, 2 epochs, seed 0" in ui.status.value
    assert "TRM-ML, p=90%" in ui.visited.value and "below zero-shot" in ui.visited.value

    ui.controls["image"].value = 2
    assert calls[-1]["image"] == 2 and ui.updates == 3
    assert ", ".join(explorer.image_labels(2)) in ui.truth.value

    ui.controls["method"].value = "dualcoop"
    assert ui.controls["kd"].disabled and ui.controls["pseudo_high"].disabled
    ui.controls["method"].value = "trm_ml"
    ui.controls["pseudo"].value = False
    assert not ui.controls["kd"].disabled and ui.controls["pseudo_high"].disabled
    assert calls[-1]["pseudo"] is False and ui.updates == 6

    # an error inside the callback is shown, not raised, and keeps the last figure
    def broken(**_state):
        raise ValueError("no such image file: x.png")

    monkeypatch.setattr(explorer, "view", broken)
    shown = bytes(ui.figure.value)
    ui.controls["image"].value = 0
    assert "no such image file" in ui.status.value and bytes(ui.figure.value) == shown
    assert ui.updates == 6


def test_a_new_setting_writes_nothing_into_the_cache(env, explorer, tmp_path):
    """Issue 27: the explorer must work on a shared, read-only TRM_CACHE. A proportion no run
    has used needs a new label mask: it goes to the explorer's own folder, and not one file of
    the cache is added or touched (checked by snapshot: the tests run as root, for whom a
    chmod-ed folder is still writable)."""
    import os
    from pathlib import Path

    cache = Path(os.environ["TRM_CACHE"])
    explorer.run(proportion=0.5, method="trm_ml")  # world, features: built on first use

    def snapshot():
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in cache.rglob("*")}

    before = snapshot()
    run = explorer.run(proportion=0.3, method="trm_ml")
    assert snapshot() == before
    assert run.result is not None
    masks = list((explorer.runs_root / "masks").rglob("proportion_p0.3_seed0.npy"))
    assert len(masks) == 1


def test_scale_and_visited_settings_with_seed_spread_and_zero_shot_floor(env, explorer):
    """Issue 27: the explorer says what its numbers come from (training images, epochs, seed),
    lists the settings visited with their spread over seeds, and flags a run below zero-shot."""
    assert explorer.scale() == "30 training images, 2 epochs, seed 0"
    explorer.run(seed=1)
    table = explorer.visited()
    row = table.loc[explorer.setting().label()]
    maps = [100 * explorer.metrics(seed=sd)["mAP"] for sd in (0, 1)]
    assert row["seeds"] == "0, 1" and row["n"] == 2
    assert row["mAP"] == pytest.approx(np.mean(maps), abs=0.01)
    assert row["± sd"] == pytest.approx(np.std(maps, ddof=1), abs=0.01)
    zero = [100 * explorer.metrics(method="zero_shot", seed=sd)["mAP"] for sd in (0, 1)]
    assert row["zero-shot mAP"] == pytest.approx(np.mean(zero), abs=0.01)
    assert row["below zero-shot"] == ("⚠ yes" if np.mean(maps) < np.mean(zero) else "no")
    one_seed = table[table["n"] == 1]
    assert len(one_seed) and one_seed["± sd"].isna().all()  # one seed: no spread claimed


def test_soft_pseudo_label_thresholds_reuse_the_trained_run(env, explorer, monkeypatch):
    """Issue 27: with soft pseudo-labels (the default) the thresholds only define the logged,
    thresholded form, so a threshold change reuses the trained run — from memory or from its
    folder — and shows the threshold-dependent statistics as "–", never the old thresholds'."""
    from dataclasses import replace

    from trm_lib.reports.explorer.widgets import _html_table

    base, runs = env
    assert base.method.pseudo_soft
    trained = explorer.run()
    explorer.run(method="dualcoop")  # the figure's other run
    assert math.isfinite(explorer.metrics()["pseudo_precision"])

    def no_training(*_a, **_k):
        raise AssertionError("a threshold change retrained a soft-pseudo-label run")

    monkeypatch.setattr(E.runs, "train", no_training)
    moved = {"pseudo_high": 0.8, "pseudo_low": 0.05}
    assert explorer.pending(**moved) == []
    run = explorer.run(**moved)
    assert run.key != trained.key and run.reused_from == trained.setting
    assert run.source == "reused (trained at 0.90/0.02)" and run.loaded is trained.loaded
    m, m0 = explorer.metrics(**moved), explorer.metrics()
    assert m["mAP"] == m0["mAP"] and m["best_epoch"] == m0["best_epoch"]
    assert all(math.isnan(m[f"pseudo_{k}"]) for k in ("precision", "recall", "coverage"))
    assert math.isfinite(m0["pseudo_precision"])  # the trained run keeps its own numbers
    row = explorer.table(**moved).loc[explorer.setting(**moved).label()]
    assert row[["pseudo precision", "pseudo recall", "pseudo coverage"]].isna().all()
    assert ">–<" in _html_table(explorer.table(**moved))
    assert "not recomputed" in explorer.scale(**moved) and "0.80/0.05" in explorer.scale(**moved)

    # a fresh explorer (a new kernel) finds the base thresholds' run folder
    fresh = E.Explorer(base, runs, resources=explorer.resources)
    again = fresh.run(**moved)
    assert again.reused_from is not None and fresh.trained == []
    assert again.result.metrics["test"]["mAP"] == pytest.approx(m["mAP"])

    # hard pseudo-labels: the thresholds pick the training targets, so the run is not reused
    hard = E.Explorer(base.with_overrides({"method.pseudo_soft": False}), runs,
                      resources=explorer.resources)
    key, cfg = hard.run_key(), hard.config()
    hard._runs[key] = replace(trained, key=key, config=cfg)
    assert hard.setting(**moved) in hard.pending(**moved)
    with pytest.raises(AssertionError, match="retrained"):
        hard.run(**moved)


def test_a_threshold_tour_gets_each_thresholds_own_statistics(env, explorer):
    """compare() (notebook 06's static tour over thresholds) runs each setting itself: the
    pseudo-label statistics are what a threshold tour shows, and a reused twin has none."""
    moved = {"pseudo_high": 0.8, "pseudo_low": 0.05}
    assert explorer.run(**moved).reused_from is not None  # the live view reuses
    row = explorer.compare([moved]).iloc[0]
    assert math.isfinite(row["pseudo_coverage"]) and math.isfinite(row["pseudo_precision"])
    run = explorer.run(**moved)
    assert run.reused_from is None and run.source == "trained"
    assert explorer.metrics(**moved)["pseudo_coverage"] == row["pseudo_coverage"]
    # both thresholds trained the same model: mAP agrees, coverage follows the thresholds
    assert explorer.metrics(**moved)["mAP"] == pytest.approx(explorer.metrics()["mAP"])
