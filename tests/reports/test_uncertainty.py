"""MAE intervals, seed SD, mean |z| and overlaps (reports/uncertainty.py).

Every number is SYNTHETIC: structures from tests/reports/conftest.py, ingested with
``glassbench ingest traj`` (3 seeds per point, plus single-seed points at a second quench rate),
and an experiment CSV of made-up values with made-up uncertainties ingested with ``glassbench
ingest experiment``. The report's numbers are compared with plain-Python computations from the
values the structures themselves give (``write_traj``), not from the database; the bootstrap
with an independent re-implementation of its documented draws, one scalar draw at a time.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from glassbench.reports.metrics import completed
from glassbench.reports.queries import load_experiment, load_runs
from glassbench.reports.uncertainty import (
    MAE_UNCERTAINTY_COLUMNS,
    SEED_VALUE_COLUMNS,
    mae_with_uncertainty,
    overlap_groups,
    seed_values,
)
from tests.reports.conftest import MLIP_DIMERS, MLIP_RANDOM, write_experiment_csv, write_traj

Key3 = tuple[str, float, str]  # (mlip, quench rate, property): one protocol in these tests
RunKey = tuple[str, float, float, int]  # (mlip, x, quench rate, seed)

PROPS = ("density_g_cm3", "bs", "nbs")
# 3 seeds per point at 1 K/ps, one seed per point at 5 K/ps (MLIP A only).
RUNS: tuple[RunKey, ...] = (
    *[(m, x, 1.0, s) for m in (MLIP_DIMERS, MLIP_RANDOM) for x in (0.0, 1.0) for s in (1, 2, 3)],
    *[(MLIP_DIMERS, x, 5.0, 1) for x in (0.0, 1.0)],
)
# SYNTHETIC reference values (x, property, value, uncertainty, source suffix): not measurements.
EXPERIMENT: tuple[tuple[float, str, float, float | None, str], ...] = (
    (0.0, "density_g_cm3", 1.45, 0.01, ""),
    (1.0, "density_g_cm3", 1.52, 0.01, ""),
    (1.0, "density_g_cm3", 1.56, None, " #2"),  # two sources: values and given u averaged
    (0.0, "bs", 0.12, None, ""),  # no uncertainty given
    (1.0, "bs", 0.10, None, ""),
    (0.0, "nbs", 0.60, 0.03, ""),
    (1.0, "nbs", 0.55, 0.03, ""),
)


@dataclass
class Ingested:
    runs: pd.DataFrame
    experiment: pd.DataFrame
    values: dict[RunKey, dict[str, float]]  # computed from the structures, not read back
    run_ids: dict[RunKey, int]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def ingested(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ingested]:
    """Runs and experiments of a database filled through the ingest commands, built once per
    engine for the module (the functions under test are pure)."""
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade
    from tests.conftest import Cli, fresh_pg_schema

    tmp = tmp_path_factory.mktemp(f"uncertainty-{request.param}")
    where = (
        fresh_pg_schema()
        if request.param == "postgres"
        else contextlib.nullcontext(f"sqlite:///{tmp / 'glassbench.db'}")
    )
    with where as url:
        engine = make_engine(url)
        upgrade(engine)
        gb = Cli(url)
        for mlip in (MLIP_DIMERS, MLIP_RANDOM):
            gb.ok("mlip", "add", mlip, "--arch", "chgnet")
        values: dict[RunKey, dict[str, float]] = {}
        for key in RUNS:
            mlip, x, q, seed = key
            path = tmp / f"{mlip}_{x:g}_{q:g}_{seed}.extxyz"
            density, fractions = write_traj(path, mlip, x, q, seed)
            values[key] = {"density_g_cm3": density, "bs": fractions["bs"], "nbs": fractions["nbs"]}
            gb.ok(
                "ingest", "traj", str(path), "--mlip", mlip, "--x", f"{x:g}",
                "--quench-rate", f"{q:g}", "--seed", str(seed), "--stage", "quench",
            )  # fmt: skip
        gb.ok("ingest", "experiment", str(write_experiment_csv(tmp / "exp.csv", EXPERIMENT)))
        with engine.connect() as conn:
            runs, experiment = load_runs(conn), load_experiment(conn)
        engine.dispose()
    run_ids = {
        (r.mlip, float(r.x), float(r.quench_rate_k_ps), int(r.seed)): int(r.run_id)
        for r in runs.itertuples(index=False)
    }
    yield Ingested(completed(runs), experiment, values, run_ids)


# --- the independent computation --------------------------------------------------------------


def reference() -> dict[tuple[float, str], tuple[float, float | None]]:
    """(x, property) -> (mean over sources, mean of the given uncertainties or None)."""
    vals: dict[tuple[float, str], list[float]] = defaultdict(list)
    uncs: dict[tuple[float, str], list[float]] = defaultdict(list)
    for x, prop, v, u, _ in EXPERIMENT:
        vals[(x, prop)].append(v)
        if u is not None:
            uncs[(x, prop)].append(u)
    return {
        k: (statistics.fmean(v), statistics.fmean(uncs[k]) if uncs[k] else None)
        for k, v in vals.items()
    }


def points_of(data: Ingested) -> dict[Key3, dict[float, list[tuple[int, float]]]]:
    """group -> x -> [(run id, value)] in run-id order, for points with an experiment."""
    ref = reference()
    out: dict[Key3, dict[float, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for key, values in data.values.items():
        mlip, x, q, _ = key
        for prop, v in values.items():
            if (x, prop) in ref:
                out[(mlip, q, prop)][x].append((data.run_ids[key], v))
    return {g: {x: sorted(r) for x, r in pts.items()} for g, pts in out.items()}


def brute_point_estimates(data: Ingested) -> dict[Key3, dict[str, float]]:
    ref = reference()
    out = {}
    for g, pts in points_of(data).items():
        errors, variances, zs, n_seeds = [], [], [], 0
        for x, runs in pts.items():
            seeds = [v for _, v in runs]
            n_seeds += len(seeds)
            exp, u = ref[(x, g[2])]
            err = statistics.fmean(seeds) - exp
            errors.append(err)
            if len(seeds) >= 2:
                var = statistics.variance(seeds)
                variances.append(var)
                u_exp = 0.0 if u is None else u  # no stated uncertainty: exact
                if var + u_exp * u_exp > 0:
                    zs.append(abs(err) / math.sqrt(var + u_exp * u_exp))
        out[g] = {
            "n": len(errors),
            "n_seeds": n_seeds,
            "mae": statistics.fmean(abs(e) for e in errors),
            "mean_error": statistics.fmean(errors),
            "seed_sd": math.sqrt(statistics.fmean(variances)) if variances else math.nan,
            "mean_abs_z": statistics.fmean(zs) if zs else math.nan,
        }
    return out


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between order statistics (numpy's default, written out)."""
    s = sorted(values)
    h = (len(s) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def brute_bootstrap(
    data: Ingested, order: list[Key3], *, n_boot: int, seed: int, level: float
) -> dict[Key3, tuple[float, float]]:
    """The documented draws, one scalar at a time: per replicate, groups in ``order``, points
    by x, runs by id; a uniform per run slot, a standard normal per point."""
    ref = reference()
    pts = points_of(data)
    resample, experiment = np.random.default_rng(seed).spawn(2)
    reps: dict[Key3, list[float]] = {g: [] for g in order}
    for _ in range(n_boot):
        for g in order:
            abs_errors = []
            for x in sorted(pts[g]):
                seeds = [v for _, v in pts[g][x]]
                n = len(seeds)
                drawn = [seeds[min(int(resample.random() * n), n - 1)] for _ in range(n)]
                exp, u = ref[(x, g[2])]
                exp_b = exp + (u or 0.0) * experiment.standard_normal()
                abs_errors.append(abs(sum(drawn) / n - exp_b))
            reps[g].append(sum(abs_errors) / len(abs_errors))
    est = brute_point_estimates(data)
    a = (1.0 - level) / 2.0
    return {
        g: (
            min(percentile(r, a), est[g]["mae"]),
            max(percentile(r, 1.0 - a), est[g]["mae"]),
        )
        for g, r in reps.items()
    }


def by_group(table: pd.DataFrame) -> dict[Key3, Any]:
    return {(r.mlip, float(r.quench_rate_k_ps), r.property): r for r in table.itertuples()}


def _table(data: Ingested, **kw: Any) -> pd.DataFrame:
    return mae_with_uncertainty(seed_values(data.runs, data.experiment, keys=PROPS), **kw)


# --- on ingested data -------------------------------------------------------------------------


def test_seed_values_are_the_ingested_runs(ingested: Ingested) -> None:
    long = seed_values(ingested.runs, ingested.experiment, keys=PROPS)
    assert list(long.columns) == list(SEED_VALUE_COLUMNS)
    ref = reference()
    expected = {
        (ingested.run_ids[k], p): v
        for k, vals in ingested.values.items()
        for p, v in vals.items()
        if (k[1], p) in ref
    }
    got = {(int(r.run_id), r.property): r for r in long.itertuples()}
    assert set(got) == set(expected)
    for (rid, prop), v in expected.items():
        row = got[(rid, prop)]
        assert row.value == pytest.approx(v, rel=1e-9, abs=1e-12)
        exp, u = ref[(row.x, prop)]
        assert row.exp_value == pytest.approx(exp, rel=1e-12)
        if u is None:
            assert math.isnan(row.exp_uncertainty)
        else:
            assert row.exp_uncertainty == pytest.approx(u, rel=1e-12)
    assert len(set(long["protocol_id"])) == 1  # one protocol: groups are (mlip, rate, property)


def test_point_estimates_seed_sd_and_z_equal_brute_force(ingested: Ingested) -> None:
    table = _table(ingested, n_boot=10)
    assert list(table.columns) == list(MAE_UNCERTAINTY_COLUMNS)
    expected = brute_point_estimates(ingested)
    got = by_group(table)
    assert set(got) == set(expected)
    for g, e in expected.items():
        row = got[g]
        assert (row.n, row.n_seeds) == (e["n"], e["n_seeds"]), g
        for col in ("mae", "mean_error", "seed_sd", "mean_abs_z"):
            if math.isnan(e[col]):
                assert math.isnan(getattr(row, col)), (g, col)
            else:
                assert getattr(row, col) == pytest.approx(e[col], rel=1e-9, abs=1e-12), (g, col)
    # Never pooled across quench rates: one row per rate, the 5 K/ps points their own.
    assert got[(MLIP_DIMERS, 5.0, "density_g_cm3")].n_seeds == 2
    assert got[(MLIP_DIMERS, 1.0, "density_g_cm3")].n_seeds == 6
    # Single seeds: no seed SD, so no z either.
    assert math.isnan(got[(MLIP_DIMERS, 5.0, "nbs")].seed_sd)
    assert math.isnan(got[(MLIP_DIMERS, 5.0, "nbs")].mean_abs_z)
    # No experimental uncertainty for bs: the reference enters as exact, z from the seeds.
    assert math.isfinite(got[(MLIP_RANDOM, 1.0, "bs")].mean_abs_z)


def test_bootstrap_equals_independent_reimplementation(ingested: Ingested) -> None:
    table = _table(ingested, n_boot=300, seed=11, level=0.9)
    order = list(by_group(table))
    expected = brute_bootstrap(ingested, order, n_boot=300, seed=11, level=0.9)
    got = by_group(table)
    for g, (lo, hi) in expected.items():
        assert got[g].mae_ci_lo == pytest.approx(lo, rel=1e-9, abs=1e-12), g
        assert got[g].mae_ci_hi == pytest.approx(hi, rel=1e-9, abs=1e-12), g


def test_interval_contains_estimate_and_degenerates_honestly(ingested: Ingested) -> None:
    table = _table(ingested)
    assert (table["mae_ci_lo"] <= table["mae"]).all()
    assert (table["mae"] <= table["mae_ci_hi"]).all()
    got = by_group(table)
    # One seed per point and no experimental uncertainty: nothing to resample.
    single = got[(MLIP_DIMERS, 5.0, "bs")]
    assert single.mae_ci_lo == single.mae == single.mae_ci_hi
    # One seed per point but an experimental uncertainty: spread from the experiment alone.
    assert (
        got[(MLIP_DIMERS, 5.0, "density_g_cm3")].mae_ci_hi
        > got[(MLIP_DIMERS, 5.0, "density_g_cm3")].mae_ci_lo
    )
    # Three seeds that differ (random structures): spread from the seeds.
    assert got[(MLIP_RANDOM, 1.0, "bs")].mae_ci_hi > got[(MLIP_RANDOM, 1.0, "bs")].mae_ci_lo


def test_bootstrap_is_seeded(ingested: Ingested) -> None:
    values = seed_values(ingested.runs, ingested.experiment, keys=PROPS)
    a = mae_with_uncertainty(values, n_boot=500, seed=3)
    b = mae_with_uncertainty(values, n_boot=500, seed=3)
    c = mae_with_uncertainty(values, n_boot=500, seed=4)
    pd.testing.assert_frame_equal(a, b)
    # Where the experiment is drawn from a normal, the replicates are continuous and another
    # seed moves the interval. (Resampling three seeds alone has a discrete distribution,
    # whose percentiles another seed can leave where they were.)
    continuous = a["property"].isin(["density_g_cm3", "nbs"]).to_numpy()
    assert continuous.any()
    assert (a["mae_ci_lo"] != c["mae_ci_lo"])[continuous].all()
    assert (a["mae_ci_hi"] != c["mae_ci_hi"])[continuous].all()
    assert (a["mae"] == c["mae"]).all()


def test_rates_are_not_pooled(ingested: Ingested) -> None:
    """Dropping the 5 K/ps runs leaves the 1 K/ps rows' estimates exactly as they were."""
    full = _table(ingested, n_boot=10)
    runs = ingested.runs[ingested.runs["quench_rate_k_ps"] == 1.0]
    part = mae_with_uncertainty(seed_values(runs, ingested.experiment, keys=PROPS), n_boot=10)
    one = full[full["quench_rate_k_ps"] == 1.0].reset_index(drop=True)
    cols = ["mlip", "property", "n", "n_seeds", "mae", "mean_error", "seed_sd", "mean_abs_z"]
    pd.testing.assert_frame_equal(one[cols], part[cols])


# --- statistical properties on synthetic frames ------------------------------------------------


def synthetic_values(
    seeds_per_point: int, *, sd: float = 0.2, unc: float | None = None, mlip: str = "M", bias=0.3
) -> pd.DataFrame:
    """SYNTHETIC seed values: 4 points, seeds at fixed standard-normal quantiles around
    exp + bias (the same spread whatever the count, so only the count changes)."""
    from scipy.stats import norm

    q = norm.ppf((np.arange(seeds_per_point) + 0.5) / seeds_per_point)
    q = q / q.std(ddof=1) if seeds_per_point > 1 else q
    rows = []
    run_id = 0
    for i, x in enumerate((0.0, 0.5, 1.0, 1.5)):
        exp = 2.0 + i
        for j in range(seeds_per_point):
            run_id += 1
            rows.append(
                {
                    "mlip": mlip,
                    "protocol_id": 1,
                    "quench_rate_k_ps": 1.0,
                    "x": x,
                    "composition_id": i + 1,
                    "run_id": run_id,
                    "seed": j,
                    "property": "density_g_cm3",
                    "value": exp + bias * (-1) ** i + sd * q[j],
                    "exp_value": exp,
                    "exp_uncertainty": np.nan if unc is None else unc,
                }
            )
    return pd.DataFrame(rows, columns=list(SEED_VALUE_COLUMNS))


def width(table: pd.DataFrame) -> float:
    return float((table["mae_ci_hi"] - table["mae_ci_lo"]).iloc[0])


def test_interval_shrinks_with_more_seeds() -> None:
    widths = [width(mae_with_uncertainty(synthetic_values(n))) for n in (3, 12, 48)]
    assert widths[0] > widths[1] > widths[2] > 0
    # The seed mean's scatter goes as 1/sqrt(n): 4x the seeds, about half the width.
    assert widths[1] / widths[0] == pytest.approx(0.5, abs=0.15)


def test_single_seed_without_uncertainty_is_the_point_estimate() -> None:
    table = mae_with_uncertainty(synthetic_values(1))
    row = table.iloc[0]
    assert row["mae_ci_lo"] == row["mae"] == row["mae_ci_hi"]
    assert row["mae"] == pytest.approx(0.3)
    assert math.isnan(row["seed_sd"]) and math.isnan(row["mean_abs_z"])
    with_u = mae_with_uncertainty(synthetic_values(1, unc=0.05)).iloc[0]
    assert with_u["mae_ci_lo"] < with_u["mae"] < with_u["mae_ci_hi"]


def test_interval_at_the_noise_floor_is_widened_to_the_estimate() -> None:
    """Seeds scattered around the experiment: resampled seed means miss it almost always, so
    the bootstrap's lower percentile lies above the MAE; the interval reported starts at it."""
    rng = np.random.default_rng(5)
    seeds = rng.normal(size=8)
    exp = float(seeds.mean())
    df = pd.DataFrame(
        {
            "mlip": "M",
            "protocol_id": 1,
            "quench_rate_k_ps": 1.0,
            "x": 0.0,
            "composition_id": 1,
            "run_id": np.arange(8),
            "seed": np.arange(8),
            "property": "bs",
            "value": seeds,
            "exp_value": exp,
            "exp_uncertainty": np.nan,
        }
    )
    row = mae_with_uncertainty(df).iloc[0]
    assert row["mae"] < 1e-12
    assert row["mae_ci_lo"] == row["mae"]
    assert row["mae_ci_hi"] > 0.2


def test_seed_sd_and_z_leave_out_what_is_undefined() -> None:
    rows = [
        # x=0: two seeds and u: enters both (z = |1.1 - 1| / sqrt(0.02 + 0.1**2))
        (0.0, 1, 1.0, 1.0, 0.1), (0.0, 2, 1.2, 1.0, 0.1),
        # x=1: one seed: no SD, so no z, whatever u
        (1.0, 3, 5.0, 4.0, 0.5),
        # x=2: two seeds, no u given: SD enters, z with u = 0 (|2.2 - 2.5| / sqrt(0.08))
        (2.0, 4, 2.0, 2.5, np.nan), (2.0, 5, 2.4, 2.5, np.nan),
        # x=3: two equal seeds and u = 0: SD 0 enters, z's denominator is 0: left out
        (3.0, 6, 3.0, 3.5, 0.0), (3.0, 7, 3.0, 3.5, 0.0),
    ]  # fmt: skip
    df = pd.DataFrame(
        [
            {
                "mlip": "M",
                "protocol_id": 1,
                "quench_rate_k_ps": 1.0,
                "x": x,
                "composition_id": int(x) + 1,
                "run_id": rid,
                "seed": rid,
                "property": "bs",
                "value": v,
                "exp_value": e,
                "exp_uncertainty": u,
            }
            for x, rid, v, e, u in rows
        ]
    )
    row = mae_with_uncertainty(df, n_boot=50).iloc[0]
    variances = [statistics.variance([1.0, 1.2]), statistics.variance([2.0, 2.4]), 0.0]
    assert row["seed_sd"] == pytest.approx(math.sqrt(statistics.fmean(variances)))
    z0 = 0.1 / math.sqrt(0.02 + 0.01)
    z2 = 0.3 / math.sqrt(statistics.variance([2.0, 2.4]))
    assert row["mean_abs_z"] == pytest.approx((z0 + z2) / 2)
    assert (row["n"], row["n_seeds"]) == (4, 7)
    # Only single seeds and no uncertainty: neither is defined.
    one = mae_with_uncertainty(df[df["x"] == 1.0].assign(exp_uncertainty=np.nan)).iloc[0]
    assert math.isnan(one["seed_sd"]) and math.isnan(one["mean_abs_z"])


def test_missing_values_are_left_out_not_imputed(ingested: Ingested) -> None:
    runs = ingested.runs.copy()
    victim = ingested.run_ids[(MLIP_RANDOM, 0.0, 1.0, 2)]
    runs.loc[runs["run_id"] == victim, "density_g_cm3"] = np.nan
    long = seed_values(runs, ingested.experiment, keys=PROPS)
    assert not ((long["run_id"] == victim) & (long["property"] == "density_g_cm3")).any()
    row = by_group(mae_with_uncertainty(long, n_boot=10))[(MLIP_RANDOM, 1.0, "density_g_cm3")]
    assert (row.n, row.n_seeds) == (2, 5)
    ref = reference()
    errors = []
    for x in (0.0, 1.0):
        seeds = [
            v["density_g_cm3"]
            for k, v in ingested.values.items()
            if k[:3] == (MLIP_RANDOM, x, 1.0) and ingested.run_ids[k] != victim
        ]
        errors.append(abs(statistics.fmean(seeds) - ref[(x, "density_g_cm3")][0]))
    assert row.mae == pytest.approx(statistics.fmean(errors), rel=1e-9)
    with pytest.raises(ValueError, match="missing"):
        seed_values(runs, ingested.experiment, keys=PROPS, nan_policy="raise")


def test_empty_and_bad_options() -> None:
    empty = mae_with_uncertainty(pd.DataFrame(columns=list(SEED_VALUE_COLUMNS)))
    assert empty.empty and list(empty.columns) == list(MAE_UNCERTAINTY_COLUMNS)
    with pytest.raises(ValueError, match="n_boot"):
        mae_with_uncertainty(synthetic_values(3), n_boot=0)
    with pytest.raises(ValueError, match="level"):
        mae_with_uncertainty(synthetic_values(3), level=1.0)


# --- overlaps ------------------------------------------------------------------------------------


def test_overlap_groups_equals_pairwise_check() -> None:
    rng = np.random.default_rng(9)
    rows = []
    for proto in (1, 2):
        for rate in (0.5, 5.0):
            for prop in ("density_g_cm3", "bs"):
                for m in ("A", "B", "C", "D"):
                    lo = float(rng.uniform(0, 1))
                    rows.append((m, proto, rate, prop, lo, lo + float(rng.uniform(0, 0.5))))
    # E starts where A (protocol 1, 0.5 K/ps, density) ends: touching counts as overlapping.
    assert rows[0][:4] == ("A", 1, 0.5, "density_g_cm3")
    rows.append(("E", 1, 0.5, "density_g_cm3", rows[0][5], rows[0][5] + 1))
    table = pd.DataFrame(
        rows,
        columns=["mlip", "protocol_id", "quench_rate_k_ps", "property", "mae_ci_lo", "mae_ci_hi"],
    )
    got = overlap_groups(table)
    for i, (m, proto, rate, prop, lo, hi) in enumerate(rows):
        expected = sorted(
            o[0]
            for o in rows
            if o[1:4] == (proto, rate, prop) and o[0] != m and lo <= o[5] and o[4] <= hi
        )
        assert got["overlap"].iloc[i] == ", ".join(expected), rows[i]
    assert "A" in got["overlap"].iloc[len(rows) - 1].split(", ")
    assert (got[table.columns] == table).all().all()  # the table itself unchanged


def test_draws_do_not_depend_on_the_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large campaigns are bootstrapped a few replicates at a time: the same interval."""
    from glassbench.reports import uncertainty

    values = pd.concat(
        [synthetic_values(3, unc=0.05, mlip="A"), synthetic_values(5, mlip="B", bias=0.1)],
        ignore_index=True,
    )
    whole = mae_with_uncertainty(values, n_boot=101, seed=8)
    monkeypatch.setattr(uncertainty, "_CHUNK_ELEMENTS", 7 * len(values))
    pd.testing.assert_frame_equal(mae_with_uncertainty(values, n_boot=101, seed=8), whole)
