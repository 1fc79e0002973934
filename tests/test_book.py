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
        log = nbformat.v4.new_code_cell("train()", execution_count=2)
        log.outputs = [nbformat.v4.new_output("stream", name="stdout", text="".join(
            f"epoch {i} loss 0.{i}\n" for i in range(1, 41))),
            nbformat.v4.new_output("stream", name="stderr", text="short warning\n")]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"), cell, log]
        if name == "01_first":  # the cells that write the figure and the table, with their text
            nb.cells += [
                nbformat.v4.new_markdown_cell("### Learning curve\n\nLoss *falls* by epoch. "
                                              "Then it rises.\n\nMore."),
                nbformat.v4.new_code_cell('save_figure(fig, out / "figures" / "01_curve")'),
                nbformat.v4.new_markdown_cell("The scores of `a` and b: one row."),
                nbformat.v4.new_code_cell('save_table(df, out / "tables" / "01_scores")')]
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
                     "figures/01_curve.svg", "tables/01_scores.html", "tables/01_scores.csv",
                     "tables/01_scores.md"}
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
    assert "tables/01_scores.html" in index.read_text()  # now from the CSV


def test_book_captions_figures_from_the_notebook_text(tmp_path):
    page = reports.write_book(make_report(tmp_path / "report")).read_text()
    fig = re.search(r"<figure>.*?</figure>", page, re.S).group(0)
    # the heading and first sentence of the markdown cell before the cell that saves the figure
    assert "<figcaption>Learning curve — Loss falls by epoch.<br>" in fig
    assert "Then it rises" not in fig and "<small>figures/01_curve.png</small>" in fig
    assert "The scores of a and b:" in page  # a table is captioned the same way


def test_book_caption_rules():
    from trm_lib.reports import book

    assert book._caption_of("## 3 · Training\n\nOne line per epoch: lr, loss. More") == \
        "3 · Training — One line per epoch: lr, loss."
    assert book._caption_of("No heading here. Second.") == "No heading here."
    known = {("05_attention_test", False): "maps", ("04_components", True): "bars",
             ("04_components_forest", True): "forest"}
    assert book._caption_for("05_attention_test00003", known) == "maps"
    assert book._caption_for("04_components_forest", known) == "forest"
    assert book._caption_for("04_components_x", known) == ""  # exact names are not prefixes
    names = book._NAME_IN_CODE.findall('a / "03_results.csv"; f"05_att_{i:05d}"; "x_y"')
    assert names == [("03_results", '"'), ("05_att_", "{")]


def test_book_renders_tables_as_html_pages(tmp_path):
    report = make_report(tmp_path / "report")
    (report / "tables" / "02_only.csv").write_text("name,mAP\n<b>x</b>,61.5\n")
    out = reports.write_book(report).parent
    md = (out / "tables" / "01_scores.html").read_text()  # from the Markdown copy
    assert re.search(r"<table>\s*<thead>\s*<tr>\s*<th>a</th>", md) and "| --- |" not in md
    csv_page = (out / "tables" / "02_only.html").read_text()
    assert "<th>name</th><th>mAP</th>" in csv_page and "<td>61.5</td>" in csv_page
    assert "&lt;b&gt;x&lt;/b&gt;" in csv_page  # cell text is escaped
    assert "href='tables/02_only.html'" in (out / "index.html").read_text()


def test_book_folds_long_logs_and_can_hide_code(tmp_path):
    out = reports.write_book(make_report(tmp_path / "report")).parent
    page = (out / "01_first.html").read_text()
    folds = re.findall(r"<details class=\"trm-log\"><summary>(.*?)</summary>(.*?)</details>",
                       page, re.S)
    assert len(folds) == 1  # the 40-line stdout; the one-line stderr stays open
    summary, body = folds[0]
    assert "40 lines" in summary and "epoch 40 loss 0.40" in summary
    assert "epoch 1 loss 0.1" in body and "short warning" in page.split("</details>", 1)[1]
    # the switch: a checkbox and a CSS rule hiding code inputs when it is checked, no script
    assert 'id="trm-hide-code"' in page
    assert "body:has(#trm-hide-code:checked) .jp-CodeCell .jp-Cell-inputWrapper" in page
    assert 'class="jp-Cell jp-CodeCell' in page and "jp-Cell-inputWrapper" in page


def test_caption_comes_from_the_cell_that_writes_the_file(tmp_path):
    """A name mentioned before the cell that saves it (a setup cell) does not caption it; the
    markdown before the writing cell does. Links and emphasis become plain text."""
    from trm_lib.reports import book

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Intro."),
                nbformat.v4.new_code_cell('name = "01_curve"'),
                nbformat.v4.new_markdown_cell("The **curve** of [method.pseudo_low](x.md). Next."),
                nbformat.v4.new_code_cell('save_figure(fig, out / "figures" / "01_curve")'),
                nbformat.v4.new_markdown_cell("Later."),
                nbformat.v4.new_code_cell('show("01_curve")')]
    nbformat.write(nb, tmp_path / "01_x.ipynb")
    assert book.captions([tmp_path / "01_x.ipynb"])[("01_curve", True)] == \
        "The curve of method.pseudo_low."
