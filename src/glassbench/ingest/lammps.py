"""LAMMPS log and dump readers, streamed: rows and frames come out one at a time.

Log: every thermo block (``thermo_style one``/``custom`` columns in any set and order, or
``multi``), several runs per log, warnings anywhere, ``thermo_modify norm`` and ``thermo_style``
changes between runs, ``reset_timestep``. Values are converted to the schema's units from the
``units`` command (``metal`` and ``real``). Steps are made strictly increasing across
``reset_timestep`` (each reset continues the step count where the previous run stopped) and the
repeated first row of a continuing run is dropped.

Dump: ``ITEM:``-structured text dumps with any column order, ``type`` or ``element`` columns,
wrapped/unwrapped/scaled coordinates and triclinic boxes (converted to an ASE-style cell whose
rows are the cell vectors, origin at the box's lower corner).

Every problem is a :class:`~glassbench.errors.BadInput` naming the file and the line.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from glassbench.chemistry import counts_for
from glassbench.errors import BadInput
from glassbench.ingest.pipeline import FrameData, density_from

# 1 kcal/mol in eV (CODATA 2018 constants, thermochemical calorie).
KCAL_PER_MOL_EV = 4184.0 / 6.02214076e23 / 1.602176634e-19
ATOMS_PER_FORMULA_UNIT = 13  # Na4 P2 (S,O)7


@dataclass(frozen=True)
class UnitSystem:
    """Factors from a LAMMPS unit style to the schema's units."""

    name: str
    energy_ev: float
    pressure_gpa: float
    time_ps: float
    default_timestep: float  # in the style's own time unit


UNIT_SYSTEMS = {
    "metal": UnitSystem("metal", 1.0, 1e-4, 1.0, 0.001),  # eV, bar, ps
    "real": UnitSystem("real", KCAL_PER_MOL_EV, 1.01325e-4, 1e-3, 1.0),  # kcal/mol, atm, fs
}

Progress = Callable[[int], object]

_MEMORY_LINES = ("Per MPI rank memory", "Memory usage per processor")
_MULTI_STEP = re.compile(r"-+\s*Step\s+(\S+)")
_MULTI_PAIR = re.compile(r"(\S+)\s*=\s*(\S+)")
_LOOP_ATOMS = re.compile(r"with\s+(\d+)\s+atoms")
_CREATED = re.compile(r"^Created\s+(\d+)\s+atoms")
_READ_ATOMS = re.compile(r"^(\d+)\s+atoms$")
_NEW_TOTAL = re.compile(r"new total\s*=\s*(\d+)")
_VERSION = re.compile(r"^LAMMPS \((.+)\)")


def check_text_file(path: Path, *, what: str = "file") -> None:
    """Refuse missing, empty and binary files before anything else reads them."""
    if not path.exists():
        raise BadInput(f"{what} does not exist", source=str(path))
    if not path.is_file():
        raise BadInput(f"{what} is not a regular file", source=str(path))
    if path.stat().st_size == 0:
        raise BadInput(f"{what} is empty", source=str(path))
    with open(path, "rb") as fh:
        head = fh.read(8192)
    if b"\x00" in head:
        raise BadInput(f"{what} is binary, not text", source=str(path))
    if not head.strip():
        raise BadInput(f"{what} is empty (whitespace only)", source=str(path))


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


# --- log --------------------------------------------------------------------------------


@dataclass
class StepSegment:
    """Raw LAMMPS steps between two ``reset_timestep`` commands and the offset that makes
    stored steps continue monotonically across them."""

    offset: int
    raw_first: int
    raw_last: int


@dataclass
class LogInfo:
    """What the log says besides its thermo rows (complete once the rows are exhausted)."""

    units: str | None = None
    lammps_version: str | None = None
    natoms: int | None = None
    n_blocks: int = 0
    n_rows: int = 0
    segments: list[StepSegment] = field(default_factory=list)
    # (stored step, time in ps) knots of the piecewise linear time axis
    time_knots: list[tuple[int, float]] = field(default_factory=list)

    def time_at(self, step: int) -> float | None:
        """Time in ps of a stored step inside the logged range, else None."""
        k = self.time_knots
        if not k or step < k[0][0] or step > k[-1][0]:
            return None
        xs = np.fromiter((s for s, _ in k), dtype=float, count=len(k))
        ys = np.fromiter((t for _, t in k), dtype=float, count=len(k))
        return float(np.interp(step, xs, ys))


class LammpsLog:
    """Stream the thermo rows of a LAMMPS log in schema units (see module docstring).

    ``counts`` (atoms by element) or ``x`` let rows without a Density column get one from the
    volume. ``units`` overrides the log's ``units`` command (for logs written with ``echo none``).
    """

    def __init__(
        self,
        path: Path,
        *,
        units: str | None = None,
        counts: Mapping[str, int] | None = None,
        x: float | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.path = path
        self.info = LogInfo(units=units)
        self._forced_units = units is not None
        self._counts = dict(counts) if counts is not None else None
        self._x = x
        self._progress = progress
        # LAMMPS state as the echoed commands change it
        self._norm = False
        self._dt: float | None = None  # from a `timestep` command; None if it was a variable
        self._dt_set = False
        self._atime = 0.0  # simulated time at raw step _atimestep, in the style's time unit
        self._atimestep = 0
        self._current_raw: int | None = None
        self._last_command = ""
        self._created = 0

    def _bad(self, message: str, lineno: int | None) -> BadInput:
        return BadInput(message, source=str(self.path), where=f"line {lineno}" if lineno else None)

    # The log is read as bytes and decoded line by line so that a stray binary tail is
    # reported with its line instead of a UnicodeDecodeError from deep inside io.
    def _lines(self) -> Iterator[tuple[int, str]]:
        pending = 0
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if self._progress is not None:
                    pending += len(raw)
                    if pending >= 1 << 20:  # one bar update per MiB, not per line
                        self._progress(pending)
                        pending = 0
                if b"\x00" in raw:
                    raise self._bad("binary data in a text log", lineno)
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise self._bad("not UTF-8 text", lineno) from None
        if self._progress is not None and pending:
            self._progress(pending)

    @property
    def unit_system(self) -> UnitSystem:
        assert self.info.units is not None
        return UNIT_SYSTEMS[self.info.units]

    def _set_units(self, name: str, lineno: int) -> None:
        if self._forced_units:
            return
        if name not in UNIT_SYSTEMS:
            raise self._bad(
                f"LAMMPS units {name!r} are not supported (supported: {', '.join(UNIT_SYSTEMS)})",
                lineno,
            )
        self.info.units = name

    def _command(self, tokens: list[str], lineno: int) -> None:
        cmd = tokens[0]
        if cmd == "units" and len(tokens) >= 2:
            self._set_units(tokens[1], lineno)
        elif cmd == "timestep" and len(tokens) >= 2:
            try:
                new_dt = float(tokens[1])
            except ValueError:
                new_dt = math.nan  # a variable: unknown from here on
            self._advance_time_to(self._current_raw)
            self._dt = new_dt if math.isfinite(new_dt) else None
            self._dt_set = True
        elif cmd == "thermo_style":
            self._norm = False  # LAMMPS resets thermo_modify settings with a new style
            if len(tokens) >= 2 and tokens[1] == "yaml":
                raise self._bad("thermo_style yaml is not supported", lineno)
        elif cmd == "thermo_modify":
            for key, val in itertools.pairwise(tokens[1:]):
                if key == "norm":
                    self._norm = val in ("yes", "on", "true")
        elif cmd in ("run", "minimize", "minimize/kk", "rerun"):
            self._last_command = cmd

    def _time_unit_dt(self) -> float | None:
        if self._dt_set:
            return self._dt
        return self.unit_system.default_timestep if self.info.units else None

    def _advance_time_to(self, raw: int | None) -> None:
        """Fold the time elapsed up to ``raw`` into the reference (LAMMPS update_time())."""
        if raw is None:
            return
        dt = self._time_unit_dt()
        self._atime = self._atime + (raw - self._atimestep) * dt if dt is not None else math.nan
        self._atimestep = raw

    def _time(self, raw: int, minimizing: bool) -> float | None:
        dt = self._time_unit_dt()
        if dt is None or math.isnan(self._atime):
            return None
        if minimizing:  # minimizer iterations advance the step counter but not the time
            return self._atime
        return self._atime + (raw - self._atimestep) * dt

    def rows(self) -> Iterator[dict[str, float | int | None]]:
        """Thermo rows with keys of ``repos.THERMO_COLUMNS``; raises BadInput on bad data."""
        state = "out"
        header: list[str] = []
        multi: dict[str, float] | None = None
        multi_keys: frozenset[str] | None = None
        block_start = 0
        first_in_block = True
        minimizing = False
        pending: dict[str, float | int | None] | None = None
        lineno = 0

        def emit(values: dict[str, float], ln: int) -> dict[str, float | int | None] | None:
            """Convert a row; return the row before it once it is known to be complete.

            A run that continues the previous one prints the same step again as its first
            row, after whatever the input changed in between (velocities, thermo columns):
            the two are merged, the later values winning, so one step is one row.
            """
            nonlocal first_in_block, pending
            if "step" not in values:
                raise self._bad("thermo row without a Step value", ln)
            raw = int(values["step"])
            info = self.info
            if first_in_block:
                first_in_block = False
                if not info.segments:
                    info.segments.append(StepSegment(0, raw, raw))
                elif self._current_raw is not None and raw != self._current_raw:
                    # reset_timestep between runs: continue the stored steps where the
                    # previous run stopped, and restart the time reference at the new step
                    seg = info.segments[-1]
                    self._advance_time_to(self._current_raw)
                    self._atimestep = raw
                    info.segments.append(
                        StepSegment(seg.offset + self._current_raw - raw, raw, raw)
                    )
            elif self._current_raw is not None and raw <= self._current_raw:
                raise self._bad(
                    f"Step {raw} does not follow step {self._current_raw} in the same run", ln
                )
            self._current_raw = raw
            seg = info.segments[-1]
            seg.raw_last = raw
            stored = raw + seg.offset
            row = self._convert(values, raw, stored, minimizing, ln)
            self._add_knot(stored, row["time_ps"])
            if pending is not None and pending["step"] == stored:
                pending = {**pending, **{k: v for k, v in row.items() if v is not None}}
                return None
            done, pending = pending, row
            if done is not None:
                info.n_rows += 1
            return done

        for lineno, line in self._lines():
            s = line.strip()
            if state == "out":
                if not s:
                    continue
                if s.startswith(_MEMORY_LINES):
                    state = "header"
                    block_start = lineno
                    continue
                self._scan_text(s, lineno)
                continue
            if not s or s.startswith("WARNING"):
                continue
            if s.startswith("ERROR"):
                raise self._bad(f"LAMMPS stopped with an error: {s}", lineno)
            if state == "header":
                if self.info.units is None:
                    raise self._bad(
                        "no `units` command before the first thermo block (the LAMMPS "
                        "default, lj, is not supported; pass --units for logs without echo)",
                        lineno,
                    )
                minimizing = self._last_command.startswith("minimize")
                first_in_block = True
                m = _MULTI_STEP.match(s)
                if m:
                    state = "multi"
                    multi = {"step": self._number(m.group(1), lineno)}
                    multi_keys = None
                    continue
                header = [h.lower() for h in s.split()]
                if "step" not in header or any(_is_number(h) for h in header):
                    raise self._bad(f"unrecognised thermo header {s[:60]!r}", lineno)
                state = "one"
                continue
            if s.startswith("Loop time of"):
                if state == "multi" and multi is not None:
                    multi_keys = self._check_multi(multi, multi_keys, lineno)
                    if (row := emit(multi, lineno)) is not None:
                        yield row
                    multi = None
                m = _LOOP_ATOMS.search(s)
                if m:
                    self.info.natoms = int(m.group(1))
                if minimizing and self._current_raw is not None:
                    self._atimestep = self._current_raw
                self.info.n_blocks += 1
                state = "out"
                continue
            if state == "one":
                toks = s.split()
                if not _is_number(toks[0]):
                    continue  # a message printed during the run
                if len(toks) != len(header):
                    raise self._bad(
                        f"thermo row has {len(toks)} values but the header has {len(header)} "
                        "(truncated or garbled)",
                        lineno,
                    )
                values = {h: self._number(t, lineno) for h, t in zip(header, toks, strict=True)}
                if (row := emit(values, lineno)) is not None:
                    yield row
                continue
            # multi: a dashed Step line opens a record, "Key = value" lines fill it
            m = _MULTI_STEP.match(s)
            if m:
                if multi is not None:
                    multi_keys = self._check_multi(multi, multi_keys, lineno)
                    if (row := emit(multi, lineno)) is not None:
                        yield row
                multi = {"step": self._number(m.group(1), lineno)}
                continue
            pairs = _MULTI_PAIR.findall(s)
            if pairs and multi is not None:
                for k, v in pairs:
                    multi[k.lower()] = self._number(v, lineno)
        if state != "out":
            raise self._bad(
                f"log ends inside the thermo block that starts at line {block_start} "
                "(no 'Loop time' line): truncated?",
                lineno,
            )
        if self.info.n_blocks == 0:
            raise BadInput("no thermo output found (not a LAMMPS log?)", source=str(self.path))
        if pending is not None:
            self.info.n_rows += 1
            yield pending

    def _check_multi(
        self, record: dict[str, float], keys: frozenset[str] | None, lineno: int
    ) -> frozenset[str]:
        got = frozenset(record)
        if keys is not None and got != keys:
            missing = ", ".join(sorted(keys - got)) or "none"
            raise self._bad(f"incomplete thermo record (missing: {missing})", lineno)
        return got

    def _number(self, tok: str, lineno: int) -> float:
        try:
            v = float(tok)
        except ValueError:
            raise self._bad(f"{tok!r} is not a number", lineno) from None
        if not math.isfinite(v):
            raise self._bad(f"non-finite value {tok!r} in thermo output", lineno)
        return v

    def _scan_text(self, s: str, lineno: int) -> None:
        """Commands echoed into the log and LAMMPS's own messages outside thermo blocks."""
        if s.startswith("ERROR"):
            raise self._bad(f"LAMMPS stopped with an error: {s}", lineno)
        if self.info.lammps_version is None and (m := _VERSION.match(s)):
            self.info.lammps_version = m.group(1)
            return
        if m := _CREATED.match(s):
            self._created += int(m.group(1))
            self.info.natoms = self._created
            return
        if m := _READ_ATOMS.match(s):
            self.info.natoms = self._created = int(m.group(1))
            return
        if m := _NEW_TOTAL.search(s):
            self.info.natoms = self._created = int(m.group(1))
            return
        if s.startswith("Unit style") and ":" in s:  # LAMMPS >= 2022 run setup summary
            self._set_units(s.split(":", 1)[1].strip(), lineno)
            return
        tokens = s.split("#", 1)[0].split()
        if tokens:
            self._command(tokens, lineno)

    def _natoms(self, values: Mapping[str, float], lineno: int) -> int:
        n = values.get("atoms")
        if n is not None:
            return int(n)
        if self.info.natoms is None:
            raise self._bad("thermo_modify norm yes but the number of atoms is unknown", lineno)
        return self.info.natoms

    def _composition(self, values: Mapping[str, float]) -> Mapping[str, int] | None:
        if self._counts is not None:
            return self._counts
        n = int(values["atoms"]) if "atoms" in values else self.info.natoms
        if self._x is None or n is None or n % ATOMS_PER_FORMULA_UNIT:
            return None
        try:
            return counts_for(self._x, n // ATOMS_PER_FORMULA_UNIT)
        except ValueError:
            return None

    def _convert(
        self, v: Mapping[str, float], raw: int, stored: int, minimizing: bool, lineno: int
    ) -> dict[str, float | int | None]:
        u = self.unit_system
        e_factor = u.energy_ev * (self._natoms(v, lineno) if self._norm else 1)

        def energy(*names: str) -> float | None:
            for n in names:
                if n in v:
                    return v[n] * e_factor
            return None

        pe = energy("poteng", "pe")
        if pe is None and "e_pair" in v:
            pe = (v["e_pair"] + v.get("e_mol", 0.0)) * e_factor
        volume = v.get("volume", v.get("vol"))
        if volume is None and {"lx", "ly", "lz"} <= v.keys():
            volume = v["lx"] * v["ly"] * v["lz"]  # LAMMPS boxes are upper triangular
        density = v.get("density")
        if density is None:
            density = density_from(self._composition(v), volume)
        time = v["time"] * u.time_ps if "time" in v else None
        if time is None:
            t = self._time(raw, minimizing)
            time = t * u.time_ps if t is not None else None
        press = v.get("press")
        return {
            "step": stored,
            "time_ps": time,
            "temperature_k": v.get("temp"),
            "pressure_gpa": press * u.pressure_gpa if press is not None else None,
            "potential_energy_ev": pe,
            "kinetic_energy_ev": energy("kineng", "ke"),
            "total_energy_ev": energy("toteng", "etotal"),
            "volume_a3": volume,
            "density_g_cm3": density,
        }

    def _add_knot(self, step: int, time: float | int | None) -> None:
        """Keep the time axis as knots where its slope changes (a handful per log)."""
        k = self.info.time_knots
        if time is None:
            return
        t = float(time)
        if k and k[-1][0] == step:
            k[-1] = (step, t)
            return
        if len(k) >= 2:
            (s0, t0), (s1, t1) = k[-2], k[-1]
            if s1 != s0:
                predicted = t0 + (t1 - t0) * (step - s0) / (s1 - s0)
                if abs(predicted - t) <= 1e-6 * max(1.0, abs(t)):
                    k[-1] = (step, t)
                    return
        k.append((step, t))


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


# --- dump -------------------------------------------------------------------------------

_COORDS = (("x", "y", "z"), ("xu", "yu", "zu"), ("xs", "ys", "zs"), ("xsu", "ysu", "zsu"))


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
            raw = fh.readline()
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
                header["step"] = self._int(value_line("TIMESTEP"), lineno, index)
            elif item == "TIME":
                header["time"] = self._float(value_line("TIME"), lineno, index)
            elif item == "UNITS":
                self.units = value_line("UNITS").strip()
                if self.units not in UNIT_SYSTEMS:
                    raise self._bad(f"dump units {self.units!r} are not supported", lineno, index)
            elif item == "NUMBER OF ATOMS":
                n = self._int(value_line("NUMBER OF ATOMS"), lineno, index)
                if not 0 < n < 2**31:
                    raise self._bad(f"{n} atoms", lineno, index)
                header["n"] = n
            elif item.startswith("BOX BOUNDS"):
                header["box"] = self._box(item, [value_line("BOX BOUNDS") for _ in range(3)], ln)
            elif item.startswith("ATOMS"):
                missing = [k for k in ("step", "n", "box") if k not in header]
                if missing:
                    raise self._bad(
                        f"ITEM: ATOMS before {', '.join(missing)} (not a LAMMPS dump?)", ln, index
                    )
                n = header["n"]
                lines = list(itertools.islice(fh, n))
                blob = b"".join(lines)
                if self._progress is not None:
                    self._progress(len(blob))
                first_atom_line = lineno + 1
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

    def _box(self, item: str, lines: list[str], lineno: int) -> tuple[Any, ...]:
        flags = item.split()[2:]
        tilted = flags[:3] == ["xy", "xz", "yz"]
        pbc_flags = flags[3:] if tilted else flags
        try:
            vals = np.array([[float(t) for t in ln.split()] for ln in lines])
        except ValueError:
            raise self._bad("malformed BOX BOUNDS", lineno) from None
        if vals.shape != (3, 3 if tilted else 2):
            # includes LAMMPS's general triclinic "BOX BOUNDS abc origin", not supported
            raise self._bad(f"unsupported or malformed '{item}'", lineno)
        if not np.isfinite(vals).all():
            raise self._bad("non-finite BOX BOUNDS", lineno)
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
            raise self._bad("box has a non-positive length", lineno)
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
        numeric = [col[c] for c in coords]
        if "id" in col:
            numeric.append(col["id"])
        if not has_element:
            numeric.append(col["type"])
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
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: refused as non-finite later
            pos = pos @ cell if coords[0].startswith("xs") else pos - origin
        if has_element:
            numbers = self._elements(index, first_line, lines, col["element"])
        else:
            types = data[:, -1]
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
        if "id" in col:
            ids = data[:, 3]
            order = np.argsort(ids, kind="stable")
            if len(np.unique(ids)) != n:
                raise self._bad("duplicate atom ids", item_line, index)
            numbers, pos = numbers[order], pos[order]
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
        units = dump.units or log.units
        if f.time is not None and units in UNIT_SYSTEMS:
            time_ps: float | None = f.time * UNIT_SYSTEMS[units].time_ps
        else:
            time_ps = log.time_at(step)
        yield FrameData(
            step=step,
            numbers=f.numbers,
            positions=f.positions,
            cell=f.cell,
            pbc=f.pbc,
            time_ps=time_ps,
            where=f.where,
        )
