"""Analysis versions: named cutoff sets, ``glassbench reanalyze`` and the comparison of analyses.

An analysis (table ``analysis``) is a named, complete table of bond cutoffs. ``default`` (id 1)
is the analysis each frame got when it was stored; :func:`add_analysis` names others and
:func:`reanalyze` computes them for stored frames, beside the default and never over it. Every
speciation and coordination row belongs to exactly one analysis, so results under a name stay
traceable to one cutoff set: a name, once registered, keeps its cutoffs.

:func:`compare_analyses` reads the ``run_summary_by_analysis`` view: one windowed quantity per
(MLIP, x, quench rate) and analysis, e.g. how Na coordination moves with the Na-S cutoff.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from glassbench.analysis.cutoffs import DEFAULT_CUTOFFS, cutoff_table
from glassbench.errors import BadInput
from glassbench.schema.models import (
    DEFAULT_ANALYSIS,
    DEFAULT_ANALYSIS_ID,
    WINDOW_QUANTITIES,
    Analysis,
    utcnow,
)
from glassbench.service.selection import RunSelector, SelectedRun, select_runs
from glassbench.stored.frames import FRAME_BATCH, frame_index, read_frames

# Typed in commands and in SQL (`WHERE analysis = 'na-s-4.2'`): nothing to quote or escape.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DESCRIPTION_LENGTH: int = Analysis.__table__.c.description.type.length  # type: ignore[attr-defined]

Cutoffs = Mapping[str, float] | Iterable[str] | None


@dataclass(frozen=True)
class AnalysisInfo:
    """A registered analysis: its full cutoff table (Å, in the order of ``DEFAULT_CUTOFFS``)
    and, from :func:`list_analyses`, how many frames and runs it covers."""

    id: int
    name: str
    cutoffs: dict[str, float]
    description: str | None = None
    n_frames: int = 0
    n_runs: int = 0

    def cutoff_text(self, pairs: Sequence[str] | None = None) -> str:
        """``P-S=2.6 Na-S=3.6 ...`` (only ``pairs`` when given)."""
        return " ".join(
            f"{p}={v:g}" for p, v in self.cutoffs.items() if pairs is None or p in pairs
        )


@dataclass(frozen=True)
class AnalysisRegistration:
    """What :func:`add_analysis` did: ``registered`` a new name, or found it ``unchanged``."""

    analysis: AnalysisInfo
    status: Literal["registered", "unchanged"]

    def describe(self) -> str:
        a = self.analysis
        what = "registered" if self.status == "registered" else "unchanged:"
        return f"{what} analysis {a.name!r} (id {a.id}): {a.cutoff_text()}"


def _ordered(cutoffs_json: str) -> dict[str, float]:
    stored = {str(k): float(v) for k, v in json.loads(cutoffs_json).items()}
    known = {p: stored.pop(p) for p in DEFAULT_CUTOFFS if p in stored}
    return {**known, **stored}


def _canonical(table: Mapping[str, float]) -> str:
    # the format of the default row (migration 0003) and of coordination.cutoffs_json
    return json.dumps(dict(table), sort_keys=True, separators=(",", ":"))


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadInput(
            f"bad analysis name {name!r}: 1-64 letters, digits, '.', '_' or '-'", field="name"
        )
    if name.lower() == DEFAULT_ANALYSIS:
        raise BadInput(
            f"{DEFAULT_ANALYSIS!r} is the analysis made when the frames were stored; "
            "name another set",
            field="name",
        )
    return name


def _row(conn: Connection, name: str) -> AnalysisInfo | None:
    row = conn.execute(
        sa.text("SELECT id, name, cutoffs_json, description FROM analysis WHERE name = :n"),
        {"n": name},
    ).first()
    if row is None:
        return None
    return AnalysisInfo(int(row[0]), str(row[1]), _ordered(str(row[2])), row[3])


def add_analysis(
    engine: Engine, name: str, cutoffs: Cutoffs, *, description: str | None = None
) -> AnalysisRegistration:
    """Register the analysis ``name`` with ``cutoffs`` (``{"Na-S": 3.4}`` or ``["Na-S=3.4"]``;
    the built-in cutoffs for the pairs not given).

    Re-adding a name with the same cutoffs changes nothing but a newly given description
    (``unchanged``); with other cutoffs it is refused (:class:`BadInput` on ``name``): the
    stored results of a name must stay those of one cutoff set, so register another name.
    Bad cutoffs are :class:`BadInput` on ``cutoffs``; ``default`` is reserved.
    """
    from glassbench.service.db import unit_of_work
    from glassbench.service.migrations import require_schema

    _check_name(name)
    table = cutoff_table(cutoffs)
    if description is not None and len(description) > _DESCRIPTION_LENGTH:
        raise BadInput(f"longer than {_DESCRIPTION_LENGTH} characters", field="description")
    require_schema(engine)
    from glassbench.service.repos import upsert

    with unit_of_work(engine) as s:
        before = _row(s.connection(), name)
        if before is None:
            # An upsert, not a plain insert: a concurrent `analysis add` of the same name
            # leaves its row alone (nothing to update) and is compared with below.
            upsert(
                s,
                Analysis,
                {
                    "name": name,
                    "cutoffs_json": _canonical(table),
                    "description": description,
                    "created_at": utcnow(),
                },
                key=("name",),
            )
        existing = _row(s.connection(), name)
        assert existing is not None
        if existing.cutoffs != table:
            changed = [
                f"{p} {existing.cutoffs.get(p, math.nan):g} -> {v:g}"
                for p, v in table.items()
                if existing.cutoffs.get(p) != v
            ]
            raise BadInput(
                f"analysis {name!r} is already registered with other cutoffs "
                f"({', '.join(changed)}); register the new set under another name",
                field="name",
            )
        if before is None:
            return AnalysisRegistration(existing, "registered")
        if description is not None and description != existing.description:
            s.execute(
                sa.text("UPDATE analysis SET description = :d WHERE id = :i"),
                {"d": description, "i": existing.id},
            )
            existing = AnalysisInfo(existing.id, name, existing.cutoffs, description)
    return AnalysisRegistration(existing, "unchanged")


def get_analysis(engine: Engine, name: str) -> AnalysisInfo:
    """The analysis ``name``; :class:`BadInput` on ``analysis`` if there is none."""
    with engine.connect() as conn:
        found = _row(conn, name)
    if found is None:
        raise BadInput(
            f"no analysis named {name!r} (see `glassbench analysis list`)", field="analysis"
        )
    return found


def list_analyses(engine: Engine) -> list[AnalysisInfo]:
    """Every analysis in id order, with the frames (and their runs) analysed under it."""
    from glassbench.service.migrations import require_schema

    require_schema(engine)
    query = sa.text(
        "SELECT a.id, a.name, a.cutoffs_json, a.description, "
        "  COUNT(co.frame_id), COUNT(DISTINCT f.run_id) "
        "FROM analysis a "
        "LEFT JOIN coordination co ON co.analysis_id = a.id "
        "LEFT JOIN frame f ON f.id = co.frame_id "
        "GROUP BY a.id, a.name, a.cutoffs_json, a.description ORDER BY a.id"
    )
    with engine.connect() as conn:
        return [
            AnalysisInfo(int(i), str(n), _ordered(str(c)), d, int(nf), int(nr))
            for i, n, c, d, nf, nr in conn.execute(query)
        ]


# --- reanalyze ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunReanalysis:
    """One selected run: ``reanalysed`` (``frames`` analysed, and the production window's
    statistics if the run has some under the default analysis) or ``skipped`` (every frame
    already had the analysis); with ``dry_run`` what would happen."""

    run: SelectedRun
    outcome: Literal["reanalysed", "skipped"]
    frames: int
    window: bool = False


@dataclass(frozen=True)
class ReanalysisReport:
    analysis: AnalysisInfo
    selector: RunSelector
    runs: tuple[RunReanalysis, ...]
    wall_s: float = 0.0
    dry_run: bool = False

    @property
    def frames(self) -> int:
        """Frames analysed (or, in a dry run, to analyse)."""
        return sum(r.frames for r in self.runs if r.outcome == "reanalysed")

    def describe(self) -> str:
        if not self.runs:
            return f"no runs match ({self.selector.describe()})"
        name = self.analysis.name
        lines = []
        for r in self.runs:
            if r.outcome == "skipped":
                lines.append(f"{r.run.label()}: already analysed under {name!r}, skipped")
            else:
                window = ", window statistics" if r.window else ""
                verb = "would reanalyse" if self.dry_run else "reanalysed"
                lines.append(f"{r.run.label()}: {verb} {r.frames} frames{window}")
        done = [r for r in self.runs if r.outcome == "reanalysed"]
        skipped = len(self.runs) - len(done)
        tail = f"; skipped {skipped} already analysed (--force redoes them)" if skipped else ""
        if not done and not self.dry_run:
            lines.append(f"nothing reanalysed under {name!r}{tail}")
            return "\n".join(lines)
        if self.dry_run:
            head = f"dry run: would reanalyse {len(done)} run(s), {self.frames} frames,"
        else:
            rate = f", {self.frames / self.wall_s:.1f} frames/s" if self.wall_s > 0 else ""
            head = (
                f"reanalysed {len(done)} run(s), {self.frames} frames in {self.wall_s:.1f} s{rate},"
            )
        lines.append(f"{head} under {name!r} ({self.analysis.cutoff_text()}){tail}")
        return "\n".join(lines)


def _analysed_frames(conn: Connection, run_id: int, analysis_id: int) -> int:
    return int(
        conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM coordination co JOIN frame f ON f.id = co.frame_id "
                "WHERE f.run_id = :run AND co.analysis_id = :a"
            ),
            {"run": run_id, "a": analysis_id},
        ).scalar_one()
    )


@dataclass(frozen=True)
class _Window:
    stages: tuple[str, ...]
    step_from: int
    block_frames: int


def _default_window(conn: Connection, run_id: int) -> _Window | None:
    """The production window of the run's default-analysis statistics, if it has some: from
    the first step averaged, the stages of the frames it averaged, its block length."""
    row = conn.execute(
        sa.text(
            "SELECT MIN(step_from), MAX(step_to), MAX(block_frames) FROM window_stat "
            "WHERE run_id = :run AND analysis_id = :a"
        ),
        {"run": run_id, "a": DEFAULT_ANALYSIS_ID},
    ).first()
    if row is None or row[0] is None:
        return None
    stages = conn.execute(
        sa.text(
            "SELECT DISTINCT f.stage FROM frame f JOIN coordination co ON co.frame_id = f.id "
            "WHERE f.run_id = :run AND co.analysis_id = :a AND f.step BETWEEN :lo AND :hi"
        ),
        {"run": run_id, "a": DEFAULT_ANALYSIS_ID, "lo": int(row[0]), "hi": int(row[1])},
    ).scalars()
    return _Window(tuple(sorted(str(s) for s in stages)), int(row[0]), int(row[2]))


def _reanalyse_run(
    session: Session,
    run: SelectedRun,
    analysis: AnalysisInfo,
    *,
    force: bool,
    batch: int,
    advance: Callable[[int], object],
) -> RunReanalysis:
    """Every frame of one run under ``analysis``, then its window: in the caller's transaction."""
    from glassbench.analysis import analyze_frame
    from glassbench.ingest.window import store_window_stats
    from glassbench.service.repos import add_analyses

    conn = session.connection()
    if conn.dialect.name == "postgresql":
        # Two reanalyses of one run take turns; the second then finds it done and skips.
        conn.execute(sa.text("SELECT id FROM run WHERE id = :run FOR UPDATE"), {"run": run.run_id})
    frames = [fid for fid, _, _ in frame_index(conn, run.run_id)]
    if not force and frames and _analysed_frames(conn, run.run_id, analysis.id) == len(frames):
        advance(len(frames))
        return RunReanalysis(run, "skipped", len(frames))
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        analysed = []
        for f in read_frames(conn, chunk, batch=batch):
            try:
                counts = analyze_frame(f.numbers, f.positions, f.cell, f.pbc, analysis.cutoffs)
            except ValueError as exc:  # a frame beyond analysis/limits.py (stored before them)
                raise BadInput(
                    f"cannot analyse: {exc}",
                    source=run.label(),
                    where=f"frame {f.frame_id} (step {f.step})",
                ) from None
            analysed.append((f.frame_id, counts))
        add_analyses(session, analysed, analysis_id=analysis.id)
        advance(len(chunk))
    window = _default_window(conn, run.run_id)
    if window is None:
        # no window under the default: none under this analysis either (a stale one goes)
        session.execute(
            sa.text("DELETE FROM window_stat WHERE run_id = :run AND analysis_id = :a"),
            {"run": run.run_id, "a": analysis.id},
        )
    else:
        store_window_stats(
            session,
            run.run_id,
            stages=window.stages,
            block_frames=window.block_frames,
            include_final=False,  # the final frame's stage is among the stages if averaged
            step_from=window.step_from,
            analysis_id=analysis.id,
        )
    return RunReanalysis(run, "reanalysed", len(frames), window is not None)


def reanalyze(
    engine: Engine,
    analysis: str,
    selector: RunSelector | None = None,
    *,
    force: bool = False,
    dry_run: bool = False,
    progress: bool | None = None,
    batch: int = FRAME_BATCH,
) -> ReanalysisReport:
    """Analyse every stored frame of the selected runs under the analysis named ``analysis``.

    Speciation and coordination of each frame are computed with the analysis's cutoffs
    (``analysis.analyze_frame``) and stored beside the default analysis; a run with window
    statistics under the default gets the same window (first step, stages, block length)
    under this one. One transaction per run: a run is reanalysed whole or not at all, so an
    interrupted call, run again, redoes only the runs it had not finished. A run whose every
    frame already has this analysis is skipped unless ``force``. ``dry_run`` reports what
    would be done and writes nothing.

    Bad input (nothing written): an unknown analysis or ``default`` (field ``analysis``), a
    selected run without stored frames. No runs matching is an empty report.
    """
    from glassbench.progress import make_bar
    from glassbench.service.db import unit_of_work
    from glassbench.service.migrations import require_schema

    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    require_schema(engine)
    if analysis == DEFAULT_ANALYSIS:
        raise BadInput(
            f"{DEFAULT_ANALYSIS!r} is what the frames were stored with; "
            "name another cutoff set (`glassbench analysis add`)",
            field="analysis",
        )
    info = get_analysis(engine, analysis)
    selector = selector or RunSelector()
    runs = select_runs(engine, selector)
    empty = [r for r in runs if r.n_frames == 0]
    if empty:
        raise BadInput(
            f"{empty[0].label()} has no stored frames: nothing to reanalyse "
            "(leave it out of the selection)"
        )
    if dry_run:
        with engine.connect() as conn:
            planned = []
            for r in runs:
                done = not force and _analysed_frames(conn, r.run_id, info.id) == r.n_frames
                planned.append(
                    RunReanalysis(
                        r,
                        "skipped" if done else "reanalysed",
                        r.n_frames,
                        _default_window(conn, r.run_id) is not None,
                    )
                )
        return ReanalysisReport(info, selector, tuple(planned), dry_run=True)
    t0 = time.perf_counter()
    out = []
    total = sum(r.n_frames for r in runs)
    with make_bar(total, unit="frame", desc="reanalyze", enabled=progress) as bar:
        for r in runs:
            with unit_of_work(engine) as session:
                out.append(
                    _reanalyse_run(session, r, info, force=force, batch=batch, advance=bar.update)
                )
    return ReanalysisReport(info, selector, tuple(out), time.perf_counter() - t0)


# --- compare --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComparisonRow:
    """One (MLIP, x, quench rate): per analysis the mean over runs and how many runs."""

    mlip: str
    x: float
    quench_rate_k_ps: float
    values: tuple[tuple[float | None, int], ...]


@dataclass(frozen=True)
class AnalysisComparison:
    """A windowed quantity per (MLIP, x, quench rate) and analysis (``run_summary_by_analysis``:
    the window mean where the run has one under that analysis, else the final frame's value)."""

    quantity: str
    analyses: tuple[AnalysisInfo, ...]
    differing: tuple[str, ...]
    rows: tuple[ComparisonRow, ...]

    def headers(self) -> list[str]:
        """A column name per analysis: its name and the cutoffs in which the analyses differ."""
        pairs = self.differing
        return [f"{a.name} [{a.cutoff_text(pairs)}]" if pairs else a.name for a in self.analyses]

    def columns(self) -> list[str]:
        return ["mlip", "x", "quench_rate_k_ps", *self.headers()]

    def table_rows(self, *, split_n: bool = False) -> list[list[object]]:
        """Rows of cells: ``mean (n=k)`` per analysis, or with ``split_n`` mean and n apart."""
        out: list[list[object]] = []
        for row in self.rows:
            cells: list[object] = [row.mlip, row.x, row.quench_rate_k_ps]
            for mean, n in row.values:
                if split_n:
                    cells += [mean, n]
                else:
                    cells.append("-" if mean is None else f"{mean:.4g} (n={n})")
            out.append(cells)
        return out

    def split_columns(self) -> list[str]:
        cols = ["mlip", "x", "quench_rate_k_ps"]
        for a in self.analyses:
            cols += [a.name, f"{a.name}_n"]
        return cols


def compare_analyses(
    engine: Engine, quantity: str = "na_cn", selector: RunSelector | None = None
) -> AnalysisComparison:
    """``quantity`` (a column of ``WINDOW_QUANTITIES``) of the selected runs under each
    analysis they have, averaged over the runs of each (MLIP, x, quench rate)."""
    from glassbench.service.migrations import require_schema

    if quantity not in WINDOW_QUANTITIES:
        raise BadInput(
            f"unknown quantity {quantity!r} (one of: {', '.join(WINDOW_QUANTITIES)})",
            field="quantity",
        )
    require_schema(engine)
    selector = selector or RunSelector()
    wanted = {r.run_id for r in select_runs(engine, selector)}
    # quantity is one of WINDOW_QUANTITIES (checked above): a column name, safe to interpolate
    query = sa.text(
        f"SELECT run_id, mlip, x, quench_rate_k_ps, analysis_id, {quantity} "
        "FROM run_summary_by_analysis"
    )
    groups: dict[tuple[str, float, float], dict[int, list[float]]] = {}
    seen: set[int] = set()
    with engine.connect() as conn:
        for run_id, mlip, x, rate, aid, value in conn.execute(query):
            if int(run_id) not in wanted:
                continue
            seen.add(int(aid))
            per = groups.setdefault((str(mlip), float(x), float(rate)), {})
            got = per.setdefault(int(aid), [])
            if value is not None and math.isfinite(float(value)):
                got.append(float(value))
    analyses = tuple(a for a in list_analyses(engine) if a.id in seen)
    pairs = tuple(p for p in DEFAULT_CUTOFFS if len({a.cutoffs.get(p) for a in analyses}) > 1)
    rows = []
    for (mlip, x, rate), per in sorted(groups.items()):
        cells: list[tuple[float | None, int]] = []
        for a in analyses:
            got = per.get(a.id, [])
            cells.append((math.fsum(got) / len(got) if got else None, len(got)))
        rows.append(ComparisonRow(mlip, x, rate, tuple(cells)))
    return AnalysisComparison(quantity, analyses, pairs, tuple(rows))
