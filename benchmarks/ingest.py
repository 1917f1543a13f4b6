"""Ingest throughput: thermo rows into PostgreSQL, and a large LAMMPS dump end to end.

1. Thermo rows/s through the glassbench code path (``thermo.store_thermo``: binary COPY on
   PostgreSQL, in one unit of work) against ``psql \\copy`` of the same rows into the same table,
   measured alternately in the same run; medians of ``--repeat`` runs; the target is a ratio
   of at most 1.5. Also the whole ``glassbench ingest lammps --log`` command on a generated log
   (parse + convert + COPY, in a subprocess) for reference.
2. A generated LAMMPS dump of ``--dump-mb`` MB (1014-atom Na4P2S7 frames) ingested by
   ``glassbench ingest lammps`` in a subprocess, on SQLite and PostgreSQL: MB/s and peak RSS
   (rusage of that child, taken by a small launcher process). Baseline in the same run: the dump reader alone
   (parse only, no analysis, no database).

Usage::

    .venv/bin/python benchmarks/ingest.py                  # defaults below
    .venv/bin/python benchmarks/ingest.py --rows 200000 --repeat 3 --dump-mb 64

PostgreSQL comes from ``GLASSBENCH_BENCH_POSTGRES_URL`` (default: the local test server); each
run works in a fresh schema that is dropped at the end. Needs ``psql`` on PATH.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
N_FU = 78  # formula units per frame: 1014 atoms
LAMMPS_COLUMNS = "Step Time Temp Press PotEng KinEng TotEng Volume Density"


# --- databases --------------------------------------------------------------------------


@contextmanager
def pg_schema(base_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh, migrated schema (dropped afterwards)."""
    from urllib.parse import quote

    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade

    schema = f"gbbench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(base_url)
    with admin.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    url = f"{base_url}{sep}options={quote(f'-csearch_path={schema}')}"
    try:
        eng = make_engine(url)
        upgrade(eng)
        eng.dispose()
        yield url
    finally:
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def register_mlip(url: str) -> None:
    from glassbench.service.db import make_engine, unit_of_work
    from glassbench.service.repos import add_mlip

    eng = make_engine(url)
    with unit_of_work(eng) as s:
        add_mlip(s, {"name": "bench", "arch": "chgnet", "model_path": "0.3.0"})
    eng.dispose()


def psql_command(url: str, *commands: str) -> tuple[list[str], dict[str, str]]:
    u = sa.engine.make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = u.password
    if "options" in u.query:  # the schema's search_path
        env["PGOPTIONS"] = str(u.query["options"])
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", u.host or "127.0.0.1"]
    cmd += ["-p", str(u.port or 5432), "-U", u.username or "postgres", "-d", u.database or ""]
    for c in commands:
        cmd += ["-c", c]
    return cmd, env


# --- 1. thermo ----------------------------------------------------------------------------


def make_thermo_rows(n: int) -> list[dict[str, Any]]:
    from glassbench.service.repos import THERMO_COLUMNS

    rng = np.random.default_rng(42)
    values = rng.normal(size=(n, len(THERMO_COLUMNS) - 1))
    names = THERMO_COLUMNS[1:]
    # time_ps follows the step (1 fs timestep): the writer refuses time running backwards.
    return [
        {
            "step": 10 * i,
            **dict(zip(names, map(float, values[i]), strict=True)),
            "time_ps": 0.01 * i,
        }
        for i in range(n)
    ]


def bench_thermo(base_url: str, n_rows: int, repeat: int, tmp: Path) -> dict[str, Any]:
    from glassbench.ingest.thermo import store_thermo
    from glassbench.service.db import make_engine, unit_of_work
    from glassbench.service.repos import (
        THERMO_COLUMNS,
        composition_id,
        get_mlip,
        protocol_id,
    )
    from glassbench.service.runs import ensure as run_key_id

    rows = make_thermo_rows(n_rows)
    cols = ("run_id", *THERMO_COLUMNS)
    ours, theirs = [], []
    with pg_schema(base_url) as url:
        register_mlip(url)
        eng = make_engine(url)
        with unit_of_work(eng) as s:
            mid = get_mlip(s, "bench").id
            assert mid is not None
            cid = composition_id(s, 0.0)
            pid = protocol_id(s, {"source": "bench"}, kind="external")
            run_ids = [
                run_key_id(
                    s,
                    mlip_id=mid,
                    composition_id=cid,
                    quench_rate_k_ps=1.0,
                    seed=k,
                    protocol_id=pid,
                    source="synthetic",
                )
                for k in range(2 * repeat)
            ]
        # psql reads a TSV of the very same rows (written before the clock starts)
        tsv = []
        for k in range(repeat):
            path = tmp / f"thermo{k}.tsv"
            rid = run_ids[repeat + k]
            with open(path, "w") as fh:
                for r in rows:
                    fh.write("\t".join([str(rid), *(repr(r[c]) for c in THERMO_COLUMNS)]) + "\n")
            tsv.append(path)
        for k in range(repeat):
            # alternate who goes first so that neither always meets a warmer server
            order = ("ours", "psql") if k % 2 == 0 else ("psql", "ours")
            for who in order:
                t0 = time.perf_counter()
                if who == "ours":
                    with unit_of_work(eng) as s:
                        store_thermo(s, run_ids[k], rows)
                    ours.append(time.perf_counter() - t0)
                else:
                    cmd, env = psql_command(
                        url, f"\\copy thermo ({', '.join(cols)}) FROM '{tsv[k]}'"
                    )
                    subprocess.run(cmd, env=env, check=True)
                    theirs.append(time.perf_counter() - t0)
        with eng.connect() as c:
            stored = c.execute(sa.text("SELECT COUNT(*) FROM thermo")).scalar_one()
        assert stored == 2 * repeat * n_rows, stored
        eng.dispose()
    t_ours, t_psql = statistics.median(ours), statistics.median(theirs)
    return {
        "rows": n_rows,
        "repeat": repeat,
        "glassbench_rows_s": n_rows / t_ours,
        "psql_rows_s": n_rows / t_psql,
        "ratio": t_ours / t_psql,
        "runs_s": {"glassbench": ours, "psql": theirs},
    }


def write_log(path: Path, n_rows: int, *, every: int = 10, natoms: int = 13 * N_FU) -> None:
    """A LAMMPS-style metal-units log with one custom thermo block of ``n_rows`` rows."""
    rng = np.random.default_rng(1)
    with open(path, "w") as fh:
        fh.write("LAMMPS (29 Sep 2021 - Update 2)\nunits metal\natom_style atomic\n")
        fh.write(f"Created {natoms} atoms\ntimestep 0.001\n")
        fh.write(f"thermo_style custom {LAMMPS_COLUMNS.lower()}\nthermo {every}\n")
        fh.write(f"run {every * (n_rows - 1)}\n")
        fh.write("Per MPI rank memory allocation (min/avg/max) = 4.1 | 4.1 | 4.1 Mbytes\n")
        fh.write(LAMMPS_COLUMNS + "\n")
        chunk = 50_000
        for start in range(0, n_rows, chunk):
            m = min(chunk, n_rows - start)
            steps = every * (start + np.arange(m))
            data = np.column_stack(
                [
                    steps,
                    steps * 0.001,
                    300 + rng.normal(scale=20, size=m),
                    rng.normal(scale=500, size=m),
                    -4000 + rng.normal(size=m),
                    40 + rng.normal(size=m),
                    -3960 + rng.normal(size=m),
                    25700 + rng.normal(scale=50, size=m),
                    1.9 + rng.normal(scale=0.003, size=m),
                ]
            )
            np.savetxt(fh, data, fmt=["%d", "%.4f"] + ["%.8g"] * 7)
        fh.write(
            f"Loop time of 1.0 on 1 procs for {every * (n_rows - 1)} steps with {natoms} atoms\n"
        )


# Peak RSS is measured by a small launcher process: a child forked straight from this (large)
# benchmark process would count the parent's pages it inherits before exec in its ru_maxrss.
_LAUNCHER = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.stdout.buffer.write(proc.stdout)
sys.exit(proc.returncode)
"""


def run_measured(cmd: list[str]) -> tuple[float, int, str]:
    """Run ``cmd``; (wall s, peak RSS KiB of that process, output)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, rss.name, *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wall = time.perf_counter() - t0
        out = proc.stdout.decode()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out}")
        return wall, int(rss.read()), out.strip()


def run_cli(args: list[str], url: str) -> tuple[float, int, str]:
    """Run ``glassbench --db URL ARGS`` in a child; (wall s, peak RSS KiB, output)."""
    # not `python -m glassbench.cli`: that would load the CLI module twice (as __main__)
    main = "from glassbench.cli import main; main()"
    return run_measured([sys.executable, "-c", main, "--db", url, *args])


def bench_log_command(base_url: str, n_rows: int, tmp: Path) -> dict[str, Any]:
    log = tmp / "big.log"
    write_log(log, n_rows)
    with pg_schema(base_url) as url:
        register_mlip(url)
        key = ["--mlip", "bench", "--x", "0", "--quench-rate", "1", "--seed", "1"]
        wall, rss, out = run_cli(["ingest", "lammps", "--log", str(log), *key], url)
    assert f"{n_rows} thermo rows" in out, out
    return {"rows": n_rows, "wall_s": wall, "rows_s": n_rows / wall, "peak_rss_mib": rss / 1024}


# --- 2. dump ------------------------------------------------------------------------------


def write_dump(path: Path, target_mb: float, *, every: int = 100) -> int:
    """A dump of 1014-atom frames (x = 0), unsorted ids, about ``target_mb`` MB; frame count."""
    rng = np.random.default_rng(3)
    counts = {1: 4 * N_FU, 2: 2 * N_FU, 3: 7 * N_FU}  # Na, P, S
    types = np.concatenate([np.full(c, t) for t, c in counts.items()])
    n = len(types)
    length = 29.5  # Å: about 1.9 g/cm3
    base = rng.random((n, 3)) * length
    bodies = []
    for _ in range(8):  # a few distinct frames, cycled: formatting 300 MB would dominate
        pos = (base + rng.normal(scale=0.3, size=base.shape)) % length
        ids = rng.permutation(n) + 1
        lines = [
            f"{i} {t} {x:.6f} {y:.6f} {z:.6f}\n"
            for i, t, (x, y, z) in zip(ids, types[ids - 1], pos[ids - 1], strict=True)
        ]
        bodies.append("".join(lines).encode())
    box = f"0.0 {length}\n" * 3
    n_frames = 0
    size = 0
    with open(path, "wb") as fh:
        while size < target_mb * 1e6:
            head = (
                f"ITEM: TIMESTEP\n{every * n_frames}\nITEM: NUMBER OF ATOMS\n{n}\n"
                f"ITEM: BOX BOUNDS pp pp pp\n{box}ITEM: ATOMS id type x y z\n"
            ).encode()
            body = bodies[n_frames % len(bodies)]
            fh.write(head)
            fh.write(body)
            size += len(head) + len(body)
            n_frames += 1
    return n_frames


def parse_only(path: str) -> None:
    """Child process body of the parse-only baseline."""
    from glassbench.ingest.lammps_dump import LammpsDump

    n = sum(1 for _ in LammpsDump(Path(path), type_map=["Na", "P", "S", "O"]).frames())
    print(n)


def bench_dump(base_url: str, target_mb: float, tmp: Path) -> dict[str, Any]:
    dump = tmp / "big.lammpstrj"
    n_frames = write_dump(dump, target_mb)
    log = tmp / "dump.log"
    write_log(log, n_frames, every=100)
    mb = dump.stat().st_size / 1e6
    out: dict[str, Any] = {"dump_mb": mb, "frames": n_frames, "atoms": 13 * N_FU}

    wall, rss, text = run_measured([sys.executable, __file__, "--parse-only", str(dump)])
    assert int(text) == n_frames, text
    out["parse_only"] = {"wall_s": wall, "mb_s": mb / wall, "peak_rss_mib": rss / 1024}

    key = ["--mlip", "bench", "--x", "0", "--quench-rate", "1", "--seed", "1"]
    args = ["ingest", "lammps", "--log", str(log), "--dump", str(dump), *key]
    sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade

    eng = make_engine(sqlite_url)
    upgrade(eng)
    eng.dispose()
    register_mlip(sqlite_url)
    wall, rss, text = run_cli(args, sqlite_url)
    assert f"{n_frames} frames" in text, text
    out["sqlite"] = {"wall_s": wall, "mb_s": mb / wall, "peak_rss_mib": rss / 1024}
    with pg_schema(base_url) as url:
        register_mlip(url)
        wall, rss, text = run_cli(args, url)
    assert f"{n_frames} frames" in text, text
    out["postgresql"] = {"wall_s": wall, "mb_s": mb / wall, "peak_rss_mib": rss / 1024}
    return out


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=500_000, help="thermo rows per run")
    ap.add_argument("--repeat", type=int, default=5, help="runs per side (medians)")
    ap.add_argument("--dump-mb", type=float, default=256.0, help="size of the generated dump")
    ap.add_argument("--skip-dump", action="store_true")
    ap.add_argument("--parse-only", metavar="DUMP", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.parse_only:
        parse_only(args.parse_only)
        return
    base = os.environ.get("GLASSBENCH_BENCH_POSTGRES_URL", DEFAULT_PG)
    with tempfile.TemporaryDirectory(prefix="gb-ingest-bench-") as d:
        tmp = Path(d)
        th = bench_thermo(base, args.rows, args.repeat, tmp)
        print(
            f"thermo -> PostgreSQL, {th['rows']} rows, median of {th['repeat']}: "
            f"glassbench store_thermo {th['glassbench_rows_s']:,.0f} rows/s, "
            f"psql \\copy {th['psql_rows_s']:,.0f} rows/s, "
            f"ratio {th['ratio']:.2f}x (target <= 1.5x)"
        )
        lc = bench_log_command(base, args.rows, tmp)
        print(
            f"glassbench ingest lammps --log ({lc['rows']} rows, whole command incl. start-up "
            f"and parsing): {lc['wall_s']:.1f} s, {lc['rows_s']:,.0f} rows/s, "
            f"peak RSS {lc['peak_rss_mib']:.0f} MiB"
        )
        if not args.skip_dump:
            du = bench_dump(base, args.dump_mb, tmp)
            print(f"dump {du['dump_mb']:.0f} MB, {du['frames']} frames x {du['atoms']} atoms:")
            for name in ("parse_only", "sqlite", "postgresql"):
                r = du[name]
                print(
                    f"  {name:11s} {r['wall_s']:7.1f} s  {r['mb_s']:6.1f} MB/s  "
                    f"peak RSS {r['peak_rss_mib']:5.0f} MiB"
                )


if __name__ == "__main__":
    main()
