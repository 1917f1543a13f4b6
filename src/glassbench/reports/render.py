"""A report as a small document model, and its HTML, Markdown and CSV renderings.

The HTML page is self-contained: CSS and a few lines of JS inline, figures as base64 PNG
``data:`` URIs, and a Content-Security-Policy that forbids fetching anything, so the page shows
the same offline, from an e-mail attachment or from an archive. Every string that comes from
the database (MLIP names, citations) is escaped: they are user input.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pandas as pd

from glassbench.csvsafe import csv_text as csv_safe_text
from glassbench.reports.keys import key_of

MISSING = "—"


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Table:
    """``name`` is the fixed CSV file stem; ``data`` is written to CSV as is (text cells that
    would start a spreadsheet formula escaped); ``headers``, when given, are the display
    table's headers as shown (e.g. MLIP names, which must not be humanised like column names)."""

    name: str
    title: str
    data: pd.DataFrame
    display: pd.DataFrame | None = None
    note: str = ""
    collapsed: bool = False
    headers: tuple[str, ...] | None = None

    def display_headers(self) -> list[str]:
        df = self.display if self.display is not None else self.data
        if self.headers is not None:
            return list(self.headers)
        return [column_header(str(c)) for c in df.columns]


@dataclass(frozen=True)
class Figure:
    """``name`` is the fixed PNG file stem."""

    name: str
    title: str
    png: bytes
    caption: str = ""


Block = Text | Code | Table | Figure


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    meta: list[tuple[str, str]]
    sections: list[Section]

    def tables(self) -> list[Table]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table)]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


# Columns outside the key vocabulary whose humanised name would lose a unit or read badly.
_HEADERS = {
    "quench_rates_k_ps": "Quench rates (K/ps)",
    "n_sources": "Sources",
    "composition_id": "Composition id",
    "unit": "Unit",
    "family": "Family",
    "value": "Value",
    "uncertainty": "Uncertainty",
    "source": "Source",
}


def column_header(col: str) -> str:
    """Display header of a column: from the key enum where it is one, else humanised."""
    if col in _HEADERS:
        return _HEADERS[col]
    k = key_of(col)
    if k is not None:
        return k.header
    for suffix, what in (("_std", "seed std"), ("_stderr", "stderr")):
        base = key_of(col.removesuffix(suffix)) if col.endswith(suffix) else None
        if base is not None:
            return f"{base.label} {what}" + (f" ({base.unit})" if base.unit else "")
    if "_" not in col:
        return col  # already a display header
    text = col.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def format_cell(v: object) -> str:
    if v is None:
        return MISSING
    if isinstance(v, float):
        return MISSING if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    try:
        if pd.isna(v):
            return MISSING
    except (TypeError, ValueError):
        pass
    if hasattr(v, "item"):  # numpy scalar
        return format_cell(v.item())
    return str(v)


def _numeric_value(v: object) -> str | None:
    if isinstance(v, bool):
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
        return repr(float(v))
    return None


# --- HTML --------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f3f3f3;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.t{text-align:left;white-space:nowrap}td.m{color:#999;text-align:center}
img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto}
.meta td{text-align:left;border:none;padding:.05rem .6rem .05rem 0}
.note{color:#555;font-size:.9rem}figcaption{color:#555;font-size:.9rem}
nav a{margin-right:1rem}
"""

# Sort on click: numbers by their data-v value, text case-insensitively, missing cells last.
_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute("aria-sort") !== "ascending";
    th.parentNode.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    function val(row) {
      var c = row.cells[idx];
      if (!c || c.classList.contains("m")) { return null; }
      var v = c.getAttribute("data-v");
      return v === null ? c.textContent.toLowerCase() : parseFloat(v);
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = val(a), y = val(b);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
      var r = x < y ? -1 : (x > y ? 1 : 0);
      return asc ? r : -r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _html_table(t: Table) -> str:
    df = t.display if t.display is not None else t.data
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in t.display_headers())
    rows = []
    for rec in df.itertuples(index=False, name=None):
        cells = []
        for v in rec:
            text = format_cell(v)
            if text == MISSING:
                cells.append(f'<td class="m" title="missing">{MISSING}</td>')
                continue
            num = _numeric_value(v)
            if num is not None:
                cells.append(f'<td data-v="{e(num)}">{e(text)}</td>')
            else:
                cells.append(f'<td class="t">{e(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    body = "\n".join(rows) if rows else ""
    table = (
        f'<table class="sortable" id="t-{e(t.name)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}\n</tbody></table>"
    )
    if df.empty:
        table = '<p class="note">(no rows)</p>'
    note = f'<p class="note">{e(t.note)}</p>' if t.note else ""
    csv = f'<p class="note">CSV: <code>tables/{e(t.name)}.csv</code></p>'
    if t.collapsed:
        return (
            f"<details><summary>{e(t.title)} ({len(df)} rows)</summary>{note}{table}{csv}</details>"
        )
    return f"<h3>{e(t.title)}</h3>{note}{table}{csv}"


def _html_block(b: Block) -> str:
    e = html.escape
    if isinstance(b, Text):
        return f"<p>{e(b.text)}</p>"
    if isinstance(b, Code):
        return f"<pre><code>{e(b.text)}</code></pre>"
    if isinstance(b, Table):
        return _html_table(b)
    data = base64.b64encode(b.png).decode("ascii")
    cap = f"<figcaption>{e(b.caption)}</figcaption>" if b.caption else ""
    return (
        f'<figure id="f-{e(b.name)}"><img alt="{e(b.title)}" '
        f'src="data:image/png;base64,{data}">{cap}</figure>'
    )


def to_html(doc: Document) -> str:
    e = html.escape
    nav = " ".join(f'<a href="#{e(s.anchor)}">{e(s.title)}</a>' for s in doc.sections)
    meta = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in doc.meta)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(doc.title)}</h1>",
        f'<table class="meta">{meta}</table>',
        f"<nav>{nav}</nav>",
    ]
    for s in doc.sections:
        parts.append(f'<section id="{e(s.anchor)}"><h2>{e(s.title)}</h2>')
        parts.extend(_html_block(b) for b in s.blocks)
        parts.append("</section>")
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"


# --- Markdown ----------------------------------------------------------------------------


# Markdown punctuation that could format, link or break a table row; backslash-escaped.
_MD_PUNCT = re.compile(r"([\\`*_\[\]|~#!])")
# Line breaks and other control characters: a user string stays on its line (a newline would
# end a table row or start a new block).
_MD_BREAK = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _md_escape(text: str) -> str:
    """``text`` shown literally in Markdown: no formatting, no link, no raw HTML, and one
    table cell even with ``|`` or a newline in it. ``<``, ``>`` and ``&`` become entities
    (every renderer decodes those, not every one honours ``\\<``)."""
    text = _MD_BREAK.sub(" ", text)
    text = _MD_PUNCT.sub(r"\\\1", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_fence(text: str) -> str:
    # A fence longer than any run of backticks in the text: the block cannot be closed early.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _md_table(t: Table) -> str:
    df = t.display if t.display is not None else t.data
    lines = [f"### {_md_escape(t.title)}", ""]
    if t.note:
        lines += [_md_escape(t.note), ""]
    if df.empty:
        lines += ["(no rows)", ""]
    else:
        lines.append("| " + " | ".join(_md_escape(h) for h in t.display_headers()) + " |")
        lines.append("|" + "|".join("---" for _ in df.columns) + "|")
        for rec in df.itertuples(index=False, name=None):
            lines.append("| " + " | ".join(_md_escape(format_cell(v)) for v in rec) + " |")
        lines.append("")
    lines += [f"CSV: `tables/{t.name}.csv`", ""]
    return "\n".join(lines)


def to_markdown(doc: Document, *, figure_dir: str = "figures") -> str:
    lines = [f"# {_md_escape(doc.title)}", ""]
    lines += [f"- {_md_escape(k)}: {_md_escape(v)}" for k, v in doc.meta]
    lines.append("")
    for s in doc.sections:
        lines += [f"## {_md_escape(s.title)}", ""]
        for b in s.blocks:
            if isinstance(b, Text):
                lines += [_md_escape(b.text), ""]
            elif isinstance(b, Code):
                fence = _md_fence(b.text)
                lines += [fence, b.text, fence, ""]
            elif isinstance(b, Table):
                lines.append(_md_table(b))
            else:
                lines += [f"![{_md_escape(b.title)}]({figure_dir}/{b.name}.png)", ""]
                if b.caption:
                    lines += [f"*{_md_escape(b.caption)}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- files -------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a temporary sibling and rename, so readers never see half a file.

    The temporary file is created new (O_EXCL, random name), so a symbolic link planted in
    the folder is never followed; the rename replaces a link at ``path`` instead of writing
    through it.
    """
    import os
    import tempfile

    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_text(df: pd.DataFrame) -> str:
    """The table as CSV; text cells and headers that a spreadsheet would run as a formula get
    a leading ``'`` (:mod:`glassbench.csvsafe`), numeric columns are written as they are."""
    safe = df.copy(deep=False)
    for i in range(df.shape[1]):
        s = df.iloc[:, i]
        if pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s):
            safe.isetitem(i, s.map(_safe_text, na_action="ignore"))
    safe.columns = [_safe_text(c) for c in df.columns]
    # pandas is untyped here (Any); with no path, to_csv returns the text.
    return cast(str, safe.to_csv(index=False, lineterminator="\n"))


def _safe_text(v: object) -> object:
    return csv_safe_text(v) if isinstance(v, str) else v


def table_names(tables: Sequence[Table]) -> list[str]:
    return [t.name for t in tables]
