"""Notebook 04's studies: the ``ablations`` spec file narrowed to what a report or a user asks.

The studies themselves (which switch flips what) live in ``trm_lib/presets/ablations.yaml``, as
big_vision keeps an experiment in a config file; this module only selects from it — studies,
switches by name, seeds, proportions — applies the file's ``smoke`` trims, and adds the one study
a file cannot list: component gains across world difficulties (worlds × components)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from trm_lib.config.run_config import ConfigError
from trm_lib.synth.config import difficulty_options

from .spec import load_spec, smoke_trim
from .stats import WORLD_SEP

#: the studies that train TRM-ML at the tuning seeds (one seed unless asked)
TUNING = ("kd_form", "pseudo_form", "loss_weights")
#: the studies the report's claims rest on; the tuning and exploration studies (their results
#: are in docs/METHOD_CHOICES.md) are added by ``studies="all"``
CORE = ("components", "pseudo_b")
STUDY_SETS = ("auto", "core", "all")


def resolve_studies(studies: str, device_type: str, smoke: bool = False) -> list[str]:
    """``"core"`` (the components and protocol B's pseudo-labels), ``"all"`` (plus the
    distillation and pseudo-label forms, the α/β sweep and the difficulty worlds), or ``"auto"``:
    all on a GPU, core on a CPU, where the tuning studies would double the report's time for
    one-seed results that do not carry its claims. A ``smoke`` run checks every study's plumbing,
    so it runs all."""
    if not exploring(studies, device_type, smoke):
        return list(CORE)
    return [*load_spec("ablations")["grids"], "difficulty"]


def exploring(studies: str, device_type: str, smoke: bool = False) -> bool:
    """Whether ``studies`` (``"auto"``, ``"core"`` or ``"all"``) asks for the tuning and
    exploration studies on this device: the one switch notebooks 04 and 06 read."""
    if studies not in STUDY_SETS:
        raise ConfigError(f"studies must be one of {list(STUDY_SETS)}, got {studies!r}")
    if studies == "auto":
        return device_type == "cuda" or smoke
    return studies == "all"


def skipped(study: str, how: str | None = None) -> str:
    """What a notebook prints for a study this run left out, and how to run it (``how``: the
    command beside ``-p studies=all``; default: the study's grid of the ablations spec)."""
    how = how or f"`python -m trm_lib experiment --preset ablations --grid {study}`"
    return (f"study {study!r} not run here (studies='core', the CPU default): run it with "
            f"-p studies=all, or {how}; its results are in docs/METHOD_CHOICES.md")


def weights_name(alpha: float, beta: float) -> str:
    """The ``loss_weights`` switch of (α, β), as the spec file names it."""
    return f"α={alpha:g} β={beta:g}"


def _keep(block: dict[str, Any], names: Sequence[str], study: str) -> None:
    unknown = [n for n in names if n not in block["switches"]]
    if unknown:
        raise ConfigError(f"ablations: grids.{study} has no switch {unknown} "
                          f"(known: {list(block['switches'])})")
    block["switches"] = {n: block["switches"][n] for n in names}


def study_spec(*, studies: Sequence[str] | None = None, seeds: Sequence[int] = (0, 1, 2),
               tuning_seeds: Sequence[int] = (0,), proportions: Sequence[float] = (0.1,),
               components: Sequence[str] | None = None, kd_forms: Sequence[str] | None = None,
               pseudo_forms: Sequence[str] | None = None, alphas: Sequence[float] = (0.1, 1.0),
               betas: Sequence[float] = (0.01,), sweep_proportion: float = 0.1,
               worlds: Sequence[str] = (), world_size: dict[str, Any] | None = None,
               smoke: bool = False, spec: str | dict[str, Any] = "ablations"
               ) -> dict[str, Any]:
    """The grid spec of the chosen ``studies`` (default: every grid of the file, plus
    ``difficulty`` when ``worlds`` are given). Switch lists select by name, in the given order
    (the first is the baseline a figure compares against); ``smoke`` trims every list by the
    file's ``smoke`` block."""
    base = load_spec(spec)
    trim = dict(base.get("smoke") or {}) if smoke else {}

    def cut(values: Sequence[Any], key: str) -> list[Any]:
        return smoke_trim(values, trim.get(key), f"spec ablations: smoke.{key}")

    seeds, tuning_seeds = cut(seeds, "seeds"), cut(tuning_seeds, "tuning_seeds")
    proportions, worlds = cut(proportions, "proportions"), cut(worlds, "worlds")
    chosen = list(studies) if studies is not None else [*base["grids"], "difficulty"]
    grids: dict[str, Any] = {}
    names = {"components": components, "kd_form": kd_forms, "pseudo_form": pseudo_forms}
    sweep = {weights_name(a, b): {"method.kd_weight": float(a), "method.mcl_weight": float(b)}
             for a in cut(alphas, "switches") for b in cut(betas, "betas")}
    for study in chosen:
        if study == "difficulty":
            continue
        if study not in base["grids"]:
            raise ConfigError(f"ablations: unknown study {study!r} "
                              f"(known: {[*base['grids'], 'difficulty']})")
        block = copy.deepcopy(base["grids"][study])
        if study in names:
            _keep(block, cut(names[study] or list(block["switches"]), "switches"), study)
        if study == "loss_weights":
            block["switches"] = sweep
        block["seeds"] = list(seeds) if study == "components" else \
            list(tuning_seeds) if study in TUNING else list(seeds[:1])
        if block.get("protocol", "proportion") == "proportion":
            block["proportions"] = [sweep_proportion] if study == "loss_weights" \
                else list(proportions)
        grids[study] = block
    if "difficulty" in chosen and worlds:
        switches = base["grids"]["components"]["switches"]
        parts = [c for c in cut(components or list(switches), "switches") if c != "text_image"]
        size = world_size or {}
        grids["difficulty"] = {
            "methods": ["trm_ml"], "protocol": "proportion", "proportions": list(proportions[:1]),
            "seeds": list(tuning_seeds), "switches": {
                f"{w}{WORLD_SEP}{c}": {"data.options": difficulty_options(w, **size),
                                       **switches[c]} for w in worlds for c in parts}}
    if not grids:
        raise ConfigError(f"ablations: no study left (studies={list(chosen)})")
    return {"name": base["name"], "grids": grids}


__all__ = ["CORE", "STUDY_SETS", "TUNING", "exploring", "resolve_studies", "skipped", "study_spec",
           "weights_name"]
