"""The teaching notebooks: conventions of the committed files, the parameter mapping they share
(:func:`trm_lib.reports.driver.notebook_overrides`), and one papermill smoke run of every notebook into
a temporary report folder, asserting on the figures and tables each one writes.

The smoke run uses a private ``TRM_CACHE`` and ``TRM_RUNS``, so the tiny world, the feature
caches and the run folders are rebuilt there and the user's caches are never touched.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trm_lib import experiments
from trm_lib.config.run_config import ConfigError, MethodConfig, RunConfig
from trm_lib.reports import driver as reports
from trm_lib.reports import notebooks as notebook_files
from trm_lib.utils.paths import notebooks_dir

NOTEBOOKS = sorted(notebooks_dir().glob("*.ipynb"))
# Parameters every training notebook declares (the common set).
COMMON = {"smoke", "report_dir", "device", "dataset", "data_root", "model", "pretrained"}
STANDARD = {"01": {"smoke", "report_dir", "dataset", "data_root", "seed"},
            "02": COMMON | {"seed", "proportion", "epochs"},
            "03": COMMON | {"methods", "proportions", "seeds", "epochs"},
            "04": COMMON | {"seeds", "epochs", "alphas", "betas"},
            "05": COMMON | {"seed", "run_dir", "image_paths"}}
# Every figure comes from trm_lib.viz and every computation from trm_lib: notebooks do not plot
# or train with the underlying libraries themselves (the library's viz uses matplotlib and
# seaborn; a notebook only calls viz).
FORBIDDEN_IMPORTS = ("torch", "matplotlib", "seaborn", "sklearn", "open_clip")


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


# --------------------------------------------------------------------------------- conventions
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean_and_parametrised(path):
    assert not notebook_files.notebook_has_outputs(path), (
        f"{path.name} holds outputs or execution counts; run `python -m trm_lib report --strip`")
    nb = nbformat.read(path, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert tagged[0] == first_code, f"{path.name}: the parameters cell must be the first code cell"
    params = notebook_files.parameters_of(path)
    assert params["smoke"]["default"] == "False" and params["report_dir"]["default"] == '""'
    untyped = [k for k, v in params.items() if v["type"] in ("None", "")]
    undocumented = [k for k, v in params.items() if not v["help"]]
    assert not untyped, f"{path.name}: parameters without a type hint: {untyped}"
    assert not undocumented, f"{path.name}: parameters without a # help comment: {undocumented}"
    wanted = STANDARD.get(path.name[:2], set())
    assert wanted <= set(params), f"{path.name}: missing parameters {sorted(wanted - set(params))}"
    assert any(src.lstrip().startswith("%matplotlib inline") for src in _code(path)), (
        f"{path.name}: a code cell must start with `%matplotlib inline`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_only_orchestrates_trm_lib(path):
    for i, src in enumerate(_code(path)):
        python = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith("%"))
        tree = ast.parse(python)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n.split(".")[0] in FORBIDDEN_IMPORTS]
            assert not bad, (f"{path.name}, code cell {i}: imports {bad}; notebooks call trm_lib "
                             "(figures from trm_lib.viz, training through trm_lib.train)")
        assert not re.search(r"\bplt\.", python), f"{path.name}, code cell {i}: uses pyplot"


# ---------------------------------------------------------------------------- shared parameters
def test_notebook_overrides_outside_smoke_keep_the_cli_config_hash():
    """Notebook runs must land in the same run folders as CLI runs of the same configuration."""
    from trm_lib.train import config_hash

    over = reports.notebook_overrides(smoke=False)
    assert config_hash(RunConfig().with_overrides(over)) == config_hash(RunConfig())
    over = reports.notebook_overrides(smoke=False, seed=3, epochs=5, pretrained="none",
                                      overrides={"method.kd": "mse"})
    cfg = RunConfig().with_overrides(over)
    assert (cfg.train.seed, cfg.data.mask_seed, cfg.train.epochs) == (3, 3, 5)
    assert cfg.backbone.pretrained is None and cfg.method.kd == "mse"


def test_notebook_overrides_smoke_shrinks_everything():
    cfg = RunConfig().with_overrides(reports.notebook_overrides(smoke=True, epochs=12))
    s = reports.SMOKE
    assert cfg.data.options == {k: s[k] for k in ("n_train", "n_test", "image_size")}
    assert (cfg.data.max_train, cfg.data.max_test) == (s["n_train"], s["n_test"])
    assert cfg.backbone.pretrained is None and cfg.backbone.image_size == s["image_size"]
    assert cfg.train.epochs == s["epochs"] and cfg.method.pseudo_warmup < cfg.train.epochs
    assert RunConfig().with_overrides(reports.notebook_overrides(smoke=True, epochs=1)
                                      ).train.epochs == 1
    real = reports.notebook_overrides(smoke=True, dataset="voc2007", data_root="/data/voc")
    assert "data.options" not in real and real["data.max_train"] == s["n_train"]


def test_notebook_overrides_reject_bad_values_naming_the_field():
    with pytest.raises(ConfigError, match="dataset 'nope' is unknown"):
        reports.notebook_overrides(smoke=False, dataset="nope")
    with pytest.raises(ConfigError, match="data.proportion"):
        reports.notebook_overrides(smoke=False, overrides={"data.proportion": 1.5})
    with pytest.raises(ConfigError, match="train.epochs"):
        reports.notebook_overrides(smoke=False, epochs=-1)
    with pytest.raises(ConfigError, match="method.nope"):
        reports.notebook_overrides(smoke=True, overrides={"method.nope": 1})


# ------------------------------------------------------------------------------------ smoke run
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Every notebook, smoke=True, into one report folder (a private cache and runs folder);
    05 also gets an odd-sized image file through ``image_paths``."""
    root = tmp_path_factory.mktemp("notebooks")
    photo = root / "photo.png"
    grad = np.linspace(0, 255, 150, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(grad, (90, 1))] * 3, axis=-1)).save(photo)
    mp = pytest.MonkeyPatch()
    mp.setenv("TRM_CACHE", str(root / "cache"))
    mp.setenv("TRM_RUNS", str(root / "runs"))
    mp.setenv("OMP_NUM_THREADS", "1")  # two shared cores: oversubscribed threads only slow down
    mp.setenv("HF_HUB_OFFLINE", "1")
    out = root / "report"
    try:
        runs = reports.run_notebooks(out_dir=out, smoke=True, echo=lambda *a, **k: None,
                                     parameters={"image_paths": [str(photo)]})
    except reports.NotebookFailed as err:
        pytest.fail(str(err))  # names the notebook and the cell
    finally:
        mp.undo()
    return out, {r.name[:2]: r for r in runs}


def _table(out: Path, name: str, **kw) -> pd.DataFrame:
    path = out / "tables" / f"{name}.csv"
    assert path.exists() and (out / "tables" / f"{name}.md").exists(), f"missing table {name}"
    return pd.read_csv(path, **kw)


def _figures(out: Path, *names: str, svg: bool = True) -> None:
    for name in names:
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000, f"missing figure {name}"
        if svg:
            assert (out / "figures" / f"{name}.svg").exists(), f"missing figure {name}.svg"


@pytest.mark.slow
def test_smoke_every_notebook_runs_and_is_indexed(smoke):
    out, runs = smoke
    assert [p.name[:2] for p in NOTEBOOKS] == sorted(runs)
    for key, run in runs.items():
        assert run.status == "ok" and run.output.exists(), key
        assert run.output.parent == out and nbformat.read(run.output, 4).metadata["trm_report"]
    index = (out / "README.md").read_text()
    assert all(p.stem in index for p in NOTEBOOKS)


@pytest.mark.slow
def test_smoke_01_data_and_masking(smoke):
    out, runs = smoke
    _figures(out, "01_cooccurrence", "01_masks", "01_label_stats", "01_mask_vs_peer")
    _figures(out, "01_samples", svg=False)
    counts = _table(out, "01_class_counts", index_col="class")
    stats = _table(out, "01_label_stats", index_col="class")
    assert list(stats.columns) == ["known_fraction", "positives", "negatives", "unknown",
                                   "hidden_positives"]
    assert len(counts) == 20 and list(stats.index) == [*counts.index, "total"]
    # every training positive is either observed or hidden: the two tables must agree
    np.testing.assert_array_equal(stats["positives"][:-1] + stats["hidden_positives"][:-1],
                                  counts["train positives"])
    n = reports.SMOKE["n_train"]
    assert counts["train positives"].sum() == stats.loc["total", ["positives",
                                                                  "hidden_positives"]].sum()
    summary = _table(out, "01_mask_summary", index_col="mask")
    assert len(summary) == 4 + 1 + 1  # four proportions, protocol B, the peers' file
    for p in (0.1, 0.3, 0.5, 0.9):  # the known fraction of protocol A is about p
        assert abs(summary.loc[str(p), "known_fraction"] - p) < 0.06
    b = summary.loc["single positive (B)"]
    assert b["negatives"] == 0 and b["positives"] == n  # every smoke image has a positive
    assert set(runs["01"].artifacts) >= {"tables/01_label_stats.csv", "figures/01_masks.png"}


@pytest.mark.slow
def test_smoke_02_train_trm_ml(smoke):
    out, _ = smoke
    _figures(out, "02_training_curves", "02_pseudo_labels")
    final = _table(out, "02_final_metrics", index_col="method")
    assert list(final.index) == ["zero-shot CLIP", "TRM-ML"]
    assert final.loc["zero-shot CLIP", "selected epoch (on val)"] == 0
    assert 1 <= final.loc["TRM-ML", "selected epoch (on val)"] <= reports.SMOKE["epochs"]
    for col in ("test mAP", "test CF1", "test OF1", "test-oracle mAP (selected on test)"):
        assert final[col].between(0, 100).all(), col
    # the oracle picks the best test epoch, so it can only be at least the selected one
    assert (final["test-oracle mAP (selected on test)"] >= final["test mAP"] - 1e-6).all()
    per_class = _table(out, "02_per_class_ap", index_col="class")
    assert len(per_class) == 20
    diff = per_class["TRM-ML"] - per_class["zero-shot CLIP"]
    np.testing.assert_allclose(diff, per_class["TRM-ML − zero-shot"], atol=0.11, equal_nan=True)


def _cells(table: pd.DataFrame) -> pd.DataFrame:
    """'mean ± std' strings of viz.results_table as their means."""
    return table.map(lambda v: float(str(v).split(" ±")[0]) if str(v) not in ("", "nan") else
                     np.nan)


@pytest.mark.slow
def test_smoke_03_label_proportions(smoke):
    out, _ = smoke
    _figures(out, "03_proportion_curves", "03_per_class_ap")
    results = experiments.read_results(out / "tables" / "03_results.csv")
    assert set(results["method"]) == {"trm_ml", "dualcoop"}
    assert set(results["protocol"]) == {"proportion", "single_positive"}
    main = _table(out, "03_mAP_by_proportion", index_col="method")
    # test_every=0 (the default) scores the test split at the reported epoch only: no oracle
    assert not (out / "tables" / "03_mAP_by_proportion_test_oracle.csv").exists()
    # smoke keeps the lowest proportion and the last, the full-label ceiling (outside avg)
    assert list(main.index) == ["dualcoop", "trm_ml"]
    assert list(main.columns) == ["10%", "avg", "100% (full labels)"]
    # the table is the tidy CSV, aggregated: check one cell against the raw rows
    raw = results[(results["method"] == "trm_ml") & (results["split"] == "test")
                  & (results["metric"] == "mAP") & (results["proportion"] == 0.1)]
    assert _cells(main).loc["trm_ml", "10%"] == pytest.approx(100 * raw["value"].mean(), abs=0.06)
    _table(out, "03_OF1_by_proportion")
    sp = _table(out, "03_single_positive_mAP")
    assert set(sp["method"]) == {"trm_ml", "dualcoop"}


@pytest.mark.slow
def test_smoke_04_ablations_share_runs_with_03(smoke):
    out, _ = smoke
    _figures(out, "04_components", "04_kd_form", "04_pseudo_form_val", "04_loss_weights_val",
             "04_components_forest", "04_grad_ratios", "04_pseudo_precision_coverage",
             "04_gains_vs_world")
    comp = _table(out, "04_components_test_mAP", index_col="method")
    assert list(comp.index) == ["trm_ml (full)", "trm_ml (no_kd)"]
    paired = _table(out, "04_components_paired")  # two smoke seeds: a paired interval exists
    assert list(paired["variant"]) == ["no_kd"] and list(paired["n"]) == [2]
    assert (paired["ci_low"] <= paired["mean_diff"]).all()
    assert (paired["mean_diff"] <= paired["ci_high"]).all()
    for name in ("04_kd_form_test_mAP", "04_pseudo_form_val_mAP", "04_pseudo_form_val_hidden_mAP",
                 "04_pseudo_form_test_mAP"):
        assert len(_table(out, name)) == 2
    worlds = _table(out, "04_gains_vs_world")  # smoke: two worlds, full vs no_kd in each
    assert list(worlds["world"]) == ["easy", "hard"] and list(worlds["variant"]) == ["no_kd"] * 2
    sweep = _table(out, "04_loss_weights_val_mAP", index_col=0)
    assert sweep.shape == (2, 1)
    ablations = experiments.read_results(out / "tables" / "04_results.csv")
    main = experiments.read_results(out / "tables" / "03_results.csv")

    def run_dir(df, **where):
        sel = df[(df["split"] == "test") & (df["metric"] == "mAP")]
        for key, value in where.items():
            sel = sel[sel[key] == value]
        return set(sel["run_dir"])

    shared = run_dir(main, grid="main", method="trm_ml", proportion=0.1)
    assert len(shared) == 1
    assert run_dir(ablations, grid="components", variant="full", seed=0) == shared
    assert run_dir(ablations, grid="kd_form", variant=MethodConfig().kd) == shared  # default form
    assert len(run_dir(ablations, grid="components", variant="no_kd", seed=0) - shared) == 1
    assert len(run_dir(ablations, grid="components", variant="full")) == 2  # the paired seeds


@pytest.mark.slow
def test_smoke_05_attention_maps(smoke):
    out, _ = smoke
    attention = sorted((out / "figures").glob("05_attention_test*.png"))
    assert 1 <= len(attention) <= 4
    _figures(out, "05_attention_file00_photo", svg=False)
    top = _table(out, "05_top_predictions", index_col="test image")
    assert len(top) == len(attention)
    assert all(len(str(v).split(", ")) == 3 for v in top["TRM-ML top"])
    pointing = _table(out, "05_pointing_game", index_col="class")
    assert list(pointing.columns) == ["pairs", "TRM-ML (text-region)", "DualCoOp (text-pixel)",
                                      "centre baseline"]
    # every positive test entry has a drawn instance, so the pairs are the test positives
    counts = _table(out, "01_class_counts", index_col="class")
    np.testing.assert_array_equal(pointing["pairs"][:-1], counts["test positives"])
    rates = pointing.drop(columns="pairs")
    assert ((rates >= 0) & (rates <= 100) | rates.isna()).all().all()


@pytest.mark.slow
def test_smoke_06_tour_follows_the_studies_switch(smoke, tmp_path, monkeypatch):
    """The explorer's static tour is exploration: ``studies="core"`` (a CPU report's default)
    skips it and says how to run it, and the view the live explorer shows is still there."""
    out, runs = smoke
    assert (out / "tables" / "06_explorer_tour_pseudo.csv").exists()  # smoke: studies=all
    root = out.parent
    monkeypatch.setenv("TRM_CACHE", str(root / "cache"))
    monkeypatch.setenv("TRM_RUNS", str(root / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    core = tmp_path / "core"
    reports.run_notebooks(out_dir=core, only=["06"], smoke=True, echo=lambda *a, **k: None,
                          parameters={"studies": "core"})
    assert (core / "tables" / "06_explorer_view.csv").exists()
    assert not list((core / "tables").glob("06_explorer_tour*"))
    assert not list((core / "tables").glob("06_explorer_thresholds*"))
    executed = (core / "06_explorer.ipynb").read_text()
    assert "study 'explorer tour' not run here" in executed and "-p studies=all" in executed
