"""One registry helper for everything chosen by name: datasets, methods, weight providers.

As in detectron2 and timm, an implementation registers itself with a decorator where it is
defined, and code that needs one asks the registry by the configured name — the one lookup that
names the valid choices when the name is wrong. A registry never imports its implementations;
those of a higher-ranked package (the SynthScenes world for ``datasets``, TinyCLIP for the weight
providers) are *declared* by module path, like an entry point, and imported the first time their
name is asked for, so nothing depends on another module having been imported first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from trm_lib.utils.errors import ConfigError, UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """``name -> object`` filled by :meth:`register`, read by :meth:`get`.

    ``what`` names the setting in error messages (``"method.name"``); ``declared`` maps names to
    the module that registers them on import; ``error`` is the :class:`UserError` type an unknown
    name raises."""

    def __init__(self, what: str, declared: Mapping[str, str] | None = None,
                 error: type[UserError] = ConfigError) -> None:
        self.what = what
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._declared = dict(declared or {})
        self._error = error

    def register(self, name: str, obj: T | None = None, **meta: Any) -> Any:
        """Register ``obj`` as ``name`` (``meta``: e.g. a display label); without ``obj``, a
        decorator. Registering another object under a taken name is a programming error."""
        def deco(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._items[name] = item
            self._meta[name] = meta
            return item
        return deco if obj is None else deco(obj)

    def get(self, name: str) -> T:
        """The object registered as ``name``, importing its declared module if needed; the
        registry's error type naming every valid name otherwise."""
        if name not in self._items and name in self._declared:
            importlib.import_module(self._declared[name])
        if name not in self._items:
            raise self._error(f"{self.what} {name!r} unknown (known: {', '.join(self.names())})")
        return self._items[name]

    def meta(self, name: str) -> dict[str, Any]:
        """What ``name`` was registered with (empty for an unknown or not yet imported name)."""
        return dict(self._meta.get(name, {}))

    def names(self) -> list[str]:
        """Registered names in registration order, then declared ones not imported yet."""
        return list(self._items) + [n for n in self._declared if n not in self._items]

    def load_all(self) -> None:
        """Import every declared module (to list labels or loss terms of all implementations)."""
        for name in list(self._declared):
            self.get(name)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._items.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._declared

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {self.names()})"


def lookup(registry: Registry[Callable[..., T]], name: str, *args: Any, **kwargs: Any) -> T:
    """``registry.get(name)(*args, **kwargs)``: the ``build_*`` one-liner."""
    return registry.get(name)(*args, **kwargs)


__all__ = ["Registry", "lookup"]
