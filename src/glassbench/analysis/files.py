"""Structural analysis of a structure file: what ``glassbench analyze`` runs.

Reads anything ASE reads. Frames are streamed with ``ase.io.iread``, so analysing every frame
never holds more than one frame in memory. Every read error is a
:class:`~glassbench.errors.BadInput` naming the file and the frame; no database is touched.

    >>> f = StructureFile("quench.extxyz", cutoffs={"P-S": 2.5})
    >>> f.analyze().analysis.p.to_dict()           # the last frame
    >>> for r in f.analyze_all(): print(r.frame, r.analysis.na.cn_mean)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glassbench.analysis.cutoffs import cutoff_table
from glassbench.errors import BadInput

if TYPE_CHECKING:
    from ase import Atoms

    from glassbench.analysis import FrameAnalysis

LAMMPS_DUMPS = ("lammps-dump-text", "lammps-dump-binary")


@dataclass(frozen=True)
class FileAnalysis:
    """One analysed frame: its index, the analysis and, if asked, the g(r) cutoffs."""

    frame: int
    analysis: FrameAnalysis
    suggested_cutoffs: dict[str, float] | None = None


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
    names the elements of a LAMMPS dump's type ids (without it ASE reads type ids as atomic
    numbers: :attr:`type_ids_as_z`); ``input_format`` is an ASE format name, for files whose
    format cannot be told from their name; ``suggest_cutoffs`` adds the first minimum of each
    pair's g(r) to every result.
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
        if symbols is not None:
            if fmt not in LAMMPS_DUMPS:
                raise BadInput(f"only for LAMMPS dumps, and {path} is {fmt!r}", field="type_map")
            self.kwargs["specorder"] = symbols
        self.type_ids_as_z = fmt in LAMMPS_DUMPS and symbols is None

    def _fail(self, exc: BaseException, where: str | None) -> BadInput:
        if isinstance(exc, IndexError) and "specorder" in self.kwargs:
            return BadInput(
                "a type id in the dump is larger than the number of --type-map elements",
                source=self.source,
                where=where,
            )
        return BadInput(f"cannot read: {_one_line(exc)}", source=self.source, where=where)

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
            return sum(1 for _ in self._iread(slice(None)))
        except Exception:  # only used to word an error message
            return None

    def frame(self, n: int) -> Atoms:
        """Frame ``n`` (negative counts from the end)."""
        where = f"frame {n}"
        try:
            got = list(self._iread(slice(n, (n + 1) or None)))
        except Exception as exc:  # ASE raises anything from a bad file
            raise self._fail(exc, where) from None
        if not got:
            total = self.count()
            size = f" (the file has {total} frame{'s' if total != 1 else ''})" if total else ""
            raise BadInput(f"frame index out of range{size}", source=self.source, where=where)
        return got[0]

    def frames(self) -> Iterator[tuple[int, Atoms]]:
        """Every frame with its index, streamed."""
        it = self._iread(slice(None))
        k = 0
        while True:
            try:
                atoms = next(it)
            except StopIteration:
                return
            except Exception as exc:  # ASE raises anything from a bad file
                raise self._fail(exc, f"frame {k}") from None
            yield k, atoms
            k += 1

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
        return FileAnalysis(k, result, suggested)

    def analyze(self, frame: int = -1) -> FileAnalysis:
        """Analysis of one frame (default: the last)."""
        return self._analyse(self.frame(frame), frame, f"frame {frame}")

    def analyze_all(self, *, progress: bool | None = None) -> Iterator[FileAnalysis]:
        """Analysis of every frame, streamed; ``progress``: a bar (None: on a terminal)."""
        from glassbench.progress import make_bar

        with make_bar(unit="frame", enabled=progress) as bar:
            for k, atoms in self.frames():
                yield self._analyse(atoms, k, f"frame {k}")
                bar.update()
