"""The report's content: its sections (tables, figures, notes) built from the report data.

Pure with respect to the file system and the database: :func:`build_document` turns a
:class:`~glassbench.reports.queries.ReportData` into a
:class:`~glassbench.reports.render.Document`; :mod:`glassbench.reports.generate` writes it.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pandas as pd

from glassbench import __version__
from glassbench.reports import extrapolation as ex
from glassbench.reports import figures as fig
from glassbench.reports import metrics as mx
from glassbench.reports import pictures
from glassbench.reports import uncertainty as un
from glassbench.reports.keys import (
    COMPARABLE,
    EDGE_PP_UNITS,
    NA_ENVIRONMENT,
    SS_CHAINS,
    TRACE_FLAGS,
    TRACE_PANELS,
    TREND_PANELS,
    Key,
    key_of,
)
from glassbench.reports.queries import COORDINATION_KEYS, FRACTION_KEYS, ReportData
from glassbench.reports.render import (
    Code,
    Document,
    Figure,
    Section,
    Table,
    Text,
    column_header,
)
from glassbench.schema import RunStatus
from glassbench.schema.models import COORDINATION_PROPERTIES, FRACTION_PROPERTIES, RUN_PROPERTIES

# Quench-rate extrapolation: one figure per group of properties. The figures draw the headline
# quantities (every panel costs about a tenth of a second to draw; the report stays under 10 s
# on 300 runs); the table has every property of RATE_KEYS.
EXTRAPOLATION_PANELS: dict[str, tuple[Key, ...]] = {
    "Density and elastic moduli": (Key.density, Key.young, Key.bulk, Key.shear),
    "Structure": (Key.p1_incl_p1p, Key.p2, Key.p3c, Key.na_s_share),
}
# The tables cover more properties than the figures draw.
RATE_KEYS: tuple[Key, ...] = (
    Key.density, Key.young, Key.bulk, Key.shear, Key.p0, Key.p1_incl_p1p, Key.p2, Key.p1p,
    Key.ppend, Key.p3c, Key.bs, Key.nbs, Key.bo, Key.nbo, Key.na_cn, Key.na_s_share,
    Key.ss_fraction,
)  # fmt: skip
DISPERSION_FIGURE_KEYS: tuple[Key, ...] = (
    Key.density, Key.young, Key.bulk, Key.shear, Key.p1_incl_p1p, Key.p3c,
)  # fmt: skip

# Pictures of one real occurrence per kind (reports/pictures.py); the figure name is
# ``example_<kind>``, the kind one of pictures.ARTEFACT_KINDS (a constant, never data).
EXAMPLE_TITLES = {
    "edge_sharing": "Edge-sharing P pair",
    "pp_chain": "P-P chain",
    "p3c": "Three-coordinated P (P3:)",
    "ss_chain": "S-S chain",
}
assert set(EXAMPLE_TITLES) == set(pictures.ARTEFACT_KINDS)

TABLE_NAMES = (
    "coverage", "protocols", "mae_matrix", "mae", "mae_points", "experiment", "trends",
    "experiment_trends", "ss_chains", "na_environment", "edge_pp", "edge_pp_runs", "quench_mae",
    "quench_values", "extrapolation", "dispersion_rate", "traces", "crystal_volumes",
    "crystal_mae",
)  # fmt: skip
_TREND_FIGURES = dict(
    zip(
        TREND_PANELS,
        ("trends_properties", "trends_speciation", "trends_anions", "trends_na_cn"),
        strict=True,
    )
)
_EXTRAPOLATION_FIGURES = dict(
    zip(
        EXTRAPOLATION_PANELS,
        ("extrapolation_properties", "extrapolation_structure"),
        strict=True,
    )
)
_TRACE_FIGURES = dict(
    zip(TRACE_PANELS, ("traces_p_units", "traces_anions", "traces_na"), strict=True)
)
_TRACE_YLABELS = {
    "P units": "Fraction of P",
    "Anions": "Fraction of S+O",
    "Na coordination": "Neighbours",
}
FIGURE_NAMES = (
    *_TREND_FIGURES.values(), "mae_bars", "na_s_share",
    *(f"example_{k}" for k in pictures.ARTEFACT_KINDS),
    *_EXTRAPOLATION_FIGURES.values(), "dispersion_rate", *_TRACE_FIGURES.values(),
    "crystal_volumes",
)  # fmt: skip
# Names of earlier layouts: removed from an output folder when a report is rewritten there.
RETIRED_TABLES = ("artefacts",)
RETIRED_FIGURES = ("quench_traces", "quench_mae")

_PROPERTY_LIST = textwrap.fill(
    ", ".join((*RUN_PROPERTIES, *FRACTION_PROPERTIES, *COORDINATION_PROPERTIES)),
    width=78,
    subsequent_indent=" " * 13,
    break_on_hyphens=False,
)
CSV_FORMAT_HELP = f"""\
x,property,value,uncertainty,source
<x>,<property>,<value>,<uncertainty>,"<citation>"
...

x            composition of Na4P2S7-xOx (optional column `family`, default Na4P2S7-xOx)
property     one of: {_PROPERTY_LIST}
value        fractions in [0, 1]; densities in g/cm3; moduli in GPa
uncertainty  optional
source       citation of the measurement
(crystal reference volumes: a `crystal` column instead of `x`, property
volume_per_formula_unit_a3 in A^3)"""


# --- building the document ---------------------------------------------------------------


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    """Property names -> labels, with a unit column after them (for display only)."""
    if df.empty or Key.prop not in df.columns:
        return df
    out = df.copy()
    keys = out[Key.prop].map(key_of)
    pos = list(out.columns).index(Key.prop)
    out[Key.prop] = [
        k.label if k is not None else p for k, p in zip(keys, df[Key.prop], strict=True)
    ]
    out.insert(pos + 1, "unit", [k.unit if k is not None else "" for k in keys])
    return out


def _mlip_columns(matrix: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """A (row keys) x MLIP matrix as (CSV data, display table, display headers).

    MLIP names are user input: as column names they could collide with ``property`` or
    ``unit`` and would be humanised like column names, so the display table gets neutral
    column names and the names themselves, verbatim, as headers.
    """
    mlips = [str(m) for m in matrix.columns]
    values = matrix.to_numpy(dtype=float)
    index = matrix.index.to_frame(index=False)
    data = pd.DataFrame(values, columns=pd.Index(mlips, dtype=object))
    for i, col in enumerate(index.columns):
        data.insert(i, str(col), index[col].to_list(), allow_duplicates=True)
    display = _labelled(index)
    fixed = [column_header(str(c)) for c in display.columns]
    for i in range(len(mlips)):
        display[f"mlip_{i}"] = values[:, i]
    return data, display, (*fixed, *mlips)


def _pm(mean: float, std: float, n: int) -> str:
    if pd.isna(mean):
        return "—"
    spread = "" if pd.isna(std) else f" ± {std:.3g}"
    return f"{mean:.4g}{spread} (n={n})"


def _overview(data: ReportData, done: pd.DataFrame) -> Section:
    s = Section("overview", "Overview")
    if data.mlips.empty and data.runs.empty and data.experiment.empty and data.crystals.empty:
        s.blocks.append(
            Text(
                "There is no data in this database yet: no MLIPs, runs or experimental values. "
                "Register an MLIP (glassbench mlip add), bring in results (glassbench ingest "
                "traj|lammps, or glassbench run meltquench / campaign run) and add experimental "
                "values (glassbench ingest experiment data.csv), then regenerate this report."
            )
        )
    n_runs, n_done = len(data.runs), len(done)
    s.blocks.append(
        Text(
            f"{len(data.mlips)} registered MLIP(s), {n_runs} run(s) of which {n_done} done; "
            f"{len(data.experiment)} experimental glass value(s), "
            f"{len(data.crystal_experiment)} crystal reference value(s), "
            f"{len(data.crystals)} relaxed crystal volume(s). Only runs with status "
            f"'{RunStatus.DONE.value}' enter the statistics below."
        )
    )
    scope = _scope(done)
    if scope:
        s.blocks.append(Text(scope))
    cov = mx.coverage_table(data.mlips, data.runs)
    s.blocks.append(Table("coverage", "Runs per MLIP", cov))
    used = set(data.runs[Key.protocol_id].dropna().astype(int)) if len(data.runs) else set()
    protocols = data.protocols[data.protocols[Key.protocol_id].isin(used)]
    if not protocols.empty:
        s.blocks.append(
            Table(
                "protocols",
                "Protocols of the runs",
                protocols.reset_index(drop=True),
                note="Results are compared per protocol and quench rate, never pooled across "
                "them. Dispersion: what the protocol sets; empty means as the MLIP is "
                "registered.",
                collapsed=True,
            )
        )
    return s


# The study's quench rates (../shared/DESIGN.md): 0.5-5 K/ps, 5 K/ps the standard one.
STUDY_RATE_K_PS = 5.0
ATOMS_PER_FORMULA_UNIT = 13  # Na4 P2 S(7-x) O(x)


def _scope(done: pd.DataFrame) -> str:
    """What the done runs can and cannot say: quench rates far above the study's and small
    cells are stated plainly, with the numbers, next to the results they qualify."""
    if done.empty or Key.quench_rate not in done.columns:
        return ""
    rates = sorted({float(r) for r in done[Key.quench_rate].dropna()})
    if not rates or rates[0] < 10 * STUDY_RATE_K_PS:
        return ""
    atoms = sorted({int(n) for n in done.get("n_atoms", pd.Series(dtype=float)).dropna()})
    rate_text = ", ".join(f"{r:g}" for r in rates)
    lo, hi = rates[0] / STUDY_RATE_K_PS, rates[-1] / STUDY_RATE_K_PS
    times = f"{lo:,.0f}x" if lo == hi else f"{lo:,.0f}x to {hi:,.0f}x"
    text = (
        f"Scope: these runs were quenched at {rate_text} K/ps, {times} the study's standard "
        f"{STUDY_RATE_K_PS:g} K/ps (it covers 0.5-{STUDY_RATE_K_PS:g} K/ps)"
    )
    if atoms:
        n_p = 2 * atoms[0] // ATOMS_PER_FORMULA_UNIT
        cells = ", ".join(str(n) for n in atoms)
        text += f", in cells of {cells} atoms"
        if n_p:
            text += f" (one P is {100 / n_p:.0f} % of all P in the smallest)"
    return (
        text + ". Quantities that depend on how the glass was made (density, speciation, "
        "moduli) show what this pipeline measures on such runs, not what these MLIPs predict "
        "for glasses made at the study's rates."
    )


MAE_COLUMNS: tuple[str, ...] = (
    Key.mlip, Key.protocol_id, Key.quench_rate, Key.prop, Key.n, Key.n_seeds, Key.mae,
    Key.mae_lo, Key.mae_hi, Key.mean_error, Key.seed_sd, Key.mean_abs_z, Key.overlap,
)  # fmt: skip


def mae_uncertainty_table(done: pd.DataFrame, experiment: pd.DataFrame) -> pd.DataFrame:
    """The report's MAE table: one row per MLIP, protocol, quench rate and property, with the
    bootstrap interval, seed SD, mean |z| and overlap of :mod:`glassbench.reports.uncertainty`,
    sorted for reading (protocol, rate, property in report order, MLIP)."""
    if done.empty or experiment.empty:
        return pd.DataFrame(columns=list(MAE_COLUMNS))
    values = un.seed_values(done, experiment, keys=COMPARABLE)
    if values.empty:
        return pd.DataFrame(columns=list(MAE_COLUMNS))
    table = un.mae_with_uncertainty(values)
    if table.empty:
        return pd.DataFrame(columns=list(MAE_COLUMNS))
    order = {str(k): i for i, k in enumerate(COMPARABLE)}
    table = table.assign(_o=table[Key.prop].map(order)).sort_values(
        [Key.protocol_id, Key.quench_rate, "_o", Key.mlip], kind="stable"
    )
    cols = [c for c in MAE_COLUMNS if c in table.columns]
    return table[cols].reset_index(drop=True)


def overlap_pairs(table: pd.DataFrame) -> dict[tuple[int, float, str], list[tuple[str, str]]]:
    """(protocol, rate, property) -> pairs of MLIPs whose 95 % MAE intervals overlap.

    Read from the intervals themselves (closed intervals), not by parsing the ``overlap``
    text, which joins user-chosen MLIP names that may contain commas.
    """
    out: dict[tuple[int, float, str], list[tuple[str, str]]] = {}
    if table.empty:
        return out
    ok = table.dropna(subset=[Key.mae_lo, Key.mae_hi])
    for (pid, rate, prop), g in ok.groupby(
        [Key.protocol_id, Key.quench_rate, Key.prop], sort=False
    ):
        rows = sorted(zip(g[Key.mlip].astype(str), g[Key.mae_lo], g[Key.mae_hi], strict=True))
        pairs = [
            (a, b)
            for i, (a, alo, ahi) in enumerate(rows)
            for b, blo, bhi in rows[i + 1 :]
            if alo <= bhi and blo <= ahi
        ]
        if pairs:
            out[(int(pid), float(rate), str(prop))] = pairs
    return out


def _prop_label(prop: str) -> str:
    k = key_of(prop)
    return k.label if k is not None else prop


def overlap_sentences(table: pd.DataFrame) -> list[str]:
    """One sentence per (protocol, rate, property) where MLIPs' MAE intervals overlap."""
    sentences = []
    for (pid, rate, prop), pairs in overlap_pairs(table).items():
        joined = "; ".join(f"{a} and {b}" for a, b in pairs)
        sentences.append(
            f"{_prop_label(prop)}, protocol {pid} at {rate:g} K/ps: the 95 % MAE intervals "
            f"overlap for {joined}. These data do not tell those MLIPs apart on this property."
        )
    return sentences


def _mae_section(
    data: ReportData, done: pd.DataFrame, colors: dict[str, str]
) -> tuple[Section, pd.DataFrame, pd.DataFrame]:
    s = Section("mae", "Accuracy against experiment (MAE)")
    points = mx.mae_points(done, data.experiment)
    table = mae_uncertainty_table(done, data.experiment)
    if data.experiment.empty:
        s.blocks += [
            Text(
                "No experimental glass data has been ingested yet, so there is nothing to "
                "compute an MAE against. Add experimental values with:"
            ),
            Code("glassbench ingest experiment data.csv"),
            Text("CSV format (header row, one row per composition, property and source):"),
            Code(CSV_FORMAT_HELP),
        ]
    missing = [k.label for k in COMPARABLE if k not in set(data.experiment.get(Key.prop, []))]
    if not data.experiment.empty and missing:
        s.blocks.append(
            Text(
                "No experimental value ingested for: " + ", ".join(missing) + ". These are "
                "shown as missing, never estimated."
            )
        )
    if not data.experiment.empty and points.empty:
        s.blocks.append(Text("No completed run matches a quantity with experimental data yet."))
    if not table.empty:
        s.blocks.append(
            Text(
                "Every MAE below belongs to one protocol and one quench rate: a run at 0.5 K/ps "
                "and one at 5 K/ps are different measurements, so they are never pooled. A "
                "point is (composition, quench rate, protocol): the mean over its seeds."
            )
        )
        png = fig.mae_bar_figure(table, properties=[str(k) for k in COMPARABLE], colors=colors)
        if png is not None:
            s.blocks.append(
                Figure(
                    "mae_bars",
                    "MAE per MLIP and property",
                    png,
                    caption="MAE against experiment per MLIP, one panel per property; bars of "
                    "each protocol and quench rate side by side (hatching), error bars the 95 % "
                    "bootstrap interval.",
                )
            )
        s.blocks.append(
            Table(
                "mae",
                "MAE per MLIP, protocol, quench rate and property, with its uncertainty",
                table,
                display=_labelled(table),
                note=(
                    "Over the points where both a simulated value (mean over seeds) and an "
                    "experimental value (mean over sources) exist. MAE 95 % CI: percentile "
                    "bootstrap, seeds resampled within each point and the experimental value "
                    "drawn from its uncertainty where one is given. Mean signed error = "
                    "simulated - experiment (positive: the MLIP overestimates). Seed SD: square "
                    "root of the mean seed variance of the points. Mean |z|: mean over points "
                    "of |simulated - experiment| / sqrt(seed SD^2 + experimental uncertainty^2); "
                    "around 1 or below, the error is within the noise. Indistinguishable from: "
                    "MLIPs of the same protocol, rate and property whose interval overlaps."
                ),
            )
        )
        for sentence in overlap_sentences(table):
            s.blocks.append(Text(sentence))
        matrix = table.pivot_table(
            index=[Key.protocol_id, Key.quench_rate, Key.prop],
            columns=Key.mlip,
            values=Key.mae,
            aggfunc="first",
            sort=False,
        )
        matrix_csv, matrix_display, headers = _mlip_columns(matrix)
        s.blocks.append(
            Table(
                "mae_matrix",
                "MAE per protocol, quench rate and property (rows) and MLIP (columns)",
                matrix_csv,
                display=matrix_display,
                headers=headers,
                note="Lower is better; missing where an MLIP has no point with experiment.",
                collapsed=True,
            )
        )
    if not points.empty:
        s.blocks.append(
            Table(
                "mae_points",
                "Points behind the MAE (seed mean and std vs experiment)",
                points,
                display=_labelled(points),
                note="Missing experimental values stay missing and are left out of the MAE.",
                collapsed=True,
            )
        )
    if not data.experiment.empty:
        exp = data.experiment.drop(columns=["composition_id"])
        s.blocks.append(
            Table(
                "experiment",
                "Ingested experimental glass values",
                exp,
                display=_labelled(exp),
                collapsed=True,
            )
        )
    return s, points, table


def _trend_section(data: ReportData, done: pd.DataFrame, colors: dict[str, str]) -> Section:
    s = Section("trends", "Trends with composition")
    keys = [str(k) for panel in TREND_PANELS.values() for k in panel]
    trends = mx.trend_table(done, keys=keys)
    exp = mx.experiment_trends(data.experiment, keys=keys)
    if trends.empty and exp.empty:
        s.blocks.append(Text("No completed runs and no experimental values yet: nothing to plot."))
        return s
    for title, panel in TREND_PANELS.items():
        png = fig.trend_figure(
            trends, exp, keys=[str(k) for k in panel], title=title, colors=colors
        )
        if png is not None:
            s.blocks.append(
                Figure(
                    _TREND_FIGURES[title],
                    title,
                    png,
                    caption=f"{title} vs x: mean over seeds with std as error bars; experiment "
                    "dashed (black) where ingested.",
                )
            )
    s.blocks.append(
        Table(
            "trends",
            "Trend values (seed mean and std)",
            trends,
            display=_labelled(trends),
            collapsed=True,
        )
    )
    s.blocks.append(
        Table(
            "experiment_trends",
            "Experimental values per x (mean over sources)",
            exp,
            display=_labelled(exp),
            collapsed=True,
        )
    )
    return s


def _structure_section(data: ReportData, done: pd.DataFrame, colors: dict[str, str]) -> Section:
    s = Section("structure", "S-S chains and the Na environment")
    s.blocks.append(
        Text(
            "Quantities the study reports in its supplementary Tables S3 and S4, per MLIP, "
            "quench rate, protocol and x: each run's window mean (its final frame when it has "
            "no averaging window), then mean and std over seeds. S-S chains are a measured "
            "quantity here, not a verdict: ab initio MD also finds S-S chains, and whether a "
            "given amount is an artefact is left to the reader."
        )
    )
    ss = mx.point_table(done, keys=[str(k) for k in SS_CHAINS])
    s.blocks.append(
        Table(
            "ss_chains",
            "S-S chains (Table S3): S in S-S bonds, mean chain length, chains longer than two",
            ss,
            note="S in S-S chains: fraction of all S bonded to another S. Mean chain length: S "
            "atoms per chain. Longer than two: chains of more than two S over all chains "
            "(missing where a run has no chain).",
        )
    )
    _append_example(s, data, "ss_chain")
    na = mx.point_table(done, keys=[str(k) for k in NA_ENVIRONMENT])
    s.blocks.append(
        Table(
            "na_environment",
            "Na environment (Table S4): Na-S / Na-O first-peak distances, Na-S share, coordination",
            na,
            note="First peaks of the partial g(r) Na-S and Na-O from the contacts within the "
            "pair cutoffs (docs/speciation.md). Na-S share: Na-S contacts over all Na-S and "
            "Na-O contacts.",
        )
    )
    trends = mx.trend_table(done, keys=[str(Key.na_s_share)])
    if not trends.empty:
        png = fig.trend_figure(
            trends,
            mx.experiment_trends(data.experiment, keys=[str(Key.na_s_share)]),
            keys=[str(Key.na_s_share)],
            title="Na-S share of Na coordination",
            colors=colors,
        )
        if png is not None:
            s.blocks.append(
                Figure(
                    "na_s_share",
                    "Na-S share of Na coordination vs x",
                    png,
                    caption="Na-S contacts over all Na contacts vs x per MLIP: mean over seeds "
                    "with std as error bars.",
                )
            )
    return s


def _append_example(s: Section, data: ReportData, kind: str) -> None:
    """The picture of one real occurrence of ``kind``, when the data hold one."""
    if data.examples.empty or "kind" not in data.examples.columns:
        return
    example = data.examples[data.examples["kind"] == kind]
    if example.empty:
        return
    title = EXAMPLE_TITLES[kind]
    png = pictures.picture_png(example, title=title)
    s.blocks.append(
        Figure(f"example_{kind}", title, png, caption=pictures.example_caption(example))
    )


EDGE_PP_RUN_COLUMNS: tuple[str, ...] = (
    Key.run_id, Key.mlip, Key.protocol_id, Key.quench_rate, Key.x, Key.seed, *EDGE_PP_UNITS,
)  # fmt: skip


def _edge_pp_section(data: ReportData, done: pd.DataFrame) -> Section:
    s = Section("edge-pp", "Edge sharing, P-P bonds and three-coordinated P")
    s.blocks.append(
        Text(
            "Fractions of all P: P in edge-sharing pairs (P2ES, two P sharing two or more "
            "bridging anions), P in P-P bonded clusters of three or more P (PPchain), ends of "
            "such chains (PPend: one P-P bond and three anions, outside an isolated P2S6-type "
            "dimer) and three-coordinated P (P3:, the study's name; not the project's P3, a P "
            "with three bridging anions). Two P that share bridging anions are never counted "
            "as P-P bonded. Each run's window mean (its final frame when it has no averaging "
            "window; docs/protocol.md), then mean and std over seeds."
        )
    )
    s.blocks.append(
        Table("edge_pp", "Edge sharing, P-P bonds and P3: per point", mx.artefact_table(done))
    )
    findings = _p3c_findings(done)
    if findings:
        s.blocks.append(Text(findings))
    per_run = done[list(EDGE_PP_RUN_COLUMNS)].sort_values(
        [Key.mlip, Key.protocol_id, Key.quench_rate, Key.x, Key.seed], kind="stable"
    )
    s.blocks.append(
        Table(
            "edge_pp_runs",
            "Per run (window mean, else final frame)",
            per_run.reset_index(drop=True),
            collapsed=True,
        )
    )
    for kind in ("edge_sharing", "pp_chain", "p3c"):
        _append_example(s, data, kind)
    return s


P3C_NOTABLE = 0.2  # a fifth of all P three-coordinated: worth a sentence, not only a cell


def _p3c_findings(done: pd.DataFrame) -> str:
    """Say it when an MLIP leaves much of P three-coordinated: a reader scanning for model
    behaviour should not have to find it in a table cell."""
    if done.empty or Key.p3c not in done.columns:
        return ""
    parts = []
    for mlip, g in done.groupby(Key.mlip, sort=True):
        v = g[Key.p3c].dropna()
        if len(v) and float(v.mean()) >= P3C_NOTABLE:
            parts.append(
                f"{mlip}: {v.mean():.0%} of P three-coordinated on average over {len(v)} done "
                f"run(s) (range {v.min():.0%}-{v.max():.0%})"
            )
    if not parts:
        return ""
    return (
        "Three-coordinated P (P3:): "
        + "; ".join(parts)
        + ". If it persists in slower quenches and longer melts it is the model's behaviour, "
        "not the protocol's: compare the quench-rate section before reading it either way."
    )


def _quench_section(done: pd.DataFrame, table: pd.DataFrame, colors: dict[str, str]) -> Section:
    s = Section("quench", "Quench-rate sensitivity")
    rates = sorted(done[Key.quench_rate].dropna().unique())
    if not rates:
        s.blocks.append(Text("No completed runs yet."))
    elif len(rates) == 1:
        s.blocks.append(
            Text(
                f"All completed runs use one quench rate ({rates[0]:g} K/ps): nothing to "
                "compare side by side yet."
            )
        )
    if not table.empty:
        by_rate = table[
            [Key.mlip, Key.protocol_id, Key.prop, Key.quench_rate, Key.n, Key.mae, Key.mean_error]
        ]
        wide = by_rate.pivot_table(
            index=[Key.mlip, Key.protocol_id, Key.prop],
            columns=Key.quench_rate,
            values=Key.mae,
            aggfunc="first",
            sort=False,
        )
        wide.columns = [f"MAE @ {q:g} K/ps" for q in wide.columns]
        s.blocks.append(
            Table(
                "quench_mae",
                "MAE per quench rate, side by side",
                by_rate,
                display=_labelled(wide.reset_index()),
            )
        )
        # No figure here: the MAE bar chart shows every rate side by side already.
    keys = [
        str(k)
        for k in dict.fromkeys(
            (
                *TREND_PANELS["Density and elastic moduli"],
                *TREND_PANELS["P speciation (31P NMR units)"],
                *TREND_PANELS["Bridging and non-bridging anions"],
                Key.na_cn,
                Key.na_s_share,
                *EDGE_PP_UNITS,
                *SS_CHAINS,
            )
        )
    ]
    values = mx.quench_sensitivity(done, keys=keys)
    display = None
    if not values.empty:
        cells = values.assign(
            cell=[
                _pm(m, sd, n)
                for m, sd, n in zip(
                    values[Key.sim_mean], values[Key.sim_std], values[Key.n_seeds], strict=True
                )
            ]
        )
        display = cells.pivot_table(
            index=[Key.mlip, Key.protocol_id, Key.prop, Key.x],
            columns=Key.quench_rate,
            values="cell",
            aggfunc="first",
            sort=False,
        )
        display.columns = [f"{q:g} K/ps" for q in display.columns]
        display = _labelled(display.reset_index())
    s.blocks.append(
        Table(
            "quench_values",
            "Quantities per quench rate, side by side (seed mean ± std, n seeds)",
            values,
            display=display,
            collapsed=True,
        )
    )
    return s


def extrapolation_table(done: pd.DataFrame, *, lab_rate_k_ps: float) -> pd.DataFrame:
    """The report's extrapolation table (every property of :data:`RATE_KEYS`)."""
    if done.empty:
        return pd.DataFrame()
    return ex.rate_extrapolations(
        done, keys=[str(k) for k in RATE_KEYS], lab_rate_k_ps=lab_rate_k_ps
    )


def _extrapolation_section(
    done: pd.DataFrame, colors: dict[str, str], lab_rate_k_ps: float
) -> Section:
    s = Section("extrapolation", "Quench-rate extrapolation")
    s.blocks.append(
        Text(
            f"Where an MLIP and composition (under one protocol) have runs at {ex.MIN_RATES} or "
            "more quench rates, each property is fitted against log10(quench rate) by ordinary "
            "least squares on the run values (every seed a point) and extrapolated to a "
            f"laboratory cooling rate of {lab_rate_k_ps:g} K/ps (--lab-rate; default "
            f"{ex.DEFAULT_LAB_RATE_K_PS:g} K/ps). This is an extrapolation, flagged as one: "
            "'decades' says how far it reaches beyond the slowest simulated rate, and the 95 % "
            "interval (Student t on the fit, n - 2 degrees of freedom) assumes the trend stays "
            "linear in log10(rate) all the way, which no simulation here can check."
        )
    )
    table = extrapolation_table(done, lab_rate_k_ps=lab_rate_k_ps)
    if table.empty:
        s.blocks.append(
            Text(
                f"No MLIP and composition has done runs at {ex.MIN_RATES} or more quench rates "
                "yet: nothing is extrapolated."
            )
        )
        return s
    for title, panel in EXTRAPOLATION_PANELS.items():
        png = fig.extrapolation_figure(
            done, table, keys=[str(k) for k in panel], title=title, colors=colors
        )
        if png is not None:
            s.blocks.append(
                Figure(
                    _EXTRAPOLATION_FIGURES[title],
                    f"{title}: extrapolation to {lab_rate_k_ps:g} K/ps",
                    png,
                    caption="Run values (points), the fitted line with its 95 % confidence "
                    "band, and the value at the laboratory rate (star, extrapolated).",
                )
            )
    s.blocks.append(
        Table(
            "extrapolation",
            f"Values extrapolated to {lab_rate_k_ps:g} K/ps (all extrapolations)",
            table,
            display=_labelled(table),
            note="Slope: change per decade of quench rate. Intercept: the fitted value at "
            "1 K/ps. Extrapolated value with its 95 % interval at the laboratory rate.",
        )
    )
    return s


def dispersion_table(done: pd.DataFrame) -> pd.DataFrame:
    """The report's dispersion x quench rate table (every property of :data:`RATE_KEYS`)."""
    if done.empty:
        return pd.DataFrame()
    return ex.dispersion_rate_table(done, keys=[str(k) for k in RATE_KEYS])


def _dispersion_section(done: pd.DataFrame, colors: dict[str, str]) -> Section:
    s = Section("dispersion", "Dispersion x quench rate")
    table = dispersion_table(done)
    if table.empty:
        s.blocks.append(
            Text(
                "No MLIP has done runs both with and without D3 dispersion at two or more "
                "quench rates: nothing to show yet. A run's dispersion is its protocol's "
                "(glassbench protocol show), else the MLIP's registered one."
            )
        )
        return s
    s.blocks.append(
        Text(
            "Each property vs quench rate with and without the D3 dispersion correction, per "
            "MLIP and composition, for MLIPs that have both at two or more rates: the study's "
            "stated next question (does D3 change what the quench rate does?)."
        )
    )
    png = fig.dispersion_rate_figure(
        table, keys=[str(k) for k in DISPERSION_FIGURE_KEYS], colors=colors
    )
    if png is not None:
        s.blocks.append(Figure("dispersion_rate", "With and without D3 vs quench rate", png))
    s.blocks.append(
        Table(
            "dispersion_rate",
            "Seed mean, std and count per MLIP, x, property, quench rate and dispersion",
            table,
            display=_labelled(table),
        )
    )
    return s


def _trace_section(data: ReportData) -> Section:
    s = Section("quench-trace", "Speciation during the quench")
    # The table carries every per-frame quantity read; the figures draw TRACE_PANELS.
    traces = mx.trace_table(data.traces, keys=[*FRACTION_KEYS, *COORDINATION_KEYS])
    if traces.empty:
        s.blocks.append(
            Text(
                "No completed run has analysed frames with a known temperature yet (the "
                "frame's nominal temperature, or the thermo row of the same step)."
            )
        )
        return s
    chosen = ", ".join(str(int(r)) for r in dict.fromkeys(traces[Key.run_id].tolist()))
    s.blocks.append(
        Text(
            f"Traced runs: {chosen} (default: per MLIP the run with the most analysed frames; "
            "choose others with --trace-run RUN_ID, ids as in the run_detail view). "
            "Temperature: the frame's nominal temperature, else the instantaneous temperature "
            "of the thermo row of the same step. One figure per group: P units (disjoint, "
            "fractions of all P, with the edge-sharing and P-P chain flags dotted), anions "
            "(fractions of all S+O) and Na coordination (neighbours in all, by S and by O; "
            "the Na-S share of each frame, Na-S over all Na contacts, is in the table)."
        )
    )
    for title, panel in TRACE_PANELS.items():
        png = fig.trace_figure(
            traces,
            keys=[str(k) for k in panel],
            title=title,
            ylabel=_TRACE_YLABELS[title],
            dotted=[str(k) for k in TRACE_FLAGS],
        )
        if png is not None:
            s.blocks.append(Figure(_TRACE_FIGURES[title], f"{title} vs temperature", png))
    s.blocks.append(Table("traces", "Per-frame values of the traced runs", traces, collapsed=True))
    return s


def _crystal_section(data: ReportData, colors: dict[str, str]) -> Section:
    s = Section("crystals", "Crystal volumes")
    table = mx.crystal_table(data.crystals, data.crystal_experiment)
    if table.empty:
        s.blocks.append(Text("No relaxed crystal volumes recorded yet (glassbench run crystal)."))
        return s
    png = fig.crystal_figure(table, colors=colors)
    if png is not None:
        s.blocks.append(
            Figure(
                "crystal_volumes",
                "Crystal volume deviation",
                png,
                caption="One bar per MLIP and crystal: (relaxed - experiment) / experiment in %.",
            )
        )
    s.blocks.append(
        Table(
            "crystal_volumes",
            "Relaxed volume per formula unit vs experiment",
            table,
            note="Deviation = (relaxed - experiment) / experiment in %; missing where no "
            "experimental volume is known.",
        )
    )
    cmae = mx.mae_table(mx.crystal_points(data.crystals, data.crystal_experiment))
    if not cmae.empty:
        s.blocks.append(
            Table(
                "crystal_mae",
                "MAE of the crystal volume per MLIP (against the ingested references)",
                cmae,
                display=_labelled(cmae),
                note="A crystal relaxation has no quench rate or seed: one point per crystal.",
            )
        )
    return s


def _notes(lab_rate_k_ps: float) -> Section:
    return Section(
        "notes",
        "Definitions and missing data",
        [
            Text(
                "P units are fractions of all P atoms: P0-P4 by bridging anions, P1P (one P-P "
                "bond and three S/O neighbours in an isolated P2S6-type dimer), PPend (the end "
                "P of a longer P-P chain), P3: (three-coordinated P) and other P are disjoint "
                "and sum to one; P2ES and PPchain are flags. Anion classes are fractions of "
                "all S+O. Values are means over each run's averaging window (the final frame "
                "for runs without one, e.g. ingested runs; docs/protocol.md)."
            ),
            Text(
                "'P3:' is the study's name for three-coordinated P (stored as P3c). The "
                "project's P3 (a P with three bridging anions) is a different unit; the two "
                "never share a label or a legend entry."
            ),
            Text(
                "P1P is a unit that 31P NMR resolves, and its amount is compared with "
                "experiment directly. 'P1 (incl. P1P)' adds it to P1 as one figure of the "
                "study does; that is a convention of that comparison, and the stored counts "
                "stay disjoint."
            ),
            Text(
                "Errors are per protocol and quench rate, never pooled. The MAE interval is a "
                "seeded percentile bootstrap; z = (simulated - experiment) / sqrt(seed SD^2 + "
                "experimental uncertainty^2); two MLIPs are indistinguishable on a property "
                "when their 95 % intervals overlap. Values at the laboratory cooling rate "
                f"({lab_rate_k_ps:g} K/ps in this report) are extrapolations and flagged so."
            ),
            Text(
                "Missing data are shown as missing (—) and never imputed: a run without a value "
                "does not count as a seed, a point without experiment is left out of the MAE, "
                "and a single seed has no standard deviation."
            ),
        ],
    )


def build_document(
    data: ReportData,
    *,
    fingerprint_hex: str,
    database: str,
    lab_rate_k_ps: float | None = None,
) -> Document:
    """The report of ``data``; ``lab_rate_k_ps`` None: ``extrapolation.DEFAULT_LAB_RATE_K_PS``."""
    lab = ex.DEFAULT_LAB_RATE_K_PS if lab_rate_k_ps is None else float(lab_rate_k_ps)
    done = mx.completed(data.runs)
    colors = fig.mlip_colors([*data.mlips.get(Key.mlip, []), *data.runs.get(Key.mlip, [])])
    mae, _points, table = _mae_section(data, done, colors)
    sections = [
        _overview(data, done),
        mae,
        _trend_section(data, done, colors),
        _structure_section(data, done, colors),
        _edge_pp_section(data, done),
        _quench_section(done, table, colors),
        _extrapolation_section(done, colors, lab),
        _dispersion_section(done, colors),
        _trace_section(data),
        _crystal_section(data, colors),
        _notes(lab),
    ]
    meta = [
        ("Generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Database", database),
        ("Data fingerprint", fingerprint_hex),
        ("Laboratory cooling rate for extrapolations", f"{lab:g} K/ps"),
        ("glassbench", __version__),
    ]
    return Document("glassbench report: MLIPs on Na4P2S7-xOx glasses", meta, sections)


# --- writing and recording ---------------------------------------------------------------
