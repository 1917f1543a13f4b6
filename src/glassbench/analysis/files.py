"""Structural analysis of a structure file: what ``glassbench analyze`` runs.

Reads anything ASE reads. Frames are streamed, so analysing every frame never holds more than
one frame in memory: (ext)XYZ files and LAMMPS text dumps are cut into frames here, within the
bounds of ``analysis/limits.py`` (``analysis/textframes.py``), and each frame alone is parsed
by ASE; other formats go through ``ase.io.iread``. Every frame is checked before it is
analysed (atoms, coordinates, cell; then density and neighbour-list size in the analysis).
LAMMPS dump types are read with `DEFAULT_TYPE_MAP` (Na, P, S, O for types 1-4, what
``glassbench ingest lammps`` uses) unless a type map is given. Every read error is a
:class:`~glassbench.errors.BadInput` naming the file and the frame; no database is touched.

    >>> f = StructureFile("quench.extxyz", cutoffs={"P-S": 2.5})
    >>> f.analyze().analysis.p.to_dict()           # the last frame
    >>> for r in f.analyze_all(): print(r.frame, r.analysis.na.cn_mean)
"""

from __future__ import annotations

import contextlib
import io
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from glassbench.analysis.cutoffs import cutoff_table
from glassbench.analysis.limits import MAX_ATOMS, MAX_COORD_A, first_bad_coordinate
from glassbench.analysis.textframes import (
    FrameTextError,
    TextFrame,
    lammps_dump_frames,
    xyz_frames,
)
from glassbench.errors import BadInput

if TYPE_CHECKING:
    from ase import Atoms

    from glassbench.analysis import FrameAnalysis

LAMMPS_DUMPS = ("lammps-dump-text", "lammps-dump-binary")
# Elements of LAMMPS atom types 1, 2, 3, 4 unless told otherwise: the order of the element
# symbols in this package (Na4P2S7-xOx) and what `glassbench ingest lammps` assumes.
DEFAULT_TYPE_MAP = ("Na", "P", "S", "O")

Splitter = Callable[..., Iterator[TextFrame]]
# Text formats cut into frames here (ASE's readers trust the declared atom counts).
_SPLITTERS: dict[str, Splitter] = {
    "extxyz": xyz_frames,
    "xyz": xyz_frames,
    "lammps-dump-text": lammps_dump_frames,
}


@dataclass(frozen=True)
class FileAnalysis:
    """One analysed frame: its index, the analysis and, if asked, the g(r) cutoffs.

    ``type_map`` is the map that named a LAMMPS dump's type ids (None: the frame had element
    symbols)."""

    frame: int
    analysis: FrameAnalysis
    suggested_cutoffs: dict[str, float] | None = None
    type_map: tuple[str, ...] | None = None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def parse_type_map(spec: str | Iterable[str] | None) -> list[str] | None:
    """``"Na,P,S,O"`` -> element symbols of LAMMPS type ids 1, 2, ...; None stays None."""
    if spec is None:
        return None
    from ase.data import chemical_symbols

    items = spec.split(",") if isinstance(spec, str) else list(spec)
    symbols = [s.strip() for s in items]
    bad = [s for s in symbols if s not in chemical_symbols or not s or s == "X"]
    if bad:
        raise BadInput(
            f"not element symbols: {', '.join(repr(s) for s in bad)} "
            "(expected e.g. 'Na,P,S,O' for LAMMPS types 1,2,3,4)",
            field="type_map",
        )
    return symbols


class StructureFile:
    """The frames of one structure file, streamed and analysed.

    ``cutoffs`` overrides bond cutoffs (``{"P-S": 2.5}`` or ``["P-S=2.5"]``); ``type_map``
    names the elements of a LAMMPS dump's type ids 1, 2, ... (default `DEFAULT_TYPE_MAP`;
    :attr:`type_map` is the one in use, :attr:`default_type_map` whether it is the default);
    ``input_format`` is an ASE format name, for files whose format cannot be told from their
    name; ``suggest_cutoffs`` adds the first minimum of each pair's g(r) to every result.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        input_format: str | None = None,
        type_map: str | Iterable[str] | None = None,
        cutoffs: Mapping[str, float] | Iterable[str] | None = None,
        suggest_cutoffs: bool = False,
    ) -> None:
        from ase.io.formats import UnknownFileTypeError, filetype, ioformats

        self.cutoffs = cutoff_table(cutoffs)
        symbols = parse_type_map(type_map)
        self.suggest = suggest_cutoffs
        self.path = path = Path(path)
        self.source = str(path)
        if not path.exists():
            raise BadInput("no such file", source=self.source)
        if path.is_dir():
            raise BadInput("is a directory, expected a structure file", source=self.source)
        fmt = input_format
        if fmt is None:
            try:
                fmt = filetype(str(path))
            except UnknownFileTypeError as exc:
                raise BadInput(
                    f"unrecognised or unsupported file format ({' '.join(str(exc).split())}); "
                    "name it with --input-format",
                    source=self.source,
                ) from None
            except OSError as exc:
                raise BadInput(f"cannot read: {_one_line(exc)}", source=self.source) from None
        if fmt not in ioformats or not ioformats[fmt].can_read:
            if input_format is not None:
                raise BadInput(f"ASE has no reader called {fmt!r}", field="input_format")
            # ASE falls back to the file extension as the format name.
            raise BadInput(
                f"unsupported file format {fmt!r}; name one ASE reads with --input-format",
                source=self.source,
            )
        self.format = fmt
        self.single = ioformats[fmt].single
        self.kwargs: dict[str, Any] = {}
        if symbols is not None and fmt not in LAMMPS_DUMPS:
            raise BadInput(f"only for LAMMPS dumps, and {path} is {fmt!r}", field="type_map")
        self.type_map: tuple[str, ...] | None = None
        self.default_type_map = False
        if fmt in LAMMPS_DUMPS:
            self.type_map = tuple(symbols) if symbols is not None else DEFAULT_TYPE_MAP
            self.default_type_map = symbols is None
            self.kwargs["specorder"] = list(self.type_map)
        self._splitter = _SPLITTERS.get(fmt)

    def _fail(self, exc: BaseException, where: str | None) -> BadInput:
        if isinstance(exc, IndexError) and self.type_map is not None:
            default = " (the default)" if self.default_type_map else ""
            return BadInput(
                f"a type id in the dump is larger than {len(self.type_map)}, the number of "
                f"elements in the type map {','.join(self.type_map)}{default}; name them all "
                "with --type-map",
                source=self.source,
                where=where,
            )
        return BadInput(f"cannot read: {_one_line(exc)}", source=self.source, where=where)

    # --- text formats cut into frames here ------------------------------------------------

    def _located(
        self, *, text: bool, start: tuple[int, int, int] = (0, 0, 0)
    ) -> Generator[TextFrame, None, None]:
        """Frames of a split format (``start``: byte offset, line and index to resume from)."""
        from ase.io.formats import open_with_compression

        assert self._splitter is not None
        offset, line, first = start
        k = first
        try:
            with contextlib.ExitStack() as stack:
                fh: IO[bytes] = stack.enter_context(open_with_compression(self.source, "rb"))
                fh.seek(offset)
                for tf in self._splitter(fh, text=text, start=line):
                    k = first + tf.index
                    yield TextFrame(k, tf.line, tf.offset, tf.text, tf.columns)
                    k += 1
        except FrameTextError as exc:
            raise BadInput(
                f"cannot read: {exc}", source=self.source, where=f"frame {k}, line {exc.line}"
            ) from None
        except OSError as exc:
            raise BadInput(f"cannot read: {_one_line(exc)}", source=self.source) from None

    def _parse(self, tf: TextFrame) -> Atoms:
        assert tf.text is not None
        atoms: Atoms
        try:
            if self.format == "lammps-dump-text":
                from ase.io.lammpsrun import read_lammps_dump_text

                atoms = read_lammps_dump_text(io.StringIO(tf.text), index=0, **self.kwargs)
            elif self.format == "extxyz":
                from ase.io.extxyz import read_xyz

                atoms = next(read_xyz(io.StringIO(tf.text), 0))
            else:
                from ase.io.xyz import read_xyz as read_plain_xyz

                atoms = next(read_plain_xyz(io.StringIO(tf.text), slice(0, 1)))
        except Exception as exc:  # ASE raises anything from a bad frame
            raise self._fail(exc, _where(tf)) from None
        return atoms

    def _split_frame(self, n: int) -> tuple[TextFrame, Atoms] | int:
        """Frame ``n`` of a split format, or the number of frames when there is no such one."""
        # Frames are located (their atom lines skipped, not kept), then the one is read.
        last: deque[TextFrame] = deque(maxlen=1 if n >= 0 else -n)
        found = 0
        located = self._located(text=False)
        with contextlib.closing(located):
            for tf in located:
                last.append(tf)
                found += 1
                if tf.index == n:
                    break
        if found <= n or len(last) < -n:
            return found
        spot = last[-1] if n >= 0 else last[0]
        # The frame's first line is the one after `line - 1` lines.
        again = self._located(text=True, start=(spot.offset, spot.line - 1, spot.index))
        with contextlib.closing(again):
            got = next(again)
        return got, self._parse(got)

    # --- every format -----------------------------------------------------------------------

    def _iread(self, index: slice) -> Iterator[Atoms]:
        import ase.io

        if self.single:
            # Single-frame formats (POSCAR...) reject slices other than ':' in ASE's iread.
            got = ase.io.read(str(self.path), index=0, format=self.format, **self.kwargs)
            yield from (got if isinstance(got, list) else [got])[index]
            return
        yield from ase.io.iread(str(self.path), index=index, format=self.format, **self.kwargs)

    def count(self) -> int | None:
        """Number of frames (None when the file cannot be read to its end)."""
        try:
            if self._splitter is not None:
                return sum(1 for _ in self._located(text=False))
            return sum(1 for _ in self._iread(slice(None)))
        except Exception:  # only used to word an error message
            return None

    def _out_of_range(self, where: str, total: int | None) -> BadInput:
        size = f" (the file has {total} frame{'s' if total != 1 else ''})" if total else ""
        return BadInput(f"frame index out of range{size}", source=self.source, where=where)

    def frame(self, n: int) -> Atoms:
        """Frame ``n`` (negative counts from the end)."""
        return self._frame(n)[1]

    def _frame(self, n: int) -> tuple[str, Atoms]:
        where = f"frame {n}"
        if self._splitter is not None:
            got = self._split_frame(n)
            if isinstance(got, int):
                raise self._out_of_range(where, got)
            tf, atoms = got
            return _where(tf), self._checked(atoms, _where(tf), tf.columns)
        try:
            found = list(self._iread(slice(n, (n + 1) or None)))
        except Exception as exc:  # ASE raises anything from a bad file
            raise self._fail(exc, where) from None
        if not found:
            raise self._out_of_range(where, self.count())
        return where, self._checked(found[0], where)

    def frames(self) -> Iterator[tuple[int, Atoms]]:
        """Every frame with its index, streamed and checked (`_checked`)."""
        for k, _, atoms in self._frames():
            yield k, atoms

    def _frames(self) -> Iterator[tuple[int, str, Atoms]]:
        if self._splitter is not None:
            for tf in self._located(text=True):
                where = _where(tf)
                yield tf.index, where, self._checked(self._parse(tf), where, tf.columns)
            return
        it = self._iread(slice(None))
        k = 0
        while True:
            try:
                atoms = next(it)
            except StopIteration:
                return
            except Exception as exc:  # ASE raises anything from a bad file
                raise self._fail(exc, f"frame {k}") from None
            yield k, f"frame {k}", self._checked(atoms, f"frame {k}")
            k += 1

    def _checked(self, atoms: Atoms, where: str, columns: tuple[str, ...] = ()) -> Atoms:
        """Refuse a frame beyond analysis/limits.py before it is analysed: too many atoms,
        coordinates or a cell not finite or beyond ±`MAX_COORD_A`, a LAMMPS type id below 1
        (ASE would read type 0 as the last element of the type map). Notes in ``atoms.info``
        whether the type map named its elements (a dump's ``columns``: no element or mass
        column)."""

        def bad(message: str) -> BadInput:
            return BadInput(message, source=self.source, where=where)

        if len(atoms) > MAX_ATOMS:
            raise bad(f"{len(atoms)} atoms, above the limit of {MAX_ATOMS:,} per frame")
        positions = atoms.get_positions()
        if (k := first_bad_coordinate(positions)) is not None:
            shown = " ".join(f"{v:g}" for v in positions[k])
            raise bad(f"atom {k + 1}: position {shown} not finite or beyond ±{MAX_COORD_A:g} Å")
        if not np.isfinite(atoms.cell.array).all():
            raise bad("cell is NaN or infinite")
        types = atoms.arrays.get("type")
        if self.type_map is not None and types is not None and len(types) and types.min() < 1:
            k = int(np.argmin(types))
            raise bad(f"atom {k + 1}: LAMMPS type {int(types[k])} (types start at 1)")
        if self.type_map is not None:
            by_type = types is not None and not ({"element", "mass"} & set(columns))
            atoms.info[_NAMED_BY_TYPE_MAP] = by_type
        return atoms

    def _analyse(self, atoms: Atoms, k: int, where: str) -> FileAnalysis:
        from glassbench.analysis import analyze_atoms
        from glassbench.analysis.rdf import suggest_cutoffs

        try:
            result = analyze_atoms(atoms, self.cutoffs)
            suggested = (
                suggest_cutoffs(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
                if self.suggest
                else None
            )
        except ValueError as exc:  # degenerate cell, NaN positions...
            raise BadInput(f"cannot analyse: {exc}", source=self.source, where=where) from None
        named = bool(atoms.info.get(_NAMED_BY_TYPE_MAP))
        return FileAnalysis(k, result, suggested, self.type_map if named else None)

    def analyze(self, frame: int = -1) -> FileAnalysis:
        """Analysis of one frame (default: the last)."""
        where, atoms = self._frame(frame)
        return self._analyse(atoms, frame, where)

    def analyze_all(self, *, progress: bool | None = None) -> Iterator[FileAnalysis]:
        """Analysis of every frame, streamed; ``progress``: a bar (None: on a terminal)."""
        from glassbench.progress import make_bar

        with make_bar(unit="frame", enabled=progress) as bar:
            for k, where, atoms in self._frames():
                yield self._analyse(atoms, k, where)
                bar.update()


# Key in ``Atoms.info`` of a frame whose LAMMPS type ids the type map named.
_NAMED_BY_TYPE_MAP = "glassbench_type_map"


def _where(tf: TextFrame) -> str:
    return f"frame {tf.index}, line {tf.line}"
