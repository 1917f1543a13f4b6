"""Window averages of per-frame structure: the production-window estimator of glassbench.

At the end of a run the runner calls :func:`store_window_stats` with the stages of its
production window. Every quantity that ``run_detail`` shows per frame (each unit fraction of
``SPECIATION_FRACTIONS``, the Na coordination and S-S chain statistics of
``COORDINATION_COLUMNS``) is averaged over the window's stored frames, with a standard error
from block averaging, into ``window_stat``; ``run_detail`` then shows those means (the
final-frame values stay there as ``<q>_final``). Density is not here: it is a thermo
quantity, averaged by :func:`glassbench.ingest.properties.store_density`.

Definitions:

- a frame's fraction is that of the views: the numerator units' count over the sum of the
  denominator classes (``P_CLASSES`` or ``ANION_CLASSES``), undefined when that sum is 0, and
  undefined for a fraction over units of ``LATER_UNITS`` when the frame has no row of them
  (analysed before they existed: ``ppend`` of a frame stored before revision 0004);
  a coordination quantity is the frame's ``coordination`` column, undefined when NULL;
- the window is the run's frames whose stage is one of ``stages`` (plus the ``final`` frame
  with ``include_final``), optionally from a step on, in step order; each quantity uses the
  window frames where it is defined (frames without an analysis count for nothing);
- ``mean``: over all those frames;
- ``stderr``: consecutive blocks of ``block_frames`` frames from the start of the window,
  ``std(block means, ddof=1) / sqrt(n_blocks)``; a trailing partial block is left out of the
  error (merging it would give blocks of unequal weight) but not out of the mean; None with
  fewer than two full blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa
from sqlmodel import Session

from glassbench.schema import FRAME_STAGES, Coordination, Frame, Speciation
from glassbench.schema.models import (
    ANION_CLASSES,
    COORDINATION_COLUMNS,
    DEFAULT_ANALYSIS_ID,
    LATER_UNITS,
    P_CLASSES,
    SPECIATION_FRACTIONS,
    WINDOW_QUANTITIES,
    WindowStat,
)
from glassbench.service.repos import upsert

_DENOMINATORS = {"n_p": P_CLASSES, "n_anion": ANION_CLASSES}


def block_stderr(values: Sequence[float], block_frames: int) -> tuple[float | None, int]:
    """(standard error, number of full blocks) of the mean of a correlated series.

    Blocks of ``block_frames`` consecutive values from the start; a trailing partial block
    is ignored; the error is None with fewer than two blocks.
    """
    if block_frames < 1:
        raise ValueError(f"block_frames must be at least 1, got {block_frames}")
    n_blocks = len(values) // block_frames
    if n_blocks < 2:
        return None, n_blocks
    blocks = np.asarray(values[: n_blocks * block_frames], dtype=np.float64)
    means = blocks.reshape(n_blocks, block_frames).mean(axis=1)
    return float(means.std(ddof=1) / math.sqrt(n_blocks)), n_blocks


def _fractions(counts: dict[str, int]) -> dict[str, float | None]:
    totals = {d: sum(counts.get(u, 0) for u in units) for d, units in _DENOMINATORS.items()}
    out: dict[str, float | None] = {}
    for name, (units, denom) in SPECIATION_FRACTIONS.items():
        total = totals[denom]
        unknown = all(u in LATER_UNITS for u in units) and not any(u in counts for u in units)
        out[name] = sum(counts.get(u, 0) for u in units) / total if total and not unknown else None
    return out


def _window(
    run_id: int, stages: Sequence[str], include_final: bool, step_from: int | None
) -> sa.ColumnElement[bool]:
    wanted = set(stages) | ({"final"} if include_final else set())
    unknown = wanted - set(FRAME_STAGES)
    if unknown:
        raise ValueError(
            f"unknown stage(s) {', '.join(sorted(unknown))} (known: {', '.join(FRAME_STAGES)})"
        )
    frame: sa.Table = Frame.__table__  # type: ignore[attr-defined]
    cond = sa.and_(frame.c.run_id == run_id, frame.c.stage.in_(sorted(wanted)))
    return cond if step_from is None else sa.and_(cond, frame.c.step >= int(step_from))


def _window_values(
    session: Session, in_window: sa.ColumnElement[bool], analysis_id: int
) -> list[tuple[int, dict[str, float | None]]]:
    """(step, quantities) of each window frame analysed under ``analysis_id``, in step order.

    Three statements however long the window: the window is a join condition, not a list
    of frame ids bound as parameters.
    """
    frame: sa.Table = Frame.__table__  # type: ignore[attr-defined]
    spec: sa.Table = Speciation.__table__  # type: ignore[attr-defined]
    coord: sa.Table = Coordination.__table__  # type: ignore[attr-defined]
    steps = {
        int(fid): int(step)
        for fid, step in session.execute(sa.select(frame.c.id, frame.c.step).where(in_window))
    }
    counts: dict[int, dict[str, int]] = {}
    for fid, unit, count in session.execute(
        sa.select(spec.c.frame_id, spec.c.unit, spec.c.count)
        .join(frame, frame.c.id == spec.c.frame_id)
        .where(in_window, spec.c.analysis_id == analysis_id)
    ):
        counts.setdefault(int(fid), {})[str(unit)] = int(count)
    values: dict[int, dict[str, float | None]] = {f: _fractions(c) for f, c in counts.items()}
    columns = [coord.c[col] for col in COORDINATION_COLUMNS.values()]
    for fid, *row in session.execute(
        sa.select(coord.c.frame_id, *columns)
        .join(frame, frame.c.id == coord.c.frame_id)
        .where(in_window, coord.c.analysis_id == analysis_id)
    ):
        got = values.setdefault(int(fid), {})
        for q, v in zip(COORDINATION_COLUMNS, row, strict=True):
            got[q] = None if v is None else float(v)
    return sorted(((steps[f], v) for f, v in values.items()), key=lambda sv: sv[0])


def store_window_stats(
    session: Session,
    run_id: int,
    *,
    stages: Sequence[str],
    block_frames: int,
    include_final: bool = True,
    step_from: int | None = None,
    analysis_id: int = DEFAULT_ANALYSIS_ID,
) -> dict[str, tuple[float, float | None]]:
    """Average each per-frame quantity of a run over its window into ``window_stat``.

    The window is the run's frames of ``stages`` (plus its ``final`` frame with
    ``include_final``), from step ``step_from`` on when given (a protocol may repeat a stage
    name; the step tells its last stage from an earlier one of the same name); see the
    module's docstring for the estimator; the per-frame values are those of the analysis
    ``analysis_id`` (default: the one made when the frames were stored). Returns ``{quantity: (mean, stderr)}`` for the
    quantities defined in at least one window frame. Idempotent:
    the run's rows are replaced, and a quantity no longer defined loses its row. Writes in
    the caller's transaction (no commit). Raises ValueError for an unknown stage or a
    ``block_frames`` below 1.
    """
    if block_frames < 1:
        raise ValueError(f"block_frames must be at least 1, got {block_frames}")
    frames = _window_values(session, _window(run_id, stages, include_final, step_from), analysis_id)
    out: dict[str, tuple[float, float | None]] = {}
    for q in WINDOW_QUANTITIES:
        series = [(step, v) for step, got in frames if (v := got.get(q)) is not None]
        if not series:
            continue
        values = [v for _, v in series]
        mean = math.fsum(values) / len(values)
        stderr, n_blocks = block_stderr(values, block_frames)
        upsert(
            session,
            WindowStat,
            {
                "run_id": run_id,
                "analysis_id": analysis_id,
                "quantity": q,
                "mean": mean,
                "stderr": stderr,
                "n_frames": len(values),
                "n_blocks": n_blocks,
                "block_frames": block_frames,
                "step_from": series[0][0],
                "step_to": series[-1][0],
            },
            key=("run_id", "analysis_id", "quantity"),
            update=(
                "mean",
                "stderr",
                "n_frames",
                "n_blocks",
                "block_frames",
                "step_from",
                "step_to",
            ),
        )
        out[q] = (mean, stderr)
    stale = sa.delete(WindowStat).where(
        WindowStat.run_id == run_id,  # type: ignore[arg-type]
        WindowStat.analysis_id == analysis_id,  # type: ignore[arg-type]
    )
    if out:
        stale = stale.where(WindowStat.quantity.not_in(list(out)))  # type: ignore[attr-defined]
    session.execute(stale)
    return out
