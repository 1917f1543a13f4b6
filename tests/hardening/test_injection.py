"""User strings in CSV, HTML and Markdown output never become formulas, markup or script.

Hostile MLIP names and experiment sources go in through the real commands (``mlip add``,
``ingest traj``, ``ingest experiment``; a run error through the run store's ``fail``); the
report (HTML, Markdown, CSV), ``sql --format csv`` and ``mlip list --format csv`` come out
through the real commands, on SQLite and PostgreSQL. All numbers are SYNTHETIC.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest

from glassbench.csvsafe import FORMULA_START, csv_cell, is_number_text
from tests.reports.conftest import write_traj
from tests.reports.test_browser import _chromium, _console_messages, chromium  # noqa: F401

# MLIP names: a DDE payload, a script tag, the other formula starters, mathtext, a legend-hidden
# label, a table-breaking pipe, Markdown link syntax, and names that clash with column names.
NAMES = (
    "=cmd|' /C calc'!A0",
    "<script>alert(1)</script>",
    "+SUM(1+1)",
    "-2+3",
    "@evil",
    "$\\frac{$",
    "_hidden",
    "a|b",
    "[x](javascript:alert(1))",
    "property",
    "unit",
)
SCRIPT_NAME = NAMES[1]
SOURCES = (
    "@SUM(1+1)",
    '=HYPERLINK("http://x","y")',
    "<img src=x onerror=alert(1)>",
    "-1+1 | `code` *em* [l](javascript:alert(2)) </script><!--",
    "-0.5",  # a plain number as text: stays as it is
)
RUN_ERROR = '=HYPERLINK("http://x") <script>alert(3)</script>'
FRACTIONS = ("p0", "nbs", "bs")  # one property per source beyond density


def bad_csv_cells(text: str) -> list[str]:
    """Cells of a CSV text that a spreadsheet would run as a formula."""
    return [
        cell
        for row in csv.reader(io.StringIO(text))
        for cell in row
        if cell.startswith(FORMULA_START) and not is_number_text(cell)
    ]


def test_csv_cell_rules() -> None:
    assert [csv_cell(v) for v in ("=1+2", "+x", "-cmd", "@SUM(A1)", "\tx", "\r=1", "MP0", "")] == [
        "'=1+2", "'+x", "'-cmd", "'@SUM(A1)", "'\tx", "'\r=1", "MP0", "",
    ]  # fmt: skip
    # Numbers stay numbers, as values and as plain decimal text.
    assert [csv_cell(v) for v in (-1.5, -3, None, "-0.5", "+2", "-1e-3")] == [
        -1.5, -3, "", "-0.5", "+2", "-1e-3",
    ]  # fmt: skip
    assert [csv_cell(v) for v in ("-1+1", "-0.5)", "- 1", "-")] == ["'-1+1", "'-0.5)", "'- 1", "'-"]
    # The checker the tests below rely on does find an unescaped formula.
    assert bad_csv_cells('a,b\n=1+1,-0.5\n"@x",\'=y\n') == ["=1+1", "@x"]


def test_markdown_escape_keeps_one_cell_and_no_markup() -> None:
    from glassbench.reports.render import _md_escape

    text = _md_escape("a|b\nc\r\n# d <script>x</script> [l](javascript:y) `c` *e* _f_ &amp; \\|")
    assert "\n" not in text and "\r" not in text
    assert re.search(r"(?<!\\)\|", text) is None  # every pipe escaped
    assert "<" not in text and ">" not in text and "&amp;amp;" in text
    assert re.search(r"(?<!\\)[\[\]`*_#]", text) is None
    assert text.endswith("\\\\\\|")  # a literal backslash then a literal pipe


def test_figure_labels_are_plain_text() -> None:
    from glassbench.reports.figures import plain

    assert plain("$\\frac{$") == "\\$\\frac{\\$" and plain("_x") == " _x" and plain("MP0") == "MP0"


def _add_data(gb: Any, engine: Any, tmp_path: Path) -> None:
    from glassbench.service import runs

    for i, name in enumerate(NAMES):
        gb.ok("mlip", "add", "--arch", "chgnet", "--", name)
        path = tmp_path / f"run{i}.extxyz"
        write_traj(path, name, 0.0, 1.0, 1)
        gb.ok(
            "ingest", "traj", str(path), "--mlip", name, "--x", "0", "--quench-rate", "1",
            "--seed", "1", "--stage", "quench",
        )  # fmt: skip
    # The last MLIP gets a second run that fails with a hostile error text.
    path = tmp_path / "failed.extxyz"
    write_traj(path, NAMES[-1], 1.0, 1.0, 1)
    out = gb.ok(
        "ingest", "traj", str(path), "--mlip", NAMES[-1], "--x", "1", "--quench-rate", "1",
        "--seed", "1", "--stage", "quench",
    ).output  # fmt: skip
    rid = int(re.search(r"run (\d+) ", out).group(1))  # type: ignore[union-attr]
    runs.fail(engine, rid, RUN_ERROR)
    rows = ["x,property,value,uncertainty,source"]
    for src, prop in zip(SOURCES, ("density_g_cm3", *FRACTIONS, "nbo"), strict=True):
        value = 1.45 if prop == "density_g_cm3" else 0.1
        quoted = '"' + src.replace('"', '""') + '"'
        rows.append(f"0,{prop},{value},,{quoted}")
    exp = tmp_path / "exp.csv"
    exp.write_text("\n".join(rows) + "\n")
    gb.ok("ingest", "experiment", str(exp))


@pytest.fixture
def hostile(gb: Any, engine: Any, tmp_path: Path) -> Path:
    """A report of a database full of hostile strings; returns its folder."""
    _add_data(gb, engine, tmp_path)
    out = tmp_path / "report"
    gb.ok("report", "generate", "--out", str(out))
    return out


@pytest.mark.slow
def test_csv_outputs_hold_no_formula(gb: Any, hostile: Path) -> None:
    tables = sorted((hostile / "tables").glob("*.csv"))
    assert len(tables) >= 8
    for path in tables:
        assert bad_csv_cells(path.read_text()) == [], path.name
    coverage = (hostile / "tables" / "coverage.csv").read_text()
    assert "'=cmd|' /C calc'!A0" in coverage and "'-2+3" in coverage
    matrix = next(csv.reader(io.StringIO((hostile / "tables" / "mae_matrix.csv").read_text())))
    assert "'@evil" in matrix and "property" in matrix and "unit" in matrix
    experiment = (hostile / "tables" / "experiment.csv").read_text()
    assert "'@SUM(1+1)" in experiment and "'=HYPERLINK(" in experiment
    # Numbers are not escaped: the mean signed errors are negative and stay numbers.
    mae = list(csv.DictReader(io.StringIO((hostile / "tables" / "mae.csv").read_text())))
    assert any(float(r["mean_error"]) < 0 for r in mae)
    assert "-0.5" in [r[-1] for r in csv.reader(io.StringIO(experiment))]

    for query in (
        "SELECT name FROM mlip",
        "SELECT source, value - 2 AS negative FROM experiment",
        "SELECT * FROM run_summary",
        "SELECT id, error FROM run WHERE error IS NOT NULL",
    ):
        text = gb.ok("sql", "--format", "csv", query).stdout
        assert bad_csv_cells(text) == [], query
    assert "'=HYPERLINK(" in gb.ok("sql", "--format", "csv", "SELECT error FROM run").stdout
    text = gb.ok("sql", "--format", "csv", "SELECT value - 2 AS v FROM experiment").stdout
    assert all(float(v) < 0 for v in text.split()[1:])  # negative numbers, unescaped
    # JSON is for programs: values as stored.
    assert NAMES[0] in gb.ok("sql", "--format", "json", "SELECT name FROM mlip").stdout
    text = gb.ok("mlip", "list", "--format", "csv").stdout
    assert bad_csv_cells(text) == [] and "'=cmd|' /C calc'!A0" in text


def _html_checks(html: str) -> None:
    import lxml.html

    from glassbench.reports.render import _JS

    doc = lxml.html.document_fromstring(html)
    scripts = doc.xpath("//script")
    assert len(scripts) == 1 and scripts[0].text == _JS
    for el in doc.iter():
        if not isinstance(el.tag, str):
            continue  # comments: the report writes none, an injected <!-- would show here
        for attr, value in el.attrib.items():
            assert not attr.lower().startswith("on"), (el.tag, attr)
            if attr in ("src", "href"):
                assert value.startswith(("data:image/png;base64,", "#")), (el.tag, value)
    assert doc.xpath("//comment()") == []
    text = doc.text_content()
    for s in (*NAMES, *SOURCES):
        assert s in text, s  # shown as text, verbatim
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "'=cmd" not in html  # the CSV escape is for CSV only


_MD_LINK = re.compile(r"(?<!\\)\]\(")


def _markdown_checks(md: str) -> None:
    lines, fenced = [], False
    for line in md.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    prose = "\n".join(lines)
    assert "<" not in prose and ">" not in prose  # no raw HTML outside code blocks
    for m in _MD_LINK.finditer(prose):  # the only links are the report's own figures
        assert prose[m.end() :].startswith("figures/"), prose[m.start() - 40 : m.end() + 40]
    # Every table row has as many cells as its header.
    widths: list[int] = []
    for line in lines:
        if not line.startswith("|"):
            widths = []
            continue
        n = len(re.findall(r"(?<!\\)\|", line))
        widths.append(n)
        assert n == widths[0], line
    for name in ("&lt;script&gt;alert(1)&lt;/script&gt;", "a\\|b", "$\\\\frac{$"):
        assert name in prose, name


@pytest.mark.slow
def test_html_and_markdown_show_user_strings_as_text(hostile: Path) -> None:
    _html_checks((hostile / "report.html").read_text())
    _markdown_checks((hostile / "report.md").read_text())
    assert (hostile / "figures" / "trends_properties.png").stat().st_size > 0


# Installed first thing in <head>: records any dialog and any script error on the root element.
DIALOG_PROBE = """<script>
(function () {
  var root = document.documentElement;
  function mark(kind) { return function () { root.setAttribute("data-injected", kind); }; }
  window.alert = mark("alert"); window.confirm = mark("confirm"); window.prompt = mark("prompt");
  window.addEventListener("error", mark("error"));
})();
</script>"""


@pytest.mark.slow
def test_html_report_runs_no_injected_script_in_chromium(
    chromium: Path,  # noqa: F811
    hostile: Path,
    tmp_path: Path,
) -> None:
    html = (hostile / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("<head>", "<head>" + DIALOG_PROBE, 1))
    proc = _chromium(["--dump-dom", probe.as_uri()], tmp_path)
    assert _console_messages(proc.stderr) == [], proc.stderr[-2000:]
    assert "</html>" in proc.stdout, proc.stderr[-2000:]
    assert 'data-injected="' not in proc.stdout
    # The probe itself works: a page that does call alert() is caught.
    bait = tmp_path / "bait.html"
    bait.write_text(probe.read_text().replace("</body>", "<script>alert(1)</script></body>"))
    caught = _chromium(["--dump-dom", bait.as_uri()], tmp_path)
    assert 'data-injected="alert"' in caught.stdout
    # The hostile names reached the page as text.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in proc.stdout


def test_text_table_shows_control_characters_escaped() -> None:
    from glassbench.commands._common import format_rows

    out = format_rows(["name"], [["a\x1b[31mred\nb"]], "table")
    assert "\x1b" not in out and "\\x1b[31mred\\nb" in out
    assert len(out.splitlines()) == 4  # header, rule, one row, count
