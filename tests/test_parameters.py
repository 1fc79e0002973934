"""Notebook parameters: one library check (types from the parameters cell, ranges and names from
reports.parameters.RULES) used by the report driver before a notebook starts and by the
notebooks' setup cells; notebook 04's studies come from presets/ablations.yaml."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trm_lib.config import PSEUDO_FORMS, ConfigError
from trm_lib.experiments import ablations, expand, load_spec
from trm_lib.reports import check_parameters, validate_parameters
from trm_lib.reports.notebooks import discover_notebooks


@pytest.mark.parametrize("path", discover_notebooks(), ids=lambda p: p.stem)
def test_every_notebook_default_passes_its_own_check(path):
    assert check_parameters(path, {})


@pytest.mark.parametrize("path", discover_notebooks(), ids=lambda p: p.stem)
def test_papermill_parses_every_line_of_every_parameters_cell(path):
    """papermill skips (with a log line) a parameter it cannot parse -- e.g. one whose comment
    holds " = " -- and that parameter then silently cannot be set with -p."""
    import json
    import warnings

    import papermill as pm

    cell = next(c for c in json.loads(path.read_text())["cells"]
                if "parameters" in c["metadata"].get("tags", []))
    names = [line.split(":")[0].split("=")[0].strip() for line in "".join(cell["source"]).splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pm.inspect_notebook(str(path))
    assert sorted(parsed) == sorted(names)


@pytest.mark.parametrize(("notebook", "values", "message"), [
    ("04_ablations", {"proportions": [0.1, 2]}, "parameter proportions must be a list of numbers in (0, 1]"),
    ("04_ablations", {"epochs": "6"}, "parameter epochs must be of type int"),
    ("04_ablations", {"epochs": 0}, "parameter epochs must be an integer in [1, inf]"),
    ("04_ablations", {"smoke": 1}, "parameter smoke must be of type bool"),
    ("04_ablations", {"components": ["no_kd", "full"]}, "starting with 'full'"),
    ("04_ablations", {"kd_forms": ["nope"]}, "parameter kd_forms must be a list of names from"),
    ("04_ablations", {"seeds": []}, "parameter seeds must be a non-empty list"),
    ("03_label_proportions", {"methods": ["trm_ml", "nope"]}, "parameter methods must be"),
    ("06_explorer", {"tour_thresholds": [0.4]}, "tour_thresholds must be a list of numbers in [0.5, 1)"),
    ("06_explorer", {"method": "nope"}, "parameter method must be one of"),
    ("05_attention_maps", {"image_paths": ["/no/such.png"]}, "not found: ['/no/such.png']"),
    ("05_attention_maps", {"run_dir": "/no/such/run"}, "a finished run folder"),
])
def test_a_bad_value_is_one_error_naming_notebook_and_parameter(notebook, values, message):
    with pytest.raises(ConfigError, match=notebook) as err:
        validate_parameters(notebook, values)
    assert message in str(err.value)


def test_globals_of_a_notebook_are_checked_only_for_declared_names():
    assert validate_parameters("02", {"epochs": 3, "pd": object()}) == {"epochs": 3}


def test_the_driver_refuses_an_undeclared_parameter():
    with pytest.raises(ConfigError, match="unknown parameter"):
        check_parameters("02_train_trm_ml", {"epoch": 3})


def test_report_with_a_bad_parameter_fails_before_any_notebook_starts(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trm_lib", "report", "--only", "04",
                           "-p", "epochs=0", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: 04_ablations: parameter epochs must be an integer in [1, inf], got 0"]
    assert not list(tmp_path.glob("*.ipynb"))


def test_the_ablation_file_matches_the_configs_it_names():
    spec = load_spec("ablations")
    assert {k: {key: v for key, v in sw.items()} for k, sw in
            spec["grids"]["pseudo_form"]["switches"].items()} == PSEUDO_FORMS
    assert spec["grids"]["components"]["switches"] == \
        load_spec("fidelity")["grids"]["ablation"]["switches"]


def test_study_spec_narrows_the_file_and_trims_for_smoke():
    spec = ablations.study_spec(components=["full", "no_kd"], kd_forms=["kl", "ensemble"],
                                alphas=[0.5], betas=[0.01, 0.1], worlds=["easy"],
                                world_size={"n_train": 40, "n_test": 20})
    grids = spec["grids"]
    assert list(grids["components"]["switches"]) == ["full", "no_kd"]
    assert list(grids["kd_form"]["switches"]) == ["kl", "ensemble"]  # order: baseline first
    assert list(grids["loss_weights"]["switches"]) == ["α=0.5 β=0.01", "α=0.5 β=0.1"]
    assert list(grids["difficulty"]["switches"]) == ["easy/full", "easy/no_kd"]
    assert grids["components"]["seeds"] == [0, 1, 2] and grids["kd_form"]["seeds"] == [0]
    smoke = ablations.study_spec(seeds=[0, 1, 2, 3, 4], smoke=True)["grids"]
    assert smoke["components"]["seeds"] == [0, 1]
    assert len(smoke["kd_form"]["switches"]) == 2
    assert "difficulty" not in smoke  # no worlds asked
    assert len(expand(spec)) == 3 * 2 + 2 + 4 + 2 + 1 + 2  # pseudo_form: all four of the file


def test_study_spec_errors_name_the_study_and_the_switch():
    with pytest.raises(ConfigError, match="unknown study 'nope'"):
        ablations.study_spec(studies=["nope"])
    with pytest.raises(ConfigError, match="grids.kd_form has no switch"):
        ablations.study_spec(kd_forms=["nope"])


def test_the_tuning_studies_run_by_default_on_a_gpu_only():
    assert ablations.resolve_studies("auto", "cpu") == ["components", "pseudo_b"]
    every = ablations.resolve_studies("auto", "cuda")  # a fake device: the switch logic only
    assert every[:2] == ["components", "kd_form"] and "difficulty" in every
    assert ablations.resolve_studies("all", "cpu") == every
    assert ablations.resolve_studies("core", "cuda") == ["components", "pseudo_b"]
    assert ablations.resolve_studies("auto", "cpu", smoke=True) == every  # plumbing: all
    with pytest.raises(ConfigError, match="studies must be one of"):
        ablations.resolve_studies("some", "cpu")
    assert "-p studies=all" in ablations.skipped("kd_form")
