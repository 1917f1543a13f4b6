"""The report's MAE equals an independent computation and the ``mlip_mae`` view (both engines).

All numbers are SYNTHETIC (see conftest.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from glassbench.reports import (
    crystal_points,
    load_experiment,
    load_mae_inputs,
    load_report_data,
    mae_points,
    mae_table,
)
from glassbench.reports.metrics import completed
from glassbench.reports.queries import load_runs
from tests.reports.conftest import (
    MLIP_DIMERS,
    MLIP_NO_RUNS,
    MLIP_RANDOM,
    Expected,
    independent_mae,
    independent_mae_per_rate,
    protocol_ids,
)


def _report_mae(engine: Any) -> pd.DataFrame:
    data = load_report_data(engine)
    points = mae_points(completed(data.runs), data.experiment)
    cpoints = crystal_points(data.crystals, data.crystal_experiment)
    return mae_table(pd.concat([points, cpoints], ignore_index=True))


def test_ingested_values_are_what_the_structures_say(engine: Any, populated: Expected) -> None:
    """The run values the report reads are the independently computed ones."""
    with engine.connect() as c:
        runs = load_runs(c)
    mae_runs, _ = load_mae_inputs(engine)
    # The MAE query reads the comparable quantities only, the same values.
    compared = [c for c in mae_runs.columns if c in runs.columns]
    assert set(mae_runs.columns) < set(runs.columns) and "p1_incl_p1p" in compared
    pd.testing.assert_frame_equal(mae_runs, runs[compared])
    assert len(runs) == len(populated.runs)
    assert set(runs["status"]) == {"done"}
    for key, values in populated.runs.items():
        row = runs[runs["run_id"] == populated.run_ids[key]].iloc[0]
        # The D3 runs' protocol sets the dispersion; the others take the MLIP's ("none").
        assert row["dispersion"] == key[4], key
        for prop, v in values.items():
            assert row[prop] == pytest.approx(v, rel=1e-9, abs=1e-12), (key, prop)


def test_mae_equals_independent_computation(engine: Any, populated: Expected) -> None:
    table = _report_mae(engine)
    expected = independent_mae(populated)
    got = {(r.mlip, r.property): (r.n, r.mae, r.mean_error) for r in table.itertuples(index=False)}
    assert set(got) == set(expected)
    for k, (n, mae, me) in expected.items():
        assert got[k][0] == n, k
        assert got[k][1] == pytest.approx(mae, rel=1e-9, abs=1e-12), k
        assert got[k][2] == pytest.approx(me, rel=1e-9, abs=1e-12), k
    # Pooled as the view pools (the report never does): x = 2 has no experiment, so MLIP A has
    # x = 0 and 1 at 1 K/ps, x = 0 at 0.5 and 5 K/ps and x = 0 at 1 and 5 K/ps under D3.
    assert got[(MLIP_DIMERS, "density_g_cm3")][0] == 6
    assert got[(MLIP_RANDOM, "density_g_cm3")][0] == 2
    assert got[(MLIP_DIMERS, "p2")][0] == 1
    assert MLIP_NO_RUNS not in set(table["mlip"])
    # Signed error keeps the direction: the synthetic Young's moduli are all above experiment.
    assert got[(MLIP_RANDOM, "young_modulus_gpa")][2] > 0


def test_view_agrees_with_report(engine: Any, populated: Expected) -> None:
    table = _report_mae(engine)
    with engine.connect() as c:
        view = pd.read_sql("SELECT mlip, property, n, mae, mean_error FROM mlip_mae", c)
    merged = table.merge(view, on=["mlip", "property"], how="outer", suffixes=("", "_view"))
    assert len(merged) == len(table) == len(view)
    assert (merged["n"] == merged["n_view"]).all()
    for col in ("mae", "mean_error"):
        diff = (merged[col] - merged[f"{col}_view"].astype(float)).abs()
        assert diff.max() < 1e-9, merged[[col, f"{col}_view"]]


@pytest.mark.slow
def test_generate_writes_the_same_mae_csv(
    gb: Any, engine: Any, populated: Expected, tmp_path: Path
) -> None:
    """mae.csv: one row per MLIP, protocol, quench rate and property, never pooled."""
    out = tmp_path / "report"
    gb.ok("report", "generate", "--out", str(out))
    csv = pd.read_csv(out / "tables" / "mae.csv")
    expected = independent_mae_per_rate(populated)
    disp_of = {pid: d for d, pid in protocol_ids(engine, populated).items()}
    assert len(csv) == len(expected)
    for r in csv.itertuples(index=False):
        e = expected[(r.mlip, disp_of[r.protocol_id], r.quench_rate_k_ps, r.property)]
        assert (r.n, r.n_seeds) == (e["n"], e["n_seeds"])
        for col in ("mae", "mean_error", "seed_sd", "mean_abs_z"):
            got, want = getattr(r, col), e[col]
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want), (col, r, e)
        assert r.mae_ci_lo <= r.mae <= r.mae_ci_hi
    # MLIP A's density at x = 0 is a separate row for each of its three rates and for D3.
    a = csv[(csv["mlip"] == MLIP_DIMERS) & (csv["property"] == "density_g_cm3")]
    assert len(a) == 5
    points = pd.read_csv(out / "tables" / "mae_points.csv")
    # Points without experiment (x = 2) stay in the table, missing, never imputed.
    x2 = points[points["x"] == 2.0]
    assert len(x2) and x2["exp_value"].isna().all() and x2["error"].isna().all()
    md = (out / "report.md").read_text()
    assert "SYNTH-MLIP-A" in md and "MAE" in md


def test_seed_statistics(engine: Any, populated: Expected) -> None:
    runs, experiment = load_mae_inputs(engine)
    points = mae_points(completed(runs), experiment)
    p = points[
        (points["mlip"] == MLIP_RANDOM)
        & (points["x"] == 1.0)
        & (points["property"] == "young_modulus_gpa")
    ].iloc[0]
    vals = [
        v["young_modulus_gpa"]
        for k, v in populated.runs.items()
        if k[:3] == (MLIP_RANDOM, 1.0, 1.0) and k[4] == "none"
    ]
    assert p["n_seeds"] == len(vals) == 3
    assert p["sim_mean"] == pytest.approx(sum(vals) / 3)
    assert p["sim_std"] == pytest.approx(pd.Series(vals).std(ddof=1))
    d3 = protocol_ids(engine, populated)["d3"]
    single = points[(points["mlip"] == MLIP_DIMERS) & (points["protocol_id"] == d3)]
    assert len(single) and (single["n_seeds"] == 1).all() and single["sim_std"].isna().all()


def test_experiment_loaded_once_per_source(engine: Any, populated: Expected) -> None:
    with engine.connect() as c:
        exp = load_experiment(c)
    dens = exp[(exp["x"] == 1.0) & (exp["property"] == "density_g_cm3")]
    assert len(dens) == 2
    assert math.isclose(dens["value"].mean(), populated.experiment[(1.0, "density_g_cm3")])
