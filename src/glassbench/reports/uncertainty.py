"""How sure an MAE is: bootstrap intervals, seed scatter and uncertainty-weighted errors.

Pure functions over DataFrames, with the NaN policy of :mod:`glassbench.reports.metrics`: a
missing value is left out of what it would enter, never imputed.

Errors are never pooled across protocols or quench rates: every statistic here is computed per
(MLIP, protocol, quench rate, property) (:data:`GROUP_KEYS`), over *points* (the compositions of
that group), each point being the mean over its seeds, as in :func:`metrics.mae_table`.

The bootstrap (:func:`mae_with_uncertainty`) answers "how different could this MAE have been
with other seeds and within the experimental error bars". Its draws are fixed by ``seed`` and
are, in this order (so that they can be re-implemented independently, as the tests do):

- ``resample, experiment = numpy.random.default_rng(seed).spawn(2)`` (two independent streams);
- for each replicate, for each run value in table order (groups as in the output table, points
  by x then composition id, runs by run id), one ``resample.random()`` ``u``; the run drawn
  for that slot is run ``floor(u * n_seeds)`` of its point (seeds resampled with replacement
  within each point);
- for each replicate, for each point in table order, one ``experiment.standard_normal()``
  ``z``; the experimental value of the replicate is ``exp + u_exp * z``, with ``u_exp`` the
  given uncertainty (an experimental value without one is used as it is);
- the replicate's MAE is the mean over the group's points of ``|resampled seed mean - drawn
  experimental value|``; the interval is the percentile interval (``numpy.quantile``, linear)
  of the replicates at ``(1 - level) / 2`` and ``(1 + level) / 2``.

With one seed per point and no experimental uncertainty every replicate equals the point
estimate, and so does the interval (``mae_ci_lo == mae == mae_ci_hi``): there is no spread to
report, and none is invented.

The percentile interval of a *mean absolute* error can lie entirely above the estimate: when
the errors are small compared with the seed scatter, resampling moves the seed mean away from
the experiment more often than towards it (|e| is biased upwards), so the lower percentile can
exceed the estimate itself. The interval reported is the percentile interval widened, where
needed, to contain the point estimate (``lo = min(q_lo, mae)``, ``hi = max(q_hi, mae)``): it is
never narrower than the bootstrap's, and an MAE at the noise floor shows a lower bound equal to
the MAE instead of an interval that excludes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from glassbench.reports.keys import COMPARABLE, Key
from glassbench.reports.metrics import NanPolicy, _check_nan, experiment_means

# Never pooled across protocols or quench rates.
GROUP_KEYS: tuple[Key, ...] = (Key.mlip, Key.protocol_id, Key.quench_rate, Key.prop)

VALUE = "value"
COMPOSITION_ID = "composition_id"
_RUN_IDS: tuple[str, ...] = (
    Key.mlip, Key.protocol_id, Key.quench_rate, Key.x, COMPOSITION_ID, Key.run_id, Key.seed,
)  # fmt: skip
SEED_VALUE_COLUMNS: tuple[str, ...] = (
    *_RUN_IDS, Key.prop, VALUE, Key.exp_value, Key.exp_uncertainty,
)  # fmt: skip
MAE_UNCERTAINTY_COLUMNS: tuple[str, ...] = (
    *GROUP_KEYS, Key.n, Key.n_seeds, Key.mae, Key.mean_error, Key.mae_lo, Key.mae_hi,
    Key.seed_sd, Key.mean_abs_z, Key.overlap,
)  # fmt: skip

# Random numbers per bootstrap chunk: bounds memory on large campaigns (the draws do not
# depend on the chunking, see the module docstring).
_CHUNK_ELEMENTS = 2_000_000


def seed_values(
    runs: pd.DataFrame,
    experiment: pd.DataFrame,
    *,
    keys: Sequence[str] = COMPARABLE,
    nan_policy: NanPolicy = "omit",
) -> pd.DataFrame:
    """One row per run and property that has an experimental value at the run's composition.

    Pass the runs that count (:func:`metrics.completed`). Columns: :data:`SEED_VALUE_COLUMNS`;
    ``exp_value``/``exp_uncertainty`` are the mean over sources (:func:`metrics.experiment_means`),
    ``exp_uncertainty`` NaN where no source gave one. A run without a value for a property has
    no row for it. Rows are in group order (MLIP, protocol, quench rate, property in ``keys``
    order), then x, composition and run id.
    """
    cols = list(SEED_VALUE_COLUMNS)
    exp = experiment_means(experiment, nan_policy=nan_policy)
    with_exp = set(exp[Key.prop])
    wanted = [str(k) for k in keys if str(k) in runs.columns and str(k) in with_exp]
    if runs.empty or not wanted:
        return pd.DataFrame(columns=cols)
    wide = runs[[*_RUN_IDS, *wanted]]
    _check_nan(wide[wanted].stack(future_stack=True), nan_policy=nan_policy, what="run values")
    long = wide.melt(id_vars=list(_RUN_IDS), value_vars=wanted, var_name=Key.prop)
    long[VALUE] = long[VALUE].astype(float)
    long = long.dropna(subset=[VALUE])
    merged = long.merge(
        exp[[COMPOSITION_ID, Key.prop, Key.exp_value, Key.exp_uncertainty]],
        on=[COMPOSITION_ID, Key.prop],
        how="inner",
    )
    order = {k: i for i, k in enumerate(wanted)}
    merged = merged.assign(_o=merged[Key.prop].map(order)).sort_values(
        [Key.mlip, Key.protocol_id, Key.quench_rate, "_o", Key.x, COMPOSITION_ID, Key.run_id],
        kind="stable",
    )
    return merged[cols].reset_index(drop=True)


def _group_mean(per_point: np.ndarray, group_start: np.ndarray, n_points: np.ndarray) -> np.ndarray:
    """Mean over each group's points along the last axis (points are contiguous per group)."""
    mean: np.ndarray = np.add.reduceat(per_point, group_start, axis=-1) / n_points
    return mean


def mae_with_uncertainty(
    values: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """MAE per :data:`GROUP_KEYS` with its bootstrap interval, seed SD and mean |z|.

    ``values``: :func:`seed_values`. One row per group (columns
    :data:`MAE_UNCERTAINTY_COLUMNS`; groups sorted by MLIP, protocol and quench rate, and
    within those by property in the order properties first appear in ``values``):

    - ``n``: points (compositions); ``n_seeds``: runs over all points;
    - ``mae``, ``mean_error``: mean over points of |seed mean - experiment| and of the signed
      error (simulation minus experiment), as :func:`metrics.mae_table`;
    - ``mae_ci_lo``, ``mae_ci_hi``: the bootstrap interval at ``level`` (module docstring);
    - ``seed_sd``: sqrt of the mean over points of the seed variance (ddof=1), over the points
      with at least two seeds; NaN if none has two;
    - ``mean_abs_z``: mean over points of |seed mean - exp| / sqrt(seed SD² + u_exp²). A point
      enters only where that denominator is defined and positive: it needs two seeds (a single
      seed has no SD). An experimental value without a stated uncertainty enters as exact
      (u_exp = 0), as it does in the bootstrap, so its z measures the error in units of the
      seed scatter alone (a larger |z| than any stated uncertainty would give: the reader is
      not told two MLIPs agree with experiment because nobody said how precise it is);
      NaN when no point qualifies;
    - ``overlap``: :func:`overlap_groups`.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, not {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    cols = list(MAE_UNCERTAINTY_COLUMNS)
    v = values.dropna(subset=[VALUE, Key.exp_value])
    if v.empty:
        return pd.DataFrame(columns=cols)
    order = {p: i for i, p in enumerate(pd.unique(v[Key.prop]))}
    v = v.assign(_o=v[Key.prop].map(order)).sort_values(
        [Key.mlip, Key.protocol_id, Key.quench_rate, "_o", Key.x, COMPOSITION_ID, Key.run_id],
        kind="stable",
    )
    # Rows are sorted, so groups and points are contiguous runs of rows: numpy segments.
    group_of_row = v.groupby(list(GROUP_KEYS), sort=False, dropna=False).ngroup().to_numpy()
    point_of_row = (
        v.groupby([*GROUP_KEYS, COMPOSITION_ID], sort=False, dropna=False).ngroup().to_numpy()
    )
    vals = v[VALUE].to_numpy(dtype=float)
    point_start = np.flatnonzero(np.r_[True, point_of_row[1:] != point_of_row[:-1]])
    n_seeds = np.diff(np.r_[point_start, len(vals)])
    exp = v[Key.exp_value].to_numpy(dtype=float)[point_start]
    u_given = v[Key.exp_uncertainty].to_numpy(dtype=float)[point_start]
    u_draw = np.where(np.isfinite(u_given) & (u_given > 0), u_given, 0.0)
    group_of_point = group_of_row[point_start]
    group_start = np.flatnonzero(np.r_[True, group_of_point[1:] != group_of_point[:-1]])
    n_points = np.diff(np.r_[group_start, len(point_start)])
    n_groups = len(group_start)

    # Point estimates with the same arithmetic as the replicates, so that a bootstrap without
    # spread reproduces them bit for bit.
    sim = np.add.reduceat(vals, point_start) / n_seeds
    err = sim - exp
    mae = _group_mean(np.abs(err), group_start, n_points)
    mean_error = _group_mean(err, group_start, n_points)

    point_of_value = np.repeat(np.arange(len(point_start)), n_seeds)
    offset = point_start[point_of_value]
    n_of_value = n_seeds[point_of_value]
    resample, experiment = np.random.default_rng(seed).spawn(2)
    reps = np.empty((n_boot, n_groups))
    chunk = max(1, _CHUNK_ELEMENTS // len(vals))
    for start in range(0, n_boot, chunk):
        c = min(chunk, n_boot - start)
        pick = (resample.random((c, len(vals))) * n_of_value).astype(np.int64)
        # u < 1, but u * n can round up to n; keep the index inside the point.
        idx = offset + np.minimum(pick, n_of_value - 1)
        sim_b = np.add.reduceat(vals[idx], point_start, axis=1) / n_seeds
        exp_b = exp + u_draw * experiment.standard_normal((c, len(point_start)))
        reps[start : start + c] = _group_mean(np.abs(sim_b - exp_b), group_start, n_points)
    q_lo, q_hi = np.quantile(reps, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)

    # Seed scatter and z per point; a single seed has no SD (NaN), never 0.
    dev = vals - sim[point_of_value]
    ss = np.add.reduceat(dev * dev, point_start)
    two = n_seeds >= 2
    var = np.full(len(point_start), np.nan)
    var[two] = ss[two] / (n_seeds[two] - 1)
    seed_sd = np.sqrt(_mean_where(var, two, group_of_point, n_groups))
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = np.sqrt(var + u_draw**2)
        z = np.abs(err) / denom
    z_ok = np.isfinite(denom) & (denom > 0)
    mean_abs_z = _mean_where(z, z_ok, group_of_point, n_groups)

    first = v.iloc[point_start[group_start]]
    out = pd.DataFrame({str(k): first[k].to_numpy() for k in GROUP_KEYS})
    out[Key.n] = n_points.astype(int)
    out[Key.n_seeds] = np.add.reduceat(n_seeds, group_start).astype(int)
    out[Key.mae] = mae
    out[Key.mean_error] = mean_error
    out[Key.mae_lo] = np.minimum(q_lo, mae)
    out[Key.mae_hi] = np.maximum(q_hi, mae)
    out[Key.seed_sd] = seed_sd
    out[Key.mean_abs_z] = mean_abs_z
    return overlap_groups(out)[cols]


def _mean_where(
    per_point: np.ndarray, ok: np.ndarray, group_of_point: np.ndarray, n_groups: int
) -> np.ndarray:
    """Mean over each group's points where ``ok``; NaN for a group without any."""
    total = np.bincount(group_of_point, weights=np.where(ok, per_point, 0.0), minlength=n_groups)
    count = np.bincount(group_of_point, weights=ok.astype(float), minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def overlap_groups(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``overlap``: the other MLIPs whose MAE interval overlaps this row's.

    Compared only within the same protocol, quench rate and property; two intervals
    ``[lo, hi]`` overlap when each starts before the other ends (touching counts). The names
    are sorted and joined with ", "; an empty string when no other MLIP overlaps. A missing
    bound overlaps nothing.
    """
    out = table.copy()
    if out.empty:
        out[Key.overlap] = pd.Series(dtype=object)
        return out
    same = [Key.protocol_id, Key.quench_rate, Key.prop]
    left = out[[*same, Key.mlip, Key.mae_lo, Key.mae_hi]].assign(_row=np.arange(len(out)))
    pairs = left.merge(left, on=same, suffixes=("", "_other"))
    hit = pairs[
        (pairs[Key.mlip] != pairs[f"{Key.mlip}_other"])
        & (pairs[Key.mae_lo] <= pairs[f"{Key.mae_hi}_other"])
        & (pairs[f"{Key.mae_lo}_other"] <= pairs[Key.mae_hi])
    ]
    names = (
        hit.sort_values(f"{Key.mlip}_other", kind="stable")
        .groupby("_row")[f"{Key.mlip}_other"]
        .agg(", ".join)
    )
    out[Key.overlap] = [names.get(i, "") for i in range(len(out))]
    return out
