"""The report's content: its sections (tables, figures, notes) built from the report data.

Pure with respect to the file system and the database: :func:`build_document` turns a
:class:`~glassbench.reports.queries.ReportData` into a
:class:`~glassbench.reports.render.Document`; :mod:`glassbench.reports.generate` writes it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from glassbench import __version__
from glassbench.reports import figures as fig
from glassbench.reports import metrics as mx
from glassbench.reports.keys import ARTEFACTS, COMPARABLE, TRACE_UNITS, TREND_PANELS, Key, key_of
from glassbench.reports.queries import ReportData
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

TABLE_NAMES = (
    "coverage", "mae_matrix", "mae", "mae_points", "experiment", "trends", "experiment_trends", "artefacts",
    "quench_mae", "quench_values", "traces", "crystal_volumes",
)  # fmt: skip
FIGURE_NAMES = (
    "trends_properties", "trends_speciation", "trends_anions", "trends_na_cn", "quench_mae",
    "quench_traces", "crystal_volumes",
)  # fmt: skip
_TREND_FIGURES = dict(zip(TREND_PANELS, FIGURE_NAMES[:4], strict=True))

CSV_FORMAT_HELP = """\
x,property,value,uncertainty,source
<x>,<property>,<value>,<uncertainty>,"<citation>"
...

x            composition of Na4P2S7-xOx (optional column `family`, default Na4P2S7-xOx)
property     one of: density_g_cm3, young_modulus_gpa, bulk_modulus_gpa, shear_modulus_gpa,
             poisson_ratio, p0, p1, p1_incl_p1p, p2, p1p, p3c, p2es, bs, nbs, bo, nbo, na_cn
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
    """A property x MLIP matrix as (CSV data, display table, display headers).

    MLIP names are user input: as column names they could collide with ``property`` or
    ``unit`` and would be humanised like column names, so the display table gets neutral
    column names and the names themselves, verbatim, as headers.
    """
    mlips = [str(m) for m in matrix.columns]
    values = matrix.to_numpy(dtype=float)
    data = pd.DataFrame(values, columns=pd.Index(mlips, dtype=object))
    data.insert(0, str(Key.prop), list(matrix.index), allow_duplicates=True)
    display = _labelled(pd.DataFrame({str(Key.prop): list(matrix.index)}))
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


def _mae_section(data: ReportData, done: pd.DataFrame) -> tuple[Section, pd.DataFrame]:
    s = Section("mae", "Accuracy against experiment (MAE)")
    points = mx.mae_points(done, data.experiment)
    cpoints = mx.crystal_points(data.crystals, data.crystal_experiment)
    table = mx.mae_table(
        pd.concat([points, cpoints], ignore_index=True) if len(cpoints) else points
    )
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
        matrix = table.pivot_table(
            index=Key.prop, columns=Key.mlip, values=Key.mae, aggfunc="first", sort=False
        )
        matrix_csv, matrix_display, headers = _mlip_columns(matrix)
        s.blocks.append(
            Table(
                "mae_matrix",
                "MAE per property (rows) and MLIP (columns)",
                matrix_csv,
                display=matrix_display,
                headers=headers,
                note="Lower is better; missing where an MLIP has no point with experiment. "
                "Signed errors, point counts and seed scatter are in the next table.",
            )
        )
        s.blocks.append(
            Table(
                "mae",
                "MAE and mean signed error per MLIP and property",
                table,
                display=_labelled(table),
                note=(
                    "Over the points (composition, quench rate, protocol) where both a simulated "
                    "value (mean over seeds) and an experimental value (mean over sources) exist. "
                    "Mean signed error = simulated - experiment: positive means the MLIP "
                    "overestimates. Mean seed std: the typical seed-to-seed scatter of a point."
                ),
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
    return s, points


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


def _artefact_section(done: pd.DataFrame) -> Section:
    s = Section("artefacts", "Edge-sharing, P-P chain and S-S chain artefacts")
    s.blocks.append(
        Text(
            "Units tracked as possible MLIP artefacts (the edge-sharing and P-P chain "
            "findings): three-coordinated P (P3c), P in edge-sharing pairs (P2ES), P in P-P "
            "bonded clusters of three or more P (PPchain) as fractions of all P, and S in S-S "
            "chains as a fraction of all S. Each run's window mean (its final frame when it has no "
            "averaging window; docs/protocol.md), then mean and std over seeds."
        )
    )
    table = mx.artefact_table(done)
    s.blocks.append(Table("artefacts", "Artefact fractions per MLIP and x", table))
    findings = _p3c_findings(done)
    if findings:
        s.blocks.append(Text(findings))
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
        "Three-coordinated P (P3c): "
        + "; ".join(parts)
        + ". If it persists in slower quenches and longer melts it is the model's behaviour, "
        "not the protocol's: compare the quench-rate section before reading it either way."
    )


def _quench_section(done: pd.DataFrame, points: pd.DataFrame, colors: dict[str, str]) -> Section:
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
    by_rate = mx.mae_table(points, by=(Key.mlip, Key.prop, Key.quench_rate))
    if not by_rate.empty:
        wide = by_rate.pivot_table(
            index=[Key.mlip, Key.prop],
            columns=Key.quench_rate,
            values=Key.mae,
            aggfunc="first",
            sort=False,
        )
        wide.columns = [f"MAE @ {q:g} K/ps" for q in wide.columns]
        s.blocks.append(
            Table(
                "quench_mae", "MAE per quench rate", by_rate, display=_labelled(wide.reset_index())
            )
        )
        png = fig.mae_by_rate_figure(
            by_rate, properties=[str(k) for k in COMPARABLE], colors=colors
        )
        if png is not None:
            s.blocks.append(Figure("quench_mae", "MAE vs quench rate", png))
    keys = [
        str(k)
        for k in (
            *TREND_PANELS["Density and elastic moduli"],
            *TREND_PANELS["P speciation (31P NMR units)"],
            *TREND_PANELS["Bridging and non-bridging anions"],
            Key.na_cn,
            *ARTEFACTS,
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


def _trace_section(data: ReportData) -> Section:
    s = Section("quench-trace", "Speciation during the quench")
    traces = mx.trace_table(data.traces, keys=[str(k) for k in TRACE_UNITS])
    if traces.empty:
        s.blocks.append(
            Text(
                "No completed run has analysed frames with a known temperature yet (the "
                "frame's nominal temperature, or the thermo row of the same step)."
            )
        )
        return s
    png = fig.trace_figure(traces, keys=[str(k) for k in TRACE_UNITS])
    chosen = ", ".join(str(int(r)) for r in dict.fromkeys(traces[Key.run_id].tolist()))
    s.blocks.append(
        Text(
            f"Traced runs: {chosen} (default: per MLIP the run with the most analysed frames; "
            "choose others with --trace-run RUN_ID, ids as in the run_detail view). "
            "Temperature: the frame's nominal temperature, else the instantaneous temperature "
            "of the thermo row of the same step."
        )
    )
    if png is not None:
        s.blocks.append(Figure("quench_traces", "P speciation vs temperature", png))
    s.blocks.append(
        Table("traces", "Per-frame fractions of the traced runs", traces, collapsed=True)
    )
    return s


def _crystal_section(data: ReportData, colors: dict[str, str]) -> Section:
    s = Section("crystals", "Crystal volumes")
    table = mx.crystal_table(data.crystals, data.crystal_experiment)
    if table.empty:
        s.blocks.append(Text("No relaxed crystal volumes recorded yet (glassbench run crystal)."))
        return s
    png = fig.crystal_figure(table, colors=colors)
    if png is not None:
        s.blocks.append(Figure("crystal_volumes", "Crystal volume deviation", png))
    s.blocks.append(
        Table(
            "crystal_volumes",
            "Relaxed volume per formula unit vs experiment",
            table,
            note="Deviation = (relaxed - experiment) / experiment in %; missing where no "
            "experimental volume is known.",
        )
    )
    return s


def _notes() -> Section:
    return Section(
        "notes",
        "Definitions and missing data",
        [
            Text(
                "P units are fractions of all P atoms (P0-P4 by bridging anions, P1P with one "
                "P-P bond, P3c three-coordinated, P2ES and PPchain as flags); anion classes are "
                "fractions of all S+O. 'P1 (incl. P1P)' adds P1P to P1 as the NMR comparison "
                "does; stored counts stay disjoint. Values are means over each run's averaging window "
                "(the final frame for runs without one, e.g. ingested runs; docs/protocol.md)."
            ),
            Text(
                "Missing data are shown as missing (—) and never imputed: a run without a value "
                "does not count as a seed, a point without experiment is left out of the MAE, "
                "and a single seed has no standard deviation."
            ),
        ],
    )


def build_document(data: ReportData, *, fingerprint_hex: str, database: str) -> Document:
    done = mx.completed(data.runs)
    colors = fig.mlip_colors([*data.mlips.get(Key.mlip, []), *data.runs.get(Key.mlip, [])])
    mae, points = _mae_section(data, done)
    sections = [
        _overview(data, done),
        mae,
        _trend_section(data, done, colors),
        _artefact_section(done),
        _quench_section(done, points, colors),
        _trace_section(data),
        _crystal_section(data, colors),
        _notes(),
    ]
    meta = [
        ("Generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Database", database),
        ("Data fingerprint", fingerprint_hex),
        ("glassbench", __version__),
    ]
    return Document("glassbench report: MLIPs on Na4P2S7-xOx glasses", meta, sections)


# --- writing and recording ---------------------------------------------------------------
