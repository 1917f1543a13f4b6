"""``glassbench report generate``: contents, fingerprint reuse, edge cases, import hygiene.

All numbers are SYNTHETIC (see conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from glassbench.reports.generate import FIGURE_NAMES, TABLE_NAMES
from tests.reports.conftest import (
    MLIP_NO_RUNS,
    SYNTHETIC_SOURCE,
    Expected,
    populate,
    write_experiment_csv,
)


def _report_rows(engine: Any) -> list[Any]:
    with engine.connect() as c:
        return c.execute(
            sa.text("SELECT kind, fingerprint, out_dir, formats FROM report ORDER BY id")
        ).all()


@pytest.mark.slow
def test_fingerprint_reuse_force_and_new_data(
    gb: Any, engine: Any, populated: Expected, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    first = gb.ok("report", "generate", "--out", str(out))
    assert "report written" in first.output
    html = out / "report.html"
    stamp = html.stat().st_mtime_ns
    text = html.read_text()

    again = gb.ok("report", "generate", "--out", str(out))
    assert "unchanged" in again.output and "--force" in again.output
    assert html.stat().st_mtime_ns == stamp and html.read_text() == text
    rows = _report_rows(engine)
    assert len(rows) == 1 and rows[0].out_dir == str(out.resolve())
    assert rows[0].formats == "html,md,csv"

    forced = gb.ok("report", "generate", "--out", str(out), "--force")
    assert "report written" in forced.output
    assert html.stat().st_mtime_ns != stamp
    assert len(_report_rows(engine)) == 1  # same data, same folder: one record

    # New data: one more SYNTHETIC experimental value -> new fingerprint, new record.
    extra = write_experiment_csv(tmp_path / "more.csv", [(2.0, "density_g_cm3", 1.6, None, "")])
    gb.ok("ingest", "experiment", str(extra))
    new = gb.ok("report", "generate", "--out", str(out))
    assert "report written" in new.output
    rows = _report_rows(engine)
    assert len(rows) == 2 and rows[0].fingerprint != rows[1].fingerprint

    # A format not written before for this data is generated, not reported as unchanged.
    other = tmp_path / "csv-only"
    gb.ok("report", "generate", "--out", str(other), "--format", "csv")
    assert not (other / "report.html").exists()
    res = gb.ok("report", "generate", "--out", str(other), "--format", "csv,html")
    assert "report written" in res.output and (other / "report.html").exists()
    res = gb.ok("report", "generate", "--out", str(other), "--format", "html")
    assert "unchanged" in res.output


def test_deleted_output_is_regenerated(gb: Any, engine: Any, tmp_path: Path) -> None:
    out = tmp_path / "r"
    gb.ok("report", "generate", "--out", str(out))
    (out / "report.md").unlink()
    res = gb.ok("report", "generate", "--out", str(out))
    assert "report written" in res.output and (out / "report.md").exists()


@pytest.mark.slow
def test_report_contents(gb: Any, engine: Any, populated: Expected, tmp_path: Path) -> None:
    out = tmp_path / "report"
    gb.ok("report", "generate", "--out", str(out))
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    # Self-contained: figures inline, nothing fetched.
    assert html.count('src="data:image/png;base64,') >= 5
    assert "http://" not in html and "https://" not in html
    assert "Content-Security-Policy" in html
    # Every file name is fixed by the code.
    for f in (out / "figures").iterdir():
        assert f.stem in FIGURE_NAMES
        assert f"figures/{f.name}" in md
    tables = {f.stem for f in (out / "tables").iterdir()}
    assert tables <= set(TABLE_NAMES)
    assert {
        "mae",
        "mae_points",
        "trends",
        "ss_chains",
        "na_environment",
        "edge_pp",
        "quench_mae",
        "extrapolation",
        "dispersion_rate",
        "traces",
        "crystal_volumes",
        "crystal_mae",
        "coverage",
        "protocols",
    } <= tables
    # An MLIP without runs is listed with zero runs and breaks nothing.
    cov = pd.read_csv(out / "tables" / "coverage.csv")
    row = cov[cov["mlip"] == MLIP_NO_RUNS].iloc[0]
    assert row["runs_done"] == 0 and row["compositions"] == 0
    # Quench-rate sensitivity: MLIP A has three rates side by side.
    qmae = pd.read_csv(out / "tables" / "quench_mae.csv")
    assert set(qmae["quench_rate_k_ps"]) == {0.5, 1.0, 5.0}
    assert "MAE @ 5 K/ps" in html and "MAE @ 0.5 K/ps" in html
    # Traces use the thermo temperature of each frame's step (file ingest).
    traces = pd.read_csv(out / "tables" / "traces.csv")
    assert set(traces["temperature_k"].round(6)) == {1500.0, 900.0, 300.0}
    # Crystal deviation: (153 - 150) / 150 = 2 %.
    cv = pd.read_csv(out / "tables" / "crystal_volumes.csv")
    assert cv.loc[cv["mlip"] == "SYNTH-MLIP-A", "deviation_pct"].iloc[0] == 2.0
    # Experiment missing for some quantities: said so, not estimated.
    assert "No experimental value ingested for:" in md
    assert "Shear modulus" in md.split("No experimental value ingested for:")[1].split("\n")[0]
    # Properties are shown by label with their unit.
    assert '<td class="t">Young&#x27;s modulus</td><td class="t">GPa</td>' in html
    assert "| Density | g/cm³ |" in md
    # Citations are escaped user input.
    assert SYNTHETIC_SOURCE in md
    # The study's name for three-coordinated P, never the project's P3 label.
    assert "P3: (three-coordinated P) fraction" in html
    assert "P3c fraction" not in html


def test_empty_database_gives_a_valid_report(gb: Any, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    res = gb.ok("report", "generate", "--out", str(out))
    assert "report written" in res.output
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    for text in (md, html):
        assert "There is no data in this database yet" in text
        assert "No experimental glass data has been ingested yet" in text
        assert "glassbench ingest experiment data.csv" in text
        assert "x,property,value,uncertainty,source" in text
    # Every new section says what is missing instead of drawing nothing.
    assert "quench rates yet: nothing is extrapolated" in md
    assert "No MLIP has done runs both with and without D3" in md
    assert "No completed run has analysed frames with a known temperature yet" in md
    assert "No relaxed crystal volumes recorded yet" in md
    assert not (out / "figures").exists() or not list((out / "figures").iterdir())


def test_lab_rate_option(gb: Any, engine: Any, tmp_path: Path) -> None:
    """--lab-rate is checked before anything is written and is part of the fingerprint."""
    out = tmp_path / "r"
    for bad in ("0", "-1", "nan", "inf"):
        res = gb("report", "generate", "--out", str(out), "--lab-rate", bad)
        assert res.exit_code == 2 and "--lab-rate" in res.output, (bad, res.output)
    res = gb("report", "generate", "--out", str(out), "--lab-rate", "fast")
    assert res.exit_code == 2
    assert _report_rows(engine) == []
    assert not (out / "report.html").exists()
    gb.ok("report", "generate", "--out", str(out), "--format", "md")
    assert "unchanged" in gb.ok("report", "generate", "--out", str(out), "--format", "md").output
    default = (out / "report.md").read_text()
    from glassbench.reports.extrapolation import DEFAULT_LAB_RATE_K_PS

    assert f"{DEFAULT_LAB_RATE_K_PS:g} K/ps" in default
    res = gb.ok("report", "generate", "--out", str(out), "--format", "md", "--lab-rate", "1e-9")
    assert "report written" in res.output
    assert (
        "Laboratory cooling rate for extrapolations: 1e-09 K/ps" in (out / "report.md").read_text()
    )
    rows = _report_rows(engine)
    assert len(rows) == 2 and rows[0].fingerprint != rows[1].fingerprint
    res = gb("report", "schedule", "--cron", "0 6 * * *", "--lab-rate", "-2")
    assert res.exit_code == 2 and "--lab-rate" in res.output
    # The help names the default the code uses.
    assert f"default {DEFAULT_LAB_RATE_K_PS:g} K/ps" in gb.ok("report", "generate", "--help").output


@pytest.mark.slow
def test_no_experiment_says_so(gb: Any, engine: Any, tmp_path: Path) -> None:
    populate(gb, engine, tmp_path, experiment=False)
    out = tmp_path / "r"
    gb.ok("report", "generate", "--out", str(out), "--format", "md,csv")
    md = (out / "report.md").read_text()
    assert "No experimental glass data has been ingested yet" in md
    assert "glassbench ingest experiment data.csv" in md
    assert not (out / "tables" / "mae.csv").exists()
    assert (out / "tables" / "trends.csv").exists()


def test_bad_options_exit_2(gb: Any, tmp_path: Path) -> None:
    res = gb("report", "generate", "--out", str(tmp_path / "x"), "--format", "html,pdf")
    assert res.exit_code == 2 and "pdf" in res.output
    afile = tmp_path / "file"
    afile.write_text("")
    res = gb("report", "generate", "--out", str(afile))
    assert res.exit_code == 2
    res = gb("report", "schedule", "--cron", "not a cron")
    assert res.exit_code == 2 and "crontab" in res.output
    res = gb("report", "schedule")
    assert res.exit_code == 2


@pytest.mark.slow
def test_trace_run_option(gb: Any, engine: Any, populated: Expected, tmp_path: Path) -> None:
    rid = next(iter(populated.run_ids.values()))
    out = tmp_path / "r"
    gb.ok("report", "generate", "--out", str(out), "--format", "csv", "--trace-run", str(rid))
    traces = pd.read_csv(out / "tables" / "traces.csv")
    assert set(traces["run_id"]) == {rid}


def test_unmigrated_database_fails_cleanly(tmp_path: Path) -> None:
    from tests.conftest import Cli

    db = tmp_path / "none.db"
    db.touch()  # an empty database: a missing file is refused earlier, naming --db
    res = Cli(f"sqlite:///{db}")("report", "generate", "--out", str(tmp_path / "r"))
    assert res.exit_code == 1 and "glassbench db upgrade" in res.output


WRAPPER = textwrap.dedent(
    """
    import importlib.abc, json, sys
    HEAVY = {"torch", "tensorflow", "tf_keras", "keras", "jax", "mace", "deepmd", "chgnet",
             "sevenn", "tensorpotential"}
    attempted = []

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                attempted.append(name)
            return None

    sys.meta_path.insert(0, Watch())
    from glassbench.cli import main
    code = 0
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    print("RESULT " + json.dumps({"code": code, "attempted": attempted, "loaded": loaded}))
    """
)


@pytest.mark.slow
def test_generate_imports_no_ml_framework(
    gb: Any, engine: Any, populated: Expected, db_url: str, tmp_path: Path
) -> None:
    """Not even an attempt (an ``import torch`` inside try/except would be caught too)."""
    script = tmp_path / "wrapper.py"
    script.write_text(WRAPPER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--db",
            db_url,
            "report",
            "generate",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout + proc.stderr
    result = json.loads(line[-1].removeprefix("RESULT "))
    assert result["code"] == 0, proc.stderr
    assert result["attempted"] == [] and result["loaded"] == []
    assert (tmp_path / "r" / "report.html").exists()
