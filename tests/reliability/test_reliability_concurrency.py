"""Concurrency on one PostgreSQL: 8 processes ingest and register at once with overlapping keys
(the same run key from several processes with the same files and with other files; the same
MLIP registered twice). Every process ends with exit 0 ("ingested" / "already ingested" /
registered) or exit 2 ("already holds other data ... use --replace"), never exit 1, a
traceback or a deadlock; the database holds each run and MLIP once and passes ``db check``.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.ingest.conftest import lammps_file
from tests.reliability.conftest import FIGURES, assert_db_check, fetch, gb_popen, migrate

LOG = str(lammps_file("log.metal.lammps"))
DUMP = str(lammps_file("dump.metal.lammpstrj"))


def _key(seed: int) -> list[str]:
    return ["--mlip", "MP0", "--x", "0", "--quench-rate", "1", "--seed", str(seed)]


@pytest.mark.slow
def test_eight_processes_overlapping_keys(pg_url: str, extxyz: Path) -> None:
    migrate(pg_url)
    Cli(pg_url).ok("mlip", "add", "MP0", "--arch", "chgnet")
    full = ["ingest", "lammps", "--log", LOG, "--dump", DUMP, *_key(1)]  # 24 rows, 8 frames
    log_only = ["ingest", "lammps", "--log", LOG, *_key(1)]  # same key, other content
    traj = ["ingest", "traj", str(extxyz), *_key(2)]
    register = ["mlip", "add", "MP1", "--arch", "chgnet", "--model", "r2scan"]
    jobs = [full, full, full, log_only, traj, traj, register, register]
    procs = [gb_popen(pg_url, *j, stderr=subprocess.PIPE) for j in jobs]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        results.append((p.returncode, out.strip(), err.strip()))

    for rc, out, err in results:
        text = out + err
        assert rc in (0, 2), text
        assert "Traceback" not in text and "deadlock" not in text.lower(), text
        if rc == 2:
            assert len(err.splitlines()) == 1 and "use --replace" in err, err

    # Key A: exactly one content won; its group reports "ingested" once and "already
    # ingested" otherwise, the other group is refused with a clear message.
    a = results[:4]
    (run_a,) = fetch(pg_url, "SELECT id, status FROM run WHERE seed = 1")
    n_frames = fetch(pg_url, "SELECT COUNT(*) FROM frame WHERE run_id = :r", r=run_a[0])[0][0]
    winners = [0, 1, 2] if n_frames == 8 else [3]
    assert run_a[1] == "done" and n_frames in (0, 8)
    won = [a[i] for i in winners]
    lost = [a[i] for i in range(4) if i not in winners]
    assert [rc for rc, *_ in won] == [0] * len(won)
    assert sum(" ingested (" in out for _, out, _ in won) == 1, won
    assert sum("already ingested" in out for _, out, _ in won) == len(won) - 1, won
    assert all(rc == 2 for rc, *_ in lost), lost
    # Key B: one ingest, one "already ingested".
    b = results[4:6]
    assert [rc for rc, *_ in b] == [0, 0], b
    assert sorted("already ingested" in out for _, out, _ in b) == [False, True], b
    # MLIP registered once; both registrations succeed (identical values).
    assert [rc for rc, *_ in results[6:]] == [0, 0], results[6:]
    assert fetch(pg_url, "SELECT name, model_path FROM mlip ORDER BY name") == [
        ("MP0", "0.3.0"),
        ("MP1", "r2scan"),
    ]

    # No duplicates anywhere (natural keys), thermo per run as from a lone ingest.
    assert fetch(pg_url, "SELECT COUNT(*) FROM run") == [(2,)]
    dup_checks = {
        "thermo": "SELECT run_id, step FROM thermo GROUP BY run_id, step HAVING COUNT(*) > 1",
        "frame": "SELECT run_id, step FROM frame GROUP BY run_id, step HAVING COUNT(*) > 1",
        "speciation": "SELECT frame_id, unit FROM speciation GROUP BY frame_id, unit "
        "HAVING COUNT(*) > 1",
        "property": "SELECT run_id, name FROM property GROUP BY run_id, name HAVING COUNT(*) > 1",
        "composition": "SELECT family, x FROM composition GROUP BY family, x HAVING COUNT(*) > 1",
    }
    for table, sql in dup_checks.items():
        assert fetch(pg_url, sql) == [], table
    counts = dict(
        fetch(pg_url, "SELECT seed, COUNT(*) FROM thermo JOIN run ON run.id = run_id GROUP BY seed")
    )
    assert counts == {1: 24, 2: 8}
    assert_db_check(pg_url)
    codes = [rc for rc, *_ in results]
    FIGURES.add(
        f"concurrency: 8 processes (4 same-key lammps incl. 1 other content, 2 same-key traj, "
        f"2 same-name registrations) -> exit codes {codes}; 2 runs, 2 MLIPs, 0 duplicate rows, "
        "0 deadlocks, db check ok"
    )


def test_concurrent_registration_with_other_values_is_refused_not_overwritten(
    pg_url: str,
) -> None:
    """Two sessions register one name with different models at the same moment: the second
    must be refused, not silently overwrite the first (check-then-insert race in add_mlip)."""
    from glassbench.service import unit_of_work
    from glassbench.service.db import make_engine
    from glassbench.service.repos import add_mlip

    migrate(pg_url)
    engine = make_engine(pg_url)
    first = {"name": "race", "arch": "chgnet", "model_path": "0.3.0", "dispersion": "none"}
    second = {**first, "model_path": "r2scan"}
    errors: list[BaseException] = []
    try:
        with unit_of_work(engine) as s1:
            add_mlip(s1, first)  # holds the new row until commit
            started = threading.Event()

            def other() -> None:
                try:
                    with unit_of_work(engine) as s2:
                        started.set()
                        add_mlip(s2, second)  # waits for s1's commit on the unique name
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=other)
            t.start()
            started.wait(10)
            t.join(1.0)  # let it reach the insert and block on the unique key
        t.join(30)
        assert not t.is_alive()
        rows = fetch(engine, "SELECT name, model_path FROM mlip")
        assert rows == [("race", "0.3.0")]  # the first registration stands
        assert len(errors) == 1 and "already registered with other values" in str(errors[0])
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def extxyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ingest tests' extxyz: the real LAMMPS frames written by ase.io.write."""
    import ase.io

    from tests.ingest.conftest import ase_images

    path = tmp_path_factory.mktemp("conc") / "quench.extxyz"
    ase.io.write(path, ase_images(), format="extxyz")
    return path
