"""The report as an HTML book a course can host: ``reports/html/``.

:func:`write_book` turns every executed notebook of a report folder (``reports/NN_name.ipynb``,
written by :func:`trm_lib.reports.driver.run_notebooks`) into ``html/NN_name.html`` with nbconvert
(figures are embedded in the page), copies ``figures/`` and ``tables/`` next to them, renders
every table as an HTML page (``tables/<name>.html``, from the Markdown copy when there is one,
else the CSV), and writes ``html/index.html`` linking every notebook page and table page and
showing every PNG figure, each captioned from the notebook's own text (:func:`captions`).
Notebook pages fold long stream outputs (training logs) into ``<details>`` and carry a
"hide code" switch (CSS only: no script, works offline). The folder is self-contained: serve it
with any static web server (``python -m http.server -d reports/html``) or copy it to a course site.
"""

from __future__ import annotations

import csv
import html
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trm_lib.utils.io import atomic_write

__all__ = ["FOLD_LINES", "captions", "write_book"]

#: A stream output longer than this many lines is folded on the notebook's page.
FOLD_LINES = 30

_STYLE = """body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}
table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:32em}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:85%}
figcaption small{color:#666}"""


# nbconvert's lab template, minus the scripts it loads from CDNs (require.js, MathJax, mermaid,
# the widget renderer): a course site may be offline, and a page waiting on a dead CDN loads
# slowly or not at all. What is lost: TeX in Markdown shows as its source, widget outputs show
# their text fallback (the explorer is interactive only in a live kernel anyway).
_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style>
.trm-toggle{position:sticky;top:0;z-index:10;background:#fff;padding:.3em 1em;font:90% sans-serif;
border-bottom:1px solid #ddd}
body:has(#trm-hide-code:checked) .jp-CodeCell .jp-Cell-inputWrapper{display:none}
details.trm-log>summary{cursor:pointer;font-family:monospace;padding:.2em 0}
</style>{%- endblock extra_css -%}
{%- block body_header -%}{{ super() }}
<div class="trm-toggle"><label><input type="checkbox" id="trm-hide-code"> hide code</label> ·
<a href="index.html">book index</a></div>
{%- endblock body_header -%}
{%- macro fold(output, inner) -%}
{%- set lines = output.text.rstrip().splitlines() -%}
{%- if lines | length > FOLD_LINES -%}
<details class="trm-log"><summary>log: {{ lines | length }} lines (click to unfold); last:
{{ lines[-1] | strip_ansi | escape_html }}</summary>{{ inner }}</details>
{%- else -%}{{ inner }}{%- endif -%}
{%- endmacro -%}
{%- block stream_stdout -%}{{ fold(output, super()) }}{%- endblock stream_stdout -%}
{%- block stream_stderr -%}{{ fold(output, super()) }}{%- endblock stream_stderr -%}
""".replace("FOLD_LINES", str(FOLD_LINES))


def _notebook_html(path: Path) -> str:
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file="trm_offline.html.j2",
                            extra_loaders=[DictLoader({"trm_offline.html.j2": _OFFLINE_TEMPLATE})])
    body, _ = exporter.from_filename(str(path))
    return body


# a file name a notebook's code writes: "01_samples" (complete) or f"05_attention_test{i:05d}"
# (a prefix, the literal part before the first placeholder)
_NAME_IN_CODE = re.compile(r"""["'](\d\d_[\w.-]+?)(?:\.(?:csv|md|png|svg|pdf))?(["'{])""")


def _caption_of(markdown: str, limit: int = 200) -> str:
    """A markdown cell's heading, then the first sentence of its first paragraph, as plain text."""
    head, body = "", []
    for line in markdown.strip().splitlines():
        if line.startswith("#") and not head and not body:
            head = line.lstrip("#").strip()
        elif line.strip():
            body.append(line.strip())
        elif body:
            break
    text = " ".join(body)
    text = re.sub(r"\[([^]]*)\]\([^)]*\)", r"\1", text)  # [text](link) -> text
    text = re.sub(r"\*+|`+", "", text)
    m = re.search(r"^.+?[.!?](?=\s|$)", text)
    first = m.group(0) if m else text
    if len(first) > limit:
        first = first[:limit].rsplit(" ", 1)[0] + " …"
    return " — ".join(x for x in (head, first) if x)


def captions(notebooks: Sequence[Path]) -> dict[tuple[str, bool], str]:
    """``(name, exact) -> caption`` for every figure or table name the notebooks' code cells
    write, captioned from the markdown cell before that code cell: the notebook's own words
    for what the figure shows. ``exact`` is False for a name built with an f-string, matched as
    a prefix (:func:`_caption_for`)."""
    import nbformat

    out: dict[tuple[str, bool], str] = {}
    saved: set[tuple[str, bool]] = set()  # names seen on a line that writes figures/ or tables/
    for path in notebooks:
        try:
            cells = nbformat.read(path, as_version=4).cells
        except Exception:  # noqa: BLE001 - a half-written copy: captions are a nicety
            continue
        text = ""
        for cell in cells:
            if cell.cell_type == "markdown":
                text = _caption_of(cell.source)
            elif cell.cell_type == "code" and text:
                for line in cell.source.splitlines():
                    writes = "figures" in line or "tables" in line
                    for name, end in _NAME_IN_CODE.findall(line):
                        key = (name, end != "{")
                        if key not in saved and (writes or key not in out):
                            out[key] = text
                            if writes:
                                saved.add(key)
    return out


def _caption_for(stem: str, known: Mapping[tuple[str, bool], str]) -> str:
    exact = known.get((stem, True))
    if exact is not None:
        return exact
    prefixes = [n for n, ex in known if not ex and stem.startswith(n)]
    return known[(max(prefixes, key=len), False)] if prefixes else ""


def _table_page(path: Path, caption: str) -> str:
    """A table file as a standalone HTML page: Markdown through mistune (nbconvert's own
    Markdown renderer, with its table plugin), CSV as an HTML table with a header row."""
    if path.suffix == ".md":
        import mistune

        body = mistune.create_markdown(escape=True, plugins=["table"])(path.read_text())
    else:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) if rows else ""
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                        for r in rows[1:])
        body = f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"
    title = html.escape(path.stem)
    note = f"<p>{html.escape(caption)}</p>" if caption else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{_STYLE}</style></head><body>
<p><a href="../index.html">book index</a></p>
<h1>{title}</h1>{note}
{body}
<p>Source: <a href="{html.escape(path.name)}">{html.escape(path.name)}</a></p>
</body></html>
"""


def _tables(out: Path, files: Sequence[str], known: Mapping[tuple[str, bool], str]) -> list[str]:
    """Write ``tables/<stem>.html`` per table (the Markdown copy if any, else the CSV); returns
    the index's list items: the page, with the raw files as secondary links."""
    stems: dict[str, list[str]] = {}
    for f in files:
        if f.endswith((".md", ".csv")):
            stems.setdefault(f.rsplit(".", 1)[0], []).append(f)
    items = []
    for stem, raw in sorted(stems.items()):
        src = next((f for f in raw if f.endswith(".md")), raw[0])
        caption = _caption_for(Path(stem).name, known)
        with atomic_write(out / f"{stem}.html") as fh:
            fh.write(_table_page(out / src, caption))
        extra = ", ".join(f"<a href='{html.escape(f)}'>{html.escape(f.rsplit('.', 1)[1])}</a>"
                          for f in sorted(raw))
        items.append(f"<li><a href='{html.escape(stem)}.html'>{html.escape(Path(stem).name)}</a>"
                     f"{' — ' + html.escape(caption) if caption else ''} <small>({extra})</small>"
                     "</li>")
    return items


def write_book(report_dir: str | os.PathLike, notebooks: Mapping[Path, Mapping[str, Any]],
               artifact_dirs: Sequence[str] = ("figures", "tables")) -> Path:
    """Write ``<report_dir>/html/`` (see the module docstring) for the executed ``notebooks``
    (path -> its run record: status, seconds, smoke, git; :func:`trm_lib.reports.driver.write_book`
    passes them) and the files under ``artifact_dirs``; returns ``index.html``."""
    report = Path(report_dir)
    out = report / "html"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for nb, meta in notebooks.items():
        with atomic_write(out / f"{nb.stem}.html") as fh:
            fh.write(_notebook_html(nb))
        rows.append(f"<tr><td><a href='{nb.stem}.html'>{html.escape(nb.stem)}</a></td>"
                    f"<td>{html.escape(str(meta.get('status', 'not recorded')))}</td>"
                    f"<td>{meta.get('seconds', '')}</td><td>{meta.get('smoke', '')}</td>"
                    f"<td><code>{html.escape(str(meta.get('git', '')))}</code></td></tr>")
    files: dict[str, list[str]] = {}
    for sub in artifact_dirs:
        shutil.rmtree(out / sub, ignore_errors=True)
        if (report / sub).is_dir():
            shutil.copytree(report / sub, out / sub,
                            ignore=shutil.ignore_patterns(".*"))  # atomic-write temp files
        files[sub] = sorted(p.relative_to(out).as_posix() for p in (out / sub).rglob("*")
                            if p.is_file()) if (out / sub).is_dir() else []
    known = captions(list(notebooks))
    figures = []
    for f in files.get("figures", []):
        name = html.escape(f)
        if f.endswith(".png"):
            caption = html.escape(_caption_for(Path(f).stem, known))
            figures.append(f"<figure><a href='{name}'><img src='{name}' alt='{caption or name}'>"
                           f"</a><figcaption>{caption + '<br>' if caption else ''}"
                           f"<small>{name}</small></figcaption></figure>")
    tables = "".join(_tables(out, files.get("tables", []), known))
    others = [f for sub in artifact_dirs for f in files[sub]
              if not (f.startswith("figures/") and f.endswith(".png"))
              and not (f.startswith("tables/") and f.endswith((".md", ".csv")))]
    links = "".join(f"<li><a href='{html.escape(f)}'>{html.escape(f)}</a></li>" for f in others)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>TRM-ML report</title>
<style>{_STYLE}</style></head><body>
<h1>TRM-ML report</h1>
<p>Generated by <code>python -m trm_lib report</code>; regenerate it, never edit it.</p>
<h2>Notebooks</h2>
<table><thead><tr><th>notebook</th><th>status</th><th>seconds</th><th>smoke</th>
<th>git revision</th></tr></thead><tbody>{''.join(rows) or '<tr><td>(none)</td></tr>'}
</tbody></table>
<h2>Figures</h2>
{''.join(figures) or '<p>(none)</p>'}
<h2>Tables</h2>
<ul>{tables or '<li>(none)</li>'}</ul>
<h2>Other files</h2>
<ul>{links or '<li>(none)</li>'}</ul>
</body></html>
"""
    index = out / "index.html"
    with atomic_write(index) as fh:
        fh.write(page)
    return index
