"""Registering a campaign's matrix: pending run rows per second, bulk against one at a time.

`campaign run` creates the missing run rows of its matrix before it submits anything. The old
path called ``runners.meltquench.ensure_run`` once per run (a transaction with an MLIP look-up,
a composition and a protocol upsert and the run upsert: four round trips); the new one is
``campaigns.loop.register_runs``: one transaction, compositions and protocols once each, the
runs through ``service.runs.ensure_many`` (multi-row ``INSERT ... ON CONFLICT DO NOTHING``, then
one look-up of the ids, per 1,000 runs). Both register the same matrix (built once, outside
the timing) into a fresh database; the new path is also timed a second time on the same
database (every run exists: what a re-run of the campaign pays). Each figure is the median of
``--repeat`` repetitions, the two paths taking turns, measured in the same invocation.

Usage::

    python benchmarks/campaign_register.py [--url URL] [--runs 10000] [--repeat 3]

The URL defaults to SQLite in a temporary folder and ``--url postgres`` means
``GLASSBENCH_BENCH_POSTGRES_URL``, then ``GLASSBENCH_TEST_POSTGRES_URL``, then the local test
server; a PostgreSQL URL gets its own schema (``gb_bench_campaign_register``, recreated for
every repetition). Synthetic MLIP, no MD: it measures the registration only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = "gb_bench_campaign_register"
MLIP = "SYNTH-REGISTER"


def postgres_url() -> str:
    return (
        os.environ.get("GLASSBENCH_BENCH_POSTGRES_URL")
        or os.environ.get("GLASSBENCH_TEST_POSTGRES_URL")
        or DEFAULT_PG
    )


def fresh_database(url: str) -> Any:
    """An engine on an empty, migrated database with the synthetic MLIP registered."""
    from glassbench.service import repos, unit_of_work
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade

    if url.startswith("sqlite"):
        path = Path(tempfile.mkdtemp(prefix="gb-bench-register-")) / "bench.db"
        target = f"sqlite:///{path}"
    else:
        admin = make_engine(url)
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
            c.execute(sa.text(f'CREATE SCHEMA "{SCHEMA}"'))
        admin.dispose()
        sep = "&" if "?" in url else "?"
        target = f"{url}{sep}options={quote(f'-csearch_path={SCHEMA}')}"
    eng = make_engine(target)
    upgrade(eng)
    with unit_of_work(eng) as s:
        repos.add_mlip(s, {"name": MLIP, "arch": "other"})
    return eng


def matrix(n: int) -> list[Any]:
    """``n`` runs: 4 compositions x 5 quench rates x n/20 seeds of one MLIP and protocol."""
    from glassbench.runners.meltquench import MeltQuenchParams

    xs, rates = (0.0, 1.0, 2.0, 3.5), (0.5, 1.0, 2.0, 5.0, 10.0)
    seeds = range(-(-n // (len(xs) * len(rates))))
    out = [
        MeltQuenchParams(mlip=MLIP, x=x, quench_rate_k_ps=q, seed=s, melt_ps=5.0)
        for x in xs
        for q in rates
        for s in seeds
    ]
    return out[:n]


def old_path(engine: Any, runs: list[Any], _mlips: dict[str, Any]) -> None:
    from glassbench.runners.meltquench import ensure_run

    for p in runs:
        ensure_run(engine, p)


def new_path(engine: Any, runs: list[Any], mlips: dict[str, Any]) -> None:
    from glassbench.campaigns.loop import register_runs

    register_runs(engine, runs, mlips)


def mlip_records(engine: Any) -> dict[str, Any]:
    from sqlmodel import Session

    from glassbench.service import repos

    with Session(engine) as s:
        m = repos.get_mlip(s, MLIP)
        s.expunge(m)
    return {MLIP: m}


def timed(url: str, fn: Callable[[Any, list[Any], dict[str, Any]], None], runs: list[Any],
          again: bool = False) -> tuple[float, float | None]:  # fmt: skip
    """Seconds to register ``runs`` into a fresh database (and a second time, if ``again``)."""
    engine = fresh_database(url)
    mlips = mlip_records(engine)
    t0 = time.perf_counter()
    fn(engine, runs, mlips)
    first = time.perf_counter() - t0
    second = None
    if again:
        t0 = time.perf_counter()
        fn(engine, runs, mlips)
        second = time.perf_counter() - t0
    with engine.connect() as c:
        n = c.execute(sa.text("SELECT COUNT(*) FROM run")).scalar_one()
    engine.dispose()
    if n != len(runs):
        raise SystemExit(f"{fn.__name__}: {n} run rows, expected {len(runs)}")
    return first, second


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="sqlite", help="sqlite (default), postgres, or a URL")
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    from glassbench.settings import mask_url

    url = {"sqlite": "sqlite://", "postgres": postgres_url()}.get(args.url, args.url)
    runs = matrix(args.runs)
    print(
        f"# campaign registration on {mask_url(url)}; {os.cpu_count()} CPUs; "
        f"{len(runs)} runs; median of {args.repeat}"
    )
    old: list[float] = []
    new: list[float] = []
    rerun: list[float] = []
    for _ in range(args.repeat):
        old.append(timed(url, old_path, runs)[0])
        first, second = timed(url, new_path, runs, again=True)
        new.append(first)
        assert second is not None
        rerun.append(second)
    n = len(runs)
    med_old, med_new, med_rerun = (statistics.median(v) for v in (old, new, rerun))
    print("path                         median s   runs/s   runs (s)")
    for label, med, vals in (
        ("one ensure_run per run (old)", med_old, old),
        ("register_runs, bulk (new)", med_new, new),
        ("register_runs, all exist", med_rerun, rerun),
    ):
        print(f"{label:<28} {med:>9.3f} {n / med:>8.0f}   {', '.join(f'{v:.3f}' for v in vals)}")
    print(f"speed-up new / old: {med_old / med_new:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
