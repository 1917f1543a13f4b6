"""Quench-rate extrapolation and the dispersion x rate table (reports/extrapolation.py).

All data are SYNTHETIC lines and noise made here; the fits are checked against numpy's
polyfit and the textbook covariance of OLS, written out independently.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from glassbench.errors import BadInput
from glassbench.reports.extrapolation import (
    DEFAULT_LAB_RATE_K_PS,
    DISPERSION_COLUMNS,
    EXTRAPOLATION_COLUMNS,
    MIN_RATES,
    band,
    dispersion_rate_table,
    fit_rate,
    rate_extrapolations,
)

RATES = (0.1, 1.0, 10.0, 100.0)  # K/ps; log10 = -1, 0, 1, 2 exactly
PROP = "density_g_cm3"


def runs_frame(
    values: dict[tuple[str, float, float], list[float]], prop: str = PROP
) -> pd.DataFrame:
    """Runs with one property: (mlip, x, rate) -> one value per seed."""
    rows = []
    for (mlip, x, rate), seeds in values.items():
        for seed, v in enumerate(seeds):
            rows.append(
                {
                    "run_id": len(rows) + 1,
                    "mlip": mlip,
                    "protocol_id": 1,
                    "x": x,
                    "composition_id": int(2 * x) + 1,
                    "quench_rate_k_ps": rate,
                    "seed": seed,
                    prop: v,
                }
            )
    return pd.DataFrame(rows)


def line(rate: float, a: float = 2.0, b: float = 0.5) -> float:
    return a + b * math.log10(rate)


def test_exact_line_is_recovered_with_a_zero_width_band() -> None:
    runs = runs_frame({("M", 0.0, r): [line(r)] * 3 for r in RATES})
    table = rate_extrapolations(runs, keys=[PROP])
    assert list(table.columns) == [
        *EXTRAPOLATION_COLUMNS[:3],
        "composition_id",
        *EXTRAPOLATION_COLUMNS[3:],
    ]
    row = table.iloc[0]
    assert row["slope"] == pytest.approx(0.5, abs=1e-9)
    assert row["intercept"] == pytest.approx(2.0, abs=1e-9)
    lab = math.log10(DEFAULT_LAB_RATE_K_PS)
    assert row["value_at_lab"] == pytest.approx(2.0 + 0.5 * lab, abs=1e-9)
    assert row["lab_hi"] - row["lab_lo"] <= 1e-12
    assert (row["n_rates"], row["n_runs"]) == (4, 12)
    assert table["extrapolated"].dtype == bool and table["extrapolated"].all()
    assert row["decades"] == pytest.approx(math.log10(0.1 / DEFAULT_LAB_RATE_K_PS))
    assert row["lab_rate_k_ps"] == DEFAULT_LAB_RATE_K_PS


def test_fit_and_band_equal_the_textbook_formulas() -> None:
    rng = np.random.default_rng(2)
    x = np.repeat(np.log10([0.5, 2.0, 5.0, 20.0]), 3)
    y = 1.0 - 0.3 * x + rng.normal(scale=0.05, size=x.size)
    fit = fit_rate(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.slope == pytest.approx(slope, rel=1e-10)
    assert fit.intercept == pytest.approx(intercept, rel=1e-10)
    design = np.column_stack([x, np.ones_like(x)])  # (slope, intercept) order
    resid = y - design @ np.array([slope, intercept])
    s2 = resid @ resid / (x.size - 2)
    cov = s2 * np.linalg.inv(design.T @ design)
    assert np.allclose(fit.cov, cov, rtol=1e-9, atol=0)
    assert fit.slope_se == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-9)
    assert fit.intercept_se == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-9)
    assert fit.residual_sd == pytest.approx(math.sqrt(s2), rel=1e-9)
    assert (fit.dof, fit.n_rates, fit.n_runs) == (10, 4, 12)
    at = np.array([-10.0, -3.0, 0.0, 1.5])
    mean, lo, hi = band(fit, at, level=0.9)
    t = stats.t.ppf(0.95, 10)
    for i, x0 in enumerate(at):
        v = np.array([x0, 1.0])
        half = t * math.sqrt(v @ cov @ v)
        assert mean[i] == pytest.approx(intercept + slope * x0, rel=1e-10)
        assert lo[i] == pytest.approx(mean[i] - half, rel=1e-9)
        assert hi[i] == pytest.approx(mean[i] + half, rel=1e-9)


def test_noisy_line_slope_within_three_standard_errors_and_band_covers() -> None:
    """200 seeded trials of a known line with known noise: the 95 % band at the laboratory
    rate (about ten decades beyond the data) covers the true value in >= 90 % of them."""
    a, b, sigma = 1.8, -0.12, 0.03
    rates = (0.5, 1.0, 2.0, 5.0, 10.0)
    lab = math.log10(DEFAULT_LAB_RATE_K_PS)
    truth = a + b * lab
    x = np.repeat(np.log10(rates), 3)
    true_se = sigma / math.sqrt(float(((x - x.mean()) ** 2).sum()))
    rng = np.random.default_rng(2024)
    covered = 0
    for trial in range(200):
        noise = rng.normal(scale=sigma, size=x.size)
        values = {
            ("M", 0.0, r): list(a + b * math.log10(r) + noise[3 * i : 3 * i + 3])
            for i, r in enumerate(rates)
        }
        row = rate_extrapolations(runs_frame(values), keys=[PROP]).iloc[0]
        covered += row["lab_lo"] <= truth <= row["lab_hi"]
        if trial == 0:
            assert abs(row["slope"] - b) < 3 * true_se
            fit = fit_rate(x, a + b * x + noise)
            assert abs(fit.slope - b) < 3 * fit.slope_se
            assert fit.slope == pytest.approx(row["slope"], rel=1e-12)
    assert covered / 200 >= 0.90


def test_groups_with_fewer_rates_are_absent() -> None:
    values = {
        **{("A", 0.0, r): [line(r), line(r) + 0.01] for r in RATES[:3]},  # 3 rates: kept
        **{("A", 1.0, r): [line(r)] * 2 for r in RATES[:2]},  # 2 rates: absent
        **{("B", 0.0, r): [line(r)] for r in RATES},  # 4 rates, one run each: kept
    }
    runs = runs_frame(values)
    # A third rate for (A, x=1) whose only value is missing: it does not count.
    runs = pd.concat([runs, runs_frame({("A", 1.0, 100.0): [np.nan]})], ignore_index=True)
    table = rate_extrapolations(runs, keys=[PROP])
    assert sorted(zip(table["mlip"], table["x"], strict=True)) == [("A", 0.0), ("B", 0.0)]
    assert rate_extrapolations(runs, keys=[PROP], min_rates=2).shape[0] == 3
    assert MIN_RATES == 3
    # Each (MLIP, x) fit is its own: B's line equals the one fitted on B's runs alone.
    b = table[table["mlip"] == "B"].iloc[0]
    alone = fit_rate(np.log10(RATES), [line(r) for r in RATES])
    assert b["slope"] == pytest.approx(alone.slope) and b["n_runs"] == 4


def test_lab_rate_must_be_a_positive_rate() -> None:
    runs = runs_frame({("M", 0.0, r): [line(r)] * 2 for r in RATES})
    for bad in (0.0, -1e-10, math.inf, math.nan):
        with pytest.raises(BadInput) as info:
            rate_extrapolations(runs, keys=[PROP], lab_rate_k_ps=bad)
        assert info.value.field == "lab_rate_k_ps"
    own = rate_extrapolations(runs, keys=[PROP], lab_rate_k_ps=1e-8).iloc[0]
    assert own["value_at_lab"] == pytest.approx(line(1e-8))
    assert own["decades"] == pytest.approx(7.0)


def test_fit_needs_two_rates_and_skips_missing_values() -> None:
    with pytest.raises(ValueError, match="two or more"):
        fit_rate([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    fit = fit_rate([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, np.nan, 4.0])
    assert fit.n_runs == 3 and fit.slope == pytest.approx(1.0)
    two = fit_rate([0.0, 1.0], [1.0, 3.0])
    mean, lo, hi = band(two, [2.0])
    assert mean[0] == pytest.approx(5.0) and math.isnan(lo[0]) and math.isnan(hi[0])


# --- dispersion x quench rate --------------------------------------------------------------------


def dispersion_runs() -> pd.DataFrame:
    """SYNTHETIC runs: A has both axes; B only one dispersion; C both but a single rate."""
    rng = np.random.default_rng(4)
    rows = []
    plan = [
        ("A", ("none", "d3"), (0.5, 5.0), 3),
        ("B", ("none",), (0.5, 5.0), 2),
        ("C", ("none", "d3"), (5.0,), 2),
    ]
    for mlip, disps, rates, n_seeds in plan:
        for disp in disps:
            for rate in rates:
                for x in (0.0, 1.0):
                    for seed in range(n_seeds):
                        rows.append(
                            {
                                "run_id": len(rows) + 1,
                                "mlip": mlip,
                                "protocol_id": 1 if disp == "none" else 2,
                                "x": x,
                                "composition_id": int(x) + 1,
                                "quench_rate_k_ps": rate,
                                "seed": seed,
                                "dispersion": disp,
                                "density_g_cm3": float(rng.normal(1.5, 0.05)),
                                "bs": float(rng.uniform(0, 0.3)),
                            }
                        )
    runs = pd.DataFrame(rows)
    # A missing value, and a run whose dispersion is unknown: both left out.
    runs.loc[0, "bs"] = np.nan
    extra = runs.iloc[[1]].assign(run_id=len(runs) + 1, dispersion=None, density_g_cm3=99.0)
    return pd.concat([runs, extra], ignore_index=True)


def test_dispersion_table_equals_pandas_groupby() -> None:
    runs = dispersion_runs()
    keys = ["density_g_cm3", "bs"]
    table = dispersion_rate_table(runs, keys=keys)
    assert list(table.columns) == list(DISPERSION_COLUMNS)
    assert set(table["mlip"]) == {"A"}  # B lacks D3, C has one rate
    known = runs[runs["dispersion"].isin(["none", "d3"]) & (runs["mlip"] == "A")]
    long = known.melt(
        id_vars=["mlip", "protocol_id", "x", "quench_rate_k_ps", "dispersion"],
        value_vars=keys,
        var_name="property",
    ).dropna(subset=["value"])
    g = long.groupby(["mlip", "protocol_id", "x", "property", "quench_rate_k_ps", "dispersion"])
    expected = g["value"].agg(["mean", "std", "count"]).reset_index()
    merged = table.merge(
        expected, on=["mlip", "protocol_id", "x", "property", "quench_rate_k_ps", "dispersion"]
    )
    assert len(merged) == len(table) == len(expected) == 2 * 2 * 2 * 2
    assert np.allclose(merged["sim_mean"], merged["mean"], rtol=1e-12)
    assert np.allclose(merged["sim_std"], merged["std"], rtol=1e-12)
    assert (merged["n_seeds"] == merged["count"]).all()
    assert sorted(set(merged["n_seeds"])) == [2, 3]  # the missing bs value is not a seed
    assert (table["sim_mean"] < 50).all()  # the unknown-dispersion run is not in


def test_dispersion_table_without_the_column_or_the_axes_is_empty() -> None:
    runs = dispersion_runs()
    assert dispersion_rate_table(runs.drop(columns="dispersion"), keys=["bs"]).empty
    assert dispersion_rate_table(runs[runs["mlip"] != "A"], keys=["bs"]).empty
