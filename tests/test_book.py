"""The HTML book (trm_lib.reports.book via reports.write_book): one page per executed notebook and an
index linking every page, figure and table; the links are loaded in a browser in
tests/test_browser.py."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
from PIL import Image

from trm_lib.reports import driver as reports


def make_report(root: Path) -> Path:
    """A small report folder as run_notebooks leaves it: two executed copies (one with a PNG
    output), figures (PNG + SVG) and tables (CSV + Markdown)."""
    import base64
    import io

    (root / "figures").mkdir(parents=True)
    (root / "tables").mkdir()
    img = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (32, 1)))
    img.save(root / "figures" / "01_curve.png")
    buf = io.BytesIO()
    img.save(buf, format="png")
    (root / "figures" / "01_curve.svg").write_text(
        "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>")
    (root / "tables" / "01_scores.csv").write_text("a,b\n1,2\n")
    (root / "tables" / "01_scores.md").write_text("| a | b |\n| --- | --- |\n| 1 | 2 |\n")
    (root / "figures" / ".tmp-partial.png").write_bytes(b"")  # an atomic write in flight
    for name, status in (("01_first", "ok"), ("02_second", "failed")):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("fig", execution_count=1)
        cell.outputs = [nbformat.v4.new_output(
            "display_data", data={"image/png": base64.b64encode(buf.getvalue()).decode()})]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"), cell]
        nb.metadata[reports.META_KEY] = {"status": status, "seconds": 1.5, "smoke": True,
                                         "git": "abc123", "artifacts": []}
        nbformat.write(nb, root / f"{name}.ipynb")
    return root


def test_book_pages_and_index_link_everything(tmp_path):
    report = make_report(tmp_path / "report")
    index = reports.write_book(report)
    assert index == (report / "html" / "index.html").resolve()
    page = index.read_text()
    links = set(re.findall(r"href='([^']+)'", page))
    images = set(re.findall(r"src='([^']+)'", page))
    assert links == {"01_first.html", "02_second.html", "figures/01_curve.png",
                     "figures/01_curve.svg", "tables/01_scores.csv", "tables/01_scores.md"}
    assert images == {"figures/01_curve.png"}
    for link in links:  # self-contained: every target is inside html/
        assert (index.parent / link).is_file(), link
    assert "failed" in page and "abc123" in page
    first = (index.parent / "01_first.html").read_text()
    assert "data:image/png;base64," in first  # the notebook's figure is embedded in its page
    # offline: no script, stylesheet or image from a CDN (nbconvert's lab template loads
    # require.js and MathJax from cdnjs by default; the book's template drops them)
    remote = re.findall(r"""(?:src|href)\s*=\s*["']?(https?:)""", first + page)
    assert not remote, "the book loads from the network"
    assert not (index.parent / "figures" / ".tmp-partial.png").exists()
    # rewriting picks up removed files
    (report / "tables" / "01_scores.md").unlink()
    reports.write_book(report)
    assert "01_scores.md" not in index.read_text()
    assert not (index.parent / "tables" / "01_scores.md").exists()
