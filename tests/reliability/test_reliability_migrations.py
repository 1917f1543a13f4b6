"""Migrations under data: a database populated through the real CLI at the first revision keeps
every row, unchanged, through each later revision up to head (generic over
``glassbench.service.migrations.revisions()``: every table and column the first revision has
keeps its rows byte for byte; what later revisions add is not compared). And
``db downgrade base`` on a populated database.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Cli
from tests.ingest.conftest import lammps_file
from tests.reliability.conftest import FIGURES, assert_db_check

EXPERIMENT = (
    "x,property,value,uncertainty,source\n"
    "0,density_g_cm3,2.01,0.01,SYNTHETIC test source A\n"
    "0,p1,0.7,0.05,SYNTHETIC test source A\n"
    "1,young_modulus_gpa,20.5,,SYNTHETIC test source A\n"
)


def _columns(engine: Any) -> dict[str, list[str]]:
    """The database's tables (those of the models) and their columns, as they are now."""
    from glassbench.schema import TABLES

    insp = sa.inspect(engine)
    present = set(insp.get_table_names())
    return {
        t.__tablename__: [c["name"] for c in insp.get_columns(t.__tablename__)]  # type: ignore[attr-defined]
        for t in TABLES
        if t.__tablename__ in present  # type: ignore[attr-defined]
    }


def _counts(engine: Any, columns: dict[str, list[str]]) -> dict[str, int]:
    with engine.connect() as c:
        return {
            t: int(c.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one()) for t in columns
        }


def _fingerprints(engine: Any, columns: dict[str, list[str]]) -> dict[str, str]:
    """sha256 of the rows of ``columns`` (table -> column names) in primary-key order (blobs
    as bytes)."""
    from glassbench.schema import TABLES

    out = {}
    with engine.connect() as c:
        for t in TABLES:
            tbl = t.__table__
            if tbl.name not in columns:
                continue
            cols = [tbl.c[name] for name in columns[tbl.name]]
            # The key columns that revision has (a later one may widen the key).
            key = [k for k in tbl.primary_key.columns if k.name in columns[tbl.name]]
            rows = c.execute(sa.select(*cols).order_by(*key)).all()
            h = hashlib.sha256()
            for r in rows:
                h.update(
                    repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)).encode()
                )
            out[tbl.name] = h.hexdigest()
    return out


def _populate(gb: Cli, tmp_path: Path) -> None:
    """Rows in every table the CLI writes: MLIPs, compositions, protocols, runs, frames,
    speciation, coordination, thermo, properties, experiments, reports."""
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    gb.ok("mlip", "add", "R2", "--arch", "chgnet", "--model", "r2scan", "--functional", "r2SCAN")
    for name, x, seed in (("metal", "0", "1"), ("real", "1", "2"), ("triclinic", "0.5", "3")):
        gb.ok(
            "ingest",
            "lammps",
            "--log",
            str(lammps_file(f"log.{name}.lammps")),
            "--dump",
            str(lammps_file(f"dump.{name}.lammpstrj")),
            "--mlip",
            "MP0",
            "--x",
            x,
            "--quench-rate",
            "1",
            "--seed",
            seed,
        )
    gb.ok(
        "ingest",
        "lammps",
        "--log",
        str(lammps_file("log.metal.lammps")),
        "--mlip",
        "R2",
        "--x",
        "0",
        "--quench-rate",
        "5",
        "--seed",
        "1",
    )
    csv = tmp_path / "exp.csv"
    csv.write_text(EXPERIMENT)
    gb.ok("ingest", "experiment", str(csv))
    gb.ok("report", "generate", "--out", str(tmp_path / "report"), "--format", "csv")


@pytest.fixture
def at_first_revision(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Cli, Any, list[str]]:
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import head_revision, revisions, upgrade

    engine = make_engine(db_url)
    revs = revisions(engine)
    assert revs and revs[-1] == head_revision(engine)
    upgrade(engine, revs[0])
    if revs[0] != revs[-1]:
        # Today's commands refuse a database behind head; let them write at the first
        # revision (a later migration that adds a required column must adapt _populate).
        import glassbench.commands._common as common
        import glassbench.service.migrations as migrations
        from glassbench.service import repos

        monkeypatch.setattr(common, "require_schema", lambda engine: None)
        monkeypatch.setattr(migrations, "require_schema", lambda engine: None)
        for mod in ("ingest_lammps", "ingest_experiment", "mlip", "report"):
            module = __import__(f"glassbench.commands.{mod}", fromlist=["x"])
            if hasattr(module, "require_schema"):
                monkeypatch.setattr(module, "require_schema", lambda engine: None)
        # Clearing a run's data must not touch per-run tables that revision lacks.
        present = set(sa.inspect(engine).get_table_names())
        for tables in ("RUN_DATA_TABLES", "FRAME_DATA_TABLES"):
            monkeypatch.setattr(
                repos,
                tables,
                tuple(t for t in getattr(repos, tables) if t.__tablename__ in present),
            )
        # Before revision 0004 a chain end was a P1P and the Na-S share, the g(r) peaks and
        # the share of long S-S chains had no columns: write what that code wrote.
        coordination = {c["name"] for c in sa.inspect(engine).get_columns("coordination")}
        if "na_s_share" not in coordination:
            from tests.foundation.old_writers import write_as_0003

            write_as_0003(monkeypatch)
        # Before revision 0003 every analysis row is the default one, with no column for it.
        if "analysis" not in present:
            import glassbench.reports.pictures as pictures
            import glassbench.reports.queries as queries

            monkeypatch.setattr(queries, "DEFAULT_COORDINATION", "")
            monkeypatch.setattr(queries, "DEFAULT_WINDOW", "")
            # The artefact pictures select frames by the default analysis: none at this
            # revision (the rows kept are what this test compares, not the report).
            load_examples = pictures.load_examples
            monkeypatch.setattr(
                pictures, "load_examples", lambda conn, runs: load_examples(conn, runs.iloc[0:0])
            )
        # The report reads window means from window_stat (revision 0002): at the first
        # revision every run shows its final frame, as it did then.
        if "window_stat" not in present:
            import glassbench.reports.queries as queries

            monkeypatch.setattr(queries, "_with_window_means", lambda conn, runs: runs)
    gb = Cli(db_url)
    _populate(gb, tmp_path)
    monkeypatch.undo()
    return gb, engine, revs


def test_upgrade_through_every_revision_keeps_every_row(
    at_first_revision: tuple[Cli, Any, list[str]], db_url: str
) -> None:
    gb, engine, revs = at_first_revision
    first = _columns(engine)
    counts, prints = _counts(engine, first), _fingerprints(engine, first)
    assert counts["run"] == 4 and counts["thermo"] > 0 and counts["speciation"] > 0
    assert counts["experiment"] == 3 and counts["report"] == 1
    for rev in [*revs[1:], "head"]:
        gb.ok("db", "upgrade", rev)
        assert _counts(engine, first) == counts, rev
    assert _fingerprints(engine, first) == prints
    assert_db_check(db_url)
    engine.dispose()
    FIGURES.add(
        f"migrations ({engine.dialect.name}): {len(revs)} revision(s) "
        f"{'->'.join(revs)}, {sum(counts.values())} rows in {sum(1 for v in counts.values() if v)} "
        "tables kept byte-identical; rows lost 0"
    )


def test_downgrade_base_refuses_on_a_populated_database(
    at_first_revision: tuple[Cli, Any, list[str]],
) -> None:
    gb, engine, _ = at_first_revision
    first = _columns(engine)
    counts = _counts(engine, first)
    res = gb("db", "downgrade", "base")
    try:
        assert res.exit_code != 0, "dropped every table of a populated database"
        assert _counts(engine, first) == counts
    finally:
        engine.dispose()


def test_views_and_analyses_after_upgrading_a_populated_database(
    at_first_revision: tuple[Cli, Any, list[str]],
) -> None:
    """Revision 0003 (analyses) on a populated database: every existing analysis row becomes
    the default analysis, the views show the same numbers as before it, and a new analysis
    gets an id of its own (PostgreSQL's sequence was moved past the default's)."""
    gb, engine, _ = at_first_revision
    gb.ok("db", "upgrade", "0002")
    query = "SELECT * FROM run_summary ORDER BY mlip, x, quench_rate_k_ps, seed"
    before = gb.ok("sql", query, "--format", "csv").output
    gb.ok("db", "upgrade", "head")
    assert gb.ok("sql", query, "--format", "csv").output == before
    with engine.connect() as c:
        per_analysis = dict(
            c.execute(
                sa.text("SELECT analysis_id, COUNT(*) FROM speciation GROUP BY analysis_id")
            ).all()
        )
        names = c.execute(sa.text("SELECT id, name FROM analysis")).all()
    assert list(per_analysis) == [1] and per_analysis[1] > 0
    assert [tuple(r) for r in names] == [(1, "default")]
    with engine.begin() as c:
        new_id = c.execute(
            sa.text(
                "INSERT INTO analysis (name, cutoffs_json, created_at) "
                "VALUES ('wide', '{}', CURRENT_TIMESTAMP) RETURNING id"
            )
        ).scalar_one()
    assert new_id == 2
    engine.dispose()
