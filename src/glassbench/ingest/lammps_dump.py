"""LAMMPS text dumps, streamed: frames come out one at a time, placed on the log's steps.

``ITEM:``-structured text dumps with any column order, ``type`` or ``element`` columns,
wrapped/unwrapped/scaled coordinates and triclinic boxes (converted to an ASE-style cell whose
rows are the cell vectors, origin at the box's lower corner). ``fx fy fz`` columns, where
present, are the forces of the potential that ran the simulation, converted from the unit
style's force unit (energy/Å) to eV/Å. :func:`dump_frames` gives each
frame the stored step and time of the log read with ``ingest/lammps_log.py``.

Every problem is a :class:`~glassbench.errors.BadInput` naming the file, the frame and the line.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from glassbench.analysis.limits import (
    MAX_ATOMS,
    MAX_COORD_A,
    MAX_FRAME_BYTES,
    LineTooLong,
    first_bad_coordinate,
    read_line,
)
from glassbench.errors import BadInput
from glassbench.ingest.frames import FrameData
from glassbench.ingest.lammps_log import UNIT_SYSTEMS, LogInfo, Progress, StepSegment


class StepMapper:
    """Map a dump's raw steps onto the log's stored steps (see :class:`StepSegment`).

    A dump restarts its steps where the log has a ``reset_timestep``; frames are placed in the
    log's segments in order. With one segment (no reset) raw steps are stored as they are.
    """

    def __init__(self, segments: Sequence[StepSegment]) -> None:
        self.segments = list(segments)
        self._k = 0
        self._last_raw: int | None = None

    def __call__(self, raw: int) -> int | None:
        """Stored step, or None when the frame cannot be placed in the log's runs."""
        if len(self.segments) <= 1:
            return raw + (self.segments[0].offset if self.segments else 0)
        k = self._k
        while k < len(self.segments):
            seg = self.segments[k]
            backwards = k == self._k and self._last_raw is not None and raw < self._last_raw
            if seg.raw_first <= raw <= seg.raw_last and not backwards:
                self._k, self._last_raw = k, raw
                return raw + seg.offset
            k += 1
        return None


_COORDS = (("x", "y", "z"), ("xu", "yu", "zu"), ("xs", "ys", "zs"), ("xsu", "ysu", "zsu"))
_FORCES = ("fx", "fy", "fz")


@dataclass(frozen=True)
class DumpFrame:
    """One dump snapshot: raw LAMMPS step, atoms sorted by id, Å, cell rows = vectors."""

    index: int
    line: int
    step: int
    numbers: NDArray[np.int64]
    positions: NDArray[np.float64]
    cell: NDArray[np.float64]
    pbc: tuple[bool, bool, bool]
    time: float | None  # from ITEM: TIME, in the dump's time unit
    # fx fy fz in the unit style's force unit (energy unit / Å), sorted like the atoms
    forces: NDArray[np.float64] | None = None

    @property
    def where(self) -> str:
        return f"frame {self.index}, line {self.line}"


def parse_type_map(text: str) -> list[str]:
    """``Na,P,S,O`` -> symbols for LAMMPS types 1, 2, 3, ...; ValueError on unknown symbols."""
    from ase.data import atomic_numbers

    symbols = [t.strip() for t in text.split(",")]
    if not symbols or any(not s for s in symbols):
        raise ValueError(f"empty entry in type map {text!r}")
    unknown = [s for s in symbols if s not in atomic_numbers]
    if unknown:
        raise ValueError(f"unknown element(s) {', '.join(unknown)} in type map {text!r}")
    return symbols


class LammpsDump:
    """Stream the frames of a LAMMPS text dump (see module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        type_map: Sequence[str],
        progress: Progress | None = None,
    ) -> None:
        from ase.data import atomic_numbers

        self.path = path
        self._types = np.array([0, *(atomic_numbers[s] for s in type_map)], dtype=np.int64)
        self._type_map = list(type_map)
        self._progress = progress
        self.units: str | None = None

    def _bad(self, message: str, lineno: int, frame: int | None = None) -> BadInput:
        where = f"frame {frame}, line {lineno}" if frame is not None else f"line {lineno}"
        return BadInput(message, source=str(self.path), where=where)

    def frames(self) -> Iterator[DumpFrame]:
        with open(self.path, "rb") as fh:
            yield from self._frames(fh)

    def _frames(self, fh: BinaryIO) -> Iterator[DumpFrame]:
        lineno = 0
        index = 0
        header: dict[str, Any] = {}

        def readline() -> tuple[bytes, int]:
            nonlocal lineno
            try:
                raw = read_line(fh)
            except LineTooLong as exc:
                raise self._bad(str(exc), lineno + 1, index) from None
            if raw:
                lineno += 1
                if self._progress is not None:
                    self._progress(len(raw))
            return raw, lineno

        def value_line(what: str) -> str:
            raw, ln = readline()
            if not raw:
                raise self._bad(f"file ends before the {what} value (truncated)", ln, index)
            return self._text(raw, ln, index)

        while True:
            raw, ln = readline()
            if not raw:
                if header:
                    raise self._bad("file ends inside a frame header (truncated)", ln, index)
                if index == 0:
                    raise BadInput("no frames in dump", source=str(self.path))
                return
            text = self._text(raw, ln, index).strip()
            if not text:
                continue
            if not text.startswith("ITEM:"):
                raise self._bad(f"expected an 'ITEM:' line, got {text[:40]!r}", ln, index)
            item = text[5:].strip()
            if item == "TIMESTEP":
                step = self._int(value_line("TIMESTEP"), lineno, index)
                if step < 0:
                    raise self._bad(f"negative TIMESTEP {step}", lineno, index)
                header["step"] = step
            elif item == "TIME":
                header["time"] = self._float(value_line("TIME"), lineno, index)
            elif item == "UNITS":
                self.units = value_line("UNITS").strip()
                if self.units not in UNIT_SYSTEMS:
                    raise self._bad(f"dump units {self.units!r} are not supported", lineno, index)
            elif item == "NUMBER OF ATOMS":
                n = self._int(value_line("NUMBER OF ATOMS"), lineno, index)
                if not 0 < n <= MAX_ATOMS:
                    limit = f", above the limit of {MAX_ATOMS:,} per frame" if n > 0 else ""
                    raise self._bad(f"{n} atoms{limit}", lineno, index)
                header["n"] = n
            elif item.startswith("BOX BOUNDS"):
                rows = [value_line("BOX BOUNDS") for _ in range(3)]
                header["box"] = self._box(item, rows, ln, index)
            elif item.startswith("ATOMS"):
                missing = [k for k in ("step", "n", "box") if k not in header]
                if missing:
                    raise self._bad(
                        f"ITEM: ATOMS before {', '.join(missing)} (not a LAMMPS dump?)", ln, index
                    )
                n = header["n"]
                first_atom_line = lineno + 1
                lines = self._atom_lines(fh, n, first_atom_line, index)
                blob = b"".join(lines)
                if self._progress is not None:
                    self._progress(len(blob))
                lineno += len(lines)
                if len(lines) < n:
                    raise self._bad(
                        f"file ends after {len(lines)} of {n} atom lines (truncated)",
                        lineno,
                        index,
                    )
                cols = item.split()[1:]
                yield self._atoms(index, ln, first_atom_line, cols, lines, blob, header)
                index += 1
                header = {}
            else:
                raise self._bad(f"unknown dump item {item[:40]!r}", ln, index)

    def _atom_lines(self, fh: BinaryIO, n: int, first_line: int, index: int) -> list[bytes]:
        """Up to ``n`` lines (fewer at the end of the file), each and all of them bounded."""
        lines: list[bytes] = []
        size = 0
        for k in range(n):
            try:
                raw = read_line(fh)
            except LineTooLong as exc:
                raise self._bad(str(exc), first_line + k, index) from None
            if not raw:
                break
            size += len(raw)
            if size > MAX_FRAME_BYTES:
                raise self._bad(
                    f"frame of more than {MAX_FRAME_BYTES >> 20} MiB of text ({k + 1} of {n} "
                    "atom lines)",
                    first_line + k,
                    index,
                )
            lines.append(raw)
        return lines

    def _text(self, raw: bytes, lineno: int, index: int) -> str:
        if b"\x00" in raw:
            raise self._bad("binary data in a text dump", lineno, index)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self._bad("not a LAMMPS text dump (non-ASCII bytes)", lineno, index) from None

    def _int(self, text: str, lineno: int, index: int) -> int:
        try:
            return int(text.strip())
        except ValueError:
            raise self._bad(f"{text.strip()[:40]!r} is not an integer", lineno, index) from None

    def _float(self, text: str, lineno: int, index: int) -> float:
        try:
            v = float(text.strip())
        except ValueError:
            raise self._bad(f"{text.strip()[:40]!r} is not a number", lineno, index) from None
        if not math.isfinite(v):
            raise self._bad(f"non-finite value {text.strip()!r}", lineno, index)
        return v

    def _box(self, item: str, lines: list[str], lineno: int, index: int) -> tuple[Any, ...]:
        flags = item.split()[2:]
        tilted = flags[:3] == ["xy", "xz", "yz"]
        pbc_flags = flags[3:] if tilted else flags
        try:
            vals = np.array([[float(t) for t in ln.split()] for ln in lines])
        except ValueError:
            raise self._bad("malformed BOX BOUNDS", lineno, index) from None
        if vals.shape != (3, 3 if tilted else 2):
            # includes LAMMPS's general triclinic "BOX BOUNDS abc origin", not supported
            raise self._bad(f"unsupported or malformed '{item}'", lineno, index)
        if not np.isfinite(vals).all():
            raise self._bad("non-finite BOX BOUNDS", lineno, index)
        if (np.abs(vals) > MAX_COORD_A).any():
            raise self._bad(f"BOX BOUNDS beyond ±{MAX_COORD_A:g} Å", lineno, index)
        if tilted:
            xy, xz, yz = vals[0, 2], vals[1, 2], vals[2, 2]
            # Dumps give the bounding box of the tilted cell; undo that (LAMMPS Howto triclinic).
            xlo = vals[0, 0] - min(0.0, xy, xz, xy + xz)
            xhi = vals[0, 1] - max(0.0, xy, xz, xy + xz)
            ylo = vals[1, 0] - min(0.0, yz)
            yhi = vals[1, 1] - max(0.0, yz)
            zlo, zhi = vals[2, 0], vals[2, 1]
        else:
            xy = xz = yz = 0.0
            (xlo, xhi), (ylo, yhi), (zlo, zhi) = vals[:, :2]
        cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
        if (np.diag(cell) <= 0).any():
            raise self._bad("box has a non-positive length", lineno, index)
        pbc = tuple(f == "pp" for f in pbc_flags[:3]) if len(pbc_flags) >= 3 else (True,) * 3
        return cell, np.array([xlo, ylo, zlo]), pbc

    def _atoms(
        self,
        index: int,
        item_line: int,
        first_line: int,
        cols: list[str],
        lines: list[bytes],
        blob: bytes,
        header: Mapping[str, Any],
    ) -> DumpFrame:
        n = len(lines)
        col = {c: i for i, c in enumerate(cols)}
        coords = next((c for c in _COORDS if all(k in col for k in c)), None)
        if coords is None:
            raise self._bad(f"no coordinate columns in 'ATOMS {' '.join(cols)}'", item_line, index)
        has_element = "element" in col
        if not has_element and "type" not in col:
            raise self._bad("neither a 'type' nor an 'element' column", item_line, index)
        given = [c for c in _FORCES if c in col]
        if given and len(given) < len(_FORCES):
            raise self._bad(
                f"force columns {' '.join(given)} without "
                f"{' '.join(c for c in _FORCES if c not in col)}",
                item_line,
                index,
            )
        numeric = [col[c] for c in coords]
        # Where each optional column lands in `data`: after the three coordinates.
        id_at = type_at = forces_at = -1
        if "id" in col:
            id_at = len(numeric)
            numeric.append(col["id"])
        if not has_element:
            type_at = len(numeric)
            numeric.append(col["type"])
        if given:
            forces_at = len(numeric)
            numeric += [col[c] for c in _FORCES]
        try:
            data = np.loadtxt(io.BytesIO(blob), usecols=numeric, ndmin=2, dtype=np.float64)
        except ValueError:
            raise self._first_bad_atom_line(index, first_line, lines, cols, numeric) from None
        if data.shape != (n, len(numeric)):
            raise self._first_bad_atom_line(index, first_line, lines, cols, numeric)
        finite = np.isfinite(data).all(axis=1)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise self._bad("NaN or infinite value in an atom line", first_line + i, index)
        pos = data[:, :3]
        cell, origin, pbc = header["box"]
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: refused just below
            pos = pos @ cell if coords[0].startswith("xs") else pos - origin
        bad_atom = first_bad_coordinate(pos)
        if bad_atom is not None:
            raise self._bad(
                f"coordinates {' '.join(f'{v:g}' for v in data[bad_atom, :3])} beyond "
                f"±{MAX_COORD_A:g} Å",
                first_line + bad_atom,
                index,
            )
        if has_element:
            numbers = self._elements(index, first_line, lines, col["element"])
        else:
            types = data[:, type_at]
            with np.errstate(invalid="ignore"):  # huge values: caught by `t != types` below
                t = types.astype(np.int64)
            bad = (t != types) | (t < 1) | (t >= len(self._types))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise self._bad(
                    f"atom type {types[i]:g} is not in the type map "
                    f"{','.join(self._type_map)} (types 1..{len(self._type_map)})",
                    first_line + i,
                    index,
                )
            numbers = self._types[t]
        forces = data[:, forces_at : forces_at + 3] if given else None
        if id_at >= 0:
            ids = data[:, id_at]
            order = np.argsort(ids, kind="stable")
            if len(np.unique(ids)) != n:
                raise self._bad("duplicate atom ids", item_line, index)
            numbers, pos = numbers[order], pos[order]
            if forces is not None:
                forces = forces[order]
        time = header.get("time")
        return DumpFrame(
            index=index,
            line=item_line,
            step=int(header["step"]),
            numbers=np.ascontiguousarray(numbers, dtype=np.int64),
            positions=np.ascontiguousarray(pos),
            cell=cell,
            pbc=pbc,
            time=float(time) if time is not None else None,
            forces=None if forces is None else np.ascontiguousarray(forces),
        )

    def _elements(
        self, index: int, first_line: int, lines: list[bytes], column: int
    ) -> NDArray[np.int64]:
        from ase.data import atomic_numbers

        out = np.empty(len(lines), dtype=np.int64)
        cache: dict[bytes, int] = {}
        for i, ln in enumerate(lines):
            sym = ln.split()[column]
            z = cache.get(sym)
            if z is None:
                z = atomic_numbers.get(sym.decode("ascii", "replace"))
                if z is None:
                    raise self._bad(
                        f"unknown element {sym.decode('ascii', 'replace')!r}", first_line + i, index
                    )
                cache[sym] = z
            out[i] = z
        return out

    def _first_bad_atom_line(
        self, index: int, first_line: int, lines: list[bytes], cols: list[str], used: list[int]
    ) -> BadInput:
        for i, ln in enumerate(lines):
            toks = ln.split()
            if len(toks) != len(cols):
                return self._bad(
                    f"atom line has {len(toks)} values, 'ATOMS' names {len(cols)} "
                    "(truncated or garbled)",
                    first_line + i,
                    index,
                )
            for j in used:
                try:
                    float(toks[j])
                except ValueError:
                    return self._bad(f"{toks[j][:20]!r} is not a number", first_line + i, index)
        return self._bad("malformed atom lines", first_line, index)


def types_named(path: Path) -> bool:
    """Whether the type map names the atoms of the dump's first frame (a ``type`` column and
    no ``element`` column); False for anything unreadable (the ingest words that)."""
    try:
        with open(path, "rb") as fh:
            for _ in range(64):  # a frame header is 9-10 lines
                line = read_line(fh)
                if not line:
                    return False
                if line.startswith(b"ITEM: ATOMS"):
                    cols = line.split()[2:]
                    return b"type" in cols and b"element" not in cols
    except (OSError, LineTooLong):
        return False
    return False


def dump_frames(dump: LammpsDump, log: LogInfo) -> Iterator[FrameData]:
    """The dump's frames with the log's stored steps and times, for the pipeline.

    A frame at the same stored step as the one before is the same state written twice
    (e.g. around ``reset_timestep``) and is skipped.
    """
    mapper = StepMapper(log.segments)
    last: int | None = None
    for f in dump.frames():
        step = mapper(f.step)
        if step is None:
            raise BadInput(
                f"step {f.step} does not fit the runs of the log (steps "
                + ", ".join(f"{s.raw_first}-{s.raw_last}" for s in log.segments)
                + ")",
                source=str(dump.path),
                where=f.where,
            )
        if step == last:
            continue
        last = step
        if dump.units is not None and log.units is not None and dump.units != log.units:
            raise BadInput(
                f"the dump is in units {dump.units!r} (ITEM: UNITS) but the log in {log.units!r}",
                source=str(dump.path),
                where=f.where,
            )
        units = dump.units or log.units
        if f.time is not None and units in UNIT_SYSTEMS:
            time_ps: float | None = f.time * UNIT_SYSTEMS[units].time_ps
        else:
            time_ps = log.time_at(step)
        forces = None
        if f.forces is not None:
            if units not in UNIT_SYSTEMS:
                raise BadInput(
                    "the dump has forces but the unit style is unknown (no `units` in the log)",
                    source=str(dump.path),
                    where=f.where,
                )
            # Force unit = energy unit / Å in both metal and real: one factor, the energy's.
            forces = f.forces * UNIT_SYSTEMS[units].energy_ev
        yield FrameData(
            step=step,
            numbers=f.numbers,
            positions=f.positions,
            cell=f.cell,
            pbc=f.pbc,
            time_ps=time_ps,
            where=f.where,
            forces=forces,
        )
