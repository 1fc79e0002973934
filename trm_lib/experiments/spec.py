"""Grid specs: reading and checking a spec, and expanding it into the planned runs.

A grid spec (YAML, e.g. ``trm_lib/presets/fidelity.yaml``) crosses methods × label settings ×
seeds × switches, where a *switch* is a named set of dotted overrides (``no_kd: {method.kd:
none}``). The format is documented in :mod:`trm_lib.experiments`. Every planned run carries its
complete, validated config, so a bad override fails here, before any run trains or any file is
written.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trm_lib.config.run_config import (
    ConfigError,
    RunConfig,
    load_config,
    load_preset,
    presets_dir,
    read_yaml,
)
from trm_lib.core import method_class
from trm_lib.train import config_hash

_GRID_KEYS = {"methods", "protocol", "proportions", "seeds", "overrides", "switches",
              "method_overrides"}
#: ``slurm``: the Slurm resources of ``--executor slurm`` (:mod:`trm_lib.experiments.launch`)
_SPEC_KEYS = {"name", "preset", "base", "method_overrides", "grids", "description", "smoke",
              "slurm"}


def load_spec(spec: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A grid spec from a dict, a YAML file, or a preset name (``fidelity``); validated."""
    if isinstance(spec, dict):
        return _check_spec(dict(spec), "spec")
    path = Path(spec)
    if not path.suffix and not path.exists():
        path = presets_dir() / f"{spec}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in presets_dir().glob("*.yaml") if is_grid_spec(p))
            raise ConfigError(f"unknown grid preset {str(spec)!r} (known: {', '.join(known)})")
    values = read_yaml(path, "grid spec")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a grid spec must be a mapping with a 'grids' block")
    values.setdefault("name", path.stem)
    return _check_spec(values, str(path))


def is_grid_spec(path: str | Path) -> bool:
    """True for a YAML file with a ``grids`` block (an experiment, not a run config)."""
    try:
        values = read_yaml(path)
    except ConfigError:
        return False
    return isinstance(values, dict) and "grids" in values


def _check_spec(spec: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} (known: {sorted(_SPEC_KEYS)})")
    grids = spec.get("grids")
    if not isinstance(grids, dict) or not grids:
        raise ConfigError(f"{where}: 'grids' must be a non-empty mapping of grid blocks")
    for name, block in grids.items():
        at = f"{where}: grids.{name}"
        if not isinstance(block, dict):
            raise ConfigError(f"{at} must be a mapping")
        bad = sorted(set(block) - _GRID_KEYS)
        if bad:
            raise ConfigError(f"{at}: unknown key(s) {bad} (known: {sorted(_GRID_KEYS)})")
        if not block.get("methods") or not isinstance(block["methods"], list):
            raise ConfigError(f"{at}.methods must be a non-empty list")
        for key in ("proportions", "seeds"):
            if key in block and not isinstance(block[key], list):
                raise ConfigError(f"{at}.{key} must be a list")
        for key in ("overrides", "switches", "method_overrides"):
            if not isinstance(block.get(key, {}), dict):
                raise ConfigError(f"{at}.{key} must be a mapping")
    for key in ("base", "method_overrides", "slurm"):
        if not isinstance(spec.get(key) or {}, dict):
            raise ConfigError(f"{where}: {key} must be a mapping")
    spec.setdefault("name", "grid")
    return spec


@dataclass
class PlannedRun:
    """One cell of a grid: its labels and its complete config."""

    grid: str
    method: str
    variant: str
    protocol: str
    proportion: float
    seed: int
    config: RunConfig

    @property
    def hash(self) -> str:
        return config_hash(self.config)


def expand(spec: dict[str, Any], *, grids: list[str] | None = None,
           seeds: list[int] | None = None, proportions: list[float] | None = None,
           methods: list[str] | None = None, overrides: dict[str, Any] | None = None,
           method_budgets: bool = False) -> list[PlannedRun]:
    """Every run of ``spec`` (optionally restricted / re-seeded), configs built and validated.

    Precedence, later wins: preset → ``base`` → method overrides → CLI ``overrides`` → grid
    ``overrides`` → the grid's ``method_overrides`` → switch → (method, protocol, proportion,
    seeds). What the caller passes beats
    a method's own settings from the spec: ``--set train.epochs=6`` (a notebook's time budget)
    shortens every method's schedule, including a baseline whose spec entry sets its epochs --
    unless ``method_budgets``: then a method's own ``train.epochs`` from the spec (its budget
    chosen on validation, e.g. DualCoOp's 40) beats the caller's, and a report's short budget
    shortens only the methods without one.
    """
    spec = load_spec(spec)
    where = str(spec.get("name"))
    chosen = grids or list(spec["grids"])
    unknown = [g for g in chosen if g not in spec["grids"]]
    if unknown:
        raise ConfigError(f"{where}: unknown grid(s) {unknown} (known: {list(spec['grids'])})")
    preset = spec.get("preset")
    if preset:
        root = load_config(preset) if Path(str(preset)).suffix else load_preset(str(preset))
    else:
        root = RunConfig()
    root = _apply(root, spec.get("base") or {}, f"{where}: base")
    _apply(root, overrides or {}, "--set")  # one clear error before any run is planned
    plan: list[PlannedRun] = []
    for gname in chosen:
        block = spec["grids"][gname]
        protocol = block.get("protocol", "proportion")
        props = block.get("proportions") or [root.data.proportion]
        if proportions is not None and protocol == "proportion":
            props = proportions
        if protocol != "proportion":
            props = [math.nan]
        grid_methods = [m for m in block["methods"] if methods is None or m in methods]
        for method in grid_methods:  # one clear error before any run is planned
            try:
                method_class(method)
            except ConfigError as err:
                raise ConfigError(f"{where}: grids.{gname}: {err}") from None
        switches = block.get("switches") or {"default": {}}
        for method, variant, p, seed in itertools.product(
                grid_methods, switches, props, seeds or block.get("seeds") or [0]):
            at = f"{where}: grids.{gname} ({method}, {variant})"
            cfg = _apply(root, {"method.name": method}, at)
            cfg = _apply(cfg, (spec.get("method_overrides") or {}).get(method) or {}, at)
            cfg = _apply(cfg, overrides or {}, f"{at}: --set")
            own = (spec.get("method_overrides") or {}).get(method) or {}
            if method_budgets and "train.epochs" in own:
                cfg = _apply(cfg, {"train.epochs": own["train.epochs"]}, at)
            cfg = _apply(cfg, block.get("overrides") or {}, at)
            # a method's settings for this grid only (e.g. its protocol-B loss)
            cfg = _apply(cfg, (block.get("method_overrides") or {}).get(method) or {}, at)
            cfg = _apply(cfg, switches[variant] or {}, f"{at}: switch {variant}")
            setting: dict[str, Any] = {"data.protocol": protocol, "train.seed": int(seed),
                                       "data.mask_seed": int(seed)}
            if protocol == "proportion":
                setting["data.proportion"] = float(p)
            cfg = _apply(cfg, setting, at)
            plan.append(PlannedRun(gname, method, str(variant), protocol,
                                   float(p), int(seed), cfg))
    if not plan:
        raise ConfigError(f"{where}: the selection leaves no run (grids {chosen}, "
                          f"methods {methods})")
    return plan


def method_overrides(method: str, spec: str | Path | dict[str, Any] = "fidelity"
                     ) -> dict[str, Any]:
    """The per-method overrides of ``spec`` for ``method`` (e.g. the linear probe's learning
    rate), so that tools outside a grid (the explorer) train a baseline the way the grid does.
    A named spec is read once per process (the explorer asks on every widget change)."""
    table = _named_method_overrides(spec) if isinstance(spec, str) else \
        (load_spec(spec).get("method_overrides") or {})
    return dict(table.get(method) or {})


def method_config(method: str, overrides: dict[str, Any] | None = None, *,
                  spec: str | Path | dict[str, Any] = "fidelity",
                  base: RunConfig | None = None) -> RunConfig:
    """The config a grid of ``spec`` would give ``method`` outside a grid (a notebook training one
    baseline): ``base`` (default :class:`RunConfig`), the method, its overrides from ``spec``, then
    the caller's ``overrides`` -- the same precedence as :func:`expand`."""
    cfg = (base or RunConfig()).with_overrides({"method.name": method})
    cfg = _apply(cfg, method_overrides(method, spec), f"{spec if isinstance(spec, str) else 'spec'}"
                 f": method_overrides.{method}")
    return _apply(cfg, overrides or {}, "overrides")


def smoke_trim(values: Sequence[Any], rule: Any, where: str) -> list[Any]:
    """``values`` cut by one rule of a spec's ``smoke`` block: ``N`` keeps the first N,
    ``"ends"`` the first and the last (a curve's two ends), None all of them. ``where`` names
    the rule in the error a bad one raises."""
    values = list(values)
    if rule is None:
        return values
    if rule == "ends":
        return values[:1] + values[-1:] if len(values) > 1 else values
    if isinstance(rule, bool) or not isinstance(rule, int) or rule < 1:
        raise ConfigError(f"{where} must be a count >= 1 or 'ends', got {rule!r}")
    return values[:rule]


def smoke_selection(spec: str | Path | dict[str, Any], smoke: bool,
                    **lists: Sequence[Any]) -> tuple[list[Any], ...]:
    """``lists`` (e.g. ``methods=…, proportions=…, seeds=…``) as a run trims them: unchanged
    unless ``smoke``, then cut by the spec's ``smoke`` block (:func:`smoke_trim`). Returned in
    the given order; a list the block does not name is kept whole."""
    trim = (load_spec(spec).get("smoke") or {}) if smoke else {}
    name = spec if isinstance(spec, str) else ""
    return tuple(smoke_trim(values, trim.get(key), f"spec {name}: smoke.{key}")
                 for key, values in lists.items())


@functools.lru_cache(maxsize=8)
def _named_method_overrides(spec: str) -> dict[str, Any]:
    return load_spec(spec).get("method_overrides") or {}


def _apply(cfg: RunConfig, overrides: dict[str, Any], where: str) -> RunConfig:
    try:
        return cfg.with_overrides(overrides)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


__all__ = ["PlannedRun", "expand", "is_grid_spec", "load_spec", "method_config",
           "method_overrides", "smoke_selection", "smoke_trim"]
