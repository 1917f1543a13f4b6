"""Report figures with matplotlib's object API on the Agg canvas.

No pyplot: figures are plain ``Figure`` objects rendered by ``FigureCanvasAgg``, so drawing
never touches a global backend or figure registry (the scheduler generates from a worker
thread) and needs no display. Every function takes DataFrames from
:mod:`glassbench.reports.metrics` and returns PNG bytes, or None when there is nothing to draw.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glassbench.reports.keys import Key, key_of
from glassbench.reports.metrics import SERIES_KEYS

DPI = 100
_PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
)  # fmt: skip
# Dashed is reserved for experiment; quench rates are told apart by solid/dotted/dash-dot.
_RATE_STYLES = ("-", ":", "-.", (0, (1, 3)), (0, (5, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def mlip_colors(names: Sequence[str]) -> dict[str, str]:
    """One stable colour per MLIP across every figure of a report."""
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(sorted(set(names)))}


def plain(text: object) -> str:
    """``text`` drawn literally by matplotlib: MLIP and crystal names are user input, and a
    ``$`` pair would be parsed as mathtext (a malformed one aborts the whole report), while a
    legend silently drops labels that start with ``_``."""
    out = str(text).replace("$", r"\$")
    return " " + out if out.startswith("_") else out


def axis_label(key: str) -> str:
    k = key_of(key)
    return k.header if k is not None else plain(key)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def series_label(row: Mapping[str, object], *, many_rates: bool, many_protocols: bool) -> str:
    label = plain(row[Key.mlip])
    if many_rates:
        label += f" @ {float(row[Key.quench_rate]):g} K/ps"  # type: ignore[arg-type]
    if many_protocols:
        label += f" (protocol {row[Key.protocol_id]})"
    return label


def _grid(n: int, *, max_cols: int = 2) -> tuple[int, int]:
    cols = max(1, min(max_cols, n))
    return max(1, math.ceil(n / cols)), cols


def _panels(
    n: int,
    *,
    max_cols: int = 2,
    axes_in: tuple[float, float] = (4.3, 2.7),
    legend_entries: int = 0,
    legend_cols: int = 4,
) -> tuple[Figure, list[Axes]]:
    """A grid of ``n`` axes with fixed margins in inches and room for a legend below.

    Fixed margins instead of a layout engine: constrained/tight layout draws every figure
    twice to measure it, which was half the report's run time on a 300-run database.
    """
    nrows, ncols = _grid(n, max_cols=max_cols)
    aw, ah = axes_in
    left, right, top, gap_w, gap_h = 0.85, 0.25, 0.8, 0.9, 0.85
    legend_rows = math.ceil(legend_entries / legend_cols) if legend_entries else 0
    bottom = 0.6 + 0.22 * legend_rows
    width = left + right + ncols * aw + (ncols - 1) * gap_w
    height = top + bottom + nrows * ah + (nrows - 1) * gap_h
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=gap_w / aw,
        hspace=gap_h / ah,
    )
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _title(fig: Figure, text: str) -> None:
    fig.suptitle(text, y=1 - 0.18 / fig.get_figheight(), va="top")


def _legend(fig: Figure, handles: Sequence[Any], labels: Sequence[str], ncols: int) -> None:
    fig.legend(
        list(handles),
        list(labels),
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncols=ncols,
        fontsize=8,
        frameon=False,
    )


def trend_figure(
    trends: pd.DataFrame,
    experiment: pd.DataFrame,
    *,
    keys: Sequence[str],
    title: str,
    colors: Mapping[str, str],
) -> bytes | None:
    """Quantities vs x, one line per series with seed-std error bars, experiment dashed."""
    data = trends[trends[Key.prop].isin([str(k) for k in keys])]
    exp = experiment[experiment[Key.prop].isin([str(k) for k in keys])]
    if data.empty and exp.empty:
        return None
    many_rates = trends[Key.quench_rate].nunique() > 1
    many_protocols = trends[Key.protocol_id].nunique() > 1
    rates = sorted(trends[Key.quench_rate].dropna().unique())
    n_series = len(data.groupby(list(SERIES_KEYS), dropna=False)) + (0 if exp.empty else 1)
    legend_cols = 2 if len(keys) == 1 else 4
    fig, axes = _panels(len(keys), legend_entries=n_series, legend_cols=legend_cols)
    handles: dict[str, Any] = {}
    for ax, key in zip(axes, keys, strict=True):
        sub = data[data[Key.prop] == key]
        for _, grp in sub.groupby(list(SERIES_KEYS), sort=True, dropna=False):
            grp = grp.sort_values(Key.x)
            first = grp.iloc[0]
            label = series_label(first, many_rates=many_rates, many_protocols=many_protocols)
            rate_idx = rates.index(first[Key.quench_rate]) if rates else 0
            h = ax.errorbar(
                grp[Key.x],
                grp[Key.sim_mean],
                yerr=grp[Key.sim_std].fillna(0.0),
                color=colors.get(str(first[Key.mlip]), "#333333"),
                linestyle=_RATE_STYLES[rate_idx % len(_RATE_STYLES)],
                marker=_MARKERS[rate_idx % len(_MARKERS)],
                markersize=4,
                capsize=3,
                label=label,
            )
            handles.setdefault(label, h)
        e = exp[exp[Key.prop] == key].sort_values(Key.x)
        if e.empty:
            ax.text(
                0.5,
                0.96,
                "no experimental data ingested",
                transform=ax.transAxes,
                ha="center",
                va="top",
                fontsize=8,
                color="#666666",
            )
        else:
            h = ax.errorbar(
                e[Key.x],
                e[Key.exp_value],
                yerr=e[Key.exp_uncertainty].fillna(0.0),
                color="black",
                linestyle="--",
                marker="x",
                capsize=3,
                label="Experiment",
            )
            handles.setdefault("Experiment", h)
        ax.set_xlabel(Key.x.header)
        ax.set_ylabel(axis_label(key))
        ax.grid(alpha=0.3)
    if handles:
        _legend(fig, list(handles.values()), list(handles.keys()), legend_cols)
    _title(fig, f"{title} (error bars: std over seeds)")
    return _png(fig)


def mae_by_rate_figure(
    mae_by_rate: pd.DataFrame, *, properties: Sequence[str], colors: Mapping[str, str]
) -> bytes | None:
    """MAE vs quench rate per MLIP, one panel per property (only with several rates)."""
    if mae_by_rate.empty or mae_by_rate[Key.quench_rate].nunique() < 2:
        return None
    props = [p for p in properties if p in set(mae_by_rate[Key.prop])]
    rates = sorted(mae_by_rate[Key.quench_rate].unique())
    pos = {r: i for i, r in enumerate(rates)}
    n_mlips = mae_by_rate[Key.mlip].nunique()
    fig, axes = _panels(
        len(props), max_cols=3, axes_in=(3.4, 2.3), legend_entries=n_mlips, legend_cols=5
    )
    for ax, prop in zip(axes, props, strict=True):
        sub = mae_by_rate[mae_by_rate[Key.prop] == prop]
        for mlip, grp in sub.groupby(Key.mlip, sort=True):
            grp = grp.sort_values(Key.quench_rate)
            ax.plot(
                grp[Key.quench_rate].map(pos),
                grp[Key.mae],
                marker="o",
                color=colors.get(str(mlip)),
                label=plain(mlip),
            )
        # Evenly spaced rates (a log axis costs more to draw than the rest of the panel).
        ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
        ax.set_xlim(-0.3, len(rates) - 0.7)
        ax.set_xlabel(Key.quench_rate.header)
        k = key_of(prop)
        ax.set_ylabel(f"MAE ({k.unit})" if k is not None and k.unit else "MAE")
        ax.set_title(k.label if k is not None else plain(prop), fontsize=10)
        ax.grid(alpha=0.3)
    h, labels = axes[0].get_legend_handles_labels()
    if h:
        _legend(fig, h, labels, 5)
    _title(fig, "MAE against experiment vs quench rate")
    return _png(fig)


def trace_figure(traces: pd.DataFrame, *, keys: Sequence[str], max_panels: int = 8) -> bytes | None:
    """Unit fractions vs temperature during the quench, one panel per traced run."""
    if traces.empty:
        return None
    run_ids = list(dict.fromkeys(traces[Key.run_id].tolist()))[:max_panels]
    fig, axes = _panels(len(run_ids))
    for ax, rid in zip(axes, run_ids, strict=True):
        run = traces[traces[Key.run_id] == rid].sort_values(Key.step)
        first = run.iloc[0]
        for i, key in enumerate(keys):
            if key not in run.columns or run[key].isna().all():
                continue
            ax.plot(
                run[Key.temperature],
                run[key],
                color=_PALETTE[i % len(_PALETTE)],
                marker=".",
                markersize=3,
                linewidth=1,
                label=axis_label(key).replace(" fraction", ""),
            )
        # The quench runs from hot to cold: read the axis left to right in time.
        lo, hi = np.nanmin(run[Key.temperature]), np.nanmax(run[Key.temperature])
        if hi > lo:
            ax.set_xlim(hi, lo)
        ax.set_title(
            f"{plain(first[Key.mlip])}, x={float(first[Key.x]):g}, "
            f"{float(first[Key.quench_rate]):g} K/ps, seed {int(first[Key.seed])} "
            f"(run {int(rid)})",
            fontsize=9,
        )
        ax.set_xlabel(Key.temperature.header)
        ax.set_ylabel("Fraction of P")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncols=2)
    _title(fig, "P speciation vs temperature during melt-quench")
    return _png(fig)


def crystal_figure(crystal: pd.DataFrame, *, colors: Mapping[str, str]) -> bytes | None:
    """Volume deviation (%) per crystal, one bar per MLIP; missing references drawn as gaps."""
    data = crystal.dropna(subset=[Key.deviation_pct])
    if data.empty:
        return None
    crystals = sorted(crystal[Key.crystal].unique())
    mlips = sorted(crystal[Key.mlip].unique())
    width = 0.8 / max(1, len(mlips))
    fig, (ax,) = _panels(1, axes_in=(max(3.5, 1.4 * len(crystals) + 1.0), 2.8))
    for i, m in enumerate(mlips):
        sub = data[data[Key.mlip] == m].set_index(Key.crystal)[Key.deviation_pct]
        pos = [j + (i - (len(mlips) - 1) / 2) * width for j, c in enumerate(crystals) if c in sub]
        ax.bar(
            pos, [sub[c] for c in crystals if c in sub], width, label=plain(m), color=colors.get(m)
        )
    ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(crystals)), [plain(c) for c in crystals])
    ax.set_ylabel(Key.deviation_pct.header)
    ax.set_title("Relaxed crystal volume vs experiment")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
