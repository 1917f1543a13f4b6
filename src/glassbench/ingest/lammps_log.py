"""LAMMPS logs, streamed: thermo rows come out one at a time, in the schema's units.

Every thermo block (``thermo_style one``/``custom`` columns in any set and order, or ``multi``),
several runs per log, warnings anywhere, ``thermo_modify norm`` and ``thermo_style`` changes
between runs, ``reset_timestep``. Values are converted to the schema's units from the ``units``
command (``metal`` and ``real``). Steps are made strictly increasing across ``reset_timestep``
(each reset continues the step count where the previous run stopped) and the repeated first row
of a continuing run is dropped. Dumps are read by ``ingest/lammps_dump.py``.

Every problem is a :class:`~glassbench.errors.BadInput` naming the file and the line.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glassbench.analysis.limits import MAX_ATOMS, LineTooLong, read_line
from glassbench.chemistry import counts_for
from glassbench.errors import BadInput
from glassbench.ingest.properties import density_from

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


def _stated_units(line: str) -> str | None:
    """The unit style a stripped log line states: the echoed ``units`` command, or the
    ``Unit style : metal`` line of LAMMPS >= 2022's run set-up summary."""
    if line.startswith("Unit style") and ":" in line:
        return line.split(":", 1)[1].strip()
    tokens = line.split("#", 1)[0].split()
    if len(tokens) >= 2 and tokens[0] == "units":
        return tokens[1]
    return None


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
    volume. ``units`` are the unit style of a log that does not state it (written with ``echo
    none``); a log that states other units (``units metal``, or LAMMPS's ``Unit style`` line)
    is refused with a :class:`BadInput` on the field ``units`` naming the file and line: its
    numbers would be converted with the wrong factors (times 1000x, energies 23x off).
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
        self._given_units = units
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
        lineno = 0
        with open(self.path, "rb") as fh:
            while True:
                lineno += 1
                try:
                    raw = read_line(fh)
                except LineTooLong as exc:
                    raise self._bad(str(exc), lineno) from None
                if not raw:
                    break
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

    def check_units(self) -> None:
        """Read the log up to its first thermo block and refuse given units it contradicts.

        The same check runs while :meth:`rows` streams; this one fails before anything is
        written, and reads only the set-up part of the log (``units`` must precede a run).
        """
        if self._given_units is None:
            return
        for lineno, line in self._lines():
            s = line.strip()
            if s.startswith(_MEMORY_LINES):
                return
            name = _stated_units(s)
            if name is not None:
                self._set_units(name, lineno)

    @property
    def unit_system(self) -> UnitSystem:
        assert self.info.units is not None
        return UNIT_SYSTEMS[self.info.units]

    def _set_units(self, name: str, lineno: int) -> None:
        given = self._given_units
        if given is not None:
            if name != given:
                # A parameter error (the field is what the user typed), naming the log line.
                raise BadInput(
                    f"{given!r} contradicts `units {name}` at line {lineno} of {self.path} "
                    "(leave it out: the log states its units)",
                    field="units",
                )
            return
        if name not in UNIT_SYSTEMS:
            raise self._bad(
                f"LAMMPS units {name!r} are not supported (supported: {', '.join(UNIT_SYSTEMS)})",
                lineno,
            )
        self.info.units = name

    def _command(self, tokens: list[str], lineno: int) -> None:
        cmd = tokens[0]
        if cmd == "timestep" and len(tokens) >= 2:
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
                    self.info.natoms = self._atom_count(int(m.group(1)), lineno)
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
            self._created = self._atom_count(self._created + int(m.group(1)), lineno)
            self.info.natoms = self._created
            return
        if m := _READ_ATOMS.match(s):
            self.info.natoms = self._created = self._atom_count(int(m.group(1)), lineno)
            return
        if m := _NEW_TOTAL.search(s):
            self.info.natoms = self._created = self._atom_count(int(m.group(1)), lineno)
            return
        if (name := _stated_units(s)) is not None:
            self._set_units(name, lineno)
            return
        tokens = s.split("#", 1)[0].split()
        if tokens:
            self._command(tokens, lineno)

    def _atom_count(self, n: int, lineno: int) -> int:
        """An atom count the log states, within `MAX_ATOMS` (it sizes densities and energies)."""
        if n > MAX_ATOMS:
            raise self._bad(f"{n} atoms, above the limit of {MAX_ATOMS:,}", lineno)
        return n

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
