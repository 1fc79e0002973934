"""trm_lib.viz: every function draws what its input says, and saved files are byte-stable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from trm_lib import viz
from trm_lib.datasets.base import DatasetError
from trm_lib.datasets.labels import cooccurrence, label_stats

CLASSES = [f"class_{i}" for i in range(6)]


def _observed(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice([1, -1, 0], size=(n, len(CLASSES)),
                                              p=[0.2, 0.4, 0.4]).astype(np.int8)


def _results() -> pd.DataFrame:
    """Tidy results with known values: value = base(method, variant) + p/10 + seed/100."""
    base = {("trm_ml", "full"): 0.70, ("trm_ml", "no_kd"): 0.65, ("dualcoop", "full"): 0.60}
    rows = [dict(method=m, variant=v, protocol="proportion", proportion=p, seed=s, split=split,
                 metric="mAP", value=b + p / 10 + s / 100)
            for (m, v), b in base.items() for p in (0.1, 0.5, 0.9) for s in (0, 1, 2)
            for split in ("val", "test")]
    rows.append(dict(method="zero_shot", variant="full", protocol="full", proportion=1.0, seed=0,
                     split="test", metric="mAP", value=0.3))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ label views
def test_plot_mask_draws_the_matrix_with_three_colours():
    Y = _observed(100)
    fig = viz.plot_mask(Y, CLASSES, max_rows=30)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), Y[:30])
    assert f"{np.mean(Y != 0):.1%}" in ax.get_title()  # known fraction over all rows
    rgba = ax.images[0].to_rgba(np.array([[-1, 0, 1]]))[0, :, :3]
    assert len({tuple(c) for c in rgba.round(3)}) == 3


def test_plot_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="column"):
        viz.plot_mask(_observed(), CLASSES[:-1])
    bad = _observed()
    bad[3, 2] = 2
    with pytest.raises(ValueError, match="row 3, column 2"):
        viz.plot_mask(bad, CLASSES)


def test_plot_mask_comparison_one_panel_per_mask():
    masks = {0.1: _observed(seed=1), 0.5: _observed(seed=2), "single positive": _observed(seed=3)}
    fig = viz.plot_mask_comparison(masks, CLASSES)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("p = 10%") and titles[2].startswith("single positive")
    for ax, Y in zip(fig.axes, masks.values()):
        np.testing.assert_array_equal(ax.images[0].get_array(), Y[:60])


def test_plot_label_stats_stacks_the_counts_of_label_stats():
    Y_full = np.where(np.random.default_rng(0).random((40, 6)) < 0.3, 1, -1)
    Y_obs = np.where(np.random.default_rng(1).random((40, 6)) < 0.5, Y_full, 0)
    stats = label_stats(Y_obs, CLASSES, Y_full=Y_full)
    fig = viz.plot_label_stats(stats)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES  # "total" row dropped
    # the right end of each stacked bar is the number of images
    ends = np.zeros(len(CLASSES))
    for patch in ax.patches:
        i = round(patch.get_y() + patch.get_height() / 2)
        ends[i] = max(ends[i], patch.get_x() + patch.get_width())
    np.testing.assert_allclose(ends, 40)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "unknown: hidden positives" in labels
    viz.plot_label_stats(label_stats(Y_obs, CLASSES))  # without full labels


def test_plot_cooccurrence_and_shape_check():
    M = cooccurrence(_observed())
    fig = viz.plot_cooccurrence(M, CLASSES)
    mesh = fig.axes[0].collections[0]  # seaborn's heatmap: one quad per cell, row-major
    np.testing.assert_allclose(np.ma.filled(mesh.get_array(), np.nan).reshape(M.shape), M)
    assert len(fig.axes[0].texts) == np.isfinite(M).sum()  # annotated, NaN cells left blank
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == CLASSES
    with pytest.raises(ValueError, match=r"\(5, 5\)"):
        viz.plot_cooccurrence(M, CLASSES[:5])


def test_show_images_grid_and_titles(tmp_path):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.new("RGB", (20, 10), (255, 0, 0)).save(path)
    imgs = [path, np.zeros((8, 8, 3), np.uint8), np.ones((8, 8)), Image.new("L", (5, 5))]
    fig = viz.show_images(imgs, [["dog", "cat"], "car", [], "x"], ncols=3)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 4 and len(fig.axes) == 6  # 2 x 3 grid, two empty cells
    assert axes[0].get_title() == "dog, cat" and axes[2].get_title() == "(no labels)"
    np.testing.assert_allclose(axes[0].images[0].get_array()[0, 0], [1, 0, 0])
    with pytest.raises(ValueError, match="2 titles for 4 images"):
        viz.show_images(imgs, ["a", "b"])
    with pytest.raises(DatasetError, match="missing.png: image file not found"):
        viz.show_images([tmp_path / "missing.png"])


# --------------------------------------------------------------------------------------- training
def test_plot_training_curves_plots_the_columns_that_exist():
    hist = pd.DataFrame({"epoch": [0, 1, 2, 3], "lr": [0, 1e-3, 1e-3, 5e-4],
                         "loss": [np.nan, 1.0, 0.8, 0.7],
                         "val_mAP": [0.2, 0.4, 0.5, 0.55], "test_mAP": [0.1, 0.3, 0.4, 0.45],
                         "pseudo_precision": [np.nan, 0.9, 0.8, 0.85], "seconds": 1.0})
    fig = viz.plot_training_curves(hist)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "mAP (%)", "pseudo-labels",
                                                   "learning rate"]
    loss_line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(loss_line.get_xdata(), [1, 2, 3])  # the NaN epoch 0 is skipped
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [20, 40, 50, 55])
    fig = viz.plot_training_curves(hist[["epoch", "loss"]])
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="no loss"):
        viz.plot_training_curves(hist[["epoch", "seconds"]])
    # the declared loss terms are losses (in the given order); the trainer's counters are not
    hist = hist.assign(train_cls=0.5, train_kd=0.1, train_pseudo=0.2, train_n_pseudo_pos=40.0,
                       train_logit_scale=50.)
    fig = viz.plot_training_curves(hist)
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["loss", "train_cls", "train_pseudo", "train_kd"]
    fig = viz.plot_training_curves(hist, loss_terms=["kd"])
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["loss", "train_kd"]


# ---------------------------------------------------------------------------------------- results
def test_plot_proportion_curves_mean_and_std_over_seeds():
    df = _results()
    fig = viz.plot_proportion_curves(df)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["dualcoop", "trm_ml (full)", "trm_ml (no_kd)"]  # zero_shot: protocol
    # seaborn draws the curves in hue order (sorted labels), then empty legend proxies
    lines = dict(zip(legend, [ln for ln in ax.get_lines() if len(ln.get_xdata())]))
    seeds = np.array([0, 1, 2]) / 100
    np.testing.assert_allclose(lines["trm_ml (no_kd)"].get_xdata(), [0.1, 0.5, 0.9])
    for p, y in zip((0.1, 0.5, 0.9), lines["trm_ml (no_kd)"].get_ydata()):
        assert y == pytest.approx(100 * np.mean(0.65 + p / 10 + seeds))
    # the band is mean ± sample std (ddof=1); the first band is dualcoop's (sorted labels)
    ys = ax.collections[0].get_paths()[0].vertices[:, 1]
    std = 100 * np.std(seeds, ddof=1)
    assert ys.min() == pytest.approx(100 * (0.60 + 0.01 + 0.01) - std)
    assert ys.max() == pytest.approx(100 * (0.60 + 0.09 + 0.01) + std)
    with pytest.raises(ValueError, match="metric='CF1'"):
        viz.plot_proportion_curves(df, metric="CF1")


def test_titles_promise_mean_pm_std_only_where_there_are_two_seeds():
    df = _results()
    assert "mean ± std over 3 seeds" in viz.plot_proportion_curves(df).axes[0].get_title()
    one = df[df["seed"] == 0]
    for fig in (viz.plot_proportion_curves(one), viz.plot_ablation(one, method="trm_ml")):
        title = fig.axes[0].get_title()
        assert "one seed, no spread" in title and "±" not in title
    mixed = df[(df["seed"] == 0) | (df["method"] == "dualcoop")]
    assert "over 1–3 seeds; a single seed has none" in \
        viz.plot_proportion_curves(mixed).axes[0].get_title()


def test_results_table_matches_hand_computation():
    df = _results()
    table = viz.results_table(df, digits=2)
    assert list(table.columns) == ["10%", "50%", "90%", "avg"]
    vals = 100 * (0.70 + 0.05 + np.array([0, 1, 2]) / 100)
    assert table.loc["trm_ml (full)", "50%"] == f"{vals.mean():.2f} ± {np.std(vals, ddof=1):.2f}"
    avg = np.mean([100 * (0.60 + p / 10 + 0.01) for p in (0.1, 0.5, 0.9)])
    assert table.loc["dualcoop", "avg"] == f"{avg:.2f}"
    # a row missing a proportion gets no average; a single seed shows the mean alone
    part = df[~((df.method == "dualcoop") & (df.proportion == 0.9)) & (df.seed == 0)]
    t2 = viz.results_table(part)
    assert t2.loc["dualcoop", "90%"] == "" and t2.loc["dualcoop", "avg"] == ""
    assert "±" not in t2.loc["trm_ml (full)", "10%"]


def test_markdown_table_and_save_table(tmp_path):
    df = pd.DataFrame({"name": ["a|b", "c", "d"], "x": [1.5, 2.0, -0.002596516710686836]},
                      index=pd.Index([0, 1, 2], name="i"))
    md = viz.markdown_table(df)
    assert md.splitlines() == ["| i | name | x |", "| ---: | --- | ---: |",
                               "| 0 | a\\|b | 1.5 |", "| 1 | c | 2.0 |", "| 2 | d | -0.00259652 |"]
    paths = viz.save_table(df, tmp_path / "t.csv")
    assert [p.name for p in paths] == ["t.csv", "t.md"]
    pd.testing.assert_frame_equal(pd.read_csv(paths[0], index_col="i"), df)
    assert paths[1].read_text() == md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md"]  # no temp files


def test_plot_ablation_bars_errorbars_and_deltas():
    df = _results()
    fig = viz.plot_ablation(df, method="trm_ml")
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches
                     if p.get_width())  # not seaborn's empty legend proxies
    expected = sorted(round(100 * (b + p / 10 + 0.01), 6) for b in (0.70, 0.65)
                      for p in (0.1, 0.5, 0.9))
    assert heights == pytest.approx(expected)
    assert sorted(t.get_text() for t in ax.texts) == ["-5.0"] * 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["full", "no_kd"]
    full, no_kd = ax.containers  # the baseline drawn first and hatched, bars at 10/50/90 %
    assert [b.get_hatch() for b in full] == ["//"] * 3 and no_kd[0].get_hatch() is None
    assert full[0].get_height() == pytest.approx(100 * (0.70 + 0.01 + 0.01))
    # whiskers: mean ± sample std over the three seeds (1 point for seeds 0.00, 0.01, 0.02)
    # (seaborn draws a whisker and its caps as one line, NaN-separated)
    whisker = ax.lines[0].get_ydata()
    assert (np.nanmin(whisker), np.nanmax(whisker)) == pytest.approx((72.0 - 1.0, 72.0 + 1.0))
    with pytest.raises(ValueError, match="pass method="):
        viz.plot_ablation(df)
    with pytest.raises(ValueError, match="baseline_variant='nope'"):
        viz.plot_ablation(df, method="trm_ml", baseline_variant="nope")


def _per_class_results() -> pd.DataFrame:
    """AP/<class> rows: AP = 0.3 + 0.1 * class index (+0.05 for method a) + 0.01 * seed."""
    return pd.DataFrame([dict(method=m, variant="full", protocol="proportion", proportion=p,
                              seed=s, split="test", metric=f"AP/{c}",
                              value=0.3 + 0.1 * i + 0.05 * (m == "a") + 0.01 * s)
                         for p in (0.1, 0.5) for m in ("a", "b") for s in range(3)
                         for i, c in enumerate(CLASSES)])


def test_plot_per_class_ap_bars_per_class_and_method():
    df = _per_class_results()
    fig = viz.plot_per_class_ap(df, proportion=0.1)
    ax = fig.axes[0]
    # classes sorted by mean AP, best first: class_5 on top
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES[::-1]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    a_bars, b_bars = ax.containers
    np.testing.assert_allclose([b.get_width() for b in a_bars],
                               [100 * (0.3 + 0.1 * i + 0.05 + 0.01) for i in range(5, -1, -1)])
    np.testing.assert_allclose([b.get_width() for b in b_bars],
                               [100 * (0.3 + 0.1 * i + 0.01) for i in range(5, -1, -1)])
    assert "p = 10%" in ax.get_title()
    with pytest.raises(ValueError, match="pass proportion="):
        viz.plot_per_class_ap(df)
    with pytest.raises(ValueError, match="no AP/<class> rows"):
        viz.plot_per_class_ap(df, proportion=0.9)


def test_figures_stay_out_of_pyplot():
    """seaborn draws into the given axes: no figure is registered with pyplot's global state."""
    import matplotlib.pyplot as plt

    from trm_lib.experiments.stats import paired_differences

    before = plt.get_fignums()
    df = _results()
    viz.plot_proportion_curves(df)
    viz.plot_ablation(df, method="trm_ml")
    viz.plot_label_stats(label_stats(_observed(), CLASSES))
    viz.plot_cooccurrence(cooccurrence(_observed()), CLASSES)
    viz.plot_per_class_ap(_per_class_results(), proportion=0.5)
    viz.plot_forest(paired_differences(df.assign(grid="g")[df["method"] == "trm_ml"]))
    assert plt.get_fignums() == before


def test_results_table_shows_full_labels_as_the_ceiling_outside_avg():
    rows = [dict(method=m, variant="default", protocol="proportion", proportion=p, seed=0,
                 split="test", metric="mAP", value=v)
            for m, base in (("trm_ml", 0.6), ("zero_shot", 0.5))
            for p, v in ((0.1, base), (0.9, base + 0.1), (1.0, base + 0.3))]
    table = viz.results_table(pd.DataFrame(rows))
    assert list(table.columns) == ["10%", "90%", "avg", "100% (full labels)"]
    assert table.loc["trm_ml", "avg"] == "65.0"  # mean of 10 % and 90 % only
    assert table.loc["trm_ml", "100% (full labels)"] == "90.0"


def test_plot_forest_draws_the_matching_gain_apart_on_its_own_scale():
    from trm_lib.experiments.stats import paired_differences

    rows = [dict(grid="g", method="trm_ml", variant=v, protocol="proportion", proportion=0.1,
                 seed=s, split="test", metric="mAP", value=b + d)
            for v, b in (("full", 0.70), ("no_kd", 0.68), ("text_image", 0.40))
            for s, d in enumerate((0.0, 0.01, -0.005))]
    fig = viz.plot_forest(paired_differences(pd.DataFrame(rows)))
    top, bottom = fig.axes[:2]
    assert [t.get_text() for t in top.get_yticklabels()] == [viz.COMPONENT_LABELS["no_kd"]]
    assert [t.get_text() for t in bottom.get_yticklabels()] == \
        [viz.COMPONENT_LABELS["text_image"]]
    assert top.get_xlim()[1] < 10 < bottom.get_xlim()[1]  # +2 and +30 points, each readable
    assert "own scale" in bottom.get_title()


def test_plot_forest_draws_gain_and_interval_per_component():
    from matplotlib.figure import Figure as Fig

    from trm_lib.experiments.stats import paired_differences

    rows = [dict(grid="g", method="trm_ml", variant=v, protocol="proportion", proportion=0.1,
                 seed=s, split="test", metric="mAP", value=b + d)
            for v, b in (("full", 0.70), ("no_kd", 0.65), ("no_mcl", 0.70))
            for s, d in enumerate((0.0, 0.01, -0.005))]
    rows[-1]["value"] += 0.01  # no_mcl: noise around full
    rows.append(dict(grid="g", method="trm_ml", variant="no_pseudo", protocol="proportion",
                     proportion=0.1, seed=0, split="test", metric="mAP", value=0.69))
    diffs = paired_differences(pd.DataFrame(rows))
    ax = Fig().subplots()
    fig = viz.plot_forest(diffs, ax=ax)
    assert fig is ax.figure
    # seaborn's pointplot: one line of markers per hue, over the rows no_kd, no_mcl; the
    # no_kd row: gain +5 points with a zero-width interval (constant paired difference)
    points = [ln for ln in ax.lines if ln.get_marker() == "o" and len(ln.get_xdata())]
    filled, hollow = points
    assert filled.get_xdata()[0] == pytest.approx(5.0)
    assert filled.get_ydata().tolist() == [0, 1]
    mcl = [r for _, r in diffs.iterrows() if r["variant"] == "no_mcl"][0]
    bars = [ln.get_xdata() for ln in ax.lines  # interval and caps: one NaN-separated line
            if ln.get_marker() in ("None", "") and len(ln.get_xdata()) == 8]
    spans = [(round(np.nanmin(x), 6), round(np.nanmax(x), 6)) for x in bars]
    assert (round(-100 * mcl["ci_high"], 6), round(-100 * mcl["ci_low"], 6)) in spans
    # no_pseudo's single seed: a hollow marker at +1 in its row (2), no bar
    assert hollow.get_markerfacecolor() == "none"
    assert np.nanmax(hollow.get_xdata()) == pytest.approx(1.0)
    assert hollow.get_ydata()[np.nanargmax(hollow.get_xdata())] == 2
    assert any(line.get_linestyle() == "--" and list(line.get_xdata()) == [0, 0]
               for line in ax.lines)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["distillation (full − no_kd)", "contrastive (full − no_mcl)",
                      "pseudo-labels (full − no_pseudo)"]
    assert isinstance(viz.plot_forest(diffs), Figure)
    with pytest.raises(ValueError, match="no paired differences"):
        viz.plot_forest(diffs.iloc[:0])


# -------------------------------------------------------------------------------------- attention
def test_upsample_map_matches_torch_bilinear():
    m = np.random.default_rng(0).random((3, 5)).astype(np.float32)
    ours = viz.upsample_map(m, (48, 80))
    ref = torch.nn.functional.interpolate(torch.from_numpy(m)[None, None], size=(48, 80),
                                          mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_overlay_map_blends_the_colour_mapped_map():
    img = np.full((16, 16, 3), 255, np.uint8)
    m = np.zeros((2, 2), np.float32)
    m[0, 0] = 1.0
    out = viz.overlay_map(img, m, cmap="gray", alpha=0.5)
    assert out.shape == (16, 16, 3)
    # top-left corner is the map's maximum (white in gray), bottom-right its minimum (black)
    np.testing.assert_allclose(out[0, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[-1, -1], 0.5, atol=1e-6)


def test_plot_attention_rows_top_classes_and_maps():
    rng = np.random.default_rng(0)
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.05, 0.7])
    rows = {"DualCoOp": rng.random((6, 12)), "TRM-ML": rng.random((6, 12))}
    img = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    fig = viz.plot_attention_rows(img, rows, CLASSES, scores, grid=(3, 4))
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles == ["image", "class_1 (0.90)", "class_3 (0.80)", "class_5 (0.70)"]
    assert fig.axes[4].get_ylabel() == "TRM-ML"
    shown = fig.axes[4 + 2].images[0].get_array()  # TRM-ML row, class_3
    expected = viz.overlay_map(img, rows["TRM-ML"][3].reshape(3, 4))
    np.testing.assert_allclose(shown, expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"rows\['DualCoOp'\] has shape \(6, 12\)"):
        viz.plot_attention_rows(img, rows, CLASSES, scores, grid=(4, 4))


# ----------------------------------------------------------------------------------------- saving
_SAVE = textwrap.dedent("""
    import sys
    import numpy as np
    from trm_lib import viz
    from trm_lib.datasets.labels import cooccurrence
    Y = np.random.default_rng(0).choice([1, -1, 0], size=(30, 6))
    fig = viz.plot_mask(Y, [f"c{i}" for i in range(6)])
    viz.save_figure(fig, sys.argv[1], formats=("png", "svg", "pdf"))
    # a seaborn-drawn figure too: seaborn adds no randomness (no bootstrap) and no stamps
    fig = viz.plot_cooccurrence(cooccurrence(Y), [f"c{i}" for i in range(6)])
    viz.save_figure(fig, sys.argv[1].replace("mask", "cooc"), formats=("png", "svg", "pdf"))
    import pandas as pd
    res = pd.DataFrame([dict(method="m", variant=v, protocol="proportion", proportion=p,
                             seed=s, split="test", metric="mAP", value=0.5 + p / 3 + s / 50 - d)
                        for v, d in (("full", 0), ("no_kd", 0.05)) for p in (0.1, 0.5)
                        for s in range(3)])
    viz.save_figure(viz.plot_proportion_curves(res), sys.argv[1].replace("mask", "curves"))
    viz.save_figure(viz.plot_ablation(res), sys.argv[1].replace("mask", "bars"))
""")


def test_save_figure_is_byte_stable_across_processes(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    bases = [tmp_path / run / "mask.png" for run in ("a", "b")]  # suffix replaced per format
    procs = [subprocess.Popen([sys.executable, "-c", _SAVE, str(b)]) for b in bases]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    outs = [{p.name: p.read_bytes() for p in sorted(b.parent.iterdir())} for b in bases]
    assert sorted(outs[0]) == ["bars.png", "bars.svg", "cooc.pdf", "cooc.png", "cooc.svg",
                               "curves.png", "curves.svg", "mask.pdf", "mask.png", "mask.svg"]
    for name in outs[0]:
        assert outs[0][name] == outs[1][name], name
    assert b"<dc:date>" not in outs[0]["mask.svg"] and b"Matplotlib v" not in outs[0]["mask.svg"]


def test_save_figure_dates_only_from_source_date_epoch(tmp_path, monkeypatch):
    fig = viz.plot_mask(_observed(), CLASSES)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    svg, pdf = viz.save_figure(fig, tmp_path / "m", formats=("svg", "pdf"))
    assert b"<dc:date>2023-11-14T22:13:20+00:00</dc:date>" in svg.read_bytes()
    assert b"D:20231114221320Z" in pdf.read_bytes()
    with pytest.raises(ValueError, match="formats"):
        viz.save_figure(fig, tmp_path / "m", formats=("jpg",))


# ------------------------------------------------------------------ notebook helpers (05, 01)
def test_sample_titles_mark_hidden_positives_and_count_known_entries():
    Y = np.array([[1, -1, 1, -1, -1, -1], [-1, -1, -1, -1, -1, -1]])
    obs = np.array([[1, 0, 0, -1, 0, 0], [0, 0, 0, 0, 0, 0]])
    assert viz.sample_titles(Y, CLASSES) == ["class_0, class_2", "(no positive)"]
    assert viz.sample_titles(Y, CLASSES, obs) == ["class_0, class_2? [2/6 known]",
                                                  "(no positive) [0/6 known]"]
    with pytest.raises(ValueError, match="Y_full"):
        viz.sample_titles(obs, CLASSES)  # a {1,-1,0} mask is not a full label matrix
    with pytest.raises(ValueError, match="shape"):
        viz.sample_titles(Y, CLASSES, obs[:1])


def _one_hot_map(grid, cell):
    m = np.zeros(grid[0] * grid[1], np.float32)
    m[cell] = 1.0
    return m


def test_pointing_game_hits_misses_and_centre_baseline():
    grid, size = (2, 2), 40  # cells of 20 px; cell centres at 10 / 30 px
    classes = CLASSES[:3]
    Y = np.array([[1, 1, -1], [1, -1, 1]])
    objects = [[{"class": "class_0", "box": [0, 0, 20, 20]},   # top-left
                {"class": "class_1", "box": [20, 20, 40, 40]}],  # bottom-right
               [{"class": "class_0", "box": [10, 10, 30, 30]},  # centre
                {"class": "class_2", "box": [0, 20, 20, 40]}]]  # bottom-left
    maps = np.zeros((2, 3, 4), np.float32)
    maps[0, 0] = _one_hot_map(grid, 0)  # hit: peak in the top-left cell
    maps[0, 1] = _one_hot_map(grid, 0)  # miss: class_1 sits bottom-right
    maps[0, 2] = _one_hot_map(grid, 3)  # a negative class: never scored
    maps[1, 0] = _one_hot_map(grid, 1)  # miss: cell centre (x 30, y 10) is outside [10, 30)
    maps[1, 2] = _one_hot_map(grid, 2)  # hit: bottom-left
    df = viz.pointing_game(maps, grid, Y, objects, classes, size)
    assert df.loc["class_0", ["hits", "pairs"]].tolist() == [1, 2]
    assert df.loc["class_1", ["hits", "pairs"]].tolist() == [0, 1]
    assert df.loc["class_2", ["hits", "pairs"]].tolist() == [1, 1]
    assert df.loc["total", ["hits", "pairs"]].tolist() == [2, 4]
    assert df.loc["total", "hit_rate"] == pytest.approx(0.5)
    centre = viz.pointing_game(None, grid, Y, objects, classes, size)  # point (20, 20)
    assert centre["hits"].tolist() == [1, 1, 0, 2]  # the centre box of image 1, class_1's box
    empty = viz.pointing_game(maps, grid, np.array([[1, -1, -1], [1, -1, -1]]), objects,
                              classes, size)
    assert np.isnan(empty.loc["class_1", "hit_rate"]) and empty.loc["class_1", "pairs"] == 0
    with pytest.raises(ValueError, match="maps shape"):
        viz.pointing_game(maps[:, :, :3], grid, Y, objects, classes, size)
    with pytest.raises(ValueError, match="object lists"):
        viz.pointing_game(maps, grid, Y, objects[:1], classes, size)


class _FakeMethod(torch.nn.Module):
    """Scores = mean dense token, maps = softmax over tokens of each channel (C = D = 2)."""

    def __init__(self):
        super().__init__()
        self.cfg = type("Cfg", (), {"name": "fake"})()

    def forward(self, batch):
        dense = batch["dense"]  # (B, L, 2)
        return {"logits": dense.mean(1), "maps": torch.softmax(dense.transpose(1, 2), -1)}

    def scores(self, out):
        return torch.sigmoid(out["logits"])


class _FakeBackbone:
    """Images become 2x2-token feature batches: token value = mean intensity of a quadrant."""

    def transform(self, train=False):
        assert not train
        return lambda im: torch.from_numpy(np.asarray(im.resize((8, 8)), np.float32) / 255
                                           ).permute(2, 0, 1)

    def encode_images(self, x, raw=False):
        q = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4).flatten(1)  # (B, 4)
        return {"global": q, "dense": torch.stack([q, -q], dim=-1)}


def _fake_run(feature_rows):
    from types import SimpleNamespace

    def batches(split, indices, batch_size):
        for start in range(0, len(indices), batch_size):
            rows = indices[start:start + batch_size]
            yield {"dense": torch.stack([feature_rows[i] for i in rows]),
                   "global": torch.zeros(len(rows), 2)}

    cfg = SimpleNamespace(backbone=SimpleNamespace(cache_raw=False),
                          method=SimpleNamespace(kv_source="projected"))
    session = SimpleNamespace(device=torch.device("cpu"), backbone=_FakeBackbone())
    return SimpleNamespace(method=_FakeMethod(), session=session, config=cfg, batches=batches)


def test_saliency_maps_from_rows_and_from_image_files(tmp_path):
    rows = [torch.randn(4, 2) for _ in range(5)]
    run = _fake_run(rows)
    scores, maps = viz.saliency_maps(run, indices=[3, 0, 4], batch_size=2)
    assert scores.shape == (3, 2) and maps.shape == (3, 2, 4)
    expected = torch.sigmoid(torch.stack([rows[i] for i in (3, 0, 4)]).mean(1)).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
    # image files of any size: a white top-left quadrant lights the first token of class 0
    img = np.zeros((30, 50, 3), np.uint8)
    img[:15, :25] = 255
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "a.png")
    s, m = viz.saliency_maps(run, images=[tmp_path / "a.png", img[::-1]])
    assert m.shape == (2, 2, 4)
    assert m[0, 0].argmax() == 0 and m[1, 0].argmax() == 2  # flipped vertically: bottom-left
    with pytest.raises(ValueError, match="exactly one"):
        viz.saliency_maps(run)
    with pytest.raises(DatasetError, match="not found"):
        viz.saliency_maps(run, images=[tmp_path / "missing.jpg"])
