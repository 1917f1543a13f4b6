"""Frames into the database: validated, analysed and written in small batches.

At most a batch of frames (and the one held back until it is known whether it is the last) is
in memory at any time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from sqlmodel import Session

from glassbench.analysis.limits import MAX_ATOMS, MAX_COORD_A, first_bad_coordinate
from glassbench.chemistry import ELEMENTS, check_counts, per_formula_unit
from glassbench.ingest.slots import InvalidData
from glassbench.schema.models import FRAME_STAGES
from glassbench.service.repos import BadRows, frame_row
from glassbench.service.repos import add_frames as write_frames

if TYPE_CHECKING:
    from glassbench.analysis import FrameAnalysis

SYMBOL_BY_Z = {11: "Na", 15: "P", 16: "S", 8: "O"}


@dataclass(frozen=True)
class FrameData:
    """One structure on its way to the database (Å, ps, K; cell rows are the cell vectors).

    ``forces`` (eV/Å) and ``energy_ev`` are those of the potential that made the structure,
    where the file has them: the reference of ``glassbench compute energy``.
    """

    step: int
    numbers: NDArray[np.integer[Any]]
    positions: NDArray[np.floating[Any]]
    cell: NDArray[np.floating[Any]]
    pbc: tuple[bool, bool, bool] = (True, True, True)
    time_ps: float | None = None
    temperature_k: float | None = None
    stage: str | None = None
    where: str | None = None
    forces: NDArray[np.floating[Any]] | None = None
    energy_ev: float | None = None


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
    """Shape, finiteness, bounds (analysis/limits.py) and consistency with the first frame
    (same atoms, same order)."""
    n = len(frame.numbers)
    if n == 0:
        raise InvalidData("frame has no atoms", where=frame.where)
    if n > MAX_ATOMS:
        raise InvalidData(
            f"{n} atoms, above the limit of {MAX_ATOMS:,} per frame", where=frame.where
        )
    if frame.positions.shape != (n, 3):
        raise InvalidData(
            f"positions have shape {frame.positions.shape}, expected ({n}, 3)", where=frame.where
        )
    if not np.isfinite(frame.positions).all():
        bad = int(np.flatnonzero(~np.isfinite(frame.positions).all(axis=1))[0])
        raise InvalidData(f"atom {bad + 1}: position is NaN or infinite", where=frame.where)
    if (far := first_bad_coordinate(frame.positions)) is not None:
        raise InvalidData(
            f"atom {far + 1}: position {' '.join(f'{v:g}' for v in frame.positions[far])} "
            f"beyond ±{MAX_COORD_A:g} Å",
            where=frame.where,
        )
    if frame.cell.shape != (3, 3) or not np.isfinite(frame.cell).all():
        raise InvalidData("cell is missing, malformed, NaN or infinite", where=frame.where)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing cell fails analysis
        volume = abs(float(np.linalg.det(frame.cell)))
    if any(frame.pbc) and volume < 1e-9:
        raise InvalidData("periodic cell has zero volume", where=frame.where)
    if frame.forces is not None:
        if frame.forces.shape != (n, 3):
            raise InvalidData(
                f"forces have shape {frame.forces.shape}, expected ({n}, 3)", where=frame.where
            )
        if not np.isfinite(frame.forces).all():
            bad = int(np.flatnonzero(~np.isfinite(frame.forces).all(axis=1))[0])
            raise InvalidData(f"atom {bad + 1}: force is NaN or infinite", where=frame.where)
    for name, v in (
        ("time", frame.time_ps),
        ("temperature", frame.temperature_k),
        ("energy", frame.energy_ev),
    ):
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
            forces=f.forces,
            energy_ev=f.energy_ev,
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
