"""Quench-rate extrapolation and the dispersion x quench-rate table.

MD quenches glasses many orders of magnitude faster than a laboratory does. Where an MLIP and
composition have runs at several quench rates, each property is fitted against log10(rate) by
ordinary least squares on the *run* values (every seed is a measurement; seed means would hide
the scatter the band is built from) and the line is evaluated at a laboratory cooling rate,
with the confidence band of the mean line (Student t, n - 2 degrees of freedom). The result is
an extrapolation, always flagged as one: nothing guarantees that a property stays linear in
log10(rate) over the ten or so decades between an MD quench and a laboratory one.

:data:`DEFAULT_LAB_RATE_K_PS` is 1e-10 K/ps (100 K/s), an order of magnitude assumed for a melt
quenched in the laboratory (the real rate depends on the method and the sample size). It is an
assumption of this tool, not a cooling rate measured for the glasses in the database: set the
rate of your own experiments with ``glassbench report generate --lab-rate K_PER_PS``.

Extrapolating MD properties to slower cooling rates before comparing them with experiment is
the practice of, e.g., Li et al., "Cooling rate effects in sodium silicate glasses: Bridging
the gap between molecular dynamics simulations and experiments", doi:10.1063/1.4998611
(arXiv:1704.08209; MD quenches at 0.01 to 100 K/ps).

Pure functions over DataFrames; missing values are left out (the NaN policy of
:mod:`glassbench.reports.metrics`), never imputed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from glassbench.errors import BadInput
from glassbench.reports.keys import Key
from glassbench.reports.metrics import seed_stats

# 100 K/s in K/ps: an assumed order of magnitude, see the module docstring.
DEFAULT_LAB_RATE_K_PS: float = 1e-10
MIN_RATES = 3
DISPERSIONS: tuple[str, ...] = ("none", "d3")

COMPOSITION_ID = "composition_id"
EXTRAPOLATION_COLUMNS: tuple[str, ...] = (
    Key.mlip, Key.protocol_id, Key.x, Key.prop, Key.slope, Key.intercept, Key.n_rates,
    Key.n_runs, Key.lab_rate, Key.value_at_lab, Key.lab_lo, Key.lab_hi, Key.extrapolated,
    Key.decades,
)  # fmt: skip
DISPERSION_COLUMNS: tuple[str, ...] = (
    Key.mlip, Key.protocol_id, Key.x, Key.prop, Key.quench_rate, Key.dispersion, Key.sim_mean,
    Key.sim_std, Key.n_seeds,
)  # fmt: skip


@dataclass(frozen=True)
class RateFit:
    """OLS line ``value = intercept + slope * log10(rate in K/ps)``.

    ``slope`` is per decade of rate; ``intercept`` the value at 1 K/ps. ``cov`` is the
    covariance matrix of (slope, intercept). ``dof = n_runs - 2``; standard errors, ``cov`` and
    ``residual_sd`` are NaN when it is 0 (two runs fit exactly and say nothing of the scatter).
    """

    slope: float
    intercept: float
    slope_se: float
    intercept_se: float
    cov: tuple[tuple[float, float], tuple[float, float]]
    dof: int
    n_rates: int
    n_runs: int
    residual_sd: float


def fit_rate(log10_rates: ArrayLike, values: ArrayLike) -> RateFit:
    """Fit run values against log10(quench rate). Pairs with a missing value are left out.

    Raises ``ValueError`` when fewer than two distinct rates remain (no line is defined).
    """
    x = np.asarray(log10_rates, dtype=float).ravel()
    y = np.asarray(values, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{x.size} rates but {y.size} values")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    n_rates = int(np.unique(x).size)
    if n_rates < 2:
        raise ValueError(f"a line needs runs at two or more quench rates, not {n_rates}")
    # Centred sums: the rates sit decades away from 1 K/ps, so uncentred sums lose digits.
    x_mean, y_mean = float(x.mean()), float(y.mean())
    dx, dy = x - x_mean, y - y_mean
    sxx = float(dx @ dx)
    slope = float(dx @ dy) / sxx
    intercept = y_mean - slope * x_mean
    resid = dy - slope * dx
    dof = n - 2
    s2 = float(resid @ resid) / dof if dof > 0 else math.nan
    var_slope = s2 / sxx
    var_intercept = s2 * (1.0 / n + x_mean * x_mean / sxx)
    cov_si = -x_mean * s2 / sxx
    return RateFit(
        slope=slope,
        intercept=intercept,
        slope_se=math.sqrt(var_slope),
        intercept_se=math.sqrt(var_intercept),
        cov=((var_slope, cov_si), (cov_si, var_intercept)),
        dof=dof,
        n_rates=n_rates,
        n_runs=n,
        residual_sd=math.sqrt(s2),
    )


@functools.lru_cache(maxsize=256)
def _t_quantile(p: float, dof: int) -> float:
    # scipy's ppf costs ~0.4 ms a call; a report asks for a handful of (level, dof) pairs.
    return float(stats.t.ppf(p, dof))


def band(
    fit: RateFit, log10_rates: ArrayLike, level: float = 0.95
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(mean, lower, upper): the fitted line and its confidence band at ``log10_rates``.

    The band is that of the mean line (where the expected value lies), not a prediction
    interval for one more run: mean ± t(dof, (1 + level) / 2) * sqrt(s²/n + var(slope) (x -
    x̄)²). NaN where ``dof`` is 0.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    x = np.asarray(log10_rates, dtype=float)
    mean = fit.intercept + fit.slope * x
    if fit.dof <= 0:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan.copy()
    var_slope = fit.slope_se**2
    if var_slope > 0:
        # x̄ from the covariance (cov(slope, intercept) = -x̄ var(slope)): this form has no
        # cancellation far from the data, where the extrapolation is evaluated.
        x_mean = -fit.cov[0][1] / var_slope
        var = fit.residual_sd**2 / fit.n_runs + var_slope * (x - x_mean) ** 2
    else:
        var = np.zeros_like(mean)
    half = _t_quantile(0.5 + level / 2.0, fit.dof) * np.sqrt(var)
    return mean, mean - half, mean + half


def _long(runs: pd.DataFrame, keys: Sequence[str], ids: Sequence[str]) -> pd.DataFrame:
    present = [str(k) for k in keys if str(k) in runs.columns]
    if runs.empty or not present:
        return pd.DataFrame(columns=[*ids, Key.prop, "value"])
    long = runs[[*ids, *present]].melt(id_vars=list(ids), value_vars=present, var_name=Key.prop)
    long["value"] = long["value"].astype(float)
    order = {k: i for i, k in enumerate(present)}
    return long.dropna(subset=["value"]).assign(_o=lambda d: d[Key.prop].map(order))


def rate_extrapolations(
    runs: pd.DataFrame,
    *,
    keys: Sequence[str],
    lab_rate_k_ps: float = DEFAULT_LAB_RATE_K_PS,
    level: float = 0.95,
    min_rates: int = MIN_RATES,
) -> pd.DataFrame:
    """Each property at the laboratory rate, per (MLIP, protocol, composition) with enough rates.

    Pass the runs that count (:func:`metrics.completed`). Groups whose runs (those with a
    value) cover fewer than ``min_rates`` distinct quench rates are absent. Columns:
    :data:`EXTRAPOLATION_COLUMNS` (with ``composition_id`` after ``x`` when the runs have it,
    so that compositions are never pooled): ``slope`` per decade of rate, ``intercept`` at 1 K/ps,
    ``value_at_lab`` with the band ``lab_lo``/``lab_hi`` at ``level``, ``extrapolated``
    (always True) and ``decades`` = log10(slowest simulated rate / lab rate), how far beyond
    the data the value lies (negative if the lab rate is faster than the slowest run).
    """
    if not (math.isfinite(lab_rate_k_ps) and lab_rate_k_ps > 0):
        raise BadInput(
            f"must be a positive cooling rate in K/ps, not {lab_rate_k_ps}", field="lab_rate_k_ps"
        )
    if min_rates < 2:
        raise ValueError(f"min_rates must be at least 2 (a line), not {min_rates}")
    cols = list(EXTRAPOLATION_COLUMNS)
    extra = [COMPOSITION_ID] if COMPOSITION_ID in runs.columns else []
    group = [Key.mlip, Key.protocol_id, *extra, Key.x]
    long = _long(runs, keys, [*group, Key.quench_rate])
    rate = long[Key.quench_rate].astype(float)
    long = long[np.isfinite(rate) & (rate > 0)]
    if long.empty:
        return pd.DataFrame(columns=cols)
    by = [*group, Key.prop]
    n_rates = long.groupby(by, dropna=False)[Key.quench_rate].transform("nunique")
    long = long[n_rates >= min_rates].sort_values(
        [Key.mlip, Key.protocol_id, "_o", *extra, Key.x], kind="stable"
    )
    if long.empty:
        return pd.DataFrame(columns=cols)
    # Sorted, each group is a contiguous slice: numpy slices instead of pandas sub-frames.
    gid = long.groupby(by, sort=False, dropna=False).ngroup().to_numpy()
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]]) if len(gid) else gid
    ends = np.r_[starts[1:], len(gid)]
    log_rate = np.log10(long[Key.quench_rate].to_numpy(dtype=float))
    vals = long["value"].to_numpy(dtype=float)
    lab = math.log10(lab_rate_k_ps)
    rows = []
    for (s, e), key in zip(
        zip(starts, ends, strict=True),
        long.iloc[starts][by].itertuples(index=False, name=None),
        strict=True,
    ):
        fit = fit_rate(log_rate[s:e], vals[s:e])
        mean, lo, hi = band(fit, lab, level)
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                Key.slope: fit.slope,
                Key.intercept: fit.intercept,
                Key.n_rates: fit.n_rates,
                Key.n_runs: fit.n_runs,
                Key.lab_rate: lab_rate_k_ps,
                Key.value_at_lab: float(mean),
                Key.lab_lo: float(lo),
                Key.lab_hi: float(hi),
                Key.extrapolated: True,
                Key.decades: float(log_rate[s:e].min()) - lab,
            }
        )
    if not rows:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(rows)[[*cols[:3], *extra, *cols[3:]]]


def dispersion_rate_table(runs: pd.DataFrame, *, keys: Sequence[str]) -> pd.DataFrame:
    """Seed mean, std (ddof=1) and count per (MLIP, protocol, x, property, rate, dispersion).

    Pass the runs that count (:func:`metrics.completed`). Only MLIPs whose runs have both
    dispersion settings (``none`` and ``d3``) and at least two quench rates are listed (the
    campaign has both axes); runs of an unknown dispersion are left out. Protocols are not
    pooled: two protocols with the same dispersion are separate rows. Columns:
    :data:`DISPERSION_COLUMNS`.
    """
    cols = list(DISPERSION_COLUMNS)
    if runs.empty or Key.dispersion not in runs.columns:
        return pd.DataFrame(columns=cols)
    known = runs[runs[Key.dispersion].isin(DISPERSIONS)]
    per_mlip = known.groupby(Key.mlip).agg(
        d=(Key.dispersion, "nunique"), r=(Key.quench_rate, "nunique")
    )
    both = per_mlip.index[(per_mlip["d"] == len(DISPERSIONS)) & (per_mlip["r"] >= 2)]
    known = known[known[Key.mlip].isin(both)]
    by = (Key.mlip, Key.protocol_id, Key.x, Key.quench_rate, Key.dispersion)
    table = seed_stats(known, keys=keys, by=by)
    if table.empty:
        return pd.DataFrame(columns=cols)
    present = [str(k) for k in keys]
    table = table.assign(_o=table[Key.prop].map({k: i for i, k in enumerate(present)}))
    table = table.sort_values(
        [Key.mlip, "_o", Key.x, Key.protocol_id, Key.dispersion, Key.quench_rate], kind="stable"
    )
    return table[cols].reset_index(drop=True)
