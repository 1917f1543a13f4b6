"""The HTML report opens in headless Chromium without console errors and renders something.

All numbers are SYNTHETIC (see conftest.py).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.reports.conftest import MLIP_NO_RUNS, populate

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--window-size=1200,2000",
)  # fmt: skip

# Clicks a header of the coverage table twice and records the column after each click.
SORT_PROBE = """
<script>
(function () {
  var table = document.getElementById("t-coverage");
  var th = table.tHead.rows[0].cells[1];
  function col() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.cells[1].textContent;
    });
  }
  th.click();
  var asc = col();
  th.click();
  var desc = col();
  document.documentElement.setAttribute("data-probe", JSON.stringify({asc: asc, desc: desc}));
})();
</script>
"""


# Draws every figure of the page on a canvas and records its pixel variance: a figure that
# failed to decode, or decoded blank, shows up as width 0 or variance 0.
FIGURE_PROBE = """
<script>
window.addEventListener("load", function () {
  var out = {};
  document.querySelectorAll("figure").forEach(function (f) {
    var img = f.querySelector("img");
    var c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    if (!c.width || !c.height) { out[f.id] = {w: 0, v: 0}; return; }
    var ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    var d = ctx.getImageData(0, 0, c.width, c.height).data, n = 0, s = 0, s2 = 0;
    for (var i = 0; i < d.length; i += 16) {
      var g = (d[i] + d[i + 1] + d[i + 2]) / 765; n += 1; s += g; s2 += g * g;
    }
    out[f.id] = {w: c.width, v: s2 / n - (s / n) * (s / n)};
  });
  document.documentElement.setAttribute("data-figures", JSON.stringify(out));
});
</script>
"""


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


def _console_messages(stderr: str) -> list[str]:
    # Chromium logs every console message (errors, uncaught exceptions, CSP refusals) as a
    # CONSOLE line; the report itself never logs, so any such line is a failure.
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


@pytest.fixture
def chromium() -> Path:
    require(
        None
        if CHROMIUM.exists()
        else f"{CHROMIUM} is not installed: cannot test the HTML report in a browser"
    )
    return CHROMIUM


@pytest.mark.slow
def test_html_report_renders_without_console_errors(
    chromium: Path, sqlite_gb: tuple[Any, Any], tmp_path: Path
) -> None:
    import matplotlib.image

    gb, engine = sqlite_gb
    populate(gb, engine, tmp_path)
    out = tmp_path / "report"
    gb.ok("report", "generate", "--out", str(out), "--format", "html")
    html = out / "report.html"

    shot = tmp_path / "shot.png"
    proc = _chromium([f"--screenshot={shot}", html.as_uri()], tmp_path)
    assert shot.exists(), proc.stderr[-2000:]
    assert _console_messages(proc.stderr) == []
    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].var()) > 1e-3  # not a blank page

    # Sorting: a copy of the page with a probe that clicks a header twice.
    probe = tmp_path / "probe.html"
    probe.write_text(html.read_text().replace("</body>", SORT_PROBE + "</body>"))
    proc = _chromium(["--dump-dom", probe.as_uri()], tmp_path)
    assert _console_messages(proc.stderr) == []
    m = re.search(r'data-probe="([^"]*)"', proc.stdout)
    assert m, proc.stdout[:500]
    result = json.loads(m.group(1).replace("&quot;", '"'))
    asc = [int(v) for v in result["asc"]]
    assert asc == sorted(asc) and result["desc"] == [str(v) for v in sorted(asc, reverse=True)]
    assert asc[0] == 0  # the MLIP without runs
    assert MLIP_NO_RUNS in proc.stdout

    # Every figure, the new ones included, decodes in the browser and is not blank.
    figures = tmp_path / "figures.html"
    figures.write_text(html.read_text().replace("</body>", FIGURE_PROBE + "</body>"))
    proc = _chromium(["--dump-dom", figures.as_uri()], tmp_path)
    assert _console_messages(proc.stderr) == []
    m = re.search(r'data-figures="([^"]*)"', proc.stdout)
    assert m, proc.stdout[:500]
    drawn = json.loads(m.group(1).replace("&quot;", '"'))
    names = (
        {p.stem for p in (out / "figures").glob("*.png")} if (out / "figures").exists() else set()
    )
    for name in (
        "mae_bars", "na_s_share", "extrapolation_properties", "extrapolation_structure",
        "dispersion_rate", "traces_p_units", "traces_anions", "traces_na",
    ):  # fmt: skip
        assert f"f-{name}" in drawn, sorted(drawn)
    assert names <= {k.removeprefix("f-") for k in drawn}
    for fid, probe in drawn.items():
        assert probe["w"] > 100 and probe["v"] > 1e-4, (fid, probe)


def test_empty_report_renders(chromium: Path, sqlite_gb: tuple[Any, Any], tmp_path: Path) -> None:
    gb, _ = sqlite_gb
    out = tmp_path / "report"
    gb.ok("report", "generate", "--out", str(out), "--format", "html")
    shot = tmp_path / "shot.png"
    proc = _chromium([f"--screenshot={shot}", (out / "report.html").as_uri()], tmp_path)
    assert shot.exists(), proc.stderr[-2000:]
    assert _console_messages(proc.stderr) == []
