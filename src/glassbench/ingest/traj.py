"""ASE trajectories (extxyz, ``.traj``) as frames plus one thermo row per frame, streamed.

Thermodynamics come from what ASE's writers store with each frame: the calculator results
(``energy``/``free_energy``, ``stress``), the momenta (kinetic energy and temperature) and the
cell (volume, density). A frame's ``forces`` (eV/Å, ASE's unit) and energy are also kept with
the frame itself: they are the reference of ``glassbench compute energy``. ``info`` keys ``step``, ``time_ps`` (or ``time_fs``) and
``temperature_k`` are used when present; otherwise the frame index is the step.

extxyz is split into frames here (count line, comment line, atom lines), so a 1 GB file is
read one frame at a time and errors name the frame and its first line; each frame is then
parsed by ASE's own extxyz reader.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

from glassbench.analysis.limits import (
    MAX_ATOMS,
    MAX_FRAME_BYTES,
    LineTooLong,
    read_line,
)
from glassbench.errors import BadInput
from glassbench.ingest.frames import FrameData, element_counts
from glassbench.ingest.properties import density_from

if TYPE_CHECKING:
    from ase import Atoms

Format = Literal["extxyz", "traj"]
Progress = Callable[[int], object]

_EXTXYZ_SUFFIXES = (".xyz", ".extxyz")


def detect_format(path: Path) -> Format:
    """``traj`` for ASE's binary trajectory, ``extxyz`` for (extended) XYZ text."""
    suffix = path.suffix.lower()
    if suffix == ".traj":
        return "traj"
    if suffix in _EXTXYZ_SUFFIXES:
        return "extxyz"
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"- of Ulm"):  # ASE's ULM container
        return "traj"
    if b"\x00" in head:
        raise BadInput("binary file that is not an ASE trajectory", source=str(path))
    return "extxyz"


def check_input(path: Path) -> Format:
    """Refuse a missing, empty or binary-but-not-.traj file; return its format."""
    if not path.exists():
        raise BadInput("file does not exist", source=str(path))
    if not path.is_file():
        raise BadInput("not a regular file", source=str(path))
    if path.stat().st_size == 0:
        raise BadInput("file is empty", source=str(path))
    fmt = detect_format(path)
    if fmt == "extxyz":
        with open(path, "rb") as fh:
            head = fh.read(8192)
        if b"\x00" in head:
            raise BadInput("binary file, not extxyz text", source=str(path))
        if not head.strip():
            raise BadInput("file is empty (whitespace only)", source=str(path))
    return fmt


@dataclass(frozen=True)
class TrajFrame:
    """A frame for the pipeline and its thermo row (keys of ``repos.THERMO_COLUMNS``)."""

    frame: FrameData
    thermo: dict[str, float | int | None]


class AseTrajectory:
    """Stream frames and per-frame thermodynamics from an extxyz or ``.traj`` file."""

    def __init__(self, path: Path, fmt: Format, *, progress: Progress | None = None) -> None:
        self.path = path
        self.format = fmt
        self._progress = progress
        self.n_frames_hint: int | None = None

    def _bad(self, message: str, where: str | None) -> BadInput:
        return BadInput(message, source=str(self.path), where=where)

    def frames(self) -> Iterator[TrajFrame]:
        index = 0
        last_step: int | None = None
        for atoms, where in self._atoms():
            tf = self._convert(atoms, index, where)
            step = tf.frame.step
            if last_step is not None and step <= last_step:
                raise self._bad(f"step {step} does not follow step {last_step}", where)
            last_step = step
            yield tf
            index += 1
        if index == 0:
            raise BadInput("no frames", source=str(self.path))

    def _atoms(self) -> Iterator[tuple[Atoms, str]]:
        if self.format == "traj":
            yield from self._traj_atoms()
        else:
            yield from self._extxyz_atoms()

    def _traj_atoms(self) -> Iterator[tuple[Atoms, str]]:
        from ase.io.trajectory import Trajectory

        try:
            traj = Trajectory(str(self.path), "r")
        except Exception as exc:  # ASE raises many kinds for a file that is not a trajectory
            raise self._bad(f"not a readable ASE trajectory: {_reason(exc)}", None) from None
        with traj:
            self.n_frames_hint = len(traj)
            for i in range(len(traj)):
                where = f"frame {i}"
                try:
                    atoms = traj[i]
                except Exception as exc:
                    raise self._bad(
                        f"cannot read frame (truncated?): {_reason(exc)}", where
                    ) from None
                if self._progress is not None:
                    self._progress(1)
                yield atoms, where

    def _extxyz_atoms(self) -> Iterator[tuple[Atoms, str]]:
        from ase.io.extxyz import read_xyz

        lineno = 0
        index = 0
        with open(self.path, "rb") as fh:
            while True:
                where = f"frame {index}, line {lineno + 1}"
                first = self._read_line(fh, where)
                if not first:
                    return
                lineno += 1
                start = lineno
                where = f"frame {index}, line {start}"
                text = self._decode(first, where)
                if not text.strip():
                    continue  # blank lines between frames
                try:
                    n = int(text.strip())
                except ValueError:
                    raise self._bad(
                        f"expected the atom count of a frame, got {text.strip()[:40]!r}", where
                    ) from None
                if not 0 < n <= MAX_ATOMS:
                    limit = f", above the limit of {MAX_ATOMS:,} per frame" if n > 0 else ""
                    raise self._bad(f"atom count {n}{limit}", where)
                body = self._body(fh, n + 1, start, index)
                lineno += len(body)
                if len(body) < n + 1 or not body[-1].strip():
                    got = max(len(body) - 1, 0)
                    raise self._bad(f"file ends after {got} of {n} atom lines (truncated)", where)
                if self._progress is not None:
                    self._progress(len(first) + sum(len(b) for b in body))
                chunk = first + b"".join(body)
                try:
                    atoms = next(read_xyz(io.StringIO(self._decode(chunk, where)), 0))
                except Exception as exc:  # ASE's parser: XYZError, ValueError, KeyError ...
                    raise self._bad(f"cannot parse extxyz frame: {_reason(exc)}", where) from None
                yield atoms, where
                index += 1

    def _read_line(self, fh: IO[bytes], where: str) -> bytes:
        try:
            return read_line(fh)
        except LineTooLong as exc:
            raise self._bad(str(exc), where) from None

    def _body(self, fh: IO[bytes], n: int, start: int, index: int) -> list[bytes]:
        """The comment and atom lines after a count line (fewer at the end of the file)."""
        body: list[bytes] = []
        size = 0
        for k in range(n):
            raw = self._read_line(fh, f"frame {index}, line {start + k + 1}")
            if not raw:
                break
            size += len(raw)
            if size > MAX_FRAME_BYTES:
                raise self._bad(
                    f"frame of more than {MAX_FRAME_BYTES >> 20} MiB of text",
                    f"frame {index}, line {start + k + 1}",
                )
            body.append(raw)
        return body

    def _decode(self, raw: bytes, where: str) -> str:
        if b"\x00" in raw:
            raise self._bad("binary data in an extxyz file", where)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._bad("not UTF-8 text", where) from None

    def _convert(self, atoms: Atoms, index: int, where: str) -> TrajFrame:
        from ase.units import GPa, kB

        info = atoms.info
        step = _int_info(info, "step", index, where, self)
        if step < 0:  # as a LAMMPS dump's TIMESTEP: MD steps count from 0
            raise self._bad(f"negative step {step}", where)
        time_ps = _float_info(info, "time_ps", where, self)
        if time_ps is None and (t_fs := _float_info(info, "time_fs", where, self)) is not None:
            time_ps = t_fs / 1000.0

        results: dict[str, Any] = dict(atoms.calc.results) if atoms.calc is not None else {}
        energy = results.get("energy", results.get("free_energy", info.get("energy")))
        stress = results.get("stress", info.get("stress"))
        pe = _finite(energy, "energy", where, self)
        forces = results.get("forces")
        if forces is None and "forces" in atoms.arrays:  # extxyz columns ASE did not claim
            forces = atoms.arrays["forces"]
        if forces is not None:
            try:
                forces = np.asarray(forces, dtype=np.float64)
            except (TypeError, ValueError):
                raise self._bad("forces are not numbers", where) from None
        pressure = None
        if stress is not None:
            s = np.asarray(stress, dtype=float)
            if s.shape == (6,):
                trace = s[:3].sum()
            elif s.shape == (3, 3):
                trace = np.trace(s)
            else:
                raise self._bad(f"stress has shape {s.shape}", where)
            if not np.isfinite(s).all():
                raise self._bad("stress is NaN or infinite", where)
            pressure = float(-trace / 3.0 / GPa)

        numbers = atoms.get_atomic_numbers().astype(np.int64)
        ke = temperature = None
        if atoms.has("momenta"):
            p = atoms.get_momenta()
            if not np.isfinite(p).all():
                raise self._bad("momenta are NaN or infinite", where)
            ke = float(atoms.get_kinetic_energy())
            # 3N degrees of freedom, as ASE's Atoms.get_temperature() counts them
            temperature = 2.0 * ke / (3.0 * len(atoms) * kB) if len(atoms) else None
        if temperature is None:
            temperature = _float_info(info, "temperature_k", where, self)

        cell = np.asarray(atoms.get_cell(), dtype=float)
        pbc = tuple(bool(b) for b in atoms.get_pbc())
        volume = None
        if all(pbc):
            with np.errstate(over="ignore", invalid="ignore"):  # absurd cells: refused later
                v = abs(float(np.linalg.det(cell)))
            volume = v if 0 < v < math.inf else None
        density = density_from(element_counts(numbers), volume)
        frame = FrameData(
            step=step,
            numbers=numbers,
            positions=np.asarray(atoms.get_positions(), dtype=float),
            cell=cell,
            pbc=(pbc[0], pbc[1], pbc[2]),
            time_ps=time_ps,
            where=where,
            forces=forces,
            energy_ev=pe,
        )
        thermo: dict[str, float | int | None] = {
            "step": step,
            "time_ps": time_ps,
            "temperature_k": temperature,
            "pressure_gpa": pressure,
            "potential_energy_ev": pe,
            "kinetic_energy_ev": ke,
            "total_energy_ev": pe + ke if pe is not None and ke is not None else None,
            "volume_a3": volume,
            "density_g_cm3": density,
        }
        return TrajFrame(frame, thermo)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _finite(value: Any, name: str, where: str, reader: AseTrajectory) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise reader._bad(f"{name} {value!r} is not a number", where) from None
    if not math.isfinite(v):
        raise reader._bad(f"{name} is NaN or infinite", where)
    return v


def _float_info(info: dict[str, Any], key: str, where: str, reader: AseTrajectory) -> float | None:
    return _finite(info.get(key), key, where, reader)


def _int_info(
    info: dict[str, Any], key: str, default: int, where: str, reader: AseTrajectory
) -> int:
    v = info.get(key)
    if v is None:
        return default
    f = _finite(v, key, where, reader)
    assert f is not None
    if f != int(f):
        raise reader._bad(f"{key} {v!r} is not an integer", where)
    return int(f)
