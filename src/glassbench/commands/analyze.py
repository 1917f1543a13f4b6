"""``glassbench analyze``: speciation of a structure file, one frame or all of them.

Reads anything ASE reads. Frames are streamed with ``ase.io.iread``, so ``--all-frames`` never
holds more than one frame in memory. No database is touched.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from glassbench.errors import BadInput

if TYPE_CHECKING:
    from ase import Atoms

    from glassbench.analysis import FrameAnalysis

_LAMMPS_DUMPS = ("lammps-dump-text", "lammps-dump-binary")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _parse_type_map(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    from ase.data import chemical_symbols

    symbols = [s.strip() for s in spec.split(",")]
    bad = [s for s in symbols if s not in chemical_symbols or not s or s == "X"]
    if bad:
        raise BadInput(
            f"not element symbols: {', '.join(repr(s) for s in bad)} "
            "(expected e.g. 'Na,P,S,O' for LAMMPS types 1,2,3,4)",
            source="--type-map",
        )
    return symbols


class _Reader:
    """Frames of one file, streamed, with every read error turned into `BadInput`."""

    def __init__(self, path: Path, fmt: str | None, type_map: list[str] | None):
        from ase.io.formats import UnknownFileTypeError, filetype, ioformats

        self.path = path
        self.source = str(path)
        if not path.exists():
            raise BadInput("no such file", source=self.source)
        if path.is_dir():
            raise BadInput("is a directory, expected a structure file", source=self.source)
        given = fmt is not None
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
            if given:
                raise BadInput(f"ASE has no reader called {fmt!r}", source="--input-format")
            # ASE falls back to the file extension as the format name.
            raise BadInput(
                f"unsupported file format {fmt!r}; name one ASE reads with --input-format",
                source=self.source,
            )
        self.format = fmt
        self.single = ioformats[fmt].single
        self.kwargs: dict[str, Any] = {}
        if type_map is not None:
            if fmt not in _LAMMPS_DUMPS:
                raise BadInput(
                    f"only for LAMMPS dumps, and {path} is {fmt!r}",
                    source="--type-map",
                )
            self.kwargs["specorder"] = type_map
        self.type_ids_as_z = fmt in _LAMMPS_DUMPS and type_map is None

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
        try:
            return sum(1 for _ in self._iread(slice(None)))
        except Exception:  # only used to word an error message
            return None

    def frame(self, n: int) -> Atoms:
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


def _analyse(
    atoms: Atoms, cutoffs: dict[str, float], suggest: bool, reader: _Reader, where: str
) -> tuple[FrameAnalysis, dict[str, float] | None]:
    from glassbench.analysis import analyze_atoms
    from glassbench.analysis.rdf import suggest_cutoffs

    try:
        result = analyze_atoms(atoms, cutoffs)
        suggested = (
            suggest_cutoffs(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
            if suggest
            else None
        )
    except ValueError as exc:  # degenerate cell, NaN positions...
        raise BadInput(f"cannot analyse: {exc}", source=reader.source, where=where) from None
    return result, suggested


def _cutoff_line(cutoffs: dict[str, float]) -> str:
    return "cutoffs (Å): " + "  ".join(f"{k} {v}" for k, v in cutoffs.items())


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def _histogram(h: dict[int, int]) -> str:
    return "  ".join(f"{k}:{v}" for k, v in sorted(h.items())) or "-"


def format_table(res: FrameAnalysis, suggested: dict[str, float] | None = None) -> str:
    """Human-readable table of the numbers in ``res.to_dict()``."""
    from glassbench.analysis.speciation import ANION_KEYS, P_KEYS

    lines = [f"atoms: {res.n_atoms}  (P {res.n_P}, S {res.n_S}, O {res.n_O}, Na {res.na.n})"]
    lines.append(_cutoff_line(res.cutoffs))
    if suggested is not None:
        text = "  ".join(f"{k} {v:g}" for k, v in suggested.items()) or "none found"
        lines.append(f"suggested cutoffs (Å, first g(r) minimum): {text}")
    p = res.p.to_dict()
    lines += ["", f"{'P unit':<15}{'count':>7}{'of P':>9}"]
    for k in P_KEYS:
        label = f"{k} (flag)" if k in ("P2ES", "PPchain") else k
        frac = p[k] / res.n_P if res.n_P else 0.0
        lines.append(f"{label:<15}{p[k]:>7}{_fmt(frac):>9}")
    a = res.anions.to_dict()
    n_anions = res.n_S + res.n_O
    lines += ["", f"{'anion':<15}{'count':>7}{'of S+O':>9}"]
    for k in ANION_KEYS:
        frac = a[k] / n_anions if n_anions else 0.0
        lines.append(f"{k:<15}{a[k]:>7}{_fmt(frac):>9}")
    ss, na = res.ss, res.na
    lines += [
        "",
        f"S-S chains: {ss.S_in_chains} S in chains (fraction {_fmt(ss.fraction)}), "
        f"mean length {ss.mean_length:.2f}; lengths {_histogram(ss.chains)}",
        f"Na ({na.n}): CN {na.cn_mean:.2f} (S {na.cn_S_mean:.2f}, O {na.cn_O_mean:.2f}); "
        f"CN histogram {_histogram(na.histogram)}",
    ]
    return "\n".join(lines)


_ROW_KEYS = (
    "P0", "P1", "P2", "P3", "P4", "P1P", "P3c", "P_other", "P2ES", "PPchain",
    "BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O",
)  # fmt: skip


def _row_header() -> str:
    cols = ["frame", "atoms", *_ROW_KEYS, "S_chain", "Na_CN"]
    return " ".join(f"{c:>7}" for c in cols)


def _row(k: int, res: FrameAnalysis) -> str:
    counts = res.unit_counts()
    cells = [str(k), str(res.n_atoms), *(str(counts[c]) for c in _ROW_KEYS)]
    cells += [str(res.ss.S_in_chains), f"{res.na.cn_mean:.2f}"]
    return " ".join(f"{c:>7}" for c in cells)


@click.command("analyze")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "table"]),
    default="json",
    show_default=True,
    help="JSON (JSON Lines with --all-frames) or a readable table.",
)
@click.option("--frame", type=int, default=None, help="Frame index (default: last; -1 = last).")
@click.option("--all-frames", is_flag=True, help="Analyse every frame, streamed, one line each.")
@click.option(
    "--cutoff",
    "cutoff_specs",
    multiple=True,
    metavar="PAIR=Å",
    help="Override a bond cutoff, e.g. P-S=2.5 (repeatable). "
    "Defaults: P-S 2.6, P-O 2.0, P-P 2.5, S-S 2.5, Na-S 3.6, Na-O 3.1.",
)
@click.option(
    "--type-map",
    default=None,
    metavar="EL,EL,...",
    help="LAMMPS dumps: elements of type ids 1..n, e.g. Na,P,S,O "
    "(without it ASE reads type ids as atomic numbers).",
)
@click.option(
    "--input-format",
    default=None,
    metavar="NAME",
    help="ASE format name, when it cannot be told from the file (e.g. lammps-dump-text).",
)
@click.option(
    "--suggest-cutoffs",
    is_flag=True,
    help="Also report cutoffs at the first minimum of each pair's g(r).",
)
def cli(
    file: Path,
    fmt: str,
    frame: int | None,
    all_frames: bool,
    cutoff_specs: tuple[str, ...],
    type_map: str | None,
    input_format: str | None,
    suggest_cutoffs: bool,
) -> None:
    """Structural analysis of FILE: P units, anions, S-S chains, Na coordination."""
    from glassbench.analysis import parse_cutoffs

    if all_frames and frame is not None:
        raise BadInput("use either --frame or --all-frames", source="--frame")
    try:
        cutoffs = parse_cutoffs(cutoff_specs)
    except ValueError as exc:
        raise BadInput(str(exc), source="--cutoff") from None
    reader = _Reader(file, input_format, _parse_type_map(type_map))
    if reader.type_ids_as_z:
        click.echo(
            f"note: {file}: LAMMPS dump read without --type-map; "
            "type ids without an element column are taken as atomic numbers",
            err=True,
        )

    if not all_frames:
        n = -1 if frame is None else frame
        atoms = reader.frame(n)
        res, suggested = _analyse(atoms, cutoffs, suggest_cutoffs, reader, f"frame {n}")
        if fmt == "json":
            out = res.to_dict()
            if suggested is not None:
                out["suggested_cutoffs"] = suggested
            click.echo(json.dumps(out))
        else:
            click.echo(format_table(res, suggested))
        return

    from tqdm import tqdm

    if fmt == "table":
        click.echo(_cutoff_line(cutoffs))
        click.echo(_row_header())
    progress = tqdm(unit="frame", file=sys.stderr, disable=not sys.stderr.isatty())
    try:
        for k, atoms in reader.frames():
            res, suggested = _analyse(atoms, cutoffs, suggest_cutoffs, reader, f"frame {k}")
            if fmt == "json":
                out = {"frame": k, **res.to_dict()}
                if suggested is not None:
                    out["suggested_cutoffs"] = suggested
                click.echo(json.dumps(out))
            else:
                row = _row(k, res)
                if suggested is not None:
                    row += "  suggested: " + " ".join(f"{p}={v:g}" for p, v in suggested.items())
                click.echo(row)
            # Streamed output: a consumer sees each frame as soon as it is done.
            sys.stdout.flush()
            progress.update()
    finally:
        progress.close()
