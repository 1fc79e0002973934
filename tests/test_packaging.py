"""environment.yml mirrors pyproject.toml; the package ships what it needs at run time."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name where they differ
CONDA_NAME = {"torch": "pytorch", "open_clip_torch": "open-clip-torch"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert "trm-lib[notebooks]" in extras["dev"]  # `make` installs .[dev]: JupyterLab included
    reqs = project["dependencies"] + [r for extra in extras.values() for r in extra
                                      if not r.startswith(project["name"] + "[")]
    wanted = dict(_split(r) for r in reqs)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    conda = {}
    pip_section = None
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
            continue
        name, spec = _split(dep)
        conda[name] = spec
    assert pip_section == ["-e .[dev]"]
    for name, spec in wanted.items():
        cname = CONDA_NAME.get(name, name).lower()
        assert cname in conda, f"environment.yml lacks {cname} (pyproject: {name}{spec})"
        assert conda[cname] == spec, f"{cname}: environment.yml {conda[cname]!r} != pyproject {spec!r}"
    extra = set(conda) - {CONDA_NAME.get(n, n).lower() for n in wanted} - {"python", "pip"}
    assert not extra, f"environment.yml has packages pyproject.toml does not: {sorted(extra)}"


def test_shipped_label_data_present():
    from trm_lib.datasets.classes import VOC_CLASSES, voc2007_full_labels

    assert voc2007_full_labels("trainval").shape == (5011, len(VOC_CLASSES))
    assert voc2007_full_labels("test").shape == (4952, len(VOC_CLASSES))


def test_every_imported_package_is_declared():
    """Each third-party package ``trm_lib`` imports (at the top or lazily) is a dependency, or a
    dev/notebooks extra for the modules that serve only those (the browser tests)."""
    import ast
    import sys

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_split(r)[0].replace("-", "_") for r in project["dependencies"]}
    optional = {_split(r)[0].replace("-", "_") for extra in project["optional-dependencies"].values()
                for r in extra}
    import_name = {"pil": "pillow", "yaml": "pyyaml", "sklearn": "scikit_learn",
                   "open_clip": "open_clip_torch"}
    only_optional = {"playwright": {"browser.py"}}  # JupyterLab in Chromium: the dev extra
    for path in (ROOT / "trm_lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0
                     and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "trm_lib":
                    continue
                dist = import_name.get(top.lower(), top.lower())
                if path.name in only_optional.get(top, set()):
                    assert dist in optional, f"{path.name} imports {top}: not in an extra"
                else:
                    assert dist in declared, f"{path.name} imports {top}: not a dependency"


def test_a_fresh_clone_has_the_reports_folder():
    """reports/ is one of the six top-level folders: tracked (empty), its contents ignored."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files", "reports"], cwd=root, capture_output=True,
                             text=True).stdout.split()
    assert "reports/.gitkeep" in tracked
