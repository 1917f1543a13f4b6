"""A database made by the release before revision 0003, upgraded by this code (to 0004).

``tests/data/db/release-0002.sqlite`` was written by glassbench at commit 060fc4e (schema
0002) with its own commands: a tiny-MACE ``run meltquench --protocol study --elastic`` run
(window statistics, elastic moduli) and an ``ingest lammps`` of tests/data/lammps/*.metal.*;
then only ``mlip.model_path`` and ``run.host``/``claimed_by`` were replaced by neutral values
(no machine paths in the repository). ``release-0002-run_detail.json`` is what that release
printed for ``glassbench sql "SELECT * FROM run_detail" --format json`` on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import Cli

DATA = Path(__file__).resolve().parents[1] / "data" / "db"
# The quantities run_detail gained at revision 0004.
NEW_QUANTITIES = ("ppend", "na_s_share", "na_s_peak", "na_o_peak", "ss_long_share")
NEW_COLUMNS = ("na_s_share", "na_s_peak_a", "na_o_peak_a", "ss_long_share")


def test_release_database_upgrades_without_losing_a_row(tmp_path: Path) -> None:
    db = tmp_path / "release.db"
    shutil.copy(DATA / "release-0002.sqlite", db)
    gb = Cli(f"sqlite:///{db}")
    assert "0002" in gb.ok("db", "current").output
    engine = sa.create_engine(f"sqlite:///{db}")
    tables = ["mlip", "composition", "protocol", "run", "frame", "thermo", "speciation",
              "coordination", "property", "window_stat", "experiment", "crystal_volume", "report"]  # fmt: skip

    def counts() -> dict[str, int]:
        with engine.connect() as c:
            return {t: c.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in tables}

    before = counts()
    assert before["run"] == 2 and before["window_stat"] > 0 and before["property"] == 6
    assert "at revision 0004" in gb.ok("db", "upgrade").output
    assert counts() == before
    # The views show what the release showed, to the byte, in every column it had; the
    # columns of revision 0004 are NULL for these frames, analysed before it (never a 0 that
    # would claim no chain ends were found).
    printed = json.loads(gb.ok("sql", "SELECT * FROM run_detail", "--format", "json").output)
    released = json.loads((DATA / "release-0002-run_detail.json").read_text())
    assert len(printed) == len(released)
    new_columns = {f"{q}{suffix}" for q in NEW_QUANTITIES for suffix in ("", "_stderr", "_final")}
    for got, want in zip(printed, released, strict=True):
        assert [k for k in got if k in want] == list(want)
        assert {k: json.dumps(got[k]) for k in want} == {k: json.dumps(v) for k, v in want.items()}
        assert set(got) - set(want) == new_columns
        assert {k: got[k] for k in new_columns} == dict.fromkeys(new_columns)
    with engine.connect() as c:
        assert c.execute(
            sa.text("SELECT DISTINCT analysis_id FROM speciation")
        ).scalars().all() == [1]
        assert (
            c.execute(sa.text("SELECT COUNT(*) FROM frame WHERE forces IS NOT NULL")).scalar() == 0
        )
    assert "integrity checks passed" in gb.ok("db", "check").output
    # and the upgraded database takes the new data: an analysis beside the default
    gb.ok("analysis", "add", "na-s-4.2", "--cutoff", "Na-S=4.2")
    out = gb.ok("reanalyze", "--analysis", "na-s-4.2").output
    assert "reanalysed 2 run(s)" in out
    # The release's frames keep their old counts (no PPend row, NULL new columns) under the
    # default analysis; the reanalysis computes the new quantities, as analyze_frame does.
    from glassbench.analysis import analyze_frame
    from glassbench.stored.frames import read_frames

    new = ", ".join(NEW_COLUMNS)
    with engine.connect() as c:
        by_analysis = {
            int(aid): [tuple(r) for r in rows]
            for aid in (1, 2)
            if (
                rows := c.execute(
                    sa.text(
                        f"SELECT frame_id, cutoffs_json, {new} FROM coordination "
                        "WHERE analysis_id = :a ORDER BY frame_id"
                    ),
                    {"a": aid},
                ).all()
            )
        }
        ends = dict(
            c.execute(
                sa.text(
                    "SELECT frame_id, count FROM speciation WHERE unit = 'PPend' "
                    "AND analysis_id = 2"
                )
            ).all()
        )
        assert (
            c.execute(
                sa.text("SELECT COUNT(*) FROM speciation WHERE unit = 'PPend' AND analysis_id = 1")
            ).scalar_one()
            == 0
        )
        frames = {f.frame_id: f for f in read_frames(c, [r[0] for r in by_analysis[2]])}
    assert all(v is None for row in by_analysis[1] for v in row[2:])
    assert len(frames) == len(ends) > 0
    for fid, cutoffs, *stored in by_analysis[2]:
        f = frames[fid]
        a = analyze_frame(f.numbers, f.positions, f.cell, f.pbc, cutoffs=json.loads(cutoffs))
        want = (a.na.s_share, a.na.peak_S, a.na.peak_O, a.ss.long_share)
        assert stored == list(want) and ends[fid] == a.p.PPend
    assert any(v is not None for row in by_analysis[2] for v in row[2:])
    engine.dispose()
