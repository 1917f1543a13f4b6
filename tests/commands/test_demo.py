"""`glassbench demo --tiny`: the main job on embedded defaults, end to end (CHGNet from its wheel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli, require_module

require_module("chgnet", "the demo needs CHGNet: pip install 'glassbench[chgnet]'")


@pytest.mark.slow
def test_demo_tiny(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'glassbench.db'}"
    gb = Cli(url)
    out = gb.ok("demo", "--tiny", "--out", str(tmp_path / "demo")).output
    assert "no experimental glass data has been ingested" in out
    assert out.count('glassbench sql "') == 3
    # The demo says what it is: 6,000x the study's rate, 26-atom cells.
    assert "30000 K/ps, 6,000x the study's standard 5 K/ps, in cells of 26 atoms" in out
    report = tmp_path / "demo" / "report" / "report.html"
    assert report.is_file() and str(report) in out
    html = report.read_text()
    assert "chgnet-pbe" in html and "chgnet-r2scan" in html and "data:image/png;base64," in html
    assert (
        "6,000x the study&#x27;s standard 5 K/ps" in html or "6,000x the study's standard" in html
    )

    rows = json.loads(
        gb.ok("sql", "SELECT * FROM run_summary ORDER BY mlip, x", "--format", "json").output
    )
    assert [(r["mlip"], r["x"], r["status"]) for r in rows] == [
        ("chgnet-pbe", 0.0, "done"),
        ("chgnet-pbe", 3.5, "done"),
        ("chgnet-r2scan", 0.0, "done"),
        ("chgnet-r2scan", 3.5, "done"),
    ]
    for r in rows:
        assert r["protocol"] == "demo"
        assert r["n_atoms"] == 26
        assert 1.0 < r["density_g_cm3"] < 4.0
        assert r["bulk_modulus_gpa"] is not None
        # Unit fractions are fractions and every P atom is classified.
        assert 0.0 <= r["p0"] <= 1.0 and 0.0 <= r["bs"] <= 1.0
    # Structure is averaged over the production window: several frames, not one snapshot.
    detail = json.loads(
        gb.ok("sql", "SELECT window_frames FROM run_detail", "--format", "json").output
    )
    assert all(d["window_frames"] >= 3 for d in detail), detail
    crystals = json.loads(gb.ok("sql", "SELECT * FROM crystal_volume", "--format", "json").output)
    assert len(crystals) == 2
    assert all(c["exp_volume_per_fu_a3"] == pytest.approx(171.2) for c in crystals)
    mae = json.loads(gb.ok("sql", "SELECT * FROM mlip_mae", "--format", "json").output)
    # Only the crystal volume has a reference: no glass experiment is shipped or invented.
    assert {m["property"] for m in mae} == {"volume_per_formula_unit_a3"}
    assert "integrity checks passed" in gb.ok("db", "check").output


def test_demo_out_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    db = tmp_path / "glassbench.db"
    out = tmp_path / "not-a-folder"
    out.write_text("x")
    res = Cli(f"sqlite:///{db}")("demo", "--out", str(out))
    assert res.exit_code == 2, res.output
    assert "--out" in res.output and str(out) in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not db.exists()  # nothing written
