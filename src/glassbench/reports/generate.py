"""Build the report document from the database and write it, once per distinct data.

``generate_report`` reads everything (:func:`load_report_data`), fingerprints it, and when the
``report`` table already records a report of that fingerprint in the same folder whose files
are still there, it returns ``unchanged`` without drawing or writing anything (unless
``force``). Otherwise it computes the tables, draws the figures, writes the requested formats
and records the report.

Output names inside the folder are constants of this module (``report.html``, ``report.md``,
``figures/<name>.png``, ``tables/<name>.csv``): nothing from the database or the command line
becomes a path component.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from glassbench import __version__
from glassbench.reports import figures as fig
from glassbench.reports import metrics as mx
from glassbench.reports.keys import ARTEFACTS, COMPARABLE, TRACE_UNITS, TREND_PANELS, Key, key_of
from glassbench.reports.queries import ReportData, fingerprint, load_report_data
from glassbench.reports.render import (
    Code,
    Document,
    Figure,
    Section,
    Table,
    Text,
    csv_text,
    to_html,
    to_markdown,
    write_atomic,
)

log = logging.getLogger(__name__)

FORMATS = ("html", "md", "csv")
KIND = "summary"
# Bump when the report's content changes for the same data, so old fingerprints stop matching.
LAYOUT_VERSION = 1
HTML_FILE = "report.html"
MD_FILE = "report.md"
FIGURE_DIR = "figures"
TABLE_DIR = "tables"
_SAFE_NAME = re.compile(r"^[a-z0-9_]+$")

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


@dataclass(frozen=True)
class ReportResult:
    status: str
    """``written`` or ``unchanged``."""
    out_dir: Path
    fingerprint: str
    formats: tuple[str, ...]
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    previous_at: datetime | None = None


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"html,md"`` -> ``("html", "md")`` in canonical order; ValueError names a bad one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted = {i.strip().lower() for i in items if i.strip()}
    bad = sorted(wanted - set(FORMATS))
    if bad:
        raise ValueError(f"unknown format(s) {', '.join(bad)} (known: {', '.join(FORMATS)})")
    if not wanted:
        raise ValueError(f"no format given (known: {', '.join(FORMATS)})")
    return tuple(f for f in FORMATS if f in wanted)


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
            f"{len(data.crystals)} relaxed crystal volume(s). Only runs with status 'done' enter "
            "the statistics below."
        )
    )
    cov = mx.coverage_table(data.mlips, data.runs)
    s.blocks.append(Table("coverage", "Runs per MLIP", cov))
    return s


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
        s.blocks.append(
            Table(
                "mae_matrix",
                "MAE per property (rows) and MLIP (columns)",
                matrix.reset_index(),
                display=_labelled(matrix.reset_index()),
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
            "chains as a fraction of all S. Final frame of each run, mean and std over seeds."
        )
    )
    table = mx.artefact_table(done)
    s.blocks.append(Table("artefacts", "Artefact fractions per MLIP and x", table))
    return s


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
                "does; stored counts stay disjoint. Values come from each run's final frame."
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


def write_document(doc: Document, out_dir: Path, formats: Sequence[str]) -> list[str]:
    """Write the requested formats; returns the files written (relative to ``out_dir``)."""
    items: list[Table | Figure] = [*doc.tables(), *doc.figures()]
    for item in items:
        # Names are constants of this module; the check keeps it that way.
        if not _SAFE_NAME.match(item.name):
            raise ValueError(f"unsafe output name {item.name!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in (TABLE_DIR, FIGURE_DIR):  # never write through a link out of the folder
        if (out_dir / sub).is_symlink():
            raise NotADirectoryError(f"{out_dir / sub} is a symbolic link, not a folder")
    written: list[str] = []
    if "csv" in formats:
        tdir = out_dir / TABLE_DIR
        tdir.mkdir(exist_ok=True)
        for t in doc.tables():
            write_atomic(tdir / f"{t.name}.csv", csv_text(t.data))
            written.append(f"{TABLE_DIR}/{t.name}.csv")
        _remove_stale(tdir, TABLE_NAMES, {t.name for t in doc.tables()}, ".csv")
    if "md" in formats:
        fdir = out_dir / FIGURE_DIR
        fdir.mkdir(exist_ok=True)
        for f in doc.figures():
            write_atomic(fdir / f"{f.name}.png", f.png)
            written.append(f"{FIGURE_DIR}/{f.name}.png")
        _remove_stale(fdir, FIGURE_NAMES, {f.name for f in doc.figures()}, ".png")
        write_atomic(out_dir / MD_FILE, to_markdown(doc, figure_dir=FIGURE_DIR))
        written.append(MD_FILE)
    if "html" in formats:
        write_atomic(out_dir / HTML_FILE, to_html(doc))
        written.append(HTML_FILE)
    return written


def _remove_stale(folder: Path, known: Sequence[str], current: set[str], suffix: str) -> None:
    # Only files this module names are ever removed: the folder may hold the user's own files.
    for name in known:
        if name not in current:
            (folder / f"{name}{suffix}").unlink(missing_ok=True)


def _previous(engine: Engine, fp: str, out: str) -> tuple[datetime | None, set[str], list[str]]:
    from glassbench.schema import Report

    tbl = Report.__table__  # type: ignore[attr-defined]
    with engine.connect() as c:
        row = c.execute(
            sa.select(tbl.c.created_at, tbl.c.formats, tbl.c.params_json).where(
                tbl.c.kind == KIND, tbl.c.fingerprint == fp, tbl.c.out_dir == out
            )
        ).first()
    if row is None:
        return None, set(), []
    params = json.loads(row.params_json or "{}")
    return row.created_at, set(row.formats.split(",")), list(params.get("files", []))


def _record(
    engine: Engine, *, fp: str, out: str, formats: Sequence[str], params: dict[str, object]
) -> None:
    from glassbench.schema import Report
    from glassbench.schema.models import utcnow
    from glassbench.service.db import unit_of_work
    from glassbench.service.repos import canonical_json, upsert

    with unit_of_work(engine) as session:
        upsert(
            session,
            Report,
            {
                "kind": KIND,
                "fingerprint": fp,
                "out_dir": out,
                "formats": ",".join(formats),
                "params_json": canonical_json(params),
                "created_at": utcnow(),
            },
            key=("kind", "fingerprint", "out_dir"),
            update=("formats", "params_json", "created_at"),
        )


def generate_report(
    engine: Engine,
    *,
    out_dir: Path,
    formats: Sequence[str] = FORMATS,
    force: bool = False,
    trace_runs: Sequence[int] | None = None,
) -> ReportResult:
    """Generate (or reuse) the report of the database's current data in ``out_dir``."""
    from glassbench.service.db import describe

    t0 = time.perf_counter()
    formats = parse_formats(formats)
    out = out_dir.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    data = load_report_data(engine, trace_runs=trace_runs)
    params: dict[str, object] = {
        "layout": LAYOUT_VERSION,
        "trace_runs": sorted(int(r) for r in trace_runs) if trace_runs is not None else None,
    }
    fp = fingerprint(data, params)
    prev_at, prev_formats, prev_files = _previous(engine, fp, str(out))
    if (
        not force
        and prev_at is not None
        and set(formats) <= prev_formats
        and prev_files
        and all((out / f).is_file() for f in _files_for(prev_files, formats))
    ):
        return ReportResult(
            "unchanged",
            out,
            fp,
            formats,
            _files_for(prev_files, formats),
            time.perf_counter() - t0,
            prev_at,
        )
    doc = build_document(data, fingerprint_hex=fp, database=describe(engine))
    files = write_document(doc, out, formats)
    # A reused record keeps the files of formats written earlier for the same data.
    kept = [f for f in prev_files if f not in files and (out / f).is_file()] if prev_at else []
    all_formats = tuple(f for f in FORMATS if f in set(formats) | (prev_formats if kept else set()))
    _record(
        engine, fp=fp, out=str(out), formats=all_formats, params={**params, "files": files + kept}
    )
    return ReportResult("written", out, fp, formats, files, time.perf_counter() - t0, prev_at)


def _files_for(files: Sequence[str], formats: Sequence[str]) -> list[str]:
    def fmt_of(f: str) -> str:
        if f == HTML_FILE:
            return "html"
        if f == MD_FILE or f.startswith(f"{FIGURE_DIR}/"):
            return "md"
        return "csv"

    return [f for f in files if fmt_of(f) in formats]
