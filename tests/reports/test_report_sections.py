"""The sections issue 15 added, checked number by number against independent computations.

All numbers are SYNTHETIC (see conftest.py): the database goes in through the ingest commands,
and every value below is recomputed here from the structures that were written (the unit
counts of ``analyze_frame``, the Na-S share by brute force), in plain Python and numpy, and
compared with the CSV tables the report wrote. Figures are decoded and must not be blank.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from glassbench.reports import uncertainty
from glassbench.reports.document import RATE_KEYS, TABLE_NAMES
from glassbench.reports.extrapolation import DEFAULT_LAB_RATE_K_PS
from glassbench.reports.keys import COMPARABLE, EDGE_PP_UNITS, NA_ENVIRONMENT, SS_CHAINS
from glassbench.reports.queries import TRACE_COLUMNS
from tests.reports.conftest import (
    MLIP_DIMERS,
    MLIP_RANDOM,
    STEPS,
    Expected,
    frame_values,
    independent_mae_per_rate,
    protocol_ids,
    seeds_per_point,
)

LAB_RATE = 1e-9  # a non-default rate, to see --lab-rate reach the table


def _close(got: float, want: float | None) -> bool:
    if want is None or (isinstance(want, float) and math.isnan(want)):
        return bool(pd.isna(got))
    return bool(got == pytest.approx(want, rel=1e-9, abs=1e-12))


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


@pytest.fixture
def report(gb: Any, engine: Any, populated: Expected, tmp_path: Path) -> Path:
    out = tmp_path / "report"
    gb.ok("report", "generate", "--out", str(out), "--lab-rate", f"{LAB_RATE:g}")
    return out


def _table(report: Path, name: str) -> pd.DataFrame:
    assert name in TABLE_NAMES
    return pd.read_csv(report / "tables" / f"{name}.csv")


# --- MAE with uncertainty -----------------------------------------------------------------


def _bootstrap(
    exp: Expected, order: list[tuple[str, str, float, str]], *, n_boot: int = 2000
) -> dict[tuple[str, str, float, str], tuple[float, float]]:
    """The documented draws of reports/uncertainty.py, one scalar at a time: per replicate,
    groups in ``order``, points by x, runs by run id; one uniform per run slot (seeds drawn
    with replacement within the point) and one standard normal per point (the experimental
    value drawn from its uncertainty, exact without one); percentile interval widened to the
    point estimate."""
    runs: dict[tuple[str, str, float, float, str], list[tuple[int, float]]] = defaultdict(list)
    for key, values in exp.runs.items():
        mlip, x, q, _seed, disp = key
        for prop, v in values.items():
            if (x, prop) in exp.experiment:
                runs[(mlip, disp, q, x, prop)].append((exp.run_ids[key], v))
    points = {g: sorted(x for (m, d, q, x, p) in runs if (m, d, q, p) == g) for g in order}
    resample, normal = np.random.default_rng(0).spawn(2)
    reps: dict[tuple[str, str, float, str], list[float]] = {g: [] for g in order}
    for _ in range(n_boot):
        for g in order:
            mlip, disp, q, prop = g
            errors = []
            for x in points[g]:
                seeds = [v for _, v in sorted(runs[(mlip, disp, q, x, prop)])]
                n = len(seeds)
                drawn = [seeds[min(int(resample.random() * n), n - 1)] for _ in range(n)]
                u = exp.experiment_uncertainty.get((x, prop), 0.0)
                ref = exp.experiment[(x, prop)] + u * normal.standard_normal()
                errors.append(abs(sum(drawn) / n - ref))
            reps[g].append(sum(errors) / len(errors))
    est = independent_mae_per_rate(exp)
    return {
        g: (
            min(float(np.quantile(r, 0.025)), est[g]["mae"]),
            max(float(np.quantile(r, 0.975)), est[g]["mae"]),
        )
        for g, r in reps.items()
    }


def _group_order(exp: Expected, pids: dict[str, int]) -> list[tuple[str, str, float, str]]:
    """The order of the groups in the bootstrap's draws: that of its output table, for seed
    values built here from the structures (not from the database)."""
    rows = []
    for key, values in exp.runs.items():
        mlip, x, q, seed, disp = key
        for prop in (str(k) for k in COMPARABLE):
            if prop in values and (x, prop) in exp.experiment:
                rows.append(
                    {
                        "mlip": mlip, "protocol_id": pids[disp], "quench_rate_k_ps": q, "x": x,
                        "composition_id": int(x * 10), "run_id": exp.run_ids[key], "seed": seed,
                        "property": prop, "value": values[prop],
                        "exp_value": exp.experiment[(x, prop)],
                        "exp_uncertainty": exp.experiment_uncertainty.get((x, prop), math.nan),
                    }
                )  # fmt: skip
    order = {str(k): i for i, k in enumerate(COMPARABLE)}
    values = pd.DataFrame(rows)
    values = values.assign(_o=values["property"].map(order)).sort_values(
        ["mlip", "protocol_id", "quench_rate_k_ps", "_o", "x", "run_id"], kind="stable"
    )
    table = uncertainty.mae_with_uncertainty(values.drop(columns="_o"), n_boot=1)
    disp_of = {p: d for d, p in pids.items()}
    return [
        (r.mlip, disp_of[int(r.protocol_id)], float(r.quench_rate_k_ps), r.property)
        for r in table.itertuples(index=False)
    ]


@pytest.mark.slow
def test_mae_intervals_overlaps_and_sentences(
    report: Path, engine: Any, populated: Expected
) -> None:
    pids = protocol_ids(engine, populated)
    disp_of = {p: d for d, p in pids.items()}
    mae = _table(report, "mae")
    order = _group_order(populated, pids)
    intervals = _bootstrap(populated, order)
    assert len(mae) == len(intervals)
    for r in mae.itertuples(index=False):
        g = (r.mlip, disp_of[int(r.protocol_id)], float(r.quench_rate_k_ps), r.property)
        lo, hi = intervals[g]
        assert r.mae_ci_lo == pytest.approx(lo, rel=1e-9, abs=1e-12), g
        assert r.mae_ci_hi == pytest.approx(hi, rel=1e-9, abs=1e-12), g
        assert r.mae_ci_lo <= r.mae <= r.mae_ci_hi
    # Overlap: closed intervals of other MLIPs of the same protocol, rate and property.
    md = (report / "report.md").read_text()
    n_sentences = 0
    for (pid, q, prop), g in mae.groupby(["protocol_id", "quench_rate_k_ps", "property"]):
        rows = list(g.itertuples(index=False))
        pairs = set()
        for a in rows:
            others = sorted(
                b.mlip
                for b in rows
                if b.mlip != a.mlip and a.mae_ci_lo <= b.mae_ci_hi and b.mae_ci_lo <= a.mae_ci_hi
            )
            got = "" if pd.isna(a.overlap) else a.overlap
            assert got == ", ".join(others), (pid, q, prop, a.mlip)
            pairs |= {(min(a.mlip, b), max(a.mlip, b)) for b in others}
        if pairs:
            n_sentences += 1
            joined = "; ".join(f"{a} and {b}" for a, b in sorted(pairs))
            assert (
                f"protocol {int(pid)} at {q:g} K/ps: the 95 % MAE intervals overlap for {joined}."
                in md
            )
    assert md.count("the 95 % MAE intervals overlap for") == n_sentences
    # Never pooled: the matrix has one row per protocol, rate and property.
    matrix = _table(report, "mae_matrix")
    assert len(matrix) == len(mae.drop_duplicates(["protocol_id", "quench_rate_k_ps", "property"]))
    for r in mae.itertuples(index=False):
        row = matrix[
            (matrix["protocol_id"] == r.protocol_id)
            & (matrix["quench_rate_k_ps"] == r.quench_rate_k_ps)
            & (matrix["property"] == r.property)
        ]
        assert row[r.mlip].iloc[0] == pytest.approx(r.mae)


# --- structure, edge sharing, extrapolation, dispersion -----------------------------------


def _points(exp: Expected, pids: dict[str, int]) -> dict[tuple[str, float, int, float], dict]:
    out: dict[tuple[str, float, int, float], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for (mlip, disp, q, x, prop), vals in seeds_per_point(exp).items():
        out[(mlip, q, pids[disp], x)][prop] = vals
    return out


def _check_point_table(table: pd.DataFrame, exp: Expected, pids: dict[str, int], keys: Any) -> None:
    points = _points(exp, pids)
    assert len(table) == len(points)
    for r in table.to_dict("records"):
        vals = points[(r["mlip"], r["quench_rate_k_ps"], int(r["protocol_id"]), r["x"])]
        for k in (str(k) for k in keys):
            if k in vals:
                mean, std = _mean_std(vals[k])
                assert _close(r[k], mean) and _close(r[f"{k}_std"], std), (r, k)
            else:
                assert pd.isna(r[k]), (r, k)


@pytest.mark.slow
def test_structure_edge_sharing_extrapolation_and_dispersion(
    report: Path, engine: Any, populated: Expected
) -> None:
    pids = protocol_ids(engine, populated)
    _check_point_table(_table(report, "ss_chains"), populated, pids, SS_CHAINS)
    _check_point_table(_table(report, "na_environment"), populated, pids, NA_ENVIRONMENT)
    _check_point_table(_table(report, "edge_pp"), populated, pids, EDGE_PP_UNITS)
    # x = 0 has no O: every Na contact is a Na-S one.
    na = _table(report, "na_environment")
    assert (na.loc[na["x"] == 0.0, "na_s_share"] == 1.0).all()
    assert (na.loc[na["x"] > 0, "na_s_share"] < 1.0).all()

    per_run = _table(report, "edge_pp_runs")
    assert len(per_run) == len(populated.runs)
    by_id = {rid: key for key, rid in populated.run_ids.items()}
    for r in per_run.to_dict("records"):
        want = populated.runs[by_id[r["run_id"]]]
        for k in (str(k) for k in EDGE_PP_UNITS):
            assert _close(r[k], want.get(k)), (r, k)

    # Extrapolation: only MLIP A at x = 0 (none protocol) has three rates.
    ext = _table(report, "extrapolation")
    none = pids["none"]
    runs = [
        (q, values)
        for (m, x, q, _s, d), values in populated.runs.items()
        if (m, x, d) == (MLIP_DIMERS, 0.0, "none")
    ]
    expected_props = [str(k) for k in RATE_KEYS if any(str(k) in v for _, v in runs)]
    assert sorted(ext["property"]) == sorted(expected_props)
    assert set(zip(ext["mlip"], ext["protocol_id"], ext["x"], strict=True)) == {
        (MLIP_DIMERS, none, 0.0)
    }
    lab = math.log10(LAB_RATE)
    for r in ext.to_dict("records"):
        pts = [(math.log10(q), v[r["property"]]) for q, v in runs if r["property"] in v]
        xs = np.array([p[0] for p in pts])
        ys = np.array([p[1] for p in pts])
        slope, intercept = np.polyfit(xs, ys, 1)
        n = len(xs)
        s2 = float(np.sum((ys - (intercept + slope * xs)) ** 2)) / (n - 2)
        half = stats.t.ppf(0.975, n - 2) * math.sqrt(
            s2 * (1 / n + (lab - xs.mean()) ** 2 / np.sum((xs - xs.mean()) ** 2))
        )
        at_lab = intercept + slope * lab
        assert r["n_rates"] == 3 and r["n_runs"] == n == 6
        for col, want in (
            ("slope", slope), ("intercept", intercept), ("value_at_lab", at_lab),
            ("lab_lo", at_lab - half), ("lab_hi", at_lab + half),
        ):  # fmt: skip
            assert r[col] == pytest.approx(want, rel=1e-7, abs=1e-9), (r["property"], col)
        assert r["lab_rate_k_ps"] == LAB_RATE and bool(r["extrapolated"])
        assert r["decades"] == pytest.approx(math.log10(0.5 / LAB_RATE))

    # Dispersion x rate: MLIP A has runs with and without D3 at two or more rates; B has none.
    disp = _table(report, "dispersion_rate")
    assert set(disp["mlip"]) == {MLIP_DIMERS}
    assert set(disp["dispersion"]) == {"none", "d3"}
    cells: dict[tuple[str, float, float, str, str], list[float]] = defaultdict(list)
    for (m, x, q, _s, d), values in populated.runs.items():
        if m == MLIP_DIMERS:
            for prop in (str(k) for k in RATE_KEYS):
                if prop in values:
                    cells[(d, x, q, prop, m)].append(values[prop])
    assert len(disp) == len(cells)
    for r in disp.to_dict("records"):
        vals = cells[(r["dispersion"], r["x"], r["quench_rate_k_ps"], r["property"], r["mlip"])]
        mean, std = _mean_std(vals)
        assert r["n_seeds"] == len(vals) and r["protocol_id"] == pids[r["dispersion"]]
        assert _close(r["sim_mean"], mean) and _close(r["sim_std"], std), r

    protocols = _table(report, "protocols").set_index("protocol_id")
    assert protocols.loc[pids["d3"], "dispersion"] == "d3"
    assert pd.isna(protocols.loc[pids["none"], "dispersion"])


# --- traces and figures -------------------------------------------------------------------


@pytest.mark.slow
def test_traces_carry_every_unit_and_figures_are_not_blank(
    report: Path, engine: Any, populated: Expected
) -> None:
    import ase.io
    import matplotlib.image

    traces = _table(report, "traces")
    assert list(traces.columns) == [str(c) for c in TRACE_COLUMNS]
    # Default: per MLIP the run with the most frames; ties to the lowest x, rate, seed.
    by_id = {rid: key for key, rid in populated.run_ids.items()}
    traced = {by_id[r] for r in traces["run_id"].unique()}
    assert traced == {(MLIP_DIMERS, 0.0, 0.5, 1, "none"), (MLIP_RANDOM, 0.0, 1.0, 1, "none")}
    for key in traced:
        frames = ase.io.read(populated.files[key], index=":")
        rows = traces[traces["run_id"] == populated.run_ids[key]].set_index("step")
        assert list(rows.index) == list(STEPS)
        for step, atoms in zip(STEPS, frames, strict=True):
            want = frame_values(atoms.numbers, atoms.positions, np.asarray(atoms.cell))
            for col in TRACE_COLUMNS[8:]:
                assert _close(rows.loc[step, col], want.get(str(col))), (key, step, col)

    expected = {
        "mae_bars", "na_s_share", "extrapolation_properties", "extrapolation_structure",
        "dispersion_rate", "traces_p_units", "traces_anions", "traces_na",
        "crystal_volumes", "trends_properties", "trends_speciation", "trends_anions",
        "trends_na_cn",
    }  # fmt: skip
    from glassbench.reports.pictures import load_examples
    from glassbench.reports.queries import load_runs

    with engine.connect() as c:
        kinds = set(load_examples(c, load_runs(c))["kind"])
    expected |= {f"example_{k}" for k in kinds}
    figures = {p.stem: p for p in (report / "figures").glob("*.png")}
    assert set(figures) == expected
    html = (report / "report.html").read_text()
    for name, path in figures.items():
        pixels = matplotlib.image.imread(str(path))
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100, name
        assert float(pixels[..., :3].var()) > 1e-4, f"{name} is blank"
        assert f'id="f-{name}"' in html
    md = (report / "report.md").read_text()
    assert f"{LAB_RATE:g} K/ps" in md and f"default {DEFAULT_LAB_RATE_K_PS:g} K/ps" in md
    for heading in (
        "S-S chains and the Na environment",
        "Edge sharing, P-P bonds and three-coordinated P",
        "Quench-rate extrapolation",
        "Dispersion x quench rate",
        "Speciation during the quench",
    ):
        assert f"## {heading}" in md
    # S-S chains are a measured quantity, not a verdict.
    assert "ab initio MD also finds S-S chains" in md
