"""Benchmark: ``glassbench reanalyze`` over stored frames against ``glassbench analyze
--all-frames`` on the same frames in an extxyz file.

Builds ``--frames`` frames of ~1,000 atoms (``glassbench.testing.synthetic.dimer_glass``, 78
formula units of Na4P2S7 = 1014 atoms: a few random glasses, each frame one of them with
thermal-size random displacements), writes them to one extxyz file, and stores them through
``glassbench ingest traj`` as ``--runs`` runs, on SQLite and on PostgreSQL. Then, as whole
commands in subprocesses, taking turns ``--repeat`` times:

- baseline: ``glassbench analyze FILE --all-frames`` (ASE reads the extxyz, every frame is
  analysed, one JSON line per frame to /dev/null);
- ``glassbench reanalyze --analysis na-s-4.2 --force`` on each database (every frame read from
  its blobs, analysed with Na-S 4.2 Å, stored: one transaction per run).

Prints frames/s (medians) and the ratio of the medians' times (target <= 1.5), and an
in-process breakdown of one reanalyze pass (decode, analysis, inserts).

    .venv/bin/python benchmarks/reanalyze.py                      # 1,000 frames, 3 repeats
    .venv/bin/python benchmarks/reanalyze.py --frames 200 --repeat 3

PostgreSQL from ``GLASSBENCH_BENCH_POSTGRES_URL`` (default: the local test server), in a fresh
schema dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import sqlalchemy as sa

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
N_FU = 78  # 1014 atoms
ANALYSIS = "na-s-4.2"
TARGET = 1.5


@contextmanager
def pg_schema(base_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh, migrated schema (dropped afterwards)."""
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


def make_frames(n: int, seed: int = 0, n_glasses: int = 4) -> list[Any]:
    """``n`` ASE frames: ``n_glasses`` random glasses, each frame one of them displaced."""
    from ase import Atoms

    from glassbench.testing.synthetic import dimer_glass

    glasses = [dimer_glass(0.0, N_FU, seed=seed + k) for k in range(n_glasses)]
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        g = glasses[i % n_glasses]
        pos = g.positions + rng.normal(scale=0.1, size=g.positions.shape)
        atoms = Atoms(numbers=g.numbers, positions=pos, cell=g.cell, pbc=True)
        atoms.info["step"] = 100 * (i + 1)
        frames.append(atoms)
    return frames


def store(url: str, paths: list[Path]) -> None:
    """Register an MLIP and add an analysis; ingest each file as one run."""
    from glassbench.ingest.slots import RunKey
    from glassbench.ingest.usecases import ingest_traj
    from glassbench.service.db import make_engine, unit_of_work
    from glassbench.service.repos import add_mlip
    from glassbench.stored.analyses import add_analysis

    eng = make_engine(url)
    with unit_of_work(eng) as s:
        add_mlip(s, {"name": "bench", "arch": "chgnet", "model_path": "0.3.0"})
    for seed, path in enumerate(paths, start=1):
        ingest_traj(eng, RunKey("bench", 0.0, 1.0, seed), path, progress=False)
    add_analysis(eng, ANALYSIS, {"Na-S": 4.2})
    eng.dispose()


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def breakdown(url: str) -> dict[str, float]:
    """Seconds per frame of one in-process reanalyze pass, by part (the writes rolled back)."""
    from sqlmodel import Session

    from glassbench.analysis import analyze_frame
    from glassbench.service.db import make_engine
    from glassbench.service.repos import add_analyses
    from glassbench.stored.analyses import get_analysis
    from glassbench.stored.frames import FRAME_BATCH, read_frames

    eng = make_engine(url)
    info = get_analysis(eng, ANALYSIS)
    parts = {"read + decode": 0.0, "analysis": 0.0, "insert": 0.0}
    n = 0
    with Session(eng) as s:
        conn = s.connection()
        ids = [int(i) for i in conn.execute(sa.text("SELECT id FROM frame ORDER BY id")).scalars()]
        for start in range(0, len(ids), FRAME_BATCH):
            t0 = time.perf_counter()
            frames = list(read_frames(conn, ids[start : start + FRAME_BATCH]))
            t1 = time.perf_counter()
            analysed = [
                (f.frame_id, analyze_frame(f.numbers, f.positions, f.cell, f.pbc, info.cutoffs))
                for f in frames
            ]
            t2 = time.perf_counter()
            add_analyses(s, analysed, analysis_id=info.id)
            t3 = time.perf_counter()
            parts["read + decode"] += t1 - t0
            parts["analysis"] += t2 - t1
            parts["insert"] += t3 - t2
            n += len(frames)
        s.rollback()
    eng.dispose()
    return {k: v / n for k, v in parts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=4, help="runs the frames are stored as")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)

    import ase.io

    gb = shutil.which("glassbench") or str(Path(sys.executable).with_name("glassbench"))
    pg_base = os.environ.get("GLASSBENCH_BENCH_POSTGRES_URL", DEFAULT_PG)
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible; "
        f"{args.frames} frames of {13 * N_FU} atoms as {args.runs} runs, repeat {args.repeat}"
    )
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        pg = None if args.skip_postgres else stack.enter_context(pg_schema(pg_base))
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        frames = make_frames(args.frames)
        whole = tmp / "frames.extxyz"
        ase.io.write(whole, frames, format="extxyz")
        parts = []
        for k, chunk in enumerate(np.array_split(np.arange(args.frames), args.runs)):
            path = tmp / f"run{k}.extxyz"
            ase.io.write(path, [frames[i] for i in chunk], format="extxyz")
            parts.append(path)
        dbs = {"SQLite": f"sqlite:///{tmp / 'bench.db'}"}
        if pg is not None:
            dbs["PostgreSQL"] = pg
        from glassbench.service.db import make_engine
        from glassbench.service.migrations import upgrade

        eng = make_engine(dbs["SQLite"])
        upgrade(eng)
        eng.dispose()
        for url in dbs.values():
            store(url, parts)
        print(f"setup (frames, files, ingest): {time.perf_counter() - t0:.1f} s")

        cmds = {"analyze --all-frames": [gb, "analyze", str(whole), "--all-frames"]}
        for label, url in dbs.items():
            cmds[f"reanalyze {label}"] = [
                gb, "--db", url, "reanalyze", "--analysis", ANALYSIS, "--force",
            ]  # fmt: skip
        times: dict[str, list[float]] = {k: [] for k in cmds}
        names = list(cmds)
        for rep in range(args.repeat):
            for k in range(len(names)):  # rotate the order: none always goes first
                name = names[(rep + k) % len(names)]
                times[name].append(timed(cmds[name]))
        base = statistics.median(times["analyze --all-frames"])
        ok = True
        for name, ts in times.items():
            med = statistics.median(ts)
            ratio = med / base
            runs = ", ".join(f"{t:.1f}" for t in ts)
            line = f"{name:<24} median {med:6.1f} s  {args.frames / med:6.1f} frames/s  ({runs})"
            if name.startswith("reanalyze"):
                line += f"  ratio {ratio:.2f} (target <= {TARGET})"
                ok &= ratio <= TARGET
            print(line)
        for label, url in dbs.items():
            per = breakdown(url)
            text = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in per.items())
            print(f"per frame, in process, {label}: {text}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
