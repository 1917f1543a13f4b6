"""Report generation on a PostgreSQL database of realistic size.

Builds (once, in its own schema) a SYNTHETIC database: 300 runs (5 series x 5 compositions x
3 quench rates x 4 seeds; the series are 4 MLIPs and the first of them again under a protocol
with D3 dispersion, so that every section of the report, the quench-rate extrapolation and the
dispersion x rate comparison included, has data), each with 10,000 thermo rows and 50 analysed
frames whose speciation counts and coordination values are random (not analyses of real
structures), plus synthetic experimental values. Every number in it is synthetic: it measures
speed, nothing else. A schema built at an older revision than the code's head is rebuilt.

Then it times, as medians of ``--repeat`` runs:
- the full report (``generate_report(..., force=True)``: queries, metrics, figures, HTML, Markdown
  and CSV written to a temporary folder);
- the MAE query of the report (load the run values and experiments, compute the MAE table per
  MLIP, protocol, quench rate and property);
- the same MAE with its uncertainty (seed values, 2,000 bootstrap resamples, seed SD, |z|);
- ``SELECT * FROM mlip_mae`` (the SQL view), for comparison.

Usage::

    python benchmarks/reports.py [--url postgresql+psycopg://...] [--rebuild] [--repeat 5]

The URL defaults to ``GLASSBENCH_BENCH_POSTGRES_URL``, then ``GLASSBENCH_TEST_POSTGRES_URL``,
then the local test server. Build uses COPY for every bulk table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import sqlalchemy as sa

from glassbench.schema import SPECIATION_UNITS, pack_array
from glassbench.service.db import make_engine, unit_of_work
from glassbench.service.migrations import current_revision, head_revision, upgrade
from glassbench.service.repos import (
    THERMO_COLUMNS,
    add_mlip,
    composition_id,
    experiment_subject,
    protocol_id,
    set_crystal_volume,
    set_experiment,
)

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = "gb_bench_reports"

MLIPS = ("SYNTH-A", "SYNTH-B", "SYNTH-C", "SYNTH-D")
# (MLIP, dispersion of the protocol): the first MLIP also runs with D3.
SERIES = (*((m, "none") for m in MLIPS), (MLIPS[0], "d3"))
XS = (0.0, 1.0, 2.0, 3.0, 3.5)
QUENCH_RATES = (0.5, 1.0, 5.0)
SEEDS = (1, 2, 3, 4)
N_RUNS = len(SERIES) * len(XS) * len(QUENCH_RATES) * len(SEEDS)
N_P = 32  # 16 formula units
P_UNITS = ("P0", "P1", "P2", "P3", "P4", "P1P", "PPend", "P3c", "P_other")
P_PROBS = (0.15, 0.48, 0.15, 0.02, 0.01, 0.08, 0.04, 0.04, 0.03)
ANIONS = ("BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O")


def base_url() -> str:
    return (
        os.environ.get("GLASSBENCH_BENCH_POSTGRES_URL")
        or os.environ.get("GLASSBENCH_TEST_POSTGRES_URL")
        or DEFAULT_PG
    )


def schema_url(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


def _copy(engine: sa.Engine, table: str, cols: tuple[str, ...], rows: Any) -> int:
    n = 0
    with engine.begin() as conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        with (
            dbapi.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp,
        ):
            for row in rows:
                cp.write_row(row)
                n += 1
    return n


def build(url: str, *, runs_per_cell: int = len(SEEDS), thermo_rows: int, frames: int) -> None:
    """Create the synthetic database (schema already empty and migrated)."""
    rng = np.random.default_rng(20240601)
    engine = make_engine(url)
    t0 = time.perf_counter()
    with unit_of_work(engine) as s:
        mlip_ids = {m: add_mlip(s, {"name": m, "arch": "other"}) for m in MLIPS}
        comp_ids = {x: composition_id(s, x) for x in XS}
        base = {"formula_units": 16, "synthetic": True}
        pids = {
            "none": protocol_id(s, base, kind="external"),
            "d3": protocol_id(s, {**base, "dispersion": "d3"}, kind="external"),
        }
        # Synthetic experimental values, clearly not measurements.
        for x, cid in comp_ids.items():
            exp = {
                "density_g_cm3": 2.2 + 0.05 * x,
                "young_modulus_gpa": 20.0 + 2.0 * x,
                "bulk_modulus_gpa": 15.0 + 1.5 * x,
                "shear_modulus_gpa": 8.0 + 0.8 * x,
                "p0": 0.1 + 0.05 * x,
                "p1_incl_p1p": 0.7 - 0.1 * x,
                "p2": 0.1 + 0.05 * x,
                "p1p": 0.1,
                "bs": 0.15,
                "nbs": 0.7 - 0.1 * x,
                "bo": 0.02 * x,
                "nbo": 0.03 * x,
            }
            for prop, val in exp.items():
                set_experiment(
                    s,
                    {
                        "subject": experiment_subject(x=x, crystal=None),
                        "composition_id": cid,
                        "crystal": None,
                        "property": prop,
                        "value": val,
                        "uncertainty": 0.01 * val,
                        "source": "SYNTHETIC benchmark values",
                    },
                )
        for mid in mlip_ids.values():
            for crystal, v in (("Na3PS4", 150.0), ("Na4P2O7", 200.0)):
                set_crystal_volume(
                    s,
                    {
                        "mlip_id": mid,
                        "crystal": crystal,
                        "volume_per_fu_a3": v * (1 + rng.normal(0, 0.02)),
                        "exp_volume_per_fu_a3": v,
                        "deviation_pct": None,
                    },
                )
    now = datetime.now(UTC)
    run_rows = [
        (mlip_ids[m], comp_ids[x], q, seed, pids[d], "done", "synthetic", 0, N_P * 11 // 2, now)
        for m, d in SERIES
        for x in XS
        for q in QUENCH_RATES
        for seed in SEEDS[:runs_per_cell]
    ]
    _copy(
        engine,
        "run",
        (
            "mlip_id",
            "composition_id",
            "quench_rate_k_ps",
            "seed",
            "protocol_id",
            "status",
            "source",
            "attempts",
            "n_atoms",
            "created_at",
        ),
        run_rows,
    )
    with engine.connect() as c:
        run_ids = [r[0] for r in c.execute(sa.text("SELECT id FROM run ORDER BY id"))]
    t_meta = time.perf_counter()

    steps = np.arange(thermo_rows)

    def thermo() -> Any:
        for rid in run_ids:
            temp = 1800.0 - 1500.0 * steps / thermo_rows + rng.normal(0, 5, thermo_rows)
            for i in range(thermo_rows):
                t = float(temp[i])
                yield (
                    rid,
                    int(steps[i]) * 10,
                    i * 0.01,
                    t,
                    0.0,
                    -1000.0,
                    t * 0.01,
                    -1000.0 + t * 0.01,
                    4000.0,
                    2.2,
                )

    n_thermo = _copy(engine, "thermo", ("run_id", *THERMO_COLUMNS), thermo())
    t_thermo = time.perf_counter()

    numbers = pack_array(np.repeat(np.array([11, 15, 16, 8], dtype=np.int16), 44))
    positions = pack_array(rng.random((176, 3)) * 14.0)
    cell = json.dumps((np.eye(3) * 14.0).tolist())
    stages = ["melt"] * 5 + ["quench"] * (frames - 10) + ["anneal"] * 4 + ["final"]
    temps = np.concatenate(
        [np.full(5, 1800.0), np.linspace(1800.0, 300.0, frames - 10), np.full(5, 300.0)]
    )

    def frame_rows() -> Any:
        for rid in run_ids:
            for k in range(frames):
                yield (
                    rid,
                    stages[k],
                    k * 1000,
                    k * 1.0,
                    float(temps[k]),
                    176,
                    cell,
                    "TTT",
                    numbers,
                    positions,
                )

    _copy(
        engine,
        "frame",
        (
            "run_id",
            "stage",
            "step",
            "time_ps",
            "temperature_k",
            "n_atoms",
            "cell_json",
            "pbc",
            "numbers",
            "positions",
        ),
        frame_rows(),
    )
    with engine.connect() as c:
        frame_ids = [r[0] for r in c.execute(sa.text("SELECT id FROM frame ORDER BY id"))]

    def speciation_rows() -> Any:
        p = rng.multinomial(N_P, P_PROBS, len(frame_ids))
        a = rng.multinomial(112, [0.1, 0.6, 0.05, 0.15, 0.03, 0.02, 0.03, 0.02], len(frame_ids))
        for j, fid in enumerate(frame_ids):
            counts = dict(zip(P_UNITS, p[j].tolist(), strict=True))
            counts.update(zip(ANIONS, a[j].tolist(), strict=True))
            counts["P2ES"] = int(rng.integers(0, 4))
            counts["PPchain"] = int(rng.integers(0, 3))
            counts["S_in_chains"] = int(rng.integers(0, 6))
            counts.update(n_P=N_P, n_S=90, n_O=22, n_Na=64)
            for unit in SPECIATION_UNITS:
                yield (fid, unit, counts[unit])

    n_spec = _copy(engine, "speciation", ("frame_id", "unit", "count"), speciation_rows())
    cn = rng.normal(5.5, 0.3, len(frame_ids))
    share = rng.uniform(0.6, 1.0, len(frame_ids))
    peaks = rng.normal(2.9, 0.05, len(frame_ids))

    def coordination_row(j: int, fid: int) -> tuple[Any, ...]:
        c, sh, pk = float(cn[j]), float(share[j]), float(peaks[j])
        return (
            fid,
            64,
            c,
            c * sh,
            c * (1 - sh),
            0.02,
            2.0,
            "{}",
            "{}",
            "{}",
            sh,
            pk,
            pk - 0.5,
            0.1,
        )

    _copy(
        engine,
        "coordination",
        (
            "frame_id",
            "na_n",
            "na_cn_mean",
            "na_cn_s_mean",
            "na_cn_o_mean",
            "ss_fraction",
            "ss_mean_length",
            "na_cn_histogram_json",
            "ss_chains_json",
            "cutoffs_json",
            "na_s_share",
            "na_s_peak_a",
            "na_o_peak_a",
            "ss_long_share",
        ),
        (coordination_row(j, fid) for j, fid in enumerate(frame_ids)),
    )
    t_frames = time.perf_counter()

    prop_rows = []
    for rid in run_ids:
        for name, mean in (
            ("density_g_cm3", 2.3),
            ("young_modulus_gpa", 22.0),
            ("bulk_modulus_gpa", 16.0),
            ("shear_modulus_gpa", 9.0),
        ):
            prop_rows.append((rid, name, float(mean * (1 + rng.normal(0, 0.05))), 0.01, "synth"))
    _copy(engine, "property", ("run_id", "name", "value", "stderr", "method"), prop_rows)
    with engine.begin() as c:
        c.execute(sa.text("ANALYZE"))
    engine.dispose()
    print(
        f"built: {len(run_ids)} runs, {n_thermo:,} thermo rows ({t_thermo - t_meta:.1f} s), "
        f"{len(frame_ids):,} frames, {n_spec:,} speciation rows ({t_frames - t_thermo:.1f} s); "
        f"total {time.perf_counter() - t0:.1f} s"
    )


def prepare(url: str, *, rebuild: bool, thermo_rows: int, frames: int) -> str:
    """The URL of the benchmark schema, building it if needed."""
    admin = make_engine(url)
    with admin.connect() as c:
        exists = c.execute(
            sa.text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"),
            {"s": SCHEMA},
        ).first()
    surl = schema_url(url, SCHEMA)
    if exists and not rebuild:
        eng = make_engine(surl)
        fresh = current_revision(eng) == head_revision(eng)
        n = 0
        if fresh:
            # Properties are written last: their count says the build finished.
            with eng.connect() as c:
                n = c.execute(sa.text("SELECT COUNT(DISTINCT run_id) FROM property")).scalar_one()
        eng.dispose()
        if n == N_RUNS:
            admin.dispose()
            print(f"reusing schema {SCHEMA} ({n} runs); --rebuild to rebuild")
            return surl
    with admin.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
        c.execute(sa.text(f'CREATE SCHEMA "{SCHEMA}"'))
    admin.dispose()
    eng = make_engine(surl)
    upgrade(eng)
    eng.dispose()
    build(surl, thermo_rows=thermo_rows, frames=frames)
    return surl


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, float, list[float]]:
    """Median wall time, median CPU time of this process, and all wall times (s).

    CPU time excludes the database server's work; on a shared machine the wall time also
    includes waiting for a CPU, and the two together tell load from cost.
    """
    fn()  # warm caches (imports, prepared statements, the server's buffers) once, untimed
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), walls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default=None, help="PostgreSQL URL (see module doc)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the synthetic database")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--thermo-rows", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=50)
    args = ap.parse_args(argv)

    from glassbench.reports import generate_report, load_mae_inputs, mae_points, mae_table
    from glassbench.reports.document import mae_uncertainty_table
    from glassbench.reports.metrics import completed

    url = prepare(
        args.url or base_url(),
        rebuild=args.rebuild,
        thermo_rows=args.thermo_rows,
        frames=args.frames,
    )
    engine = make_engine(url)
    with engine.connect() as c:
        sizes = {
            t: c.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
            for t in ("run", "thermo", "frame", "speciation")
        }
    print("database: " + ", ".join(f"{t} {n:,}" for t, n in sizes.items()))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        t_report, c_report, all_report = median_time(
            lambda: generate_report(engine, out_dir=out, force=True), args.repeat
        )
        files = sorted(p.name for p in out.rglob("*") if p.is_file())

    per_rate = ("mlip", "protocol_id", "quench_rate_k_ps", "property")

    def mae_query() -> Any:
        runs, experiment = load_mae_inputs(engine)
        return mae_table(mae_points(completed(runs), experiment), by=per_rate)

    def mae_uncertainty() -> Any:
        runs, experiment = load_mae_inputs(engine)
        return mae_uncertainty_table(completed(runs), experiment)

    t_mae, c_mae, all_mae = median_time(mae_query, max(args.repeat, 11))
    rows = mae_query()
    t_unc, c_unc, all_unc = median_time(mae_uncertainty, args.repeat)

    def view() -> Any:
        with engine.connect() as c:
            return c.execute(sa.text("SELECT * FROM mlip_mae")).all()

    t_view, _, all_view = median_time(view, args.repeat)
    engine.dispose()

    print(f"report files: {len(files)}; MAE rows: {len(rows)}")
    print(
        f"full report (html,md,csv)  median {t_report:7.3f} s  (client CPU {c_report:.2f} s)"
        f"  target < 10 s   runs: {', '.join(f'{t:.2f}' for t in all_report)}"
    )
    print(
        f"MAE query (report)         median {t_mae * 1e3:7.1f} ms (client CPU "
        f"{c_mae * 1e3:.0f} ms) target < 100 ms  runs: "
        f"{', '.join(f'{t * 1e3:.0f}' for t in all_mae)}"
    )
    print(
        f"MAE with uncertainty       median {t_unc * 1e3:7.1f} ms (client CPU "
        f"{c_unc * 1e3:.0f} ms; 2,000 bootstrap resamples)  runs: "
        f"{', '.join(f'{t * 1e3:.0f}' for t in all_unc)}"
    )
    print(
        f"SELECT * FROM mlip_mae     median {t_view * 1e3:7.1f} ms (the SQL view, for "
        f"comparison)  runs: {', '.join(f'{t * 1e3:.0f}' for t in all_view)}"
    )
    ok = t_report < 10.0 and t_mae < 0.1
    print("PASS" if ok else "FAIL: a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
