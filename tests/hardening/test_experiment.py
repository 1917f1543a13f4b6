"""Experiment CSV ingest (issue 17): no silent overwrite, physical ranges, bounded input.

A stored (subject, property, source) keeps its value unless ``--replace``; re-ingesting the same
rows says "unchanged"; values outside a property's physical range, non-finite numbers and
impossible uncertainties are refused with the line, exit status 2 and nothing written. On
SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from glassbench.ingest.experiment import MAX_FILE_BYTES, RANGES
from glassbench.schema.models import EXPERIMENT_PROPERTIES, FRACTION_PROPERTIES
from tests.conftest import Cli, table_counts
from tests.hardening.conftest import gb_limited

HEADER = "x,property,value,uncertainty,source\n"
ROWS = (
    "0,density_g_cm3,2.29,0.01,SYNTHETIC source A\n"
    "1,density_g_cm3,2.29,0.01,SYNTHETIC source A\n"
    "1,young_modulus_gpa,20,,SYNTHETIC source A\n"
)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "experiment-example.csv"


def _stored(engine: Any) -> dict[tuple[str, str], tuple[float, float | None]]:
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT subject, property, value, uncertainty FROM experiment"))
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def _refused(gb: Cli, engine: Any, csv: Path, *args: str) -> str:
    """Ingest ``csv``; assert exit 2, one line naming the file, and no row written."""
    before = table_counts(engine)
    stored = _stored(engine)
    res = gb("ingest", "experiment", str(csv), *args)
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert str(csv) in res.output
    assert table_counts(engine) == before
    assert _stored(engine) == stored
    return res.output.strip()


def test_identical_rows_are_unchanged(gb: Cli, engine: Any, tmp_path: Path) -> None:
    csv = tmp_path / "exp.csv"
    csv.write_text(HEADER + ROWS)
    first = gb.ok("ingest", "experiment", str(csv)).output
    assert f"{csv}: 3 ingested, 0 unchanged, 0 updated" in first
    before = table_counts(engine)
    again = gb.ok("ingest", "experiment", str(csv)).output
    assert f"{csv}: 0 ingested, 3 unchanged, 0 updated" in again
    assert "3 ingested" not in again
    assert table_counts(engine) == before
    # A file with one more row: only that row is new.
    csv.write_text(HEADER + ROWS + "2,density_g_cm3,2.3,,SYNTHETIC source A\n")
    assert "1 ingested, 3 unchanged, 0 updated" in gb.ok("ingest", "experiment", str(csv)).output


def test_changed_value_needs_replace(gb: Cli, engine: Any, tmp_path: Path) -> None:
    csv = tmp_path / "exp.csv"
    csv.write_text(HEADER + ROWS)
    gb.ok("ingest", "experiment", str(csv))
    # Line 3 changes a stored value; line 5 is new: the whole file is refused, the new row too.
    changed = ROWS.replace("1,density_g_cm3,2.29", "1,density_g_cm3,2.31")
    csv.write_text(HEADER + changed + "3,density_g_cm3,2.4,,SYNTHETIC source A\n")
    msg = _refused(gb, engine, csv)
    assert msg == (
        f"Error: {csv}:line 3: value: 2.31 differs from the stored 2.29 for x=1 density_g_cm3 "
        "(source 'SYNTHETIC source A'); use --replace"
    )
    out = gb.ok("ingest", "experiment", str(csv), "--replace").output
    assert f"{csv}: 1 ingested, 2 unchanged, 1 updated" in out
    assert _stored(engine)[("Na4P2S7-xOx:x=1", "density_g_cm3")] == (2.31, 0.01)
    assert "0 ingested, 4 unchanged, 0 updated" in gb.ok("ingest", "experiment", str(csv)).output


@pytest.mark.parametrize(
    ("new_row", "message"),
    [
        ("1,density_g_cm3,2.29,0.02,SYNTHETIC source A", "uncertainty: 0.02 differs from the "),
        ("1,density_g_cm3,2.29,,SYNTHETIC source A", "uncertainty: none differs from the stored"),
        (
            "1,young_modulus_gpa,20,1,SYNTHETIC source A",
            "uncertainty: 1 differs from the stored none",
        ),
    ],
)
def test_changed_uncertainty_needs_replace(
    gb: Cli, engine: Any, tmp_path: Path, new_row: str, message: str
) -> None:
    csv = tmp_path / "exp.csv"
    csv.write_text(HEADER + ROWS)
    gb.ok("ingest", "experiment", str(csv))
    csv.write_text(HEADER + new_row + "\n")
    msg = _refused(gb, engine, csv)
    assert f"{csv}:line 2: {message}" in msg and msg.endswith("; use --replace")
    assert "1 updated" in gb.ok("ingest", "experiment", str(csv), "--replace").output


def test_several_changed_rows_name_the_first_and_count_the_others(
    gb: Cli, engine: Any, tmp_path: Path
) -> None:
    csv = tmp_path / "exp.csv"
    csv.write_text(HEADER + ROWS)
    gb.ok("ingest", "experiment", str(csv))
    csv.write_text(HEADER + ROWS.replace("2.29", "2.5"))
    msg = _refused(gb, engine, csv)
    assert "line 2: value: 2.5 differs from the stored 2.29 for x=0" in msg
    assert "(and 1 more row differ)" in msg


def test_same_subject_with_rounding_is_a_duplicate(gb: Cli, engine: Any, tmp_path: Path) -> None:
    """x is stored to 6 decimals: 1 and 1.0000001 are the same composition."""
    csv = tmp_path / "exp.csv"
    csv.write_text(HEADER + "1,p0,0.5,,S\n1.0000001,p0,0.6,,S\n")
    assert "line 3: duplicate of line 2" in _refused(gb, engine, csv)


def test_python_api_says_replace_true(engine: Any, tmp_path: Path) -> None:
    from glassbench.ingest.experiment import ExperimentConflict, ingest_experiment

    csv = tmp_path / "exp.csv"
    csv.write_text(HEADER + ROWS)
    assert ingest_experiment(engine, csv).n_ingested == 3
    assert ingest_experiment(engine, csv).action == "unchanged"
    csv.write_text(HEADER + ROWS.replace("20,,", "21,,"))
    with pytest.raises(ExperimentConflict, match=r"use replace=True$"):
        ingest_experiment(engine, csv)
    assert ingest_experiment(engine, csv, replace=True).n_updated == 1


def test_every_property_has_a_documented_range() -> None:
    assert set(RANGES) == set(EXPERIMENT_PROPERTIES)
    assert all(str(RANGES[p]) == "[0, 1]" for p in FRACTION_PROPERTIES)
    assert str(RANGES["density_g_cm3"]) == "(0, 25] g/cm^3"


def _line(prop: str, value: str, uncertainty: str = "") -> str:
    if prop == "volume_per_formula_unit_a3":
        return f"crystal,property,value,uncertainty,source\nc-X,{prop},{value},{uncertainty},S\n"
    return f"{HEADER}1,{prop},{value},{uncertainty},S\n"


def _edges(prop: str) -> tuple[list[str], list[str]]:
    """Values at the edges of the range (accepted) and just outside it (refused)."""
    r = RANGES[prop]
    inside = [repr(r.high), repr(r.low + r.width / 2)]
    outside = [repr(r.high * 1.001 + 1e-9), repr(r.low - 1e-6 - abs(r.low) * 1e-3)]
    if r.low_open:
        outside.append(repr(r.low))
    else:
        inside.append(repr(r.low))
    return inside, outside


@pytest.mark.parametrize("prop", EXPERIMENT_PROPERTIES)
def test_physical_ranges(gb: Cli, engine: Any, tmp_path: Path, prop: str) -> None:
    inside, outside = _edges(prop)
    csv = tmp_path / "exp.csv"
    for value in outside:
        csv.write_text(_line(prop, value))
        msg = _refused(gb, engine, csv)
        assert (
            f":line 2: value: {prop} " in msg
            and f"outside its physical range {RANGES[prop]}" in msg
        )
    for value in inside:
        csv.write_text(_line(prop, value))
        gb.ok("ingest", "experiment", str(csv), "--replace")
    stored = {k[1]: v[0] for k, v in _stored(engine).items()}
    assert stored[prop] == float(inside[-1])


@pytest.mark.parametrize(
    ("prop", "value", "uncertainty", "message"),
    [
        ("density_g_cm3", "1e300", "", "value: density_g_cm3 1e+300 is outside its physical range"),
        ("density_g_cm3", "1e400", "", "value '1e400' is not finite"),
        ("density_g_cm3", "inf", "", "value 'inf' is not finite"),
        ("density_g_cm3", "-inf", "", "value '-inf' is not finite"),
        ("density_g_cm3", "nan", "", "value 'nan' is not finite"),
        ("young_modulus_gpa", "20000", "", "outside its physical range (0, 1500] GPa"),
        ("poisson_ratio", "0.6", "", "outside its physical range [-1, 0.5]"),
        ("na_cn", "13", "", "outside its physical range [0, 12]"),
        ("p1", "70", "", "(a fraction: convert percentages)"),
        ("density_g_cm3", "2.0", "-0.1", "uncertainty: -0.1 is outside [0, 25]"),
        ("density_g_cm3", "2.0", "nan", "uncertainty 'nan' is not finite"),
        ("density_g_cm3", "2.0", "1e300", "uncertainty: 1e+300 is outside [0, 25]"),
        ("p0", "0.5", "2", "uncertainty: 2 is outside [0, 1]"),
    ],
)
def test_values_and_uncertainties_refused(
    gb: Cli, engine: Any, tmp_path: Path, prop: str, value: str, uncertainty: str, message: str
) -> None:
    csv = tmp_path / "exp.csv"
    # A good first row: nothing of the file is written when a later row is bad.
    csv.write_text(HEADER + "0,p0,0.5,,S\n" + f"1,{prop},{value},{uncertainty},S\n")
    msg = _refused(gb, engine, csv)
    assert f"{csv}:line 3: " in msg and message in msg


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('"Author\nEt al"', "line 2: source contains the control character U+000A (newline)"),
        (
            "Author\x1b[31m red",
            "source contains the control character U+001B (escape) at character 7",
        ),
        ("Author\tTab", "source contains the control character U+0009 (tab)"),
        ("A" * 513, "source is 513 characters long, at most 512 are stored"),
    ],
)
def test_source_text_refused(
    gb: Cli, engine: Any, tmp_path: Path, source: str, message: str
) -> None:
    csv = tmp_path / "exp.csv"
    csv.write_text(HEADER + f"0,p0,0.5,,{source}\n")
    assert message in _refused(gb, engine, csv)


def test_long_crystal_name_refused(gb: Cli, engine: Any, tmp_path: Path) -> None:
    csv = tmp_path / "exp.csv"
    csv.write_text(_line("volume_per_formula_unit_a3", "171").replace("c-X", "c" * 65))
    assert "crystal is 65 characters long, at most 64" in _refused(gb, engine, csv)


def test_example_file_ingests_cleanly_and_says_fictitious(gb: Cli, engine: Any) -> None:
    """The README's quick start ingests it on a fresh database."""
    out = gb.ok("ingest", "experiment", str(EXAMPLE)).output
    assert "4 ingested, 0 unchanged, 0 updated" in out
    assert "0 ingested, 4 unchanged" in gb.ok("ingest", "experiment", str(EXAMPLE)).output
    with engine.connect() as c:
        sources = {r[0] for r in c.execute(sa.text("SELECT source FROM experiment"))}
    assert sources == {"FICTITIOUS example values - not measurements"}


def test_non_regular_file_refused_without_reading(db_url: str, engine: Any) -> None:
    """/dev/zero never ends: refused at once, not read until memory runs out."""
    before = table_counts(engine)
    res = gb_limited(db_url, "ingest", "experiment", "/dev/zero", timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == "Error: /dev/zero: not a regular file"
    assert table_counts(engine) == before


def test_oversized_file_refused_in_bounded_memory(db_url: str, engine: Any, tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    with big.open("wb") as fh:  # sparse: costs no disk
        fh.write(HEADER.encode())
        fh.truncate(MAX_FILE_BYTES + 1)
    before = table_counts(engine)
    res = gb_limited(db_url, "ingest", "experiment", str(big), mem_mb=1000)
    assert res.returncode == 2, res.stderr
    assert f"{big}: larger than 32 MiB" in res.stderr
    assert table_counts(engine) == before
