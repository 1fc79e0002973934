"""One check for every notebook's parameters: the types its ``parameters`` cell declares, plus
the ranges and allowed names below, keyed by parameter name (the same name means the same thing
in every notebook). The report driver runs it before a notebook starts and the notebook's setup
cell runs it again on what papermill injected, so a bad value is one error naming the notebook
and the parameter, never a traceback from cell 4."""

from __future__ import annotations

import ast
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trm_lib.utils.errors import ConfigError
from trm_lib.utils.paths import notebooks_dir

from .notebooks import parameters_of

_TYPES: dict[str, tuple[type, ...]] = {"bool": (bool,), "str": (str,), "int": (int,),
                                       "float": (int, float), "list": (list, tuple),
                                       "dict": (dict,)}


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False,
            integer: bool = False) -> Callable[[Any], str | None]:
    """A check: ``value`` is a number (an integer if asked) in the interval, else what it must be."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    kind = "an integer" if integer else "a number"

    def check(value: Any) -> str | None:
        ok = isinstance(value, int if integer else int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value > low if low_open else value >= low)
        ok = ok and (value < high if high_open else value <= high)
        return None if ok else f"{kind} in {interval}"
    return check


def _each(check: Callable[[Any], str | None], *, empty: bool = False
          ) -> Callable[[Any], str | None]:
    def run(values: Any) -> str | None:
        if not empty and not values:
            return "a non-empty list"
        bad = next((msg for v in values if (msg := check(v))), None)
        plural = bad and bad.replace("a number", "numbers", 1).replace("an integer", "integers", 1)
        return f"a list of {plural}" if bad else None
    return run


def _names(known: Callable[[], list[str]], *, first: str | None = None, empty: bool = False
           ) -> Callable[[Any], str | None]:
    def run(values: Any) -> str | None:
        allowed = list(known())
        single = isinstance(values, str)
        items = [values] if single else list(values)
        if (not items and not empty) or any(v not in allowed for v in items) or \
                (first and items and items[0] != first):
            lead = f" starting with {first!r}" if first else ""
            return f"one of {allowed}" if single else f"a{' possibly empty' if empty else ''} " \
                f"list of names from {allowed}{lead}"
        return None
    return run


def _component_switches() -> list[str]:
    from trm_lib.experiments import load_spec

    return list(load_spec("fidelity")["grids"]["ablation"]["switches"])


def _kd_forms() -> list[str]:
    from trm_lib.config.run_config import KD_FORMS

    return list(KD_FORMS)


def _pseudo_forms() -> list[str]:
    from trm_lib.config.run_config import PSEUDO_FORMS

    return list(PSEUDO_FORMS)


def _worlds() -> list[str]:
    from trm_lib.synth.config import DIFFICULTY

    return list(DIFFICULTY)


def _grid_methods() -> list[str]:
    from trm_lib.experiments import load_spec

    return list(load_spec("fidelity")["grids"]["main"]["methods"])


def _study_sets() -> list[str]:
    from trm_lib.experiments.ablations import STUDY_SETS

    return list(STUDY_SETS)


def _explorer_methods() -> list[str]:
    from .explorer import METHODS

    return list(METHODS)


def _files(values: Any) -> str | None:
    missing = [v for v in values if not Path(str(v)).expanduser().is_file()]
    return f"a list of existing image files (not found: {missing})" if missing else None


def _run_folder(value: Any) -> str | None:
    if value and not (Path(str(value)).expanduser() / "best.pt").is_file():
        return "empty or a finished run folder (one holding best.pt)"
    return None


_PROPORTION = _number(0, 1, low_open=True)
_COUNT = _number(1, math.inf, integer=True)
_NONNEG = _number(0, math.inf, integer=True)

#: parameter name -> check returning what the value must be (None: fine)
RULES: dict[str, Callable[[Any], str | None]] = {
    "proportion": _PROPORTION, "focus_proportion": _PROPORTION, "sweep_proportion": _PROPORTION,
    "proportions": _each(_PROPORTION), "tour_proportions": _each(_PROPORTION),
    "tour_thresholds": _each(_number(0.5, 1, high_open=True)),
    "seed": _NONNEG, "seeds": _each(_NONNEG), "tuning_seeds": _each(_NONNEG),
    "epochs": _COUNT, "n_samples": _COUNT, "max_rows": _COUNT, "n_images": _COUNT,
    "top_k": _COUNT, "world_images": _COUNT,
    "jobs": _NONNEG, "test_every": _NONNEG, "n_train": _NONNEG, "n_test": _NONNEG,
    "image": _NONNEG, "image_indices": _each(_NONNEG, empty=True),
    "alphas": _each(_number(0, math.inf)), "betas": _each(_number(0, math.inf)),
    "methods": _names(_grid_methods), "components": _names(_component_switches, first="full"),
    "kd_forms": _names(_kd_forms), "pseudo_forms": _names(_pseudo_forms),
    "worlds": _names(_worlds, empty=True), "studies": _names(_study_sets),
    "method": _names(_explorer_methods), "image_paths": _files,
    "run_dir": _run_folder, "dualcoop_run_dir": _run_folder,
}


def notebook_path(notebook: str | os.PathLike) -> Path:
    """``"04_ablations"``, ``"04"`` or a path -> the notebook file."""
    path = Path(notebook)
    if path.suffix == ".ipynb":
        return path
    found = sorted(notebooks_dir().glob(f"{path.name}*.ipynb"))
    if not found:
        raise ConfigError(f"no notebook {str(notebook)!r} in {notebooks_dir()}")
    return found[0]


def validate_parameters(notebook: str | os.PathLike, values: Mapping[str, Any]
                        ) -> dict[str, Any]:
    """Check ``values`` (a notebook's globals, or the parameters a caller passes) against the
    notebook's ``parameters`` cell: each declared name present in ``values`` has the declared type
    and obeys :data:`RULES`; an undeclared name in a *parameter* mapping is refused. Returns the
    declared parameters' values; raises one :class:`ConfigError` naming notebook and parameter."""
    path = notebook_path(notebook)
    declared = parameters_of(path)
    where = path.stem
    checked: dict[str, Any] = {}
    for name, info in declared.items():
        if name not in values:
            continue
        value = values[name]
        types = _TYPES.get(info["type"])
        if types and (not isinstance(value, types) or
                      (isinstance(value, bool) and bool not in types)):
            raise ConfigError(f"{where}: parameter {name} must be of type {info['type']}, "
                              f"got {value!r}")
        rule = RULES.get(name)
        if rule is not None and (need := rule(value)):
            raise ConfigError(f"{where}: parameter {name} must be {need}, got {value!r}")
        checked[name] = value
    return checked


def check_parameters(notebook: str | os.PathLike, params: Mapping[str, Any]) -> dict[str, Any]:
    """What the report driver runs before a notebook starts: :func:`validate_parameters` on the
    declared defaults overridden by ``params``, and no parameter the notebook does not declare
    (papermill would only warn)."""
    path = notebook_path(notebook)
    declared = parameters_of(path)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ConfigError(f"{path.stem}: unknown parameter(s) {unknown} (declared: "
                          f"{', '.join(declared)})")
    defaults = {}
    for name, info in declared.items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            continue
    return validate_parameters(path, {**defaults, **params})


__all__ = ["RULES", "check_parameters", "notebook_path", "validate_parameters"]
