"""Stored frames back out of the database, in bounded batches.

A frame's arrays are compressed blobs (``schema/arrays.py``); reading a run's frames
``batch`` at a time keeps memory at a batch of frames however long the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray
from sqlalchemy.engine import Connection

from glassbench.schema.arrays import unpack_array

if TYPE_CHECKING:
    from ase import Atoms

FRAME_BATCH = 64


@dataclass(frozen=True)
class StoredFrame:
    """One stored frame: its row and its arrays (Å, eV, eV/Å)."""

    frame_id: int
    run_id: int
    step: int
    stage: str
    time_ps: float | None
    temperature_k: float | None
    numbers: NDArray[np.int64]
    positions: NDArray[np.float64]
    cell: NDArray[np.float64]
    pbc: tuple[bool, bool, bool]
    forces: NDArray[np.float64] | None
    energy_ev: float | None

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def atoms(self) -> Atoms:
        """The frame as ASE Atoms (no calculator; forces and energy stay here)."""
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)


_COLUMNS = (
    "id", "run_id", "step", "stage", "time_ps", "temperature_k", "cell_json", "pbc",
    "numbers", "positions", "forces", "energy_ev",
)  # fmt: skip


def _frame(row: Sequence[Any]) -> StoredFrame:
    fid, run_id, step, stage, time_ps, temp, cell_json, pbc, numbers, positions, forces, e = row
    return StoredFrame(
        frame_id=int(fid),
        run_id=int(run_id),
        step=int(step),
        stage=str(stage),
        time_ps=None if time_ps is None else float(time_ps),
        temperature_k=None if temp is None else float(temp),
        numbers=unpack_array(bytes(numbers)).astype(np.int64),
        positions=unpack_array(bytes(positions)).astype(np.float64),
        cell=np.asarray(json.loads(cell_json), dtype=np.float64).reshape(3, 3),
        pbc=tuple(ch == "T" for ch in str(pbc)),  # type: ignore[arg-type]
        forces=None if forces is None else unpack_array(bytes(forces)).astype(np.float64),
        energy_ev=None if e is None else float(e),
    )


def frame_index(
    conn: Connection,
    run_id: int,
    *,
    stages: Sequence[str] | None = None,
    step_from: int | None = None,
) -> list[tuple[int, int, str]]:
    """(frame id, step, stage) of a run's frames, in step order (no arrays read).

    ``stages`` keeps frames of those stages only; ``step_from`` frames from that step on.
    """
    query = "SELECT id, step, stage FROM frame WHERE run_id = :run"
    params: dict[str, Any] = {"run": run_id}
    if step_from is not None:
        query += " AND step >= :step_from"
        params["step_from"] = int(step_from)
    stmt = sa.text(query + " ORDER BY step")
    rows = [(int(i), int(s), str(g)) for i, s, g in conn.execute(stmt, params)]
    if stages is not None:
        wanted = set(stages)
        rows = [r for r in rows if r[2] in wanted]
    return rows


def read_frames(
    conn: Connection, frame_ids: Sequence[int], *, batch: int = FRAME_BATCH
) -> Iterator[StoredFrame]:
    """The frames ``frame_ids`` in that order, read ``batch`` at a time."""
    cols = ", ".join(_COLUMNS)
    stmt = sa.text(f"SELECT {cols} FROM frame WHERE id IN :ids").bindparams(
        sa.bindparam("ids", expanding=True)
    )
    for start in range(0, len(frame_ids), batch):
        chunk = [int(f) for f in frame_ids[start : start + batch]]
        by_id = {int(row[0]): row for row in conn.execute(stmt, {"ids": chunk})}
        for fid in chunk:
            row = by_id.get(fid)
            if row is not None:  # deleted meanwhile: nothing to yield
                yield _frame(row)


def final_frame_id(conn: Connection, run_id: int) -> int | None:
    """The frame that stands for the run's final structure (the ``run_final_frame`` view's
    rule: stage ``final`` if present, else the last non-strain frame)."""
    row = conn.execute(
        sa.text("SELECT frame_id FROM run_final_frame WHERE run_id = :run"), {"run": run_id}
    ).first()
    return None if row is None else int(row[0])
