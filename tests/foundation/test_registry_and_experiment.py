from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, table_counts


def test_mlip_add_records_sha256(gb: Cli, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"not really a model, but bytes to hash")
    gb.ok("mlip", "add", "MP0", "--arch", "mace", "--model", str(model), "--functional", "PBE")
    rows = json.loads(gb.ok("mlip", "list", "--format", "json").output)
    assert rows[0]["name"] == "MP0"
    full = json.loads(gb.ok("sql", "SELECT model_sha256 FROM mlip", "--format", "json").stdout)
    assert full[0]["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # Same registration again: a no-op. Different model under the same name: refused.
    again = gb.ok(
        "mlip", "add", "MP0", "--arch", "mace", "--model", str(model), "--functional", "PBE"
    )
    assert "MLIP 'MP0' unchanged" in again.output and "registered" not in again.output
    model.write_bytes(b"changed")
    res = gb("mlip", "add", "MP0", "--arch", "mace", "--model", str(model), "--functional", "PBE")
    assert res.exit_code == 2 and "already registered" in res.output
    gb.ok(
        "mlip",
        "add",
        "MP0",
        "--arch",
        "mace",
        "--model",
        str(model),
        "--functional",
        "PBE",
        "--replace",
    )
    gb.ok("mlip", "add", "FT-MP0", "--arch", "mace", "--model", str(model), "--parent", "MP0")
    listing = gb.ok("mlip", "list").output
    assert "FT-MP0" in listing and "MP0" in listing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["X", "--arch", "mace"], "--model: architecture mace needs a model file"),
        (["X", "--arch", "mace", "--model", "/nonexistent/model.pt"], "does not exist"),
        (["X", "--arch", "chgnet", "--model", "bogus"], "must be one of"),
        (["X", "--arch", "chgnet", "--parent", "nobody"], "no MLIP named"),
        (
            ["X", "--arch", "chgnet", "--python", "/nonexistent/python"],
            "--python: interpreter '/nonexistent/python' does not exist",
        ),
    ],
)
def test_mlip_add_bad_input(gb: Cli, engine: Any, args: list[str], message: str) -> None:
    before = table_counts(engine)
    res = gb("mlip", "add", *args)
    assert res.exit_code == 2
    assert message in res.output
    assert table_counts(engine) == before


GOOD = (
    "x,property,value,uncertainty,source\n"
    "0,density_g_cm3,2.01,0.01,SYNTHETIC test source A\n"
    "0,p1,0.7,0.05,SYNTHETIC test source A\n"
    "1.5,young_modulus_gpa,20.5,,SYNTHETIC test source A\n"
)


def test_ingest_experiment_is_idempotent(gb: Cli, engine: Any, tmp_path: Path) -> None:
    csv = tmp_path / "exp.csv"
    csv.write_text(GOOD)
    first = gb.ok("ingest", "experiment", str(csv)).output
    assert "3 ingested, 0 unchanged, 0 updated (3 experimental values for 2 subjects)" in first
    again = gb.ok("ingest", "experiment", str(csv)).output
    assert "0 ingested, 3 unchanged, 0 updated" in again
    assert table_counts(engine)["experiment"] == 3
    assert table_counts(engine)["composition"] == 2
    crystals = tmp_path / "crystals.csv"
    crystals.write_text(
        "crystal,property,value,uncertainty,source\n"
        "c-Na3PS4,volume_per_formula_unit_a3,171.2,,SYNTHETIC crystal row\n"
    )
    gb.ok("ingest", "experiment", str(crystals))
    rows = json.loads(
        gb.ok(
            "sql", "SELECT subject, crystal FROM experiment ORDER BY subject", "--format", "json"
        ).stdout
    )
    assert {"subject": "crystal:c-Na3PS4", "crystal": "c-Na3PS4"} in rows


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("x,property,value\n", "lacks column"),
        ("x,property,value,uncertainty,source\n", "no data rows"),
        (
            "x,property,value,uncertainty,source\n0,density_g_cm3,abc,,S\n",
            "line 2: value 'abc' is not a number",
        ),
        (
            "x,property,value,uncertainty,source\n0,densty,2.0,,S\n",
            "line 2: unknown glass property 'densty'",
        ),
        (
            "x,property,value,uncertainty,source\n0,p0,1.5,,S\n",
            "p0 1.5 is outside its physical range [0, 1]",
        ),
        ("x,property,value,uncertainty,source\n0,p0,nan,,S\n", "not finite"),
        ("x,property,value,uncertainty,source\n9,p0,0.5,,S\n", "outside"),
        (
            "x,property,value,uncertainty,source\n0,p0,0.5,,S\n0,p0,0.6,,S\n",
            "line 3: duplicate of line 2",
        ),
        ("x,property,value,uncertainty,source\n0,p0,0.5\n", "line 2: 3 fields"),
        ("x,property,value,uncertainty,source,color\n0,p0,0.5,,S,red\n", "unknown column"),
        ("x,property,value,uncertainty,source\n0,p0,0.5,,\n", "source (citation) is empty"),
    ],
)
def test_ingest_experiment_bad_input(
    gb: Cli, engine: Any, tmp_path: Path, content: str, message: str
) -> None:
    csv = tmp_path / "bad.csv"
    # A valid first row proves nothing is written when a later row is bad.
    csv.write_text(content)
    before = table_counts(engine)
    res = gb("ingest", "experiment", str(csv))
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert str(csv) in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert table_counts(engine) == before


def test_bad_row_after_good_rows_writes_nothing(gb: Cli, engine: Any, tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(GOOD + "2,p2,7,,SYNTHETIC\n")
    before = table_counts(engine)
    res = gb("ingest", "experiment", str(csv))
    assert res.exit_code == 2 and "line 5" in res.output
    assert table_counts(engine) == before


def test_ingest_experiment_missing_and_binary_files(gb: Cli, engine: Any, tmp_path: Path) -> None:
    res = gb("ingest", "experiment", str(tmp_path / "missing.csv"))
    assert res.exit_code == 2 and "does not exist" in res.output
    binary = tmp_path / "bin.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    res = gb("ingest", "experiment", str(binary))
    assert res.exit_code == 2
