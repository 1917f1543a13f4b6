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
from tests.reports.conftest import (
    MLIP_DIMERS,
    MLIP_NO_RUNS,
    MLIP_RANDOM,
    Expected,
    independent_mae,
)


def _report_mae(engine: Any) -> pd.DataFrame:
    data = load_report_data(engine)
    points = mae_points(completed(data.runs), data.experiment)
    cpoints = crystal_points(data.crystals, data.crystal_experiment)
    return mae_table(pd.concat([points, cpoints], ignore_index=True))


def test_ingested_values_are_what_the_structures_say(engine: Any, populated: Expected) -> None:
    """The run values the report reads are the independently computed ones."""
    runs, _ = load_mae_inputs(engine)
    assert len(runs) == len(populated.runs)
    assert set(runs["status"]) == {"done"}
    for key, values in populated.runs.items():
        row = runs[runs["run_id"] == populated.run_ids[key]].iloc[0]
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
    # x = 2 has no experiment: 2 points per glass property per MLIP at q = 1, plus the second
    # quench rate of MLIP A at x = 0.
    assert got[(MLIP_DIMERS, "density_g_cm3")][0] == 3
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
    out = tmp_path / "report"
    gb.ok("report", "generate", "--out", str(out))
    csv = pd.read_csv(out / "tables" / "mae.csv")
    expected = independent_mae(populated)
    assert len(csv) == len(expected)
    for r in csv.itertuples(index=False):
        n, mae, me = expected[(r.mlip, r.property)]
        assert (r.n, r.mae, r.mean_error) == (n, pytest.approx(mae), pytest.approx(me))
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
        if k[:3] == (MLIP_RANDOM, 1.0, 1.0)
    ]
    assert p["n_seeds"] == 2
    assert p["sim_mean"] == pytest.approx(sum(vals) / 2)
    assert p["sim_std"] == pytest.approx(pd.Series(vals).std(ddof=1))
    single = points[(points["mlip"] == MLIP_DIMERS) & (points["quench_rate_k_ps"] == 5.0)]
    assert (single["n_seeds"] == 1).all() and single["sim_std"].isna().all()


def test_experiment_loaded_once_per_source(engine: Any, populated: Expected) -> None:
    with engine.connect() as c:
        exp = load_experiment(c)
    dens = exp[(exp["x"] == 1.0) & (exp["property"] == "density_g_cm3")]
    assert len(dens) == 2
    assert math.isclose(dens["value"].mean(), populated.experiment[(1.0, "density_g_cm3")])
