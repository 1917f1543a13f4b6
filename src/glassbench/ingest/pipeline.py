"""Streaming results into the database: shared by the file ingests and the live runner.

Every function takes the caller's session and never commits, so a whole ingest (run row,
thermo, frames, analyses, properties) is one transaction: if a reader finds bad data half-way
through a 1 GB file, the rollback removes the run and everything stored under it.

Memory stays bounded: thermo rows are written in batches (binary COPY on PostgreSQL,
executemany on SQLite) and frames in small batches (a few executemany statements per batch),
so only a batch is ever held, never the file.

The live runner uses the same pieces: :func:`open_run`, :class:`ThermoWriter` (or
:func:`store_thermo`), :func:`store_frames` (or :func:`add_frames` per batch),
:func:`store_density` and :func:`finish_run`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from sqlmodel import Session, select

from glassbench.chemistry import ELEMENTS, check_counts, per_formula_unit
from glassbench.schema import Run, RunStatus, Thermo
from glassbench.schema.models import FRAME_STAGES
from glassbench.service import runs
from glassbench.service.repos import (
    THERMO_COLUMNS,
    BadRows,
    clear_run_data,
    composition_id,
    frame_row,
    get_mlip,
    insert_thermo,
    protocol_id,
    set_property,
)
from glassbench.service.repos import add_frames as write_frames

if TYPE_CHECKING:
    from glassbench.analysis import FrameAnalysis

SYMBOL_BY_Z = {11: "Na", 15: "P", 16: "S", 8: "O"}
THERMO_BATCH_ROWS = 20_000
DENSITY_TAIL_FRACTION = 0.2
DENSITY_BLOCKS = 5

ThermoRow = Mapping[str, float | int | None]


class InvalidData(ValueError):
    """Data that cannot be stored; ``where`` names the frame/line for the user's message."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where


@dataclass(frozen=True)
class RunKey:
    """The natural key of a run, by names and values as the user gives them."""

    mlip: str
    x: float
    quench_rate_k_ps: float
    seed: int
    protocol: Mapping[str, Any]
    protocol_kind: str = "external"

    def describe(self) -> str:
        return (
            f"mlip={self.mlip} x={self.x:g} quench_rate={self.quench_rate_k_ps:g} K/ps "
            f"seed={self.seed}"
        )


@dataclass(frozen=True)
class RunSlot:
    """Where an ingest writes: ``unchanged`` means the same content is already stored."""

    run_id: int
    action: Literal["new", "replace", "unchanged"]


class RunExists(Exception):
    """The key holds a run with other content and the caller did not ask to replace it."""

    def __init__(self, run_id: int, stored_hash: str | None, source: str | None) -> None:
        super().__init__(f"run {run_id} exists with other content")
        self.run_id = run_id
        self.stored_hash = stored_hash
        self.source = source


def open_run(
    session: Session,
    key: RunKey,
    *,
    source: str,
    content_hash: str,
    replace: bool = False,
) -> RunSlot:
    """Resolve ``key`` to a run id ready for writing, honouring idempotency.

    Same ``content_hash`` already stored: ``unchanged`` and nothing is written. Other content
    stored: :class:`RunExists` unless ``replace``, in which case the run's data are cleared
    (inside the caller's transaction, so a failed replacement restores the old data).
    Raises ``repos.NotFound`` for an unknown MLIP.
    """
    mlip_id = get_mlip(session, key.mlip).id
    assert mlip_id is not None
    existing = _find_run(session, key, mlip_id)
    if existing is not None and existing.content_hash == content_hash:
        assert existing.id is not None
        return RunSlot(existing.id, "unchanged")

    cid = composition_id(session, key.x)
    pid = protocol_id(session, dict(key.protocol), kind=key.protocol_kind)
    run_id = runs.ensure(
        session,
        mlip_id=mlip_id,
        composition_id=cid,
        quench_rate_k_ps=key.quench_rate_k_ps,
        seed=key.seed,
        protocol_id=pid,
        source=source,
    )
    # Re-read under a row lock: a concurrent ingest of the same key may have committed
    # between our look-up and the upsert, and its content decides what we may do.
    stmt = (
        select(Run)
        .where(Run.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    row = session.exec(stmt).one()
    if row.content_hash == content_hash:
        return RunSlot(run_id, "unchanged")
    has_data = row.content_hash is not None or row.status != RunStatus.PENDING
    if has_data and not replace:
        raise RunExists(run_id, row.content_hash, row.source)
    clear_run_data(session, run_id)
    return RunSlot(run_id, "replace" if has_data else "new")


def _find_run(session: Session, key: RunKey, mlip_id: int) -> Run | None:
    from glassbench.schema import Composition, Protocol
    from glassbench.service.repos import content_hash as params_hash

    stmt = (
        select(Run)
        .join(Composition, Composition.id == Run.composition_id)  # type: ignore[arg-type]
        .join(Protocol, Protocol.id == Run.protocol_id)  # type: ignore[arg-type]
        .where(
            Run.mlip_id == mlip_id,
            Composition.x == round(float(key.x), 6),
            Run.quench_rate_k_ps == float(key.quench_rate_k_ps),
            Run.seed == int(key.seed),
            Protocol.content_hash == params_hash({"kind": key.protocol_kind, **dict(key.protocol)}),
        )
    )
    return session.exec(stmt).first()


def finish_run(
    session: Session,
    run_id: int,
    *,
    source: str,
    content_hash: str | None,
    n_atoms: int | None,
    software: Mapping[str, Any] | None = None,
) -> None:
    """Mark the ingested run done with its provenance (the caller's commit makes it visible)."""
    runs.finish(
        session,
        run_id,
        source=source,
        content_hash=content_hash,
        n_atoms=n_atoms,
        software=software,
    )


# --- thermo -----------------------------------------------------------------------------


@dataclass
class ThermoWriter:
    """Buffers thermo rows and writes them in batches; ``close()`` flushes the rest.

    Rows are mappings with keys from ``repos.THERMO_COLUMNS`` (missing keys are NULL) and must
    arrive with strictly increasing ``step`` (PostgreSQL COPY does not skip duplicates).
    """

    session: Session
    run_id: int
    batch_rows: int = THERMO_BATCH_ROWS
    n_rows: int = 0
    first_step: int | None = None
    last_step: int | None = None
    _buffer: list[ThermoRow] = field(default_factory=list)
    _last_time: tuple[int, float] | None = None

    def add(self, row: ThermoRow) -> None:
        step = row["step"]
        assert step is not None
        step = int(step)
        if self.last_step is not None and step <= self.last_step:
            raise InvalidData(f"thermo step {step} does not follow step {self.last_step}")
        # `glassbench db check` requires time to grow with step; refuse what it would flag
        t = row.get("time_ps")
        if t is not None and math.isfinite(t):
            if self._last_time is not None and t < self._last_time[1]:
                raise InvalidData(
                    f"thermo time {t:g} ps at step {step} is before {self._last_time[1]:g} ps "
                    f"at step {self._last_time[0]}"
                )
            self._last_time = (step, float(t))
        if self.first_step is None:
            self.first_step = step
        self.last_step = step
        self._buffer.append(row)
        if len(self._buffer) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        try:
            # binary COPY on PostgreSQL (the steps are new: open_run cleared the run and
            # add() keeps them increasing), executemany on SQLite
            self.n_rows += insert_thermo(self.session, self.run_id, self._buffer, copy=True)
        except BadRows as exc:
            raise InvalidData(str(exc)) from None
        self._buffer = []

    def close(self) -> None:
        self.flush()


def store_thermo(
    session: Session,
    run_id: int,
    rows: Iterable[ThermoRow],
    *,
    batch_rows: int = THERMO_BATCH_ROWS,
) -> ThermoWriter:
    """Write a stream of thermo rows in bulk; returns the writer with its counts."""
    writer = ThermoWriter(session, run_id, batch_rows=batch_rows)
    for row in rows:
        writer.add(row)
    writer.close()
    return writer


# --- frames -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameData:
    """One structure on its way to the database (Å, ps, K; cell rows are the cell vectors)."""

    step: int
    numbers: NDArray[np.integer[Any]]
    positions: NDArray[np.floating[Any]]
    cell: NDArray[np.floating[Any]]
    pbc: tuple[bool, bool, bool] = (True, True, True)
    time_ps: float | None = None
    temperature_k: float | None = None
    stage: str | None = None
    where: str | None = None


@dataclass
class FrameSummary:
    n_frames: int = 0
    n_atoms: int | None = None
    counts: dict[str, int] | None = None
    formula_units: int | None = None
    first_step: int | None = None
    last_step: int | None = None


def element_counts(numbers: NDArray[np.integer[Any]]) -> dict[str, int]:
    """Atom counts by symbol; atoms other than Na/P/S/O are counted under their symbol."""
    from ase.data import chemical_symbols

    z, n = np.unique(np.asarray(numbers), return_counts=True)
    out = {el: 0 for el in ELEMENTS}
    for zi, ni in zip(z.tolist(), n.tolist(), strict=True):
        sym = SYMBOL_BY_Z.get(zi) or (
            chemical_symbols[zi] if 0 <= zi < len(chemical_symbols) else f"Z{zi}"
        )
        out[sym] = out.get(sym, 0) + int(ni)
    return out


def check_composition(numbers: NDArray[np.integer[Any]], x: float) -> int:
    """Formula units of ``numbers`` at composition ``x``; ValueError naming the mismatch."""
    per_formula_unit(x)
    return check_counts(element_counts(numbers), x)


def validate_frame(frame: FrameData, reference: FrameData | None) -> None:
    """Shape, finiteness and consistency with the first frame (same atoms, same order)."""
    n = len(frame.numbers)
    if n == 0:
        raise InvalidData("frame has no atoms", where=frame.where)
    if frame.positions.shape != (n, 3):
        raise InvalidData(
            f"positions have shape {frame.positions.shape}, expected ({n}, 3)", where=frame.where
        )
    if not np.isfinite(frame.positions).all():
        bad = int(np.flatnonzero(~np.isfinite(frame.positions).all(axis=1))[0])
        raise InvalidData(f"atom {bad + 1}: position is NaN or infinite", where=frame.where)
    if frame.cell.shape != (3, 3) or not np.isfinite(frame.cell).all():
        raise InvalidData("cell is missing, malformed, NaN or infinite", where=frame.where)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing cell fails analysis
        volume = abs(float(np.linalg.det(frame.cell)))
    if any(frame.pbc) and volume < 1e-9:
        raise InvalidData("periodic cell has zero volume", where=frame.where)
    for name, v in (("time", frame.time_ps), ("temperature", frame.temperature_k)):
        if v is not None and not math.isfinite(v):
            raise InvalidData(f"{name} is NaN or infinite", where=frame.where)
    if reference is not None:
        if n != len(reference.numbers):
            raise InvalidData(
                f"{n} atoms, but the first frame has {len(reference.numbers)}", where=frame.where
            )
        if not np.array_equal(frame.numbers, reference.numbers):
            i = int(np.flatnonzero(frame.numbers != reference.numbers)[0])
            raise InvalidData(
                f"atom {i + 1} is element {frame.numbers[i]}, "
                f"but {reference.numbers[i]} in the first frame",
                where=frame.where,
            )


FRAME_BATCH = 32


def add_frames(
    session: Session,
    run_id: int,
    items: Sequence[tuple[FrameData, str, FrameAnalysis | None]],
) -> list[int]:
    """Store a batch of (frame, stage, analysis) with ``repos.add_frames``; the frame ids.

    An existing step is replaced, with its analysis. Raises :class:`InvalidData` if two
    frames of the batch have the same step.
    """
    rows = [
        frame_row(
            run_id,
            stage=stage,
            step=f.step,
            numbers=f.numbers,
            positions=f.positions,
            cell=f.cell,
            pbc=f.pbc,
            time_ps=f.time_ps,
            temperature_k=f.temperature_k,
        )
        for f, stage, _ in items
    ]
    try:
        return write_frames(session, rows, [a for _, _, a in items])
    except BadRows as exc:
        raise InvalidData(str(exc)) from None


def store_frames(
    session: Session,
    run_id: int,
    frames: Iterable[FrameData],
    *,
    x: float | None = None,
    default_stage: str = "other",
    final_stage: str | None = "final",
    cutoffs: Mapping[str, float] | None = None,
    analyse: bool = True,
    batch_frames: int = FRAME_BATCH,
) -> FrameSummary:
    """Validate, analyse and store a stream of frames with strictly increasing steps.

    Each frame gets its own ``stage`` or ``default_stage``; the last one gets ``final_stage``
    (if not None), which is what ``run_final_frame`` prefers, so the view picks it even when
    steps are not comparable across stages. The composition is checked against ``x`` on the
    first frame; later frames must have the same atoms. Raises :class:`InvalidData`.

    Frames are written in batches of ``batch_frames`` (with :func:`add_frames`), so at most
    that many frames (and one more, held back until it is known whether it is the last) are
    in memory at any time.
    """
    from glassbench.analysis import analyze_frame

    for st in (default_stage, final_stage):
        if st is not None and st not in FRAME_STAGES:
            raise ValueError(f"unknown stage {st!r} (known: {', '.join(FRAME_STAGES)})")
    summary = FrameSummary()
    first: FrameData | None = None
    pending: FrameData | None = None
    batch: list[tuple[FrameData, str, FrameAnalysis | None]] = []

    def queue(frame: FrameData, stage: str) -> None:
        result = None
        if analyse:
            try:
                result = analyze_frame(
                    frame.numbers, frame.positions, frame.cell, frame.pbc, cutoffs
                )
            except ValueError as exc:
                raise InvalidData(f"cannot analyse frame: {exc}", where=frame.where) from None
        batch.append((frame, stage, result))
        if len(batch) >= batch_frames:
            add_frames(session, run_id, batch)
            batch.clear()

    for frame in frames:
        validate_frame(frame, first)
        if first is None:
            first = frame
            summary.n_atoms = len(frame.numbers)
            summary.counts = element_counts(frame.numbers)
            summary.first_step = frame.step
            if x is not None:
                try:
                    summary.formula_units = check_composition(frame.numbers, x)
                except ValueError as exc:
                    raise InvalidData(str(exc), where=frame.where) from None
        if frame.stage is not None and frame.stage not in FRAME_STAGES:
            raise InvalidData(f"unknown stage {frame.stage!r}", where=frame.where)
        if pending is not None:
            if frame.step <= pending.step:
                raise InvalidData(
                    f"step {frame.step} does not follow step {pending.step}", where=frame.where
                )
            queue(pending, pending.stage or default_stage)
        pending = frame
        summary.n_frames += 1
    if pending is not None:
        queue(pending, final_stage or pending.stage or default_stage)
        summary.last_step = pending.step
    add_frames(session, run_id, batch)
    return summary


# --- properties -------------------------------------------------------------------------


@dataclass(frozen=True)
class TailMean:
    value: float
    stderr: float | None
    n_rows: int
    n_blocks: int
    step_from: int
    step_to: int


def thermo_tail_mean(
    session: Session,
    run_id: int,
    column: str = "density_g_cm3",
    *,
    tail_fraction: float = DENSITY_TAIL_FRACTION,
    n_blocks: int = DENSITY_BLOCKS,
    step_from: int | None = None,
) -> TailMean | None:
    """Mean of a thermo column over a window at the end of its series.

    The window starts at ``step_from`` when given (the runner knows where its anneal starts),
    else it is the last ``tail_fraction`` of the step range (an ingested log's protocol is
    unknown). The stderr comes from the spread of ``n_blocks`` consecutive block means
    (consecutive MD samples are correlated, so the naive std/sqrt(n) would understate it).
    Aggregated in SQL: only ``n_blocks`` rows come back, however long the series.
    """
    if column not in THERMO_COLUMNS or column in ("step", "time_ps"):
        raise ValueError(f"not a thermo quantity: {column!r}")
    thermo: sa.Table = Thermo.__table__  # type: ignore[attr-defined]
    col = thermo.c[column]
    has = sa.and_(thermo.c.run_id == run_id, col.is_not(None))
    lo, hi = session.execute(
        sa.select(sa.func.min(thermo.c.step), sa.func.max(thermo.c.step)).where(has)
    ).one()
    if lo is None:
        return None
    lo, hi = int(lo), int(hi)
    if step_from is None:
        start = hi - math.floor((hi - lo) * tail_fraction)
    else:
        start = max(int(step_from), lo)
    if start > hi:
        return None
    span = hi - start + 1
    # Integer block index in [0, n_blocks): the same arithmetic on SQLite and PostgreSQL.
    # `//` renders integer floor division on both (`/` is true division in SQLAlchemy 2 and
    # PostgreSQL's CAST would then round where SQLite truncates).
    block = ((thermo.c.step - start) * n_blocks // span).label("b")
    rows = session.execute(
        sa.select(block, sa.func.avg(col), sa.func.count())
        .where(has, thermo.c.step >= start)
        .group_by(block)
        .order_by(block)
    ).all()
    means = np.array([float(r[1]) for r in rows])
    counts = np.array([int(r[2]) for r in rows])
    n = int(counts.sum())
    value = float((means * counts).sum() / n)
    stderr = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) >= 2 else None
    return TailMean(value, stderr, n, len(means), start, hi)


def store_density(
    session: Session,
    run_id: int,
    *,
    tail_fraction: float = DENSITY_TAIL_FRACTION,
    step_from: int | None = None,
    window: str | None = None,
) -> TailMean | None:
    """Set property ``density_g_cm3`` from the thermo series, if it has densities.

    The one density estimator of glassbench (runner and ingests alike): a block mean of the
    thermo density over a window at the end of the run (see :func:`thermo_tail_mean`); the
    window is written into the property's ``method`` and ``details``.
    """
    est = thermo_tail_mean(
        session, run_id, "density_g_cm3", tail_fraction=tail_fraction, step_from=step_from
    )
    if est is None:
        return None
    if window is None:
        window = f"the last {tail_fraction:.0%} of steps"
    set_property(
        session,
        run_id,
        "density_g_cm3",
        est.value,
        stderr=est.stderr,
        method=(
            f"mean of thermo density over {window} "
            f"({est.step_from}-{est.step_to}, {est.n_rows} rows); "
            f"stderr from {est.n_blocks} block means"
        ),
        details={
            "source": "thermo.density_g_cm3",
            "window": window,
            "tail_fraction": None if step_from is not None else tail_fraction,
            "step_from": est.step_from,
            "step_to": est.step_to,
            "n_rows": est.n_rows,
            "n_blocks": est.n_blocks,
        },
    )
    return est


# --- helpers for readers ----------------------------------------------------------------


def density_from(counts: Mapping[str, int] | None, volume_a3: float | None) -> float | None:
    from glassbench.chemistry import MASSES_AMU, density_g_cm3

    if counts is None or volume_a3 is None or volume_a3 <= 0:
        return None
    if any(c and el not in MASSES_AMU for el, c in counts.items()):
        return None
    return density_g_cm3({el: c for el, c in counts.items() if c}, volume_a3)


# --- a whole file ingest ----------------------------------------------------------------


@dataclass
class WriteSummary:
    """What an ingest body wrote (filled in by the body)."""

    n_thermo: int = 0
    n_frames: int = 0
    n_atoms: int | None = None
    software: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestResult:
    run_id: int
    action: Literal["new", "replace", "unchanged"]
    n_thermo: int = 0
    n_frames: int = 0
    n_atoms: int | None = None
    density: TailMean | None = None


def content_hash_of(paths: Sequence[Any], options: Mapping[str, Any]) -> str:
    """sha256 over the input files and the options that change how they are read."""
    import hashlib

    from glassbench.hashing import sha256_file
    from glassbench.service.repos import canonical_json

    h = hashlib.sha256()
    for p in paths:
        h.update(sha256_file(p).encode())
    h.update(canonical_json(options).encode())
    return h.hexdigest()


def ingest_run(
    engine: sa.engine.Engine,
    key: RunKey,
    *,
    source: str,
    content_hash: str,
    replace: bool,
    body: Callable[[Session, int], WriteSummary],
    data_source: str,
    software: Mapping[str, Any] | None = None,
) -> IngestResult:
    """One transaction: resolve the run, let ``body`` stream the data, add the density.

    ``body(session, run_id)`` writes thermo and frames; anything it raises rolls everything
    back, the run row included. :class:`InvalidData` and unknown MLIPs become ``BadInput``
    (``data_source`` names the file for data errors).
    """
    from glassbench.errors import BadInput
    from glassbench.service import unit_of_work
    from glassbench.service.repos import NotFound

    try:
        with unit_of_work(engine) as session:
            try:
                slot = open_run(
                    session, key, source=source, content_hash=content_hash, replace=replace
                )
            except NotFound as exc:
                raise BadInput(str(exc).strip("'\""), field="mlip") from None
            except RunExists as exc:
                raise BadInput(
                    f"run {exc.run_id} ({key.describe()}) already holds other data "
                    f"(source {exc.source}, content sha256 {str(exc.stored_hash)[:12]}); "
                    "use --replace to replace it",
                    source=data_source,
                ) from None
            if slot.action == "unchanged":
                return IngestResult(slot.run_id, "unchanged")
            written = body(session, slot.run_id)
            density = store_density(session, slot.run_id)
            finish_run(
                session,
                slot.run_id,
                source=source,
                content_hash=content_hash,
                n_atoms=written.n_atoms,
                software={**(software or {}), **written.software},
            )
    except InvalidData as exc:
        raise BadInput(exc.message, source=data_source, where=exc.where) from None
    return IngestResult(
        slot.run_id,
        slot.action,
        n_thermo=written.n_thermo,
        n_frames=written.n_frames,
        n_atoms=written.n_atoms,
        density=density,
    )


def validate_key(*, x: float, quench_rate_k_ps: float, seed: int) -> None:
    """Check the run key given on the command line before any file is read."""
    from glassbench.errors import BadInput

    if not math.isfinite(quench_rate_k_ps) or quench_rate_k_ps <= 0:
        raise BadInput(
            f"must be a positive number of K/ps, got {quench_rate_k_ps:g}", field="quench_rate_k_ps"
        )
    try:
        per_formula_unit(x)
    except ValueError as exc:
        raise BadInput(str(exc), field="x") from None
    if not -(2**63) <= seed < 2**63:
        raise BadInput("out of range", field="seed")


@contextlib.contextmanager
def progress_bar(
    total: int | None, *, unit: str, desc: str | None = None
) -> Iterator[Callable[[int], object]]:
    """A tqdm bar on stderr (quiet when stderr is not a terminal); yields its update()."""
    import sys

    from tqdm import tqdm

    bar = tqdm(
        total=total,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        desc=desc,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
    )
    try:
        yield bar.update
    finally:
        bar.close()


def describe_result(files: Sequence[Any], key: RunKey, result: IngestResult) -> str:
    """The one line an ingest command prints."""
    names = " + ".join(str(p) for p in files)
    if result.action == "unchanged":
        return (
            f"{names}: already ingested as run {result.run_id} ({key.describe()}), "
            "same content; nothing to do"
        )
    verb = "replaced" if result.action == "replace" else "ingested"
    density = ""
    if result.density is not None:
        d = result.density
        err = f" +- {d.stderr:.4f}" if d.stderr is not None else ""
        density = f", density {d.value:.4f}{err} g/cm3"
    return (
        f"{names}: run {result.run_id} {verb} ({key.describe()}): {result.n_thermo} thermo "
        f"rows, {result.n_frames} frames{density}"
    )
