"""Report metrics: pure functions over DataFrames (no database, no I/O).

NaN policy (every function here, ``nan_policy="omit"``): a missing value (NaN) is left out of
the statistic it would enter, and nothing is ever imputed. Concretely:

- a run without a value for a quantity does not count as a seed for it;
- a point (MLIP, composition, quench rate, protocol) without any seed value does not exist;
- a point without an experimental value stays in the point table with ``exp_value`` and
  ``error`` NaN (shown as missing) and is left out of MAE, mean error and ``n``;
- a seed standard deviation of a single seed is NaN (``ddof=1``), not 0.

``nan_policy="raise"`` raises :class:`ValueError` instead when an input value is missing, for
callers that want to be told.

Points are averaged over seeds first and errors are averaged over points, which is how the
``mlip_mae`` view computes them; experimental values from several sources for the same
(composition, property) are averaged first, too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from glassbench.reports.keys import COMPARABLE, EDGE_PP_UNITS, Key
from glassbench.schema import RunStatus

NanPolicy = Literal["omit", "raise"]

# A point: runs that differ only by seed.
POINT_KEYS: tuple[str, ...] = (Key.mlip, Key.quench_rate, Key.protocol_id, Key.x)
SERIES_KEYS: tuple[str, ...] = (Key.mlip, Key.quench_rate, Key.protocol_id)


def std_column(key: str) -> str:
    return f"{key}_std"


def _check_nan(values: pd.Series | pd.DataFrame, *, nan_policy: NanPolicy, what: str) -> None:
    if nan_policy not in ("omit", "raise"):
        raise ValueError(f"unknown nan_policy {nan_policy!r}")
    if nan_policy == "raise":
        missing = values.isna().to_numpy().sum()
        if missing:
            raise ValueError(f"{int(missing)} missing value(s) in {what}")


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs whose results count (status ``done``); pending, running and failed runs do not."""
    return runs[runs["status"] == RunStatus.DONE.value]


def seed_stats(
    runs: pd.DataFrame,
    *,
    keys: Sequence[str] = COMPARABLE,
    by: Sequence[str] = POINT_KEYS,
    nan_policy: NanPolicy = "omit",
) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and count over seeds, per ``by`` + property (long format)."""
    present = [str(k) for k in keys if str(k) in runs.columns]
    extra = ["composition_id"] if "composition_id" in runs.columns else []
    group = [*by, *[c for c in extra if c not in by]]
    cols = [*group, Key.prop, Key.sim_mean, Key.sim_std, Key.n_seeds]
    if runs.empty or not present:
        return pd.DataFrame(columns=cols)
    values = runs[present].astype(float)
    # The frame itself, not a stacked copy: with the default "omit" nothing is looked at.
    _check_nan(values, nan_policy=nan_policy, what="run values")
    # One grouped pass over the wide frame (pandas skips NaN in mean/std/count), then long.
    g = values.groupby([runs[c] for c in group], sort=True, dropna=False)
    mean, std, count = g.mean(), g.std(ddof=1), g.count()
    # Long by reshaping the arrays (a DataFrame.stack was a third of the MAE query's client
    # time): groups come sorted from the groupby, and within a group the properties follow
    # ``keys`` (row-major ravel), the order the report shows them in.
    n_groups, n_props = mean.shape
    long = mean.index.to_frame(index=False).set_axis(group, axis=1)
    long = long.loc[long.index.repeat(n_props)].reset_index(drop=True)
    long[Key.prop] = np.tile(np.asarray(present, dtype=object), n_groups)
    long[Key.sim_mean] = mean.to_numpy(dtype=float).ravel()
    long[Key.sim_std] = std.to_numpy(dtype=float).ravel()
    long[Key.n_seeds] = count.to_numpy().ravel().astype(int)
    long = long[long[Key.n_seeds] > 0]
    return long[cols].reset_index(drop=True)


def experiment_means(experiment: pd.DataFrame, *, nan_policy: NanPolicy = "omit") -> pd.DataFrame:
    """One reference value per (composition, property): mean over sources.

    ``exp_uncertainty`` is the mean of the given uncertainties (NaN when none was given).
    """
    cols = ["composition_id", Key.x, Key.prop, Key.exp_value, Key.exp_uncertainty, "n_sources"]
    if experiment.empty:
        return pd.DataFrame(columns=cols)
    _check_nan(experiment["value"], nan_policy=nan_policy, what="experimental values")
    g = experiment.dropna(subset=["value"]).groupby(["composition_id", Key.x, Key.prop])
    out = pd.DataFrame(
        {
            Key.exp_value: g["value"].mean(),
            Key.exp_uncertainty: g["uncertainty"].mean(),
            "n_sources": g["source"].count(),
        }
    ).reset_index()
    return out[cols]


def mae_points(
    runs: pd.DataFrame,
    experiment: pd.DataFrame,
    *,
    keys: Sequence[str] = COMPARABLE,
    nan_policy: NanPolicy = "omit",
) -> pd.DataFrame:
    """Seed-averaged simulation vs experiment, one row per point and property.

    Only quantities that have an experimental value somewhere are listed; points whose own
    composition has none keep NaN ``exp_value`` / ``error``.
    """
    exp = experiment_means(experiment, nan_policy=nan_policy)
    wanted = [str(k) for k in keys if str(k) in set(exp[Key.prop])]
    cols = [
        *POINT_KEYS,
        Key.prop,
        Key.sim_mean,
        Key.sim_std,
        Key.n_seeds,
        Key.exp_value,
        Key.exp_uncertainty,
        Key.error,
    ]
    if not wanted:
        return pd.DataFrame(columns=cols)
    stats = seed_stats(runs, keys=wanted, nan_policy=nan_policy)
    merged = stats.merge(
        exp.drop(columns=[Key.x, "n_sources"]), on=["composition_id", Key.prop], how="left"
    )
    merged[Key.error] = merged[Key.sim_mean] - merged[Key.exp_value]
    order = {k: i for i, k in enumerate(wanted)}
    merged = merged.assign(_o=merged[Key.prop].map(order)).sort_values(
        [Key.mlip, "_o", Key.quench_rate, Key.protocol_id, Key.x], kind="stable"
    )
    return merged[cols].reset_index(drop=True)


def crystal_points(
    crystals: pd.DataFrame, crystal_experiment: pd.DataFrame, *, nan_policy: NanPolicy = "omit"
) -> pd.DataFrame:
    """Relaxed crystal volume vs experiment per (MLIP, crystal), as MAE points.

    The reference is the ingested experiment (mean over sources), the same one the
    ``mlip_mae`` view uses; crystals without an ingested reference are left out.
    """
    cols = [Key.mlip, Key.crystal, Key.prop, Key.sim_mean, Key.exp_value, Key.error]
    if crystals.empty or crystal_experiment.empty:
        return pd.DataFrame(columns=cols)
    ref = crystal_experiment[crystal_experiment[Key.prop] == Key.crystal_volume]
    _check_nan(ref["value"], nan_policy=nan_policy, what="crystal experiments")
    ref = ref.dropna(subset=["value"]).groupby(Key.crystal, as_index=False)["value"].mean()
    out = crystals.merge(ref, on=Key.crystal, how="inner")
    _check_nan(out[Key.volume], nan_policy=nan_policy, what="crystal volumes")
    out = out.dropna(subset=[Key.volume])
    out = out.assign(
        **{
            Key.prop: str(Key.crystal_volume),
            Key.sim_mean: out[Key.volume].astype(float),
            Key.exp_value: out["value"].astype(float),
        }
    )
    out[Key.error] = out[Key.sim_mean] - out[Key.exp_value]
    return out[cols].sort_values([Key.mlip, Key.crystal]).reset_index(drop=True)


def mae_table(
    points: pd.DataFrame,
    *,
    by: Sequence[str] = (Key.mlip, Key.prop),
    nan_policy: NanPolicy = "omit",
) -> pd.DataFrame:
    """MAE, mean signed error (simulation minus experiment) and number of points per ``by``.

    ``seed_std_mean`` is the mean over points of the seed standard deviation: the seed-to-seed
    scatter to weigh an MAE against (NaN where every point has a single seed).
    """
    cols = [*by, Key.n, Key.mae, Key.mean_error, Key.seed_std]
    if points.empty:
        return pd.DataFrame(columns=cols)
    _check_nan(points[Key.error], nan_policy=nan_policy, what="MAE points (missing experiment)")
    ok = points.dropna(subset=[Key.error])
    if ok.empty:
        return pd.DataFrame(columns=cols)
    ok = ok.assign(_abs=ok[Key.error].abs())
    if Key.sim_std not in ok.columns:
        ok = ok.assign(**{Key.sim_std: np.nan})
    g = ok.groupby(list(by), sort=False, dropna=False)
    out = pd.DataFrame(
        {
            Key.n: g[Key.error].count(),
            Key.mae: g["_abs"].mean(),
            Key.mean_error: g[Key.error].mean(),
            Key.seed_std: g[Key.sim_std].mean(),
        }
    ).reset_index()
    out[Key.n] = out[Key.n].astype(int)
    return out[cols].reset_index(drop=True)


def trend_table(
    runs: pd.DataFrame, *, keys: Sequence[str], nan_policy: NanPolicy = "omit"
) -> pd.DataFrame:
    """Seed mean and std of each quantity per series and x (long format), for trend plots."""
    return seed_stats(runs, keys=keys, nan_policy=nan_policy).drop(
        columns=["composition_id"], errors="ignore"
    )


def experiment_trends(experiment: pd.DataFrame, *, keys: Sequence[str]) -> pd.DataFrame:
    """Experimental values per x and property (mean over sources), for overlays."""
    exp = experiment_means(experiment)
    return (
        exp[exp[Key.prop].isin([str(k) for k in keys])]
        .drop(columns=["composition_id"])
        .sort_values([Key.prop, Key.x])
        .reset_index(drop=True)
    )


def point_table(
    runs: pd.DataFrame, *, keys: Sequence[str], nan_policy: NanPolicy = "omit"
) -> pd.DataFrame:
    """Wide table of quantities per point: ``<key>`` seed mean and ``<key>_std`` per point."""
    stats = trend_table(runs, keys=keys, nan_policy=nan_policy)
    base = [*POINT_KEYS, Key.n_seeds]
    if stats.empty:
        return pd.DataFrame(columns=base + [c for k in keys for c in (k, std_column(k))])
    wide = stats.pivot_table(
        index=list(POINT_KEYS),
        columns=Key.prop,
        values=[Key.sim_mean, Key.sim_std],
        aggfunc="first",
        dropna=False,
    )
    # pivot_table(dropna=False) spans every combination of the index levels: keep the points
    # that exist (those with a seed), not the cartesian product of MLIPs, rates and x.
    seeds = stats.groupby(list(POINT_KEYS))[Key.n_seeds].max()
    wide = wide[wide.index.isin(seeds.index)]
    out = pd.DataFrame(index=wide.index)
    out[Key.n_seeds] = seeds.reindex(wide.index).astype(int)
    for k in keys:
        out[str(k)] = wide[(Key.sim_mean, k)] if (Key.sim_mean, k) in wide.columns else np.nan
        out[std_column(k)] = wide[(Key.sim_std, k)] if (Key.sim_std, k) in wide.columns else np.nan
    return out.reset_index().sort_values(list(POINT_KEYS)).reset_index(drop=True)


def artefact_table(
    runs: pd.DataFrame, *, keys: Sequence[str] = EDGE_PP_UNITS, nan_policy: NanPolicy = "omit"
) -> pd.DataFrame:
    """Edge sharing, P-P chains, chain ends and three-coordinated P per point
    (:func:`point_table` of those fractions)."""
    return point_table(runs, keys=keys, nan_policy=nan_policy)


def quench_sensitivity(
    runs: pd.DataFrame, *, keys: Sequence[str], nan_policy: NanPolicy = "omit"
) -> pd.DataFrame:
    """The same quantities per quench rate side by side (long format, one row per rate).

    Rows: MLIP, protocol, x, property, quench rate, seed mean / std / count. Render wide by
    pivoting on ``quench_rate_k_ps``.
    """
    stats = trend_table(runs, keys=keys, nan_policy=nan_policy)
    order = {str(k): i for i, k in enumerate(keys)}
    if stats.empty:
        return stats
    stats = stats.assign(_o=stats[Key.prop].map(order)).sort_values(
        [Key.mlip, Key.protocol_id, "_o", Key.x, Key.quench_rate], kind="stable"
    )
    cols = [
        Key.mlip,
        Key.protocol_id,
        Key.prop,
        Key.x,
        Key.quench_rate,
        Key.sim_mean,
        Key.sim_std,
        Key.n_seeds,
    ]
    return stats[cols].reset_index(drop=True)


def trace_table(traces: pd.DataFrame, *, keys: Sequence[str]) -> pd.DataFrame:
    """Per-frame fractions of the traced runs in step order (frames without P are dropped)."""
    cols = [
        Key.run_id,
        Key.mlip,
        Key.x,
        Key.quench_rate,
        Key.seed,
        Key.stage,
        Key.step,
        Key.temperature,
    ]
    if traces.empty:
        return pd.DataFrame(columns=[*cols, *[str(k) for k in keys]])
    present = [str(k) for k in keys if str(k) in traces.columns]
    out = traces[[*cols, *present]].dropna(subset=present, how="all")
    return out.sort_values([Key.run_id, Key.step], kind="stable").reset_index(drop=True)


def crystal_table(crystals: pd.DataFrame, crystal_experiment: pd.DataFrame) -> pd.DataFrame:
    """Relaxed vs experimental volume per (MLIP, crystal) and the deviation in %.

    The reference is the ingested experiment (mean over sources) when there is one, else the
    experimental volume the crystal runner recorded with the result; without either the
    deviation is NaN (missing), never assumed.
    """
    cols = [Key.mlip, Key.crystal, Key.volume, Key.exp_volume, Key.deviation_pct]
    if crystals.empty:
        return pd.DataFrame(columns=cols)
    ref = crystal_experiment[crystal_experiment[Key.prop] == Key.crystal_volume]
    ref = ref.dropna(subset=["value"]).groupby(Key.crystal)["value"].mean()
    out = crystals.copy()
    ingested = out[Key.crystal].map(ref)
    out[Key.exp_volume] = ingested.where(ingested.notna(), out[Key.exp_volume]).astype(float)
    out[Key.deviation_pct] = 100.0 * (out[Key.volume] - out[Key.exp_volume]) / out[Key.exp_volume]
    return out[cols].sort_values([Key.mlip, Key.crystal]).reset_index(drop=True)


def coverage_table(mlips: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per registered MLIP by status, with the compositions and quench rates covered.

    Every registered MLIP appears, those without runs with zeros.
    """
    statuses = (RunStatus.DONE, RunStatus.RUNNING, RunStatus.PENDING, RunStatus.FAILED)
    names = sorted(set(mlips[Key.mlip]) | set(runs[Key.mlip])) if len(mlips) or len(runs) else []
    out = pd.DataFrame({Key.mlip: names})
    for s in statuses:
        counts = runs[runs["status"] == s.value].groupby(Key.mlip).size()
        out[f"runs_{s.value}"] = out[Key.mlip].map(counts).fillna(0).astype(int)
    done = completed(runs)
    out["compositions"] = out[Key.mlip].map(done.groupby(Key.mlip)[Key.x].nunique()).fillna(0)
    out["compositions"] = out["compositions"].astype(int)
    rates = done.groupby(Key.mlip)[Key.quench_rate].apply(
        lambda s: ", ".join(f"{v:g}" for v in sorted(s.unique()))
    )
    # A lookup, not map+fillna: with no done runs the mapped column is float NaN, and filling
    # it with a string is deprecated in pandas.
    out["quench_rates_k_ps"] = [rates.get(m, "") for m in out[Key.mlip]]
    return out
