"""Experiment grids: spec expansion, the tidy CSV, skipping finished runs, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_train import make_world, tiny_config  # the tiny world of the trainer tests

import trm_lib.experiments as E
import trm_lib.experiments.runner as G
import trm_lib.train as T
from trm_lib.config.run_config import ConfigError


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("world")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRM_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("TRM_RUNS", str(tmp_path_factory.mktemp("runs")))
        yield make_world(root)
    torch.set_num_threads(threads)


def small_spec(world) -> dict:
    base = {k: v for k, v in tiny_config(world).flat().items()
            if k.startswith(("data.", "backbone."))}
    base.update({"train.epochs": 1, "train.device": "cpu", "train.progress": False})
    return {"name": "small", "base": base, "grids": {
        "main": {"methods": ["linear_probe", "zero_shot"], "proportions": [0.3, 0.7]},
        "abl": {"methods": ["linear_probe"], "proportions": [0.3],
                "switches": {"full": {}, "bce": {"method.cls_loss": "bce"}}},
        "sp": {"methods": ["zero_shot"], "protocol": "single_positive"},
    }}


def test_fidelity_preset_expands_to_the_documented_grid():
    spec = E.load_spec("fidelity")
    plan = E.expand(spec)
    by_grid = pd.Series([r.grid for r in plan]).value_counts().to_dict()
    assert by_grid == {"main": 4 * 5, "ablation": 5 * 2, "single_positive": 4, "difficulty": 12}
    # the difficulty grid's worlds are the named settings of the world generator
    from trm_lib.synth.config import DIFFICULTY

    worlds = {r.variant: r.config.data.options for r in plan if r.grid == "difficulty"}
    assert all(worlds[f"{w}/{c}"] == DIFFICULTY[w] for w in ("easy", "default", "hard")
               for c in ("full", "no_kd", "no_mcl", "no_pseudo"))
    default_full = next(r for r in plan if r.variant == "default/full")
    assert default_full.hash in {r.hash for r in plan if r.grid == "main"}  # trained once
    abl = {r.variant: r.config for r in plan if r.grid == "ablation" and r.proportion == 0.1}
    assert abl["no_kd"].method.kd == "none" and abl["no_mcl"].method.mcl is False
    assert abl["no_pseudo"].method.pseudo is False and abl["text_image"].method.matching == "image"
    # the ablation's "full" variant is the main grid's trm_ml run: same hash, trained once
    main = {r.hash for r in plan if r.grid == "main" and r.method == "trm_ml"}
    assert abl["full"].method == plan[0].config.method and T.config_hash(abl["full"]) in main
    reseeded = E.expand(spec, grids=["main"], seeds=[0, 1, 2], methods=["zero_shot"])
    assert len(reseeded) == 15
    assert {(r.config.train.seed, r.config.data.mask_seed) for r in reseeded} == \
        {(0, 0), (1, 1), (2, 2)}
    sp = [r for r in plan if r.grid == "single_positive"]
    assert all(r.config.data.protocol == "single_positive" and math.isnan(r.proportion)
               for r in sp)
    # protocol B's baselines train with the single-positive loss chosen on observed val
    # (docs/METHOD_CHOICES.md); TRM-ML keeps its partial loss, its pseudo-labels give negatives
    assert {r.method: r.config.method.loss for r in sp} == {
        "trm_ml": "partial", "dualcoop": "em", "linear_probe": "an", "zero_shot": "partial"}
    assert all(r.config.method.loss == "partial" for r in plan if r.grid != "single_positive")


def test_caller_overrides_beat_a_methods_own_settings():
    spec = {"base": {"train.epochs": 12},
            "method_overrides": {"dualcoop": {"train.epochs": 40, "train.lr": 0.006}},
            "grids": {"g": {"methods": ["dualcoop", "trm_ml"], "proportions": [0.1],
                            "overrides": {"train.batch_size": 32}}}}
    dc, trm = E.expand(spec)
    assert (dc.config.train.epochs, dc.config.train.lr) == (40, 0.006)
    assert (trm.config.train.epochs, trm.config.train.lr) == (12, 6e-4)
    # a notebook's budget (--set) shortens every method, the baseline keeps its own lr
    dc, trm = E.expand(spec, overrides={"train.epochs": 6})
    assert (dc.config.train.epochs, dc.config.train.lr, trm.config.train.epochs) == (6, 0.006, 6)
    assert dc.config.train.batch_size == 32  # a grid's own overrides still beat --set
    # ... unless the validation-chosen budgets stay in force: then only trm_ml is shortened
    dc, trm = E.expand(spec, overrides={"train.epochs": 6, "train.lr": 0.1}, method_budgets=True)
    assert (dc.config.train.epochs, trm.config.train.epochs) == (40, 6)
    assert dc.config.train.lr == 0.1  # only the budget is kept, other caller settings win
    # one baseline outside a grid: the same precedence
    cfg = E.method_config("dualcoop", {"train.epochs": 6}, spec=spec)
    assert (cfg.method.name, cfg.train.epochs, cfg.train.lr) == ("dualcoop", 6, 0.006)
    shipped = E.method_config("dualcoop")
    assert (shipped.method.neg_ctx_init, shipped.method.ctx_init, shipped.train.epochs,
            shipped.method.dualcoop_prior) == ("positive", "a photo of a", 12, "zero_shot_score")
    with pytest.raises(ConfigError, match="overrides: .*train.epochs"):
        E.method_config("dualcoop", {"train.epochs": "many"})
    with pytest.raises(ConfigError, match="--set"):
        E.expand(spec, overrides={"train.optimizer": "adam"})


@pytest.mark.parametrize("spec, fragment", [
    ({"grids": {}}, "'grids' must be a non-empty mapping"),
    ({"grids": {"g": {"methods": ["trm_ml"], "bogus": 1}}}, "grids.g: unknown key(s) ['bogus']"),
    ({"grids": {"g": {"methods": ["trm_ml"], "switches": {"s": {"method.kd": "x"}}}}},
     "switch s: method.kd must be one of"),
    ({"grids": {"g": {"methods": ["nope"]}}}, "grids.g: method.name 'nope' unknown"),
    ({"grids": {"g": {"methods": ["trm_ml"]}}, "extra": 1}, "unknown key(s) ['extra']"),
])
def test_bad_specs_name_the_field(spec, fragment):
    with pytest.raises(ConfigError) as err:
        E.expand(spec)
    assert fragment in str(err.value)


def test_grid_writes_tidy_csv_and_skips_finished_runs(world, tmp_path, monkeypatch):
    spec = small_spec(world)
    csv = tmp_path / "results.csv"
    df = E.run_grid(spec, csv, runs_root=tmp_path / "runs", log=None).table
    assert list(df.columns) == E.COLUMNS and list(pd.read_csv(csv).columns) == E.COLUMNS
    keys = ["grid", "method", "variant", "protocol", "proportion", "seed"]
    runs = df.drop_duplicates(keys)
    assert len(runs) == 4 + 2 + 1  # main 2x2, abl 2 switches, sp 1
    test_map = df[(df.split == "test") & (df.metric == "mAP")]
    assert len(test_map) == 7 and test_map["value"].between(0, 1).all()
    assert set(df["split"]) == {"val", "test", "test_oracle"}
    assert {"AP/red", "OF1", "CF1_top3", "mAP_zero_empty"} <= set(df["metric"])
    row = df.iloc[0]
    cfg = json.loads(row["config"])
    assert cfg["method"]["name"] == row["method"] and len(row["config_hash"]) == 64
    assert set(json.loads(row["versions"])) == {"torch", "open_clip", "trm_lib"}
    assert row["git_rev"]
    # each test mAP equals what the run folder recorded
    for _, r in test_map.iterrows():
        assert T.load_result(r["run_dir"]).metrics["test"]["mAP"] == r["value"]
    # the ablation's "full" variant reuses the main run folder (same config)
    abl_full = test_map[(test_map.grid == "abl") & (test_map.variant == "full")].iloc[0]
    main_lp = test_map[(test_map.grid == "main") & (test_map.method == "linear_probe")
                       & (test_map.proportion == 0.3)].iloc[0]
    assert abl_full["run_dir"] == main_lp["run_dir"]

    # a second call trains nothing
    def boom(*a, **k):
        raise AssertionError("train() called for a finished run")

    monkeypatch.setattr(G, "train", boom)
    again = E.run_grid(spec, csv, runs_root=tmp_path / "runs", log=None).table
    pd.testing.assert_frame_equal(again, df)
    # a run missing from the CSV (interrupted grid) is run again, and only that one
    monkeypatch.setattr(G, "train", T.train)
    calls = []
    monkeypatch.setattr(G, "train", lambda *a, **k: calls.append(a[0]) or T.train(*a, **k))
    drop = (df.grid == "main") & (df.method == "zero_shot") & (df.proportion == 0.7)
    df[~drop].to_csv(csv, index=False)
    again = E.run_grid(spec, csv, runs_root=tmp_path / "runs", log=None).table
    assert len(calls) == 1 and calls[0].method.name == "zero_shot"
    assert len(again) == len(df)


def test_parallel_grid_gives_the_sequential_table(world, tmp_path):
    """``jobs=2`` trains in two spawned processes: same rows in the same (plan) order and the
    same values; the two variants that share one config train once (one run folder)."""
    spec = small_spec(world)
    seq = E.run_grid(spec, tmp_path / "seq.csv", runs_root=tmp_path / "seq", log=None).table
    lines: list[str] = []
    par = E.run_grid(spec, tmp_path / "par.csv", runs_root=tmp_path / "par", log=lines.append,
                     jobs=2).table
    keys = ["grid", "method", "variant", "protocol", "proportion", "seed", "split", "metric"]
    pd.testing.assert_frame_equal(par[keys], seq[keys])
    np.testing.assert_allclose(par["value"], seq["value"], rtol=1e-6, atol=1e-9)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "par.csv")[keys], seq[keys])
    assert any("6 trainings in 2 worker processes" in line for line in lines), lines
    assert sum(line.startswith("[") for line in lines) == 7
    with pytest.raises(ConfigError, match="jobs must be an integer >= 1"):
        E.run_grid(spec, tmp_path / "x.csv", runs_root=tmp_path / "x", log=None, jobs=0)


def test_pivot_is_mean_and_std_over_seeds():
    rows = [{"grid": "g", "method": "m", "variant": "default", "protocol": "proportion",
             "proportion": p, "seed": s, "split": "test", "metric": "mAP", "value": v}
            for p, vals in ((0.1, [0.5, 0.6, 0.7]), (0.5, [0.8])) for s, v in enumerate(vals)]
    rows.append({**rows[0], "protocol": "single_positive", "proportion": float("nan"),
                 "value": 0.4})
    table = E.pivot_table(pd.DataFrame(rows))
    std = np.std([0.5, 0.6, 0.7], ddof=1)
    assert table.loc[("g", "m", "default"), "p=0.1"] == f"60.00 ± {100 * std:.2f}"
    assert table.loc[("g", "m", "default"), "p=0.5"] == "80.00"
    assert list(table.columns) == ["p=0.1", "p=0.5", "single_positive"]


def test_cli_train_evaluate_experiment(world, tmp_path, capsys):
    cfg_file = tmp_path / "run.yaml"
    tiny_config(world, **{"train.epochs": 1}).to_yaml(cfg_file)
    out = tmp_path / "cli-run"
    assert E.cli_train(["--config", str(cfg_file), "--set", "method.cls_loss=bce",
                        "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert text.strip().splitlines()[-1] == f"run: {out}"
    assert T.load_result(out).config.method.cls_loss == "bce"

    assert E.cli_evaluate(["--run", str(out)]) == 0
    shown = capsys.readouterr().out
    want = 100 * T.load_result(out).metrics["test"]["mAP"]
    assert f"mAP              {want:.2f}" in shown
    with pytest.raises(ValueError, match="only trm_ml"):
        E.cli_evaluate(["--run", str(out), "--pseudo-sources"])

    spec_file = tmp_path / "grid.yaml"
    import yaml

    spec = small_spec(world)
    spec["grids"] = {"main": spec["grids"]["main"]}
    spec_file.write_text(yaml.safe_dump(spec))
    csv = tmp_path / "grid.csv"
    assert E.cli_experiment(["--spec", str(spec_file), "--methods", "zero_shot",
                             "--proportions", "0.3", "--seeds", "0,1", "--out", str(csv),
                             "--runs-dir", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"results: {csv}" and lines[-2].startswith("wall time: ")
    assert any("p=0.3" in line for line in lines)
    assert pd.read_csv(csv)["seed"].nunique() == 2

    with pytest.raises(ConfigError, match="is an experiment grid"):
        E.cli_train(["--preset", "fidelity"])


def test_result_rows_carry_pseudo_label_quality_at_the_reported_epoch():
    from types import SimpleNamespace

    from trm_lib.config.run_config import RunConfig

    cfg = RunConfig()
    run = E.PlannedRun("main", "trm_ml", "default", "proportion", 0.1, 0, cfg)
    hist = pd.DataFrame({"epoch": [1, 2, 3], "pseudo_precision": [float("nan"), 0.8, 0.95],
                         "pseudo_neg_precision": [float("nan"), 0.97, 0.99]})
    result = SimpleNamespace(config=cfg, provenance={"git_rev": "x", "versions": {}},
                             metrics={"test": {"mAP": 0.5}}, best_epoch=2, oracle_epoch=3,
                             per_class_ap={}, history=hist, out_dir="r", wall_time=1.0)
    rows = pd.DataFrame(E.result_rows(run, result))
    train = rows[rows.split == "train"].set_index("metric")
    assert train.loc["pseudo_precision", "value"] == 0.8  # epoch 2, the reported one
    assert train.loc["pseudo_neg_precision", "value"] == 0.97
    assert set(train["epoch"]) == {2}
    assert "pseudo_recall" not in train.index  # absent from the history: no row


def test_cli_evaluate_ranks_pseudo_label_sources(world, tmp_path, capsys):
    out = tmp_path / "trm-run"
    T.train(tiny_config(world, **{"train.epochs": 1, "method.name": "trm_ml"}), out)
    capsys.readouterr()
    assert E.cli_evaluate(["--run", str(out), "--checkpoint", "last", "--pseudo-sources"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "unknown entries of split train" in lines[0]
    assert [ln.split()[0] for ln in lines[2:]] == ["query", "region", "ensemble", "prototype",
                                                   "memory"]
    run = T.load_run(out, "last")
    quality = run.unknown_entry_quality("train")
    assert quality["query"]["n_unknown"] > 0
    assert 0.0 <= quality["prototype"]["auc"] <= 1.0
    assert 0.0 <= quality["memory"]["auc"] <= 1.0
    inside = run.unknown_entry_quality("train", query_range=(0.0, 0.5))["query"]
    assert 0 < inside["n_unknown"] <= quality["query"]["n_unknown"] and inside["n@0.5"] == 0
    assert E.cli_evaluate(["--run", str(out), "--checkpoint", "last", "--pseudo-sources",
                           "--query-range", "0,0.5"]) == 0
    assert "with query probability in (0, 0.5)" in capsys.readouterr().out
    # the pseudo-label source's precision-coverage curve on the unknown training entries
    views, observed, full = run.entry_views("train")
    curve = run.precision_coverage("memory")
    assert curve["n"].iloc[-1] == (observed == 0).sum()  # the lowest threshold takes them all
    assert curve["coverage"].iloc[-1] == pytest.approx(1.0)
    lowest = curve["precision"].iloc[-1]
    assert lowest == pytest.approx((full[observed == 0] > 0).mean())
    on_val = run.precision_coverage("query", split="val", against="observed")
    _, val_rows = run.session.data.rows("val")
    assert on_val["n"].iloc[-1] == len(val_rows) * observed.shape[1]  # every entry, observed too
    with pytest.raises(ValueError, match="not among"):
        run.precision_coverage("nope")
    with pytest.raises(SystemExit, match="--query-range"):
        E.cli_evaluate(["--run", str(out), "--pseudo-sources", "--query-range", "0.5,0.1"])
    with pytest.raises(SystemExit, match="only applies with --pseudo-sources"):
        E.cli_evaluate(["--run", str(out), "--query-range", "0,0.5"])


def test_cli_experiment_prints_paired_differences_after_an_ablation(world, tmp_path, capsys):
    import yaml

    spec = small_spec(world)
    # the same two configurations as world/component variants: read back, not retrained
    spec["grids"] = {"abl": spec["grids"]["abl"], "wld": {
        **spec["grids"]["abl"], "switches": {"w/full": {}, "w/bce": {"method.cls_loss": "bce"}}}}
    spec_file = tmp_path / "abl.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    csv = tmp_path / "abl.csv"
    assert E.cli_experiment(["--spec", str(spec_file), "--seeds", "0,1", "--out", str(csv),
                             "--runs-dir", str(tmp_path / "runs"), "--jobs", "1"]) == 0
    text = capsys.readouterr().out
    assert "paired difference to `full`" in text
    row = next(line for line in text.splitlines() if line.split()[:3] == ["abl", "linear_probe",
                                                                         "bce"])
    from trm_lib.experiments.stats import paired_differences

    want = paired_differences(pd.read_csv(csv)).iloc[0]
    assert int(want["n"]) == 2 and f"{100 * want['mean_diff']:.2f}" in row
    assert "per world difficulty" in text
    world_row = next(line for line in text.splitlines() if line.split()[:2] == ["w", "bce"])
    assert float(world_row.split()[3]) == pytest.approx(-100 * want["mean_diff"], abs=0.006)


def test_grid_method_overrides_apply_to_that_grid_only():
    spec = {"name": "g", "method_overrides": {"dualcoop": {"train.lr": 0.006}},
            "grids": {"a": {"methods": ["dualcoop", "trm_ml"], "proportions": [0.1]},
                      "b": {"methods": ["dualcoop", "trm_ml"], "protocol": "single_positive",
                            "method_overrides": {"dualcoop": {"method.loss": "an"}},
                            "switches": {"x": {}, "y": {"method.loss": "em"}}}}}
    plan = {(r.grid, r.method, r.variant): r.config for r in E.expand(spec)}
    assert plan[("a", "dualcoop", "default")].method.loss == "partial"
    assert plan[("b", "dualcoop", "x")].method.loss == "an"
    assert plan[("b", "dualcoop", "x")].train.lr == 0.006  # the spec-wide entry still applies
    assert plan[("b", "trm_ml", "x")].method.loss == "partial"
    assert plan[("b", "dualcoop", "y")].method.loss == "em"  # a switch still wins
    bad = {"name": "g", "grids": {"a": {"methods": ["dualcoop"], "method_overrides": [1]}}}
    with pytest.raises(ConfigError, match="method_overrides must be a mapping"):
        E.expand(bad)


def test_budget_notes_name_the_methods_trained_below_their_chosen_budget():
    from trm_lib.config.run_config import RunConfig

    rows = []
    for method, epochs in (("dualcoop", 6), ("trm_ml", 12), ("zero_shot", 12),
                           ("linear_probe", 6)):
        cfg = RunConfig().with_overrides({"method.name": method, "train.epochs": epochs})
        rows.append({"method": method, "config": json.dumps(cfg.to_dict())})
    notes = E.budget_notes(pd.DataFrame(rows))
    chosen = E.method_overrides("dualcoop")["train.epochs"]
    assert notes == [f"dualcoop ran 6 epoch(s), below the {chosen} chosen for it on validation",
                     f"linear_probe ran 6 epoch(s), below the {RunConfig().train.epochs} "
                     "chosen for it on validation"]


def test_parallel_grid_submits_the_longest_runs_first():
    """LPT order: non-increasing epochs x per-epoch cost (TRM-ML before the probe, zero-shot
    last); equal costs keep the grid's order."""
    plan = E.expand(E.load_spec("fidelity"), grids=["main"], proportions=[0.1, 0.9],
                    method_budgets=True)
    folders = {f"folder{i}": [i] for i in range(len(plan))}
    order = [idx[0] for _, idx in G.longest_first(folders, plan)]
    cost = [plan[i].config.train.epochs * G.EPOCH_COST[plan[i].method] for i in order]
    assert cost == sorted(cost, reverse=True) and sorted(order) == list(range(len(plan)))
    methods = [plan[i].method for i in order]
    assert methods.index("trm_ml") < methods.index("linear_probe") < methods.index("zero_shot")
    assert methods[-2:] == ["zero_shot"] * 2
    for a, b in zip(order, order[1:]):  # ties: the grid's order
        if plan[a].method == plan[b].method:
            assert a < b


def test_smoke_selection_trims_by_the_spec_block():
    lists = {"methods": ["trm_ml", "dualcoop", "linear_probe"], "proportions": [0.1, 0.5, 1.0],
             "seeds": [0, 1, 2]}
    assert E.smoke_selection("fidelity", False, **lists) == tuple(lists.values())
    assert E.smoke_selection("fidelity", True, **lists) == (["trm_ml", "dualcoop"], [0.1, 1.0],
                                                              [0])
    spec = {"name": "x", "grids": {"g": {"methods": ["zero_shot"]}},
            "smoke": {"seeds": 0}}
    with pytest.raises(ConfigError, match="smoke.seeds"):
        E.smoke_selection(spec, True, seeds=[0, 1])
    assert E.smoke_selection(spec, True, methods=["a", "b"]) == (["a", "b"],)


def test_the_ablation_study_trims_smoke_lists_by_the_same_rules():
    """Notebook 04's study spec and notebook 03's grid read their spec's ``smoke`` block through
    one rule (``experiments.spec.smoke_trim``): a bad rule is refused in both."""
    from trm_lib.experiments import ablations

    spec = {"name": "x", "smoke": {"seeds": "ends"},
            "grids": {"components": {"methods": ["trm_ml"], "switches": {"full": {}}}}}
    got = ablations.study_spec(studies=["components"], seeds=[0, 1, 2, 3], smoke=True, spec=spec)
    assert got["grids"]["components"]["seeds"] == [0, 3]
    spec["smoke"] = {"seeds": 0}
    with pytest.raises(ConfigError, match="smoke.seeds must be a count"):
        ablations.study_spec(studies=["components"], seeds=[0, 1], smoke=True, spec=spec)
