"""Putting an exercise's reference out of reach while an answer runs.

An exercise names (``Exercise.blocked``) the library function its answer is compared with, its
re-exports and the scikit-learn/SciPy function it equals. :class:`blocked_while` swaps each for
a function raising :class:`ReferenceBlocked` for the duration of an in-kernel check (also
through the answer's globals and closure cells) and restores them; :func:`block_references`
does it for good in the grader's worker process, and also blocks reloading or re-reading the
modules that define them.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .exercises import Exercise

__all__ = ["ReferenceBlocked", "block_references", "blocked_while"]


class ReferenceBlocked(RuntimeError):
    """Raised by a library function that an answer must not call while it is checked."""


def _blocker(dotted: str, while_: str) -> Callable[..., Any]:
    def blocked(*_: Any, **__: Any) -> Any:
        raise ReferenceBlocked(f"{dotted} is off limits while {while_}: write it yourself")

    blocked.__name__ = blocked.__qualname__ = dotted.rsplit(".", 1)[-1]
    return blocked


def _resolve(spec: str) -> tuple[Any, str, Any]:
    """``"module:attr"`` or ``"module:Class.attr"`` -> (owner, attr, object)."""
    module, _, qual = spec.partition(":")
    owner: Any = importlib.import_module(module)
    *path, attr = qual.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, attr, owner.__dict__.get(attr, getattr(owner, attr))


def _swaps(specs: Iterable[str], label: str, namespaces: Sequence[dict[str, Any]] = (),
           cells: Sequence[Any] = ()) -> list[tuple[Any, str, Any]]:
    """Every (owner, name, replacement) so that each spec is blocked: the spec itself and every
    module attribute, namespace entry or closure cell bound to the same object."""
    originals: dict[int, tuple[Any, str]] = {}
    swaps: list[tuple[Any, str, Any]] = []
    for spec in specs:
        try:
            owner, attr, obj = _resolve(spec)
        except (ImportError, AttributeError):
            continue  # an optional package that is not installed cannot be called either
        dotted = spec.replace(":", ".")
        originals[id(obj)] = (obj, dotted)
        swaps.append((owner, attr, _blocker(dotted, label)))
    holders = [m.__dict__ for m in list(sys.modules.values()) if hasattr(m, "__dict__")]
    for ns in [*holders, *namespaces]:
        for key, value in list(ns.items()):
            hit = originals.get(id(value))
            if hit is not None and hit[0] is value:
                swaps.append((ns, key, _blocker(hit[1], label)))
    for cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        hit = originals.get(id(value))
        if hit is not None and hit[0] is value:
            swaps.append((cell, "cell_contents", _blocker(hit[1], label)))
    return swaps


def _apply(owner: Any, name: str, value: Any) -> Any:
    if isinstance(owner, types.CellType):
        old = owner.cell_contents
        owner.cell_contents = value
    elif isinstance(owner, dict):
        old = owner.get(name)
        owner[name] = value
    else:
        old = owner.__dict__.get(name)
        setattr(owner, name, value)
    return old


class blocked_while:
    """Context manager: ``specs`` raise :class:`ReferenceBlocked` inside the block, also through
    names in ``namespaces`` (a student's globals) and closure ``cells`` bound to them; restored
    afterwards. The
    in-kernel check uses it; the grader's worker blocks for good (:func:`block_references`)."""

    def __init__(self, specs: Iterable[str], label: str,
                 namespaces: Sequence[dict[str, Any]] = (), cells: Sequence[Any] = ()):
        self.specs, self.label, self.namespaces = list(specs), label, namespaces
        self.cells = cells
        self.undo: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> blocked_while:
        while_ = f"the exercise {self.label} is checked"
        for owner, name, blocker in _swaps(self.specs, while_, self.namespaces, self.cells):
            self.undo.append((owner, name, _apply(owner, name, blocker)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, old in reversed(self.undo):
            _apply(owner, name, old)


def block_references(exercises: Iterable[Exercise]) -> None:
    """For the rest of this process: every reference of ``exercises`` blocked, also in modules
    imported (or reloaded) later, and their source files unreadable (an answer cannot load a
    fresh copy of the module under another name)."""
    specs = [s for e in exercises for s in e.blocked]
    label = "exercises are graded"
    files = set()
    for spec in specs:
        try:
            obj = inspect.unwrap(_resolve(spec)[2])
            source = os.path.realpath(inspect.getfile(obj))
            files.update({source, os.path.realpath(importlib.util.cache_from_source(source))})
        except (ImportError, AttributeError, TypeError, ValueError):
            pass
        module = sys.modules.get(spec.partition(":")[0])
        source = getattr(module, "__file__", None)
        if source:
            files.add(os.path.realpath(source))
            cached = getattr(getattr(module, "__spec__", None), "cached", None)
            if cached:
                files.add(os.path.realpath(cached))

    def audit(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
            try:
                path = os.path.realpath(os.fsdecode(args[0]))
            except (TypeError, ValueError):
                return
            if path in files:
                raise PermissionError(f"{path} holds the reference of an exercise and cannot "
                                      f"be read while exercises are graded")

    for owner, name, blocker in _swaps(specs, label):
        _apply(owner, name, blocker)
    sys.addaudithook(audit)
