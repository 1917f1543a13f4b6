"""A database made by the release before revision 0003, upgraded by this code.

``tests/data/db/release-0002.sqlite`` was written by glassbench at commit 060fc4e (schema
0002) with its own commands: a tiny-MACE ``run meltquench --protocol study --elastic`` run
(window statistics, elastic moduli) and an ``ingest lammps`` of tests/data/lammps/*.metal.*;
then only ``mlip.model_path`` and ``run.host``/``claimed_by`` were replaced by neutral values
(no machine paths in the repository). ``release-0002-run_detail.json`` is what that release
printed for ``glassbench sql "SELECT * FROM run_detail" --format json`` on it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import Cli

DATA = Path(__file__).resolve().parents[1] / "data" / "db"


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
    assert "at revision 0003" in gb.ok("db", "upgrade").output
    assert counts() == before
    # The views show what the release showed, to the byte.
    printed = gb.ok("sql", "SELECT * FROM run_detail", "--format", "json").output
    assert printed.strip() == (DATA / "release-0002-run_detail.json").read_text().strip()
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
    engine.dispose()
