"""The files ``glassbench export`` writes, and how it writes them without half-writing one.

Every output is built under a hidden temporary name beside its final path and renamed into
place at the end (:func:`atomic_output`); the path is checked before any frame is read
(:func:`check_output`). Each frame carries its run key and provenance (``FRAME_INFO_KEYS``) in
its extxyz ``info`` or in the ``index.csv`` beside LAMMPS data files. The use cases are in
:mod:`glassbench.stored.export`.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from glassbench import __version__
from glassbench.csvsafe import csv_cell
from glassbench.errors import BadInput
from glassbench.inputs import probe_writable
from glassbench.stored.frames import StoredFrame, read_frames

if TYPE_CHECKING:
    from ase import Atoms

# LAMMPS atom types 1..4, the order the study's LAMMPS inputs use.
LAMMPS_SPECORDER = ("Na", "P", "S", "O")
# The making MLIP's results go under names that say whose they are: plain ``energy`` and
# ``forces`` would be read back by ASE as a calculator's, and by fine-tuning tools as labels.
MLIP_ENERGY_KEY = "mlip_energy"
MLIP_FORCES_KEY = "mlip_forces"
FRAME_INFO_KEYS = (
    "run_id", "mlip", "mlip_arch", "mlip_model_sha256", "x", "formula", "quench_rate_k_ps",
    "seed", "protocol", "protocol_hash", "source", "frame_id", "step", "stage", "time_ps",
    "temperature_k", "glassbench_version",
)  # fmt: skip

# ---------------------------------------------------------------- output paths


def check_output(out: Path, *, directory: bool, overwrite: bool) -> None:
    """Refuse an output that cannot be written, before any frame is read.

    ``out``'s folder must exist and be writable; an existing ``out`` is refused unless
    ``overwrite`` (a directory output may exist empty).
    """
    parent = out.absolute().parent
    if not parent.is_dir():
        raise BadInput(f"folder {parent} does not exist", source=str(out))
    # Try it (glassbench.inputs.probe_writable): permission bits say nothing as root.
    try:
        probe_writable(parent)
    except OSError as exc:
        raise BadInput(
            f"folder {parent} is not writable ({exc.strerror or exc})", source=str(out)
        ) from None
    if not out.exists() and not out.is_symlink():
        return
    if directory and not out.is_dir():
        raise BadInput("exists and is not a directory", source=str(out))
    if not directory and out.is_dir():
        raise BadInput("is a directory (extxyz writes one file)", source=str(out))
    if overwrite or (directory and not any(out.iterdir())):
        return
    raise BadInput("already exists (use --overwrite to replace it)", source=str(out))


def _hidden_sibling(out: Path, tag: str) -> Path:
    return out.absolute().parent / f".{out.name}.{uuid.uuid4().hex[:8]}.{tag}"


@contextlib.contextmanager
def atomic_output(out: Path, *, directory: bool) -> Iterator[Path]:
    """A temporary path beside ``out`` (a new empty folder with ``directory``); on success it
    replaces ``out``, on any error it is removed and ``out`` is left as it was."""
    tmp = _hidden_sibling(out, "part")
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        old = None
        if out.exists() or out.is_symlink():
            old = _hidden_sibling(out, "old")
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:
                os.replace(old, out)
            raise
        if old is not None:
            _remove(old)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- provenance


_PROVENANCE_SQL = """
SELECT r.id, m.name, m.arch, m.model_sha256, c.x, c.formula, r.quench_rate_k_ps, r.seed,
  COALESCE(pt.name, pt.kind || ' ' || SUBSTR(pt.content_hash, 1, 8)), pt.content_hash, r.source
FROM run r
JOIN mlip m ON m.id = r.mlip_id
JOIN composition c ON c.id = r.composition_id
JOIN protocol pt ON pt.id = r.protocol_id
WHERE r.id IN :ids
"""


def run_provenance(conn: Connection, run_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Run id -> the run-level part of ``FRAME_INFO_KEYS`` (the protocol named as in the views)."""
    stmt = sa.text(_PROVENANCE_SQL).bindparams(sa.bindparam("ids", expanding=True))
    keys = FRAME_INFO_KEYS[:11]
    out: dict[int, dict[str, Any]] = {}
    for row in conn.execute(stmt, {"ids": [int(i) for i in run_ids]}):
        values = dict(zip(keys, row, strict=True))
        values.update(run_id=int(row[0]), x=float(row[4]), quench_rate_k_ps=float(row[6]))
        values["seed"] = int(row[7])
        out[int(row[0])] = values
    return out


def frame_info(provenance: dict[str, Any], frame: StoredFrame) -> dict[str, Any]:
    """The provenance of one frame, ``FRAME_INFO_KEYS`` in order; None where unknown."""
    return {
        **provenance,
        "frame_id": frame.frame_id,
        "step": frame.step,
        "stage": frame.stage,
        "time_ps": frame.time_ps,
        "temperature_k": frame.temperature_k,
        "glassbench_version": __version__,
    }


def export_atoms(provenance: dict[str, Any], frame: StoredFrame) -> Atoms:
    """The frame as ASE Atoms with its provenance in ``info`` (unknown values left out: extxyz
    has no null) and the making MLIP's energy/forces, where stored, under MLIP_*_KEY."""
    atoms = frame.atoms()
    atoms.info.update({k: v for k, v in frame_info(provenance, frame).items() if v is not None})
    if frame.energy_ev is not None:
        atoms.info[MLIP_ENERGY_KEY] = frame.energy_ev
    if frame.forces is not None and frame.forces.shape == (frame.n_atoms, 3):
        atoms.arrays[MLIP_FORCES_KEY] = frame.forces
    return atoms


def stream_frames(
    conn: Connection,
    plan: Sequence[tuple[int, Sequence[int]]],
    provenance: dict[int, dict[str, Any]],
    step: Callable[[int], object],
) -> Iterator[tuple[dict[str, Any], StoredFrame]]:
    for run_id, fids in plan:
        for frame in read_frames(conn, fids):
            yield provenance[run_id], frame
            step(1)


def write_extxyz(path: Path, frames: Iterator[tuple[dict[str, Any], StoredFrame]]) -> int:
    """Append ``frames`` to one extxyz file; how many were written."""
    import ase.io

    n = 0
    with open(path, "x", encoding="utf-8") as fh:
        for provenance, frame in frames:
            ase.io.write(fh, export_atoms(provenance, frame), format="extxyz")
            n += 1
    return n


def write_lammps_data(
    folder: Path, frames: Iterator[tuple[dict[str, Any], StoredFrame]]
) -> tuple[int, list[str]]:
    """One LAMMPS data file per frame in ``folder``, and ``index.csv``; (frames, file names)."""
    import ase.io

    names: list[str] = []
    columns = ["file", *FRAME_INFO_KEYS, MLIP_ENERGY_KEY + "_ev"]
    with open(folder / "index.csv", "x", encoding="utf-8", newline="") as fh:
        index = csv.writer(fh, lineterminator="\n")
        index.writerow(columns)
        for provenance, frame in frames:
            atoms = frame.atoms()
            other = sorted(set(atoms.get_chemical_symbols()) - set(LAMMPS_SPECORDER))
            if other:
                raise BadInput(
                    f"run {frame.run_id} step {frame.step} holds {', '.join(other)}: lammps-data "
                    f"types are {', '.join(LAMMPS_SPECORDER)} only",
                    field="format",
                )
            name = f"run{frame.run_id}_step{frame.step}.data"
            ase.io.write(
                folder / name,
                atoms,
                format="lammps-data",
                specorder=list(LAMMPS_SPECORDER),
                atom_style="atomic",
                masses=True,
                units="metal",
            )
            info = frame_info(provenance, frame)
            index.writerow([csv_cell(v) for v in (name, *info.values(), frame.energy_ev)])
            names.append(name)
    return len(names), [*names, "index.csv"]


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON takes it: dates as ISO text, non-finite floats as null (stored
    JSON may hold NaN, which Python's parser accepts and strict readers refuse)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def write_thermo_csv(conn: Connection, run_id: int, path: Path) -> int:
    """Every thermo row of the run, columns as the table; how many rows."""
    from glassbench.schema.models import Thermo

    t: sa.Table = Thermo.__table__  # type: ignore[attr-defined]
    stmt = sa.select(t).where(t.c.run_id == run_id).order_by(t.c.step)
    n = 0
    with open(path, "x", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([c.name for c in t.columns])
        for row in conn.execution_options(yield_per=2000).execute(stmt):
            w.writerow([csv_cell(v) for v in row])
            n += 1
    return n
