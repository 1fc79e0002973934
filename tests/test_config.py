"""Configs: YAML round trip, dotted overrides, and errors that name the file and the field."""

from __future__ import annotations

import pytest

from trm_lib.config import ConfigError, RunConfig, load_config, parse_overrides, replace


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig().with_overrides({"method.kd": "mse", "data.proportion": 0.3})
    path = tmp_path / "run.yaml"
    cfg.to_yaml(path)
    back = load_config(path)
    assert back == cfg
    assert back.method.kd == "mse" and back.data.proportion == 0.3


def test_overrides_parse_yaml_scalars():
    out = parse_overrides(["train.lr=0.01", "method.pseudo=false", "data.root=null",
                           "backbone.templates=['a {}.', 'the {}.']"])
    assert out == {"train.lr": 0.01, "method.pseudo": False, "data.root": None,
                   "backbone.templates": ["a {}.", "the {}."]}
    cfg = RunConfig().with_overrides(["train.epochs=3", "method.name=dualcoop"])
    assert cfg.train.epochs == 3 and cfg.method.name == "dualcoop"
    assert RunConfig().train.epochs != 3  # the original is untouched
    # YAML 1.1 reads 2e-4 (no dot) as a string; a float field still takes it
    assert RunConfig().with_overrides(["train.lr=2e-4"]).train.lr == 2e-4


def test_replace_helper():
    cfg = replace(RunConfig(), method={"mcl": False}, train={"seed": 4})
    assert cfg.method.mcl is False and cfg.train.seed == 4


@pytest.mark.parametrize("override, fragment", [
    ({"method.kd": "foo"}, "method.kd must be one of"),
    ({"data.proportion": 1.5}, "data.proportion must be in (0, 1]"),
    ({"data.proportion": 0}, "data.proportion must be in (0, 1]"),
    ({"train.epochs": 2.5}, "train.epochs must be an integer"),
    ({"train.lr": "fast"}, "train.lr must be a number"),
    ({"method.nope": 1}, "unknown field 'method.nope'"),
    ({"nope.kd": 1}, "must be section.field"),
    ({"method.pseudo_low": 0.95}, "pseudo_low < method.pseudo_high"),
    ({"method.pseudo_source": "oracle"}, "method.pseudo_source must be one of"),
    ({"method.pseudo_k": 600}, "method.pseudo_k must be in [1, method.pseudo_bank]"),
    ({"method.pseudo_weight": -1}, "method.pseudo_weight must be >= 0"),
    ({"backbone.templates": ["no placeholder"]}, "must be non-empty and each contain"),
])
def test_bad_overrides_name_the_field(override, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        RunConfig().with_overrides(override)
    assert fragment in str(err.value)


def test_bad_file_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method:\n  kd: foo\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "method.kd" in str(err.value)
    path.write_text("method:\n  bogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "method.bogus" in str(err.value)
    path.write_text("oops: {}\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_flat_has_every_field():
    flat = RunConfig().flat()
    assert flat["method.kd"] == "ensemble" and flat["train.seed"] == 0
    assert all("." in k for k in flat)
