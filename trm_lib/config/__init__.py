"""Rank 1: typed run configs (data / backbone / method / train), YAML, ``section.key=value``
overrides and validation naming the field. Presets (``trm_lib/presets/*.yaml``) are data."""

from __future__ import annotations

from .run_config import (
    KD_FORMS,
    PSEUDO_FORMS,
    SP_LOSSES,
    BackboneConfig,
    ConfigError,
    DataConfig,
    MethodConfig,
    RunConfig,
    TrainConfig,
    check_range,
    check_ranges,
    from_dict,
    load_config,
    load_preset,
    parse_overrides,
    presets_dir,
    read_yaml,
    replace,
    require,
)

__all__ = ["KD_FORMS", "PSEUDO_FORMS", "SP_LOSSES", "BackboneConfig", "ConfigError", "DataConfig",
           "MethodConfig", "RunConfig", "TrainConfig", "check_range", "check_ranges", "from_dict",
           "load_config", "load_preset", "parse_overrides", "presets_dir", "read_yaml", "replace",
           "require"]
