"""Paired multi-seed statistics (trm_lib.experiments.stats) against scipy on known data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from trm_lib.experiments.stats import (
    claim_sentence,
    component_gains,
    describe_gains,
    describe_paired,
    paired_differences,
    t_interval,
    to_percent,
)


def _table(values: dict[str, list[float]], p: float = 0.1, split: str = "test",
           metric: str = "mAP") -> pd.DataFrame:
    rows = []
    for variant, vals in values.items():
        for seed, v in enumerate(vals):
            rows.append({"grid": "ablation", "method": "trm_ml", "variant": variant,
                         "protocol": "proportion", "proportion": p, "seed": seed,
                         "split": split, "metric": metric, "value": v})
    return pd.DataFrame(rows)


def test_t_interval_matches_scipy_ttest_rel():
    rng = np.random.default_rng(3)
    full = rng.normal(0.6, 0.02, size=5)
    variant = full - 0.01 + rng.normal(0, 0.005, size=5)
    mean, lo, hi, n = t_interval(variant - full)
    ref = sps.ttest_rel(variant, full).confidence_interval(0.95)
    assert n == 5
    assert mean == pytest.approx(float(np.mean(variant - full)))
    assert (lo, hi) == pytest.approx((ref.low, ref.high), rel=1e-10)


def test_t_interval_edge_cases():
    assert all(math.isnan(v) for v in t_interval([])[:3]) and t_interval([])[3] == 0
    assert all(math.isnan(v) for v in t_interval([math.nan, math.nan])[:3])
    mean, lo, hi, n = t_interval([0.3, math.nan])  # one finite value: no interval
    assert (mean, n) == (0.3, 1) and math.isnan(lo) and math.isnan(hi)
    assert t_interval([0.2, 0.2, 0.2])[1:3] == pytest.approx((0.2, 0.2))
    with pytest.raises(ValueError):
        t_interval([1.0, 2.0], confidence=1.5)


def test_paired_differences_pairs_on_seed_and_matches_scipy():
    full = [0.60, 0.62, 0.58, 0.61]
    no_kd = [0.59, 0.60, 0.58, 0.595]
    df = pd.concat([_table({"full": full, "no_kd": no_kd}),
                    _table({"full": [0.9] * 4, "no_kd": [0.1] * 4}, split="val")])
    out = paired_differences(df)
    assert list(out["variant"]) == ["no_kd"] and int(out["n"].iloc[0]) == 4
    ref = sps.ttest_rel(no_kd, full).confidence_interval(0.95)
    row = out.iloc[0]
    assert row["mean_diff"] == pytest.approx(np.mean(np.subtract(no_kd, full)))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ref.low, ref.high))
    # unpaired (Welch) would be much wider: the pairing removes the shared seed noise
    welch = sps.ttest_ind(no_kd, full, equal_var=False).confidence_interval(0.95)
    assert row["ci_high"] - row["ci_low"] < welch.high - welch.low


def test_paired_differences_drops_unmatched_seeds_and_handles_n1():
    df = _table({"full": [0.6, 0.7, 0.8], "no_mcl": [0.5]})
    out = paired_differences(df)
    row = out.iloc[0]
    assert row["n"] == 1 and row["mean_diff"] == pytest.approx(-0.1)
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    gains = component_gains(out)
    assert gains["verdict"].iloc[0] == "n < 2"
    text = describe_gains(out)
    assert "n = 1 seed" in text and "cannot be told from seed noise" in text and "±" not in text
    # a NaN value on one seed is left out of the pairs
    df2 = _table({"full": [0.6, 0.7, 0.8], "no_mcl": [0.5, math.nan, 0.7]})
    assert int(paired_differences(df2)["n"].iloc[0]) == 2


def test_paired_differences_separates_proportions():
    df = pd.concat([_table({"full": [0.6, 0.7], "no_kd": [0.5, 0.6]}, p=0.1),
                    _table({"full": [0.6, 0.7], "no_kd": [0.6, 0.7]}, p=0.5)])
    out = paired_differences(df).set_index("proportion")
    assert out.loc[0.1, "mean_diff"] == pytest.approx(-0.1)
    assert out.loc[0.5, "mean_diff"] == pytest.approx(0.0)


def test_component_gains_verdicts_and_text():
    df = _table({"full": [0.60, 0.62, 0.58, 0.61, 0.63],
                 "no_kd": [0.55, 0.57, 0.54, 0.555, 0.58],        # clearly worse: KD helps
                 "no_pseudo": [0.61, 0.61, 0.585, 0.60, 0.635],   # noise
                 "text_image": [0.65, 0.67, 0.63, 0.66, 0.68]})   # better: region hurts
    gains = component_gains(paired_differences(df)).set_index("variant")
    assert gains.loc["no_kd", "verdict"] == "helps"
    assert gains.loc["no_pseudo", "verdict"] == "within noise"
    assert gains.loc["text_image", "verdict"] == "hurts"
    assert gains.loc["no_kd", "gain"] > 0 and gains.loc["no_kd", "gain_low"] > 0
    text = describe_gains(paired_differences(df), labels={"no_kd": "distillation"})
    assert "p = 10%, distillation helps: +" in text and "n = 5 seeds" in text
    assert "p = 10%, no_pseudo is within noise" in text and "crosses 0" in text
    assert "p = 10%, text_image hurts" in text


def test_paired_differences_empty_and_missing_columns():
    assert paired_differences(_table({"no_kd": [0.5]})).empty
    with pytest.raises(ValueError, match="lacks columns"):
        paired_differences(pd.DataFrame({"variant": ["full"]}))


def test_paired_table_per_grid_and_method():
    from trm_lib.experiments.stats import paired_table

    df = _table({"full": [0.60, 0.62, 0.58], "no_kd": [0.55, 0.57, 0.54]})
    table = paired_table(df)
    assert list(table.columns[:5]) == ["grid", "method", "variant", "p", "n"]
    assert table["diff to full"].iloc[0] == pytest.approx(-4.67, abs=0.01)
    assert table["verdict (component)"].iloc[0] == "helps"
    assert paired_table(_table({"default": [0.5]})).empty


def _floor_table(dualcoop: float, probe: float) -> pd.DataFrame:
    rows = []
    for method, value in (("zero_shot", 0.50), ("dualcoop", dualcoop), ("linear_probe", probe),
                          ("trm_ml", 0.70)):
        for seed in (0, 1):
            rows.append({"grid": "single_positive", "method": method, "variant": "default",
                         "protocol": "single_positive", "proportion": math.nan, "seed": seed,
                         "split": "test", "metric": "mAP", "value": value, "dataset": "s",
                         "backbone": "b"})
    return pd.DataFrame(rows)


def test_a_baseline_below_zero_shot_is_flagged():
    from trm_lib.experiments.stats import below_zero_shot

    bad = below_zero_shot(_floor_table(dualcoop=0.111, probe=0.55))
    assert list(bad["method"]) == ["dualcoop", "dualcoop"] and list(bad["seed"]) == [0, 1]
    assert bad["gap"].iloc[0] == pytest.approx(0.111 - 0.50)
    assert math.isnan(bad["proportion"].iloc[0])
    assert below_zero_shot(_floor_table(dualcoop=0.50, probe=0.55)).empty  # equal is fine
    # a setting without a zero-shot run is not judged
    no_zs = _floor_table(0.1, 0.1)
    assert below_zero_shot(no_zs[no_zs["method"] != "zero_shot"]).empty


def _grid(table):
    """A :class:`~trm_lib.experiments.runner.GridResult` whose plan is the table's one run."""
    from types import SimpleNamespace

    from trm_lib.experiments.runner import GridResult

    run = SimpleNamespace(grid="single_positive", variant="default", hash="h")
    return GridResult(table, [run], "x.csv")


def test_experiment_cli_fails_loudly_below_zero_shot(monkeypatch, capsys):
    import trm_lib.experiments as E
    import trm_lib.experiments.cli as C

    table = _floor_table(dualcoop=0.111, probe=0.55)
    table["config_hash"], table["epoch"] = "h", 1
    monkeypatch.setattr(C, "run_grid", lambda *a, **k: _grid(table))
    assert E.cli_experiment(["--grid", "single_positive", "--seeds", "0"]) == 1
    err = capsys.readouterr().err
    assert "dualcoop (default) in grid single_positive" in err and "BELOW zero-shot" in err
    lines = E.floor_messages(table)
    assert len(lines) == 2 and lines[0].startswith("ERROR: dualcoop")
    good = _floor_table(dualcoop=0.6, probe=0.55)
    good["config_hash"], good["epoch"] = "h", 1
    monkeypatch.setattr(C, "run_grid", lambda *a, **k: _grid(good))
    assert E.cli_experiment(["--grid", "single_positive", "--seeds", "0"]) == 0


def test_world_gains_pair_each_world_with_its_own_full_and_draw():
    from matplotlib.figure import Figure

    from trm_lib import viz
    from trm_lib.experiments.stats import world_gains

    df = _table({"easy/full": [0.70, 0.72], "easy/no_kd": [0.69, 0.70],
                 "hard/full": [0.50, 0.54], "hard/no_kd": [0.45, 0.47],
                 "hard/no_mcl": [0.50, 0.55], "other": [0.1, 0.1]})
    g = world_gains(df)
    assert list(g["world"]) == ["easy", "hard", "hard"]
    assert list(g["variant"]) == ["no_kd", "no_kd", "no_mcl"]
    # easy: (0.69-0.70, 0.70-0.72) -> mean -0.015; hard no_kd: (-0.05, -0.07) -> -0.06
    assert g["mean_diff"].tolist() == pytest.approx([-0.015, -0.06, 0.005])
    assert list(g["n"]) == [2, 2, 2] and (g["ci_low"] <= g["mean_diff"]).all()
    assert world_gains(_table({"full": [0.5], "no_kd": [0.4]})).empty
    fig = viz.plot_gains_vs_world(g)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["easy", "hard"]
    assert len(ax.get_legend().get_texts()) == 2  # one line per component
    with pytest.raises(ValueError, match="no paired"):
        viz.plot_gains_vs_world(g.iloc[:0])


def test_difficulty_options_are_validated_world_knobs():
    from trm_lib.config.run_config import ConfigError
    from trm_lib.synth.config import DIFFICULTY, WorldConfig, difficulty_options

    assert difficulty_options("default") == {}
    hard = difficulty_options("hard", n_train=40)
    assert hard["n_train"] == 40 and WorldConfig(**hard).small_object_prob == 0.6
    assert all(WorldConfig(**v) for v in DIFFICULTY.values())
    with pytest.raises(ConfigError, match="unknown world difficulty"):
        difficulty_options("nightmare")
    with pytest.raises(ConfigError, match="WorldConfig.clutter"):
        difficulty_options("easy", clutter=9.0)


# ---------------------------------------------------------------- sentences computed from tables

def test_claim_sentence_formats_the_issue_example():
    text = claim_sentence("distillation", 2.04, 1.16, 2.92, 5)
    assert text == "distillation helps: +2.04 points [95% CI +1.16, +2.92], n = 5 seeds."
    worse = claim_sentence("x", -1.5, -2.0, -1.0, 3, unit="mAP points")
    assert worse.startswith("x hurts: -1.50 mAP points [95% CI -2.00, -1.00]")


@pytest.mark.parametrize("low,high", [(-0.56, 1.08), (0.0, 1.0), (-1.0, 0.0)])
def test_an_interval_crossing_zero_is_within_noise(low, high):
    text = claim_sentence("distillation", 0.26, low, high, 3, std=0.4)
    assert "within noise" in text and "helps" not in text and "hurts" not in text
    assert "mean ± std +0.26 ± 0.40" in text


def test_one_seed_never_says_mean_pm_std():
    text = claim_sentence("pseudo-labels", 0.75, math.nan, math.nan, 1, std=0.3)
    assert "±" not in text and "std" not in text and "n = 1 seed" in text
    assert "helps" not in text and "within noise" not in text
    # the same through a table: one seed per side, std requested
    df = _table({"full": [0.60], "no_pseudo": [0.5925]})
    (line,) = describe_paired(paired_differences(df), std=True)
    assert "±" not in line and "+0.75 mAP points" in line


def test_describe_paired_numbers_come_from_the_table_in_points():
    df = _table({"full": [0.60, 0.62, 0.58, 0.61, 0.63],
                 "no_kd": [0.55, 0.57, 0.54, 0.555, 0.58]})
    diffs = paired_differences(df)
    gain = np.subtract([0.60, 0.62, 0.58, 0.61, 0.63],
                                    [0.55, 0.57, 0.54, 0.555, 0.58])
    mean, lo, hi, n = t_interval(gain)
    (line,) = describe_paired(diffs, {"no_kd": "distillation"}, std=True)
    want = (f"p = 10%, distillation helps: {100 * mean:+.2f} mAP points "
            f"[95% CI {100 * lo:+.2f}, {100 * hi:+.2f}], n = 5 seeds; mean ± std "
            f"{100 * mean:+.2f} ± {100 * np.std(gain, ddof=1):.2f}.")
    assert line == want
    # variant - reference view: the same numbers, sign flipped, and its own verbs
    (raw,) = describe_paired(diffs, gain=False, better="is higher", worse="is lower")
    assert f"no_kd is lower: {-100 * mean:+.2f} mAP points" in raw
    # a table already in percent points is not scaled twice
    assert describe_paired(to_percent(diffs), {"no_kd": "distillation"}, std=True) == [line]
    assert describe_paired(diffs.iloc[:0]) == []


def test_to_percent_converts_every_value_column_once():
    df = _table({"full": [0.60, 0.62], "no_kd": [0.55, 0.57]})
    diffs = paired_differences(df)
    pct = to_percent(diffs)
    for c in ("mean_diff", "ci_low", "ci_high", "std_diff", "mean_variant", "mean_reference"):
        assert pct[c].iloc[0] == pytest.approx(100 * diffs[c].iloc[0])
    assert pct["proportion"].iloc[0] == 0.1 and pct["n"].iloc[0] == 2  # settings stay
    assert diffs["mean_diff"].iloc[0] == pytest.approx(-0.05)  # the input is untouched
    with pytest.raises(ValueError, match="already"):
        to_percent(pct)
    gains = to_percent(component_gains(diffs), digits=2)
    assert gains["gain"].iloc[0] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="no columns"):
        to_percent(diffs, columns=["nope"])
