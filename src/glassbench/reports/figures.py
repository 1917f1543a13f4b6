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
from matplotlib.ticker import MaxNLocator

from glassbench.reports.keys import Key, key_of
from glassbench.reports.metrics import SERIES_KEYS

DPI = 100
_PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
)  # fmt: skip
# Dashed is reserved for experiment; quench rates are told apart by solid/dotted/dash-dot.
_RATE_STYLES: tuple[Any, ...] = ("-", ":", "-.", (0, (1, 3)), (0, (5, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# An explicit title position: matplotlib otherwise measures every axis' tick labels to place
# each axes title, which cost more than drawing the panel's data.
_TITLE_Y = 1.01


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


def protocol_text(value: object) -> str:
    """A protocol id as written in legends (ids come back as floats from some frames)."""
    try:
        return str(int(float(value)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return plain(value)


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
    label_room: float = 0.0,
) -> tuple[Figure, list[Axes]]:
    """A grid of ``n`` axes with fixed margins in inches and room for a legend below.

    Fixed margins instead of a layout engine: constrained/tight layout draws every figure
    twice to measure it, which was half the report's run time on a 300-run database.
    """
    nrows, ncols = _grid(n, max_cols=max_cols)
    aw, ah = axes_in
    # label_room: extra inches below each row for long (rotated) tick labels.
    left, right, top, gap_w, gap_h = 0.85, 0.25, 0.8, 0.9, 0.85 + label_room
    legend_rows = math.ceil(legend_entries / legend_cols) if legend_entries else 0
    bottom = 0.6 + label_room + 0.22 * legend_rows
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
    for ax in axes[:n]:
        # Fewer tick labels: text is most of what a panel costs to draw.
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
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


class _Bars:
    """Vertical error bars of one axes, drawn as one collection.

    ``Axes.errorbar`` builds a line, a bar collection and cap lines per series; with a dozen
    series per panel that was a third of the report's drawing time.
    """

    def __init__(self) -> None:
        self.x: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.colors: list[str] = []

    def add(self, x: Any, lo: Any, hi: Any, color: str) -> None:
        xs, los, his = (np.asarray(v, dtype=float).ravel() for v in (x, lo, hi))
        ok = np.isfinite(xs) & np.isfinite(los) & np.isfinite(his) & (his > los)
        self.x += xs[ok].tolist()
        self.lo += los[ok].tolist()
        self.hi += his[ok].tolist()
        self.colors += [color] * int(ok.sum())

    def add_err(self, x: Any, y: Any, err: Any, color: str) -> None:
        y, err = np.asarray(y, dtype=float), np.asarray(err, dtype=float)
        self.add(x, y - err, y + err, color)

    def draw(self, ax: Axes) -> None:
        if self.x:
            ax.vlines(self.x, self.lo, self.hi, colors=self.colors, linewidth=0.9)


def _style_legend(
    mlips: Sequence[str],
    rates: Sequence[float],
    protocols: Sequence[object],
    colors: Mapping[str, str],
) -> tuple[list[Any], list[str]]:
    """Legend entries that name each visual channel once: colour = MLIP, line style and marker
    = quench rate, filled or open markers = protocol. A dozen series need a handful of entries
    instead of one each (legends were a fifth of a trend figure's drawing time)."""
    from matplotlib.lines import Line2D

    handles: list[Any] = [Line2D([], [], color=colors.get(str(m), "#333333")) for m in mlips]
    labels = [plain(m) for m in mlips]
    if len(rates) > 1:
        for i, r in enumerate(rates):
            handles.append(
                Line2D(
                    [], [], color="#555555", linestyle=_RATE_STYLES[i % len(_RATE_STYLES)],
                    marker=_MARKERS[i % len(_MARKERS)], markersize=4,
                )
            )  # fmt: skip
            labels.append(f"{float(r):g} K/ps")
    if len(protocols) > 1:
        for i, p in enumerate(protocols):
            handles.append(
                Line2D(
                    [], [], color="#555555", linestyle="", marker="o", markersize=5,
                    markerfacecolor="#555555" if i == 0 else "white",
                )
            )  # fmt: skip
            labels.append(f"protocol {protocol_text(p)}" + (" (filled)" if i == 0 else " (open)"))
    return handles, labels


def trend_figure(
    trends: pd.DataFrame,
    experiment: pd.DataFrame,
    *,
    keys: Sequence[str],
    title: str,
    colors: Mapping[str, str],
) -> bytes | None:
    """Quantities vs x, one line per series (MLIP, quench rate, protocol) with seed-std error
    bars; experiment dashed black. Colour: MLIP; line style and marker: quench rate; filled or
    open markers: protocol."""
    data = trends[trends[Key.prop].isin([str(k) for k in keys])]
    exp = experiment[experiment[Key.prop].isin([str(k) for k in keys])]
    if data.empty and exp.empty:
        return None
    rates = sorted(trends[Key.quench_rate].dropna().unique())
    protocols = sorted(data[Key.protocol_id].dropna().unique())
    mlips = sorted(str(m) for m in data[Key.mlip].dropna().unique())
    handles, labels = _style_legend(mlips, rates, protocols, colors)
    if not exp.empty:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="black", linestyle="--", marker="x"))
        labels.append("Experiment")
    legend_cols = 3 if len(keys) == 1 else 5
    fig, axes = _panels(len(keys), legend_entries=len(handles), legend_cols=legend_cols)
    for ax, key in zip(axes, keys, strict=True):
        sub = data[data[Key.prop] == key]
        bars = _Bars()
        for _, grp in sub.groupby(list(SERIES_KEYS), sort=True, dropna=False):
            grp = grp.sort_values(Key.x)
            first = grp.iloc[0]
            rate_idx = rates.index(first[Key.quench_rate]) if rates else 0
            open_marker = bool(protocols) and first[Key.protocol_id] != protocols[0]
            color = colors.get(str(first[Key.mlip]), "#333333")
            ax.plot(
                grp[Key.x],
                grp[Key.sim_mean],
                color=color,
                linestyle=_RATE_STYLES[rate_idx % len(_RATE_STYLES)],
                marker=_MARKERS[rate_idx % len(_MARKERS)],
                markerfacecolor="white" if open_marker else color,
                markersize=4,
            )
            bars.add_err(grp[Key.x], grp[Key.sim_mean], grp[Key.sim_std], color)
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
            ax.plot(e[Key.x], e[Key.exp_value], color="black", linestyle="--", marker="x")
            bars.add_err(e[Key.x], e[Key.exp_value], e[Key.exp_uncertainty], "black")
        bars.draw(ax)
        ax.set_xlabel(Key.x.header)
        ax.set_ylabel(axis_label(key))
        ax.grid(alpha=0.3)
    if handles:
        _legend(fig, handles, labels, legend_cols)
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
    # A line joins the rates of one MLIP under one protocol: never across protocols.
    by = [Key.mlip, Key.protocol_id] if Key.protocol_id in mae_by_rate.columns else [Key.mlip]
    n_series = len(mae_by_rate.groupby(by))
    many_protocols = len(by) > 1 and mae_by_rate[Key.protocol_id].nunique() > 1
    fig, axes = _panels(
        len(props), max_cols=3, axes_in=(3.4, 2.3), legend_entries=n_series, legend_cols=5
    )
    for ax, prop in zip(axes, props, strict=True):
        sub = mae_by_rate[mae_by_rate[Key.prop] == prop]
        for n, (names, grp) in enumerate(sub.groupby(by, sort=True)):
            mlip = names[0]
            grp = grp.sort_values(Key.quench_rate)
            label = plain(mlip) + (
                f" (protocol {protocol_text(names[1])})" if many_protocols else ""
            )
            ax.plot(
                grp[Key.quench_rate].map(pos),
                grp[Key.mae],
                marker=_MARKERS[n % len(_MARKERS)] if many_protocols else "o",
                color=colors.get(str(mlip)),
                label=label,
            )
        # Evenly spaced rates (a log axis costs more to draw than the rest of the panel).
        ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
        ax.set_xlim(-0.3, len(rates) - 0.7)
        ax.set_xlabel(Key.quench_rate.header)
        k = key_of(prop)
        ax.set_ylabel(f"MAE ({k.unit})" if k is not None and k.unit else "MAE")
        ax.set_title(k.label if k is not None else plain(prop), fontsize=10, y=_TITLE_Y)
        ax.grid(alpha=0.3)
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if seen:
        _legend(fig, list(seen.values()), list(seen.keys()), 5)
    _title(fig, "MAE against experiment vs quench rate")
    return _png(fig)


def trace_figure(
    traces: pd.DataFrame,
    *,
    keys: Sequence[str],
    title: str,
    ylabel: str,
    dotted: Sequence[str] = (),
    max_panels: int = 8,
) -> bytes | None:
    """Per-frame quantities vs temperature during the quench, one panel per traced run.

    ``dotted`` keys (flags on top of disjoint classes) are drawn dotted. None when no run has any of the keys.
    """
    present = [k for k in keys if k in traces.columns and traces[k].notna().any()]
    if traces.empty or not present:
        return None
    run_ids = list(dict.fromkeys(traces[Key.run_id].tolist()))[:max_panels]
    # One legend for the figure: every panel draws the same quantities in the same colours.
    fig, axes = _panels(
        len(run_ids),
        legend_entries=len(present),
        legend_cols=4,
    )
    fractions = ylabel.startswith("Fraction")
    handles: dict[str, Any] = {}
    for ax, rid in zip(axes, run_ids, strict=True):
        run = traces[traces[Key.run_id] == rid].sort_values(Key.step)
        first = run.iloc[0]
        for i, key in enumerate(present):
            if run[key].isna().all():
                continue
            (h,) = ax.plot(
                run[Key.temperature],
                run[key],
                color=_PALETTE[i % len(_PALETTE)],
                linestyle=":" if key in dotted else "-",
                marker=".",
                markersize=3,
                linewidth=1,
                label=axis_label(key).replace(" fraction", ""),
            )
            handles.setdefault(str(h.get_label()), h)
        # The quench runs from hot to cold: read the axis left to right in time.
        lo, hi = np.nanmin(run[Key.temperature]), np.nanmax(run[Key.temperature])
        if hi > lo:
            ax.set_xlim(hi, lo)
        ax.set_title(
            f"{plain(first[Key.mlip])}, x={float(first[Key.x]):g}, "
            f"{float(first[Key.quench_rate]):g} K/ps, seed {int(first[Key.seed])} "
            f"(run {int(rid)})",
            fontsize=9,
            y=_TITLE_Y,
        )
        ax.set_xlabel(Key.temperature.header)
        ax.set_ylabel(ylabel)
        if fractions:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    if handles:
        _legend(fig, list(handles.values()), list(handles.keys()), 4)
    _title(fig, f"{title} vs temperature during melt-quench")
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
    ax.set_title("Relaxed crystal volume vs experiment", y=_TITLE_Y)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def mae_bar_figure(
    table: pd.DataFrame, *, properties: Sequence[str], colors: Mapping[str, str]
) -> bytes | None:
    """MAE per MLIP with its 95 % bootstrap interval, one panel per property (the study's
    Fig. 2 shape).

    One figure with the bars of every (protocol, quench rate) side by side in each MLIP's
    group, told apart by hatching: the rates are never pooled, and a reader compares an MLIP at
    0.5 and at 5 K/ps in one glance instead of across files (which also keeps one fixed file
    name whatever rates the database holds).
    """
    data = table.dropna(subset=[Key.mae])
    if data.empty:
        return None
    props = [p for p in properties if p in set(data[Key.prop])]
    props += sorted(set(data[Key.prop]) - set(props))
    series = sorted(
        {
            (int(p), float(q))
            for p, q in zip(data[Key.protocol_id], data[Key.quench_rate], strict=True)
        }
    )
    many_protocols = len({p for p, _ in series}) > 1
    mlips = sorted(data[Key.mlip].unique())
    width = 0.8 / max(1, len(series))
    fig, axes = _panels(
        len(props),
        max_cols=3,
        axes_in=(max(3.0, 0.55 * len(mlips) * max(1, len(series)) ** 0.5 + 1.2), 2.4),
        legend_entries=len(series),
        legend_cols=4,
        label_room=0.1 + 0.04 * min(30, max(len(str(m)) for m in mlips)),
    )
    hatches = ("", "//", "..", "xx", "\\\\", "++", "oo")
    slot = {m: i for i, m in enumerate(mlips)}
    from matplotlib.collections import PolyCollection

    for ax, prop in zip(axes, props, strict=True):
        sub = data[data[Key.prop] == prop]
        bars = _Bars()
        top = 0.0
        for j, (pid, rate) in enumerate(series):
            part = sub[(sub[Key.protocol_id] == pid) & (sub[Key.quench_rate] == rate)]
            if part.empty:
                continue
            xs = (
                part[Key.mlip].map(slot).to_numpy(dtype=float) + (j - (len(series) - 1) / 2) * width
            )
            cs = [colors.get(str(m), "#777777") for m in part[Key.mlip]]
            heights = part[Key.mae].to_numpy(dtype=float)
            # One collection per series (one hatch): Axes.bar makes a patch per bar.
            verts = [
                [(x - width / 2, 0.0), (x - width / 2, h), (x + width / 2, h), (x + width / 2, 0.0)]
                for x, h in zip(xs, heights, strict=True)
                if np.isfinite(h)
            ]
            ax.add_collection(
                PolyCollection(
                    verts,
                    facecolors=[c for c, h in zip(cs, heights, strict=True) if np.isfinite(h)],
                    edgecolors="black",
                    linewidths=0.5,
                    hatch=hatches[j % len(hatches)] or None,
                )
            )
            top = max(top, float(np.nanmax(np.r_[heights, part[Key.mae_hi].to_numpy(float)])))
            bars.add(xs, part[Key.mae_lo], part[Key.mae_hi], "black")
        bars.draw(ax)
        ax.set_ylim(0.0, top * 1.08 if top > 0 else 1.0)
        ax.set_xticks(range(len(mlips)), [plain(m) for m in mlips], rotation=30, ha="right")
        ax.set_xlim(-0.6, len(mlips) - 0.4)
        k = key_of(prop)
        ax.set_ylabel(f"MAE ({k.unit})" if k is not None and k.unit else "MAE")
        ax.set_title(k.label if k is not None else plain(prop), fontsize=9, y=_TITLE_Y)
        ax.grid(axis="y", alpha=0.3)
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor="white", edgecolor="black", hatch=hatches[j % len(hatches)])
        for j in range(len(series))
    ]
    labels = [
        f"{q:g} K/ps" + (f" (protocol {protocol_text(p)})" if many_protocols else "")
        for p, q in series
    ]
    _legend(fig, handles, labels, 4)
    _title(fig, "MAE against experiment per MLIP (bars: 95 % bootstrap interval)")
    return _png(fig)


def extrapolation_figure(
    runs: pd.DataFrame,
    table: pd.DataFrame,
    *,
    keys: Sequence[str],
    title: str,
    colors: Mapping[str, str],
    level: float = 0.95,
) -> bytes | None:
    """Each property vs log10(quench rate): run values, the fitted line with its confidence
    band, and the extrapolated laboratory-rate value (star), one panel per property.

    Colour is the MLIP (and protocol), the marker the composition. The line is refitted here on
    the same run values as the table (:func:`glassbench.reports.extrapolation.fit_rate`); the
    starred point and its bar are the table's, so figure and table cannot disagree. Each panel
    draws its points, lines, bands and stars as a few collections: one artist per series was
    most of the report's drawing time on a few hundred runs.
    """
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.lines import Line2D

    from glassbench.reports.extrapolation import band, fit_rate

    props = [k for k in keys if k in set(table[Key.prop])] if not table.empty else []
    if not props:
        return None
    group = [Key.mlip, Key.protocol_id, Key.x]
    many_protocols = table[Key.protocol_id].nunique() > 1
    xs = sorted(table[Key.x].unique())
    marker_of = {x: _MARKERS[i % len(_MARKERS)] for i, x in enumerate(xs)}
    series = table[table[Key.prop].isin(props)][[Key.mlip, Key.protocol_id]].drop_duplicates()
    series = series.sort_values([Key.mlip, Key.protocol_id])
    n_legend = len(series) + len(xs) + 1
    fig, axes = _panels(len(props), legend_entries=n_legend, legend_cols=4)
    # Per series, the log rates and each property's values as arrays, read once per figure.
    usable = runs[runs[Key.quench_rate] > 0]
    by_series: dict[tuple[Any, ...], tuple[np.ndarray, dict[str, np.ndarray]]] = {
        k: (
            np.log10(g[Key.quench_rate].to_numpy(dtype=float)),
            {p: g[p].to_numpy(dtype=float) for p in props if p in g.columns},
        )
        for k, g in usable.groupby(group, sort=False, dropna=False)
    }
    for ax, prop in zip(axes, props, strict=True):
        rows = table[table[Key.prop] == prop].sort_values(group)
        lines, bands, bars = [], [], _Bars()
        points: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        stars: dict[str, tuple[list[float], list[float]]] = {}
        lab = float("nan")
        for row in rows.to_dict("records"):
            found = by_series.get((row[Key.mlip], row[Key.protocol_id], row[Key.x]))
            if found is None or prop not in found[1]:
                continue
            ok = np.isfinite(found[1][prop])
            lr, values = found[0][ok], found[1][prop][ok]
            color = colors.get(str(row[Key.mlip]), "#333333")
            px, py = points.setdefault((marker_of[row[Key.x]], color), ([], []))
            px += lr.tolist()
            py += values.tolist()
            lab = float(np.log10(float(row[Key.lab_rate])))
            grid = np.linspace(min(lab, float(lr.min())), float(lr.max()), 40)
            mean, lower, upper = band(fit_rate(lr, values), grid, level=level)
            lines.append((np.column_stack([grid, mean]), color))
            if np.isfinite(lower).all() and np.isfinite(upper).all():
                poly = np.vstack(
                    [np.column_stack([grid, lower]), np.column_stack([grid, upper])[::-1]]
                )
                bands.append((poly, color))
            sx, sy = stars.setdefault(color, ([], []))
            sx.append(lab)
            sy.append(float(row[Key.value_at_lab]))
            bars.add([lab], [row[Key.lab_lo]], [row[Key.lab_hi]], color)
        if bands:
            ax.add_collection(
                PolyCollection(
                    [p for p, _ in bands],
                    facecolors=[c for _, c in bands],
                    alpha=0.15,
                    linewidths=0,
                )
            )
        if lines:
            ax.add_collection(
                LineCollection(
                    [seg for seg, _ in lines], colors=[c for _, c in lines], linewidths=1
                )
            )
        # Markers as lines without a line: Axes.scatter costs several times more per call.
        for (marker, color), (px, py) in points.items():
            ax.plot(px, py, linestyle="", marker=marker, markersize=4, color=color)
        bars.draw(ax)
        for color, (sx, sy) in stars.items():
            ax.plot(
                sx, sy, linestyle="", marker="*", markersize=10, color=color,
                markeredgecolor="black", markeredgewidth=0.5, zorder=3,
            )  # fmt: skip
        if stars:
            ax.axvline(lab, color="#888888", linestyle=":", linewidth=0.8)
            ax.annotate(
                "extrapolated",
                (lab, 1.0),
                xycoords=("data", "axes fraction"),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
                color="#444444",
            )
        ax.autoscale_view()
        ax.set_xlabel("log10(quench rate / (K/ps))")
        ax.set_ylabel(axis_label(prop))
        ax.grid(alpha=0.3)
    handles: list[Any] = []
    labels: list[str] = []
    for mlip, pid in series.itertuples(index=False, name=None):
        handles.append(Line2D([], [], color=colors.get(str(mlip), "#333333")))
        labels.append(plain(mlip) + (f" (protocol {protocol_text(pid)})" if many_protocols else ""))
    for x in xs:
        handles.append(Line2D([], [], color="#555555", marker=marker_of[x], linestyle=""))
        labels.append(f"x = {float(x):g}")
    handles.append(
        Line2D(
            [],
            [],
            color="#555555",
            marker="*",
            markersize=10,
            linestyle="",
            markeredgecolor="black",
        )
    )
    labels.append("at the lab rate (extrapolated)")
    _legend(fig, handles, labels, 4)
    _title(fig, f"{title}: fit vs log10(rate), {level:.0%} band, extrapolated to the lab rate")
    return _png(fig)


def dispersion_rate_figure(
    table: pd.DataFrame, *, keys: Sequence[str], colors: Mapping[str, str]
) -> bytes | None:
    """Each property vs quench rate with (dotted, squares) and without D3 (solid, circles), per
    MLIP and composition; error bars: std over seeds."""
    if table.empty:
        return None
    props = [k for k in keys if k in set(table[Key.prop])]
    if not props:
        return None
    # Protocols are never pooled: a line joins the rates of one protocol.
    group = [Key.mlip, Key.protocol_id, Key.x, Key.dispersion]
    n_series = len(table[table[Key.prop].isin(props)].groupby(group))
    many_protocols = table[Key.protocol_id].nunique() > 1
    fig, axes = _panels(len(props), legend_entries=n_series, legend_cols=3)
    handles: dict[str, Any] = {}
    for ax, prop in zip(axes, props, strict=True):
        sub = table[table[Key.prop] == prop]
        bars = _Bars()
        for (mlip, pid, x, disp), grp in sub.groupby(group, sort=True):
            grp = grp.sort_values(Key.quench_rate)
            d3 = str(disp) != "none"
            label = f"{plain(mlip)}, x={float(x):g}, {'D3' if d3 else 'no D3'}"
            if many_protocols:
                label += f" (protocol {protocol_text(pid)})"
            color = colors.get(str(mlip), "#333333")
            lr = np.log10(grp[Key.quench_rate].to_numpy(dtype=float))
            (h,) = ax.plot(
                lr,
                grp[Key.sim_mean],
                color=color,
                linestyle=":" if d3 else "-",
                marker="s" if d3 else "o",
                markersize=4,
                label=label,
            )
            bars.add_err(lr, grp[Key.sim_mean], grp[Key.sim_std], color)
            handles.setdefault(label, h)
        bars.draw(ax)
        ax.set_xlabel("log10(quench rate / (K/ps))")
        ax.set_ylabel(axis_label(prop))
        ax.grid(alpha=0.3)
    if handles:
        _legend(fig, list(handles.values()), list(handles.keys()), 3)
    _title(fig, "With and without D3 vs quench rate (error bars: std over seeds)")
    return _png(fig)
