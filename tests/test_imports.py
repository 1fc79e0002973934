"""The import graph of ``trm_lib`` has no cycles and goes one way: down the ranks.

Every ``import`` / ``from … import`` of a ``trm_lib`` module counts, at module level *and* inside
functions (a lazy import is still a dependency: it only moves the cycle to call time); imports
under ``if TYPE_CHECKING:`` do not (they never run). Imports by string through ``importlib`` (the
CLI dispatcher, the dataset loader table) are not seen by this walk.
"""

from __future__ import annotations

import ast
from pathlib import Path

import trm_lib

PKG = Path(trm_lib.__file__).resolve().parent


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = ["trm_lib", *path.relative_to(PKG).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _targets(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom,
             known: dict[str, tuple[Path, bool]]) -> list[str]:
    """The trm_lib modules one import statement loads (``from . import x`` loads ``pkg.x``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")[: len(module.split(".")) - (0 if is_pkg else 1)]
            base = base[: len(base) - (node.level - 1)] + ([node.module] if node.module else [])
            base_name = ".".join(base)
        else:
            base_name = node.module or ""
        names = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in known else base_name
                 for a in node.names]
    out = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name.startswith("trm_lib") and name != module:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the trm_lib modules it imports (module level and function level)."""
    known = _modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    for module, (path, is_pkg) in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in typing_only:
                graph[module].update(_targets(module, is_pkg, node, known))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, …, a]``, or None (depth-first search, colouring)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_walk_sees_lazy_imports_and_cycles():
    """The walk itself: it finds the function-level edge pre-training has on the backbone, and a
    planted cycle."""
    graph = import_graph()
    assert "trm_lib.backbone.clip" in graph["trm_lib.tinyclip.pretrain"]  # imported inside functions only
    assert "trm_lib.tinyclip.pretrain" not in graph["trm_lib.backbone.clip"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_registries_do_not_import_their_implementations():
    graph = import_graph()
    assert not graph["trm_lib.core.methods"] & {"trm_lib.core.model", "trm_lib.core.baselines",
                                           "trm_lib.core"}
    assert {"trm_lib.core.model", "trm_lib.core.baselines"} <= graph["trm_lib.core"]
    assert "trm_lib.tinyclip.pretrain" not in graph["trm_lib.backbone.weights"]


#: the house's ranks (README, docs/DESIGN.md): a package imports its own rank or lower
RANKS = {"utils": 0, "config": 1, "datasets": 2, "backbone": 2, "core": 3, "synth": 4,
         "tinyclip": 4, "train": 5, "experiments": 6, "viz": 7, "reports": 8, "tools": 8,
         "__main__": 9}
#: at most four modules besides __init__ / __main__ may sit at the top of the package
TOP_LEVEL_ALLOWED = 4


def rank_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) == 1:  # trm_lib/__init__: the version and lazy aliases only
        return "trm_lib", -1
    return parts[1], RANKS[parts[1]]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        pkg, rank = rank_of(module)
        for target in targets:
            tpkg, trank = rank_of(target)
            if trank > rank and module != "trm_lib":
                bad.append(f"{module} (rank {rank}) imports {target} (rank {trank})")
    return sorted(bad)


def test_every_module_belongs_to_a_ranked_package():
    tops = [p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__")]
    assert len(tops) <= TOP_LEVEL_ALLOWED, tops
    for module in import_graph():
        rank_of(module)  # KeyError: a package missing from RANKS


def test_imports_never_go_up_a_rank():
    assert upward_imports(import_graph()) == []


def test_the_rank_check_catches_a_planted_upward_import():
    graph = {"trm_lib.core.model": {"trm_lib.train.trainer"}, "trm_lib.train.trainer": set()}
    assert upward_imports(graph) == [
        "trm_lib.core.model (rank 3) imports trm_lib.train.trainer (rank 5)"]
    assert upward_imports({"trm_lib.core.model": {"trm_lib.utils.io"}}) == []


def test_the_package_root_stays_light():
    """``import trm_lib`` loads no subpackage (aliases resolve lazily)."""
    assert import_graph()["trm_lib"] == set()


def test_declared_plugins_exist_and_sit_above_their_registry():
    """A registry may name a higher package's module by path (an entry point); it must exist."""
    import importlib.util

    from trm_lib.backbone.weights import WEIGHT_PROVIDERS
    from trm_lib.datasets import DATASETS

    for registry in (DATASETS, WEIGHT_PROVIDERS):
        for name, module in registry._declared.items():
            assert importlib.util.find_spec(module) is not None, (name, module)


def test_the_names_users_import_keep_working():
    import subprocess
    import sys

    code = ("from trm_lib import course, viz, train, experiments, reports, labels, metrics, stats\n"
            "import trm_lib\n"
            "assert course.__name__ == 'trm_lib.reports.course'\n"
            "assert callable(reports.notebook_overrides) and callable(train.train)\n"
            "assert trm_lib.metrics is metrics\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parent)
