"""Reading YAML the way a config file must be read: safe loading only (no Python objects),
duplicate keys refused, merge keys named, and bounded — a file larger than
:data:`YAML_BYTES`, or aliases that expand past :data:`YAML_NODE_BUDGET` values (a
"billion laughs"), is one :class:`~trm_lib.utils.errors.ConfigError` naming the file, never
minutes of CPU and gigabytes of memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from trm_lib.utils.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                              f"(only one may be given)")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


#: the most values a YAML document may expand to through its aliases (a full grid spec is a few
#: hundred; RunConfig() written out is about 150)
YAML_NODE_BUDGET = 100_000
#: the largest YAML file read (a grid spec is a few KiB)
YAML_BYTES = 4 << 20


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Values ``node`` stands for once every alias is expanded, counted without expanding
    (each node once, memoised): linear in the document, whatever its aliases multiply."""
    if node is None:
        return 0
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once
    children = node.value if isinstance(node.value, list) else []
    total = 1
    for child in children:
        parts = child if isinstance(child, tuple) else (child,)
        total += sum(_expanded_size(part, memo) for part in parts)
        total = min(total, 1 << 62)
    memo[id(node)] = total
    return total


def read_yaml(path: str | os.PathLike, what: str = "config file") -> Any:
    """The parsed YAML of ``path``; a missing, unreadable, empty or invalid file, or a key given
    twice, is a ConfigError naming the file (an empty file would silently mean "all defaults")."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():  # /dev/zero would be read forever
            raise ConfigError(f"{path}: the {what} must be a regular file")
        with open(path, "rb") as fh:
            data = fh.read(YAML_BYTES + 1)
        if len(data) > YAML_BYTES:
            raise ConfigError(f"{path}: the {what} is larger than {YAML_BYTES >> 20} MiB")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the {what} ({err})") from None
    try:
        # aliases are bounded before anything is built: a billion-laughs document (nested
        # aliases expanding to 10^9 nodes) took 85 s and 3 GB before a MemoryError (issue 29)
        size = _expanded_size(yaml.compose(text, Loader=yaml.SafeLoader), {})
        if size > YAML_NODE_BUDGET:
            raise ConfigError(f"its aliases (*name) expand to more than {YAML_NODE_BUDGET:,} "
                              f"values ({size:,}); write the values out")
        values = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply (thousands of levels of [ or {{); a "
                          f"{what} is a few levels deep") from None
    except yaml.YAMLError as err:
        if "tag:yaml.org,2002:merge" in str(err):
            mark = getattr(err, "problem_mark", None)
            at = f"line {mark.line + 1}: " if mark is not None else ""
            raise ConfigError(f"{path}: {at}YAML merge keys ('<<:') are not supported; write "
                              f"the fields out") from None
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if values is None:
        raise ConfigError(f"{path}: empty {what} (write at least one section, e.g. "
                          f"'train: {{epochs: 12}}')")
    return values


__all__ = ["YAML_BYTES", "YAML_NODE_BUDGET", "read_yaml"]
