"""Database writes of a campaign: how many concurrent workers one database serves.

Each worker process plays a melt-quench runner without the MD: it creates and claims its runs
(``service.runs.ensure`` + the run store's atomic claim), then writes flushes exactly as the runner does,
through the real repositories and one ``unit_of_work`` per flush:

- 200 thermo rows (``repos.insert_thermo``: executemany with ON CONFLICT DO NOTHING, or COPY
  with ``--mode copy``),
- one frame of a 120-atom Na4P2S6O glass with its speciation and coordination
  (``repos.add_frame`` with a ``FrameAnalysis`` computed once, outside the timing),
- the run's heartbeat UPDATE,

and marks the run done. All workers start together (a barrier); throughput is total flushes
over the time from the common start to the last worker's end. Every configuration is repeated
``--repeat`` times and the median is reported, with the ratio against N=1 of the same mode
measured in the same invocation.

Usage::

    python benchmarks/campaign_writes.py [--url URL] [--workers 1,2,4,8] [--flushes 60]
                                         [--runs 2] [--repeat 3] [--mode executemany,copy]

The URL defaults to ``GLASSBENCH_BENCH_POSTGRES_URL``, then ``GLASSBENCH_TEST_POSTGRES_URL``,
then the local test server; a PostgreSQL URL gets its own schema (``gb_bench_campaign_writes``,
recreated for every configuration), an SQLite URL its own file. Synthetic data: it measures
speed only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import sqlalchemy as sa

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = "gb_bench_campaign_writes"
THERMO_PER_FLUSH = 200
FLUSH_STEPS = 2000  # steps covered by one flush (thermo every 10 steps)


def base_url() -> str:
    return (
        os.environ.get("GLASSBENCH_BENCH_POSTGRES_URL")
        or os.environ.get("GLASSBENCH_TEST_POSTGRES_URL")
        or DEFAULT_PG
    )


def fresh_database(url: str) -> str:
    """An empty, migrated database for one configuration; returns the URL workers use."""
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade

    if url.startswith("sqlite"):
        path = Path(tempfile.mkdtemp(prefix="gb-bench-writes-")) / "bench.db"
        target = f"sqlite:///{path}"
    else:
        admin = make_engine(url)
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
            c.execute(sa.text(f'CREATE SCHEMA "{SCHEMA}"'))
        admin.dispose()
        sep = "&" if "?" in url else "?"
        # application_name lets pg_stat_activity tell the benchmark's sessions apart.
        target = f"{url}{sep}options={quote(f'-csearch_path={SCHEMA}')}&application_name={SCHEMA}"
    eng = make_engine(target)
    upgrade(eng)
    from glassbench.service import repos, unit_of_work

    with unit_of_work(eng) as s:
        repos.add_mlip(s, {"name": "SYNTH-WRITES", "arch": "other"})
    eng.dispose()
    return target


@dataclass
class WorkerResult:
    flushes: int
    start: float
    end: float
    flush_s: list[float]
    cpu_s: float


def _worker(
    url: str, index: int, runs: int, flushes: int, mode: str, barrier: Any, out: Any
) -> None:
    from glassbench.analysis import analyze_frame
    from glassbench.runners.structure import random_glass
    from glassbench.service import repos, unit_of_work
    from glassbench.service import runs as run_store
    from glassbench.service.db import make_engine

    atoms = random_glass(1.0, 8, seed=index)
    cell = np.asarray(atoms.cell)
    analysis = analyze_frame(atoms.numbers, atoms.positions, cell, atoms.pbc)
    rng = np.random.default_rng(index)
    engine = make_engine(url)
    with engine.connect() as c:  # open the pool's connection before the clock starts
        c.execute(sa.text("SELECT 1"))
    barrier.wait()
    t0 = time.perf_counter()
    c0 = time.process_time()
    lat: list[float] = []
    for r in range(runs):
        with unit_of_work(engine) as s:
            mid = repos.get_mlip(s, "SYNTH-WRITES").id
            assert mid is not None
            cid = repos.composition_id(s, 1.0)
            pid = repos.protocol_id(s, {"benchmark": "campaign_writes"})
            rid = run_store.ensure(
                s,
                mlip_id=mid,
                composition_id=cid,
                quench_rate_k_ps=5.0,
                seed=index * 1000 + r,
                protocol_id=pid,
            )
        assert run_store.claim(engine, rid, worker=run_store.worker_id())
        for f in range(flushes):
            t = time.perf_counter()
            base = f * FLUSH_STEPS
            temps = 1800.0 - rng.random(THERMO_PER_FLUSH) * 1500.0
            rows = [
                {
                    "step": base + 10 * (i + 1),
                    "time_ps": (base + 10 * (i + 1)) * 1e-3,
                    "temperature_k": float(temps[i]),
                    "pressure_gpa": 0.1,
                    "potential_energy_ev": -500.0,
                    "kinetic_energy_ev": 15.0,
                    "total_energy_ev": -485.0,
                    "volume_a3": 2000.0,
                    "density_g_cm3": 2.2,
                }
                for i in range(THERMO_PER_FLUSH)
            ]
            with unit_of_work(engine) as s:
                repos.insert_thermo(s, rid, rows, copy=(mode == "copy"))
                repos.add_frame(
                    s,
                    rid,
                    stage="quench",
                    step=base + FLUSH_STEPS,
                    numbers=atoms.numbers,
                    positions=atoms.positions + rng.normal(0, 0.05, atoms.positions.shape),
                    cell=cell,
                    pbc=atoms.pbc,
                    time_ps=(base + FLUSH_STEPS) * 1e-3,
                    temperature_k=1000.0,
                    analysis=analysis,
                )
                run_store.heartbeat(s, rid)
            lat.append(time.perf_counter() - t)
        with unit_of_work(engine) as s:
            run_store.finish(s, rid)
    end = time.perf_counter()
    cpu = time.process_time() - c0
    engine.dispose()
    out.put(WorkerResult(runs * flushes, t0, end, lat, cpu))


def stored_bytes(url: str) -> int:
    """Bytes the benchmark's tables and indexes occupy (PostgreSQL) or the file (SQLite)."""
    from glassbench.service.db import make_engine

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    eng = make_engine(url)
    with eng.connect() as c:
        n = c.execute(
            sa.text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind = 'r'"
            ),
            {"s": SCHEMA},
        ).scalar_one()
    eng.dispose()
    return int(n)


def measure(url: str, n: int, runs: int, flushes: int, mode: str) -> dict[str, float]:
    target = fresh_database(url)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(target, i, runs, flushes, mode, barrier, out))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"worker failed with exit status {p.exitcode}")
    # perf_counter is CLOCK_MONOTONIC: comparable across processes of one machine.
    wall = max(r.end for r in results) - min(r.start for r in results)
    total = sum(r.flushes for r in results)
    lat = [x for r in results for x in r.flush_s]
    return {
        "client_cpu_ms": 1000 * sum(r.cpu_s for r in results) / total,
        "stored_kb": stored_bytes(target) / total / 1024,
        "flushes_s": total / wall,
        "thermo_rows_s": total * THERMO_PER_FLUSH / wall,
        "latency_ms_p50": 1000 * statistics.median(lat),
        "latency_ms_p95": 1000 * float(np.percentile(lat, 95)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=base_url())
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--runs", type=int, default=2, help="runs per worker")
    ap.add_argument("--flushes", type=int, default=60, help="flushes per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mode", default="executemany", help="executemany,copy (thermo path)")
    args = ap.parse_args(argv)
    from glassbench.settings import mask_url

    ns = [int(v) for v in args.workers.split(",")]
    modes = args.mode.split(",")
    print(
        f"# campaign writes on {mask_url(args.url)}; {os.cpu_count()} CPUs; "
        f"{args.runs} runs x {args.flushes} flushes per worker; median of {args.repeat}"
    )
    print(
        f"# one flush = {THERMO_PER_FLUSH} thermo rows + 1 analysed 120-atom frame + heartbeat, "
        "one transaction"
    )
    print(
        "mode         N  flushes/s  thermo rows/s  ratio vs N=1  per worker  p50 ms  p95 ms"
        "  client CPU ms/flush  stored kB/flush"
    )
    for mode in modes:
        base = None
        for n in ns:
            reps = [measure(args.url, n, args.runs, args.flushes, mode) for _ in range(args.repeat)]
            med = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
            base = base or med["flushes_s"]
            print(
                f"{mode:<11} {n:>2}  {med['flushes_s']:>9.1f}  {med['thermo_rows_s']:>13.0f}  "
                f"{med['flushes_s'] / base:>12.2f}  {med['flushes_s'] / n:>10.1f}  "
                f"{med['latency_ms_p50']:>6.1f}  {med['latency_ms_p95']:>6.1f}  "
                f"{med['client_cpu_ms']:>19.1f}  {med['stored_kb']:>15.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
