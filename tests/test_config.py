"""Configs: YAML round trip, dotted overrides, and errors that name the file and the field."""

from __future__ import annotations

import pytest

from trm_lib.config.run_config import ConfigError, RunConfig, load_config, parse_overrides, replace


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


@pytest.mark.parametrize("override, fragment", [
    ({"train.lr": float("nan")}, "train.lr must be > 0, got nan"),
    ({"train.lr": float("inf")}, "train.lr must be > 0, got inf"),
    (["train.lr=.nan"], "train.lr must be > 0, got nan"),
    (["train.lr=.inf"], "train.lr must be > 0, got inf"),
    ({"train.warmup_epochs": -1}, "train.warmup_epochs must be >= 0, got -1"),
    ({"train.warmup_lr": 0}, "train.warmup_lr must be > 0"),
    ({"train.momentum": 1.0}, "train.momentum must be in [0, 1)"),
    ({"train.weight_decay": float("nan")}, "train.weight_decay must be >= 0, got nan"),
    ({"train.seed": -3}, "train.seed must be >= 0"),
    ({"train.num_workers": -1}, "train.num_workers must be >= 0"),
    ({"train.epochs": -1}, "train.epochs must be >= 0"),
    ({"train.batch_size": 0}, "train.batch_size must be >= 1"),
    ({"train.test_every": -1}, "train.test_every must be >= 0"),
    ({"train.device": "gpu"}, "train.device must be auto, cpu, mps, cuda or cuda:N"),
    ({"train.select_metric": ""}, "train.select_metric must be a non-empty string"),
    ({"method.dropout": 1.5}, "method.dropout must be in [0, 1), got 1.5"),
    ({"method.dropout": 1.0}, "method.dropout must be in [0, 1)"),
    ({"method.dropout": -0.1}, "method.dropout must be in [0, 1)"),
    ({"method.logit_scale_init": float("inf")}, "method.logit_scale_init must be a finite"),
    ({"method.asl_clip": 1.0}, "method.asl_clip must be in [0, 1)"),
    ({"method.asl_gamma_neg": -1}, "method.asl_gamma_neg must be >= 0"),
    ({"method.mcl_temp_proto": 0}, "method.mcl_temp_proto must be > 0"),
    ({"method.mcl_temp_feat": float("nan")}, "method.mcl_temp_feat must be > 0"),
    ({"method.pseudo_temp": 0}, "method.pseudo_temp must be > 0"),
    ({"method.proto_gate": 1.5}, "method.proto_gate must be in [0, 1]"),
    ({"method.proto_momentum": 1.0}, "method.proto_momentum must be in [0, 1)"),
    ({"method.mlp_hidden": 0}, "method.mlp_hidden must be >= 1"),
    ({"method.num_heads": 0}, "method.num_heads must be >= 1"),
    ({"method.n_ctx": 0}, "method.n_ctx must be >= 1"),
    ({"method.pseudo_high": float("nan")}, "method.pseudo_high must be in [0, 1]"),
    ({"method.kd_weight": float("inf")}, "method.kd_weight must be >= 0, got inf"),
    ({"data.max_train": 0}, "data.max_train must be >= 1, got 0"),
    ({"data.max_test": -5}, "data.max_test must be >= 1, got -5"),
    ({"data.proportion": float("nan")}, "data.proportion must be in (0, 1], got nan"),
    ({"data.val_fraction": 0.5}, "data.val_fraction must be in [0, 0.5)"),
    ({"data.mask_seed": -1}, "data.mask_seed must be >= 0"),
    ({"data.split_seed": -1}, "data.split_seed must be >= 0"),
    ({"data.dataset": ""}, "data.dataset must be a non-empty string"),
    ({"data.root": " "}, "data.root must be a non-empty string"),
    ({"backbone.image_size": 0}, "backbone.image_size must be >= 1 (null = the model's native"),
    ({"backbone.batch_size": 0}, "backbone.batch_size must be >= 1"),
    ({"backbone.model": ""}, "backbone.model must be a non-empty string"),
    ({"method.RANGES": {}}, "unknown field 'method.RANGES'"),
])
def test_every_value_is_range_checked(override, fragment):
    with pytest.raises(ConfigError) as err:
        RunConfig().with_overrides(override)
    assert fragment in str(err.value)


def test_every_numeric_field_has_a_range():
    import typing
    from dataclasses import fields

    cfg = RunConfig()
    for section in (cfg.data, cfg.backbone, cfg.method, cfg.train):
        hints = typing.get_type_hints(type(section))
        numeric = {f.name for f in fields(section)
                   if {int, float} & {hints[f.name], *typing.get_args(hints[f.name])}}
        assert numeric == set(type(section).RANGES), type(section).__name__
    # the edges of the ranges are accepted
    RunConfig().with_overrides({"method.dropout": 0.0, "train.warmup_epochs": 0,
                                "data.max_train": 1, "backbone.image_size": None,
                                "method.proto_gate": 1.0, "train.device": "cuda:1"})


@pytest.mark.parametrize("text, fragment", [
    ("", "empty config file"),
    ("# only a comment\n", "empty config file"),
    ("train:\n  lr: 0.1\n  lr: 0.2\n", "line 3: duplicate key 'lr'"),
    ("train: {epochs: 1}\ntrain: {epochs: 2}\n", "line 2: duplicate key 'train'"),
    ("train: [1, 2\n", "not valid YAML"),
])
def test_empty_and_duplicate_key_yaml_are_errors_naming_the_file(tmp_path, text, fragment):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_grid_spec_duplicate_keys_and_empty_file(tmp_path):
    from trm_lib.experiments import load_spec

    path = tmp_path / "grid.yaml"
    path.write_text("grids:\n  a: {methods: [zero_shot]}\n  a: {methods: [trm_ml]}\n")
    with pytest.raises(ConfigError, match=f"{path}: line 3: duplicate key 'a'"):
        load_spec(path)
    path.write_text("")
    with pytest.raises(ConfigError, match=f"{path}: empty grid spec"):
        load_spec(path)
