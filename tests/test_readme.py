"""The README stays a newcomer's ten-minute read whose module table matches ``ls trm_lib``."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_short():
    assert len(README.splitlines()) <= 150


def test_module_table_names_every_module_and_only_existing_ones():
    table = [line for line in README.splitlines() if line.startswith("| `")]
    named = set(re.findall(r"`([A-Za-z_][\w]*/?)`", " ".join(line.split(" | ")[0] for line in table)))
    package = ROOT / "trm_lib"
    have = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    have |= {f"{p.name}/" for p in package.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert have - named == set(), "modules missing from the README's table"
    assert named - have == set(), "README names modules that do not exist"


def test_readme_links_and_picture_exist():
    for target in re.findall(r"\]\(((?:docs|notebooks)/[^)#]+)\)", README):
        assert (ROOT / target).exists(), target


def test_docs_name_only_modules_and_files_that_exist():
    """After a move, a doc naming ``trm_lib.old_module`` or ``trm_lib/old.py`` is caught here."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    package = ROOT / "trm_lib"
    missing = []
    for doc in docs:
        text = doc.read_text()
        for path in re.findall(r"\btrm_lib/[\w/]+\.(?:py|yaml|json)\b", text):
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
        for dotted in re.findall(r"\btrm_lib((?:\.[a-z_][a-z0-9_]*)+)", text):
            parts = dotted.strip(".").split(".")
            first = package / parts[0]
            if not (first.is_dir() or first.with_suffix(".py").exists()):
                missing.append(f"{doc.name}: trm_lib.{dotted.strip('.')}")
    assert missing == []
