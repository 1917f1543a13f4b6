"""Text structure files cut into frames before ASE parses them, within analysis/limits.py.

ASE's own readers of (ext)XYZ and LAMMPS text dumps trust the atom count a frame declares: a
header claiming 10^12 atoms makes them loop or allocate until memory runs out, and a file
without line breaks is read whole. Here every frame is located line by line with bounded
reads, its header checked (atom count, and for dumps a TIMESTEP that is a whole number >= 0
and finite box bounds within `MAX_COORD_A`), and only then handed, alone, to ASE.

Problems are :class:`FrameTextError` with the line; `analysis.files.StructureFile` turns them
into one-line errors naming the file and frame.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from glassbench.analysis.limits import (
    MAX_ATOMS,
    MAX_COORD_A,
    MAX_FRAME_BYTES,
    LineTooLong,
    first_bad_coordinate,
    read_line,
)


class FrameTextError(ValueError):
    """A frame that cannot be located or whose header is out of bounds, at ``line``."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class TextFrame:
    """One frame: its index, first line and byte offset in the file, and its text
    (None when only located). ``columns`` are a LAMMPS dump's ATOMS columns."""

    index: int
    line: int
    offset: int
    text: str | None
    columns: tuple[str, ...] = ()


class _Lines:
    """Bounded line reads with the line number and byte offset of the next line."""

    def __init__(self, fh: IO[bytes], line: int = 0) -> None:
        self.fh = fh
        self.line = line  # lines read so far
        self.offset = fh.tell()

    def next(self) -> bytes:
        try:
            raw = read_line(self.fh)
        except LineTooLong as exc:
            raise FrameTextError(str(exc), self.line + 1) from None
        if raw:
            self.line += 1
            self.offset += len(raw)
        return raw

    def text(self, raw: bytes) -> str:
        if b"\x00" in raw:
            raise FrameTextError("binary data in a text file", self.line)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameTextError("not UTF-8 text", self.line) from None

    def body(self, n: int, what: str) -> list[bytes]:
        """The next ``n`` lines, refusing a file that ends first or a frame too large."""
        out: list[bytes] = []
        size = 0
        for k in range(n):
            raw = self.next()
            if not raw:
                raise FrameTextError(f"file ends after {k} of {n} {what} (truncated)", self.line)
            size += len(raw)
            if size > MAX_FRAME_BYTES:
                raise FrameTextError(
                    f"frame of more than {MAX_FRAME_BYTES >> 20} MiB of text", self.line
                )
            out.append(raw)
        return out

    def skip(self, n: int, what: str) -> None:
        for k in range(n):
            if not self.next():
                raise FrameTextError(f"file ends after {k} of {n} {what} (truncated)", self.line)


def _atom_count(text: str, line: int) -> int:
    try:
        n = int(text.strip())
    except ValueError:
        raise FrameTextError(
            f"expected the atom count of a frame, got {text.strip()[:40]!r}", line
        ) from None
    if not 0 < n <= MAX_ATOMS:
        limit = f", above the limit of {MAX_ATOMS:,} per frame" if n > 0 else ""
        raise FrameTextError(f"atom count {n}{limit}", line)
    return n


def xyz_frames(fh: IO[bytes], *, text: bool = True, start: int = 0) -> Iterator[TextFrame]:
    """Frames of an (extended) XYZ file: a count line, a comment line, the atom lines and,
    in old extxyz files, up to three ``VEC`` lines. Blank lines between frames are skipped.
    ``text=False`` only locates frames; ``start`` is the line number of ``fh``'s position."""
    lines = _Lines(fh, start)
    index = 0
    while True:
        offset = lines.offset
        raw = lines.next()
        if not raw:
            return
        first = lines.text(raw)
        if not first.strip():
            continue
        line = lines.line
        n = _atom_count(first, line)
        if not text:
            lines.skip(n + 1, "lines")
            _skip_vec(lines)
            yield TextFrame(index, line, offset, None)
        else:
            body = [raw, *lines.body(n + 1, "lines"), *_skip_vec(lines)]
            yield TextFrame(index, line, offset, lines.text(b"".join(body)))
        index += 1


def _skip_vec(lines: _Lines) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < 3:
        at = lines.fh.tell()
        raw = lines.next()
        if not raw.lstrip().startswith(b"VEC"):
            if raw:  # not ours: give the line back
                lines.fh.seek(at)
                lines.line -= 1
                lines.offset -= len(raw)
            break
        out.append(raw)
    return out


def lammps_dump_frames(fh: IO[bytes], *, text: bool = True, start: int = 0) -> Iterator[TextFrame]:
    """Frames of a LAMMPS text dump: ``ITEM: TIMESTEP`` up to and including the atom lines.

    Checked here: TIMESTEP a whole number >= 0, NUMBER OF ATOMS within 1..`MAX_ATOMS`, BOX
    BOUNDS finite and within ±`MAX_COORD_A`, the ITEMs in order and the atom lines all there.
    """
    lines = _Lines(fh, start)
    index = 0
    while True:
        offset = lines.offset
        raw = lines.next()
        if not raw:
            return
        head = lines.text(raw).strip()
        if not head:
            continue
        line = lines.line
        if head != "ITEM: TIMESTEP":
            raise FrameTextError(f"expected 'ITEM: TIMESTEP', got {head[:40]!r}", line)
        chunk = [raw]
        n: int | None = None
        columns: tuple[str, ...] = ()
        while True:
            raw = lines.next()
            if not raw:
                raise FrameTextError("file ends inside a frame header (truncated)", lines.line)
            chunk.append(raw)
            item = lines.text(raw).strip()
            if not item:
                continue
            if not item.startswith("ITEM:"):
                if len(chunk) == 2:  # the TIMESTEP value
                    _timestep(item, lines.line)
                    continue
                raise FrameTextError(f"expected an 'ITEM:' line, got {item[:40]!r}", lines.line)
            name = item[5:].strip()
            if name == "NUMBER OF ATOMS":
                raw = lines.next()
                chunk.append(raw)
                n = _atom_count(lines.text(raw), lines.line)
            elif name.startswith("BOX BOUNDS"):
                box = lines.body(3, "BOX BOUNDS lines")
                _box_bounds([lines.text(b) for b in box], lines.line - 2)
                chunk += box
            elif name.startswith("ATOMS"):
                if n is None:
                    raise FrameTextError("ITEM: ATOMS before ITEM: NUMBER OF ATOMS", lines.line)
                columns = tuple(name.split()[1:])
                if text:
                    atom_lines = lines.body(n, "atom lines")
                    _coordinates(columns, atom_lines, lines.line - n + 1)
                    chunk += atom_lines
                else:
                    lines.skip(n, "atom lines")
                break
            elif name in ("TIME", "UNITS"):
                chunk.append(lines.next())
            else:
                raise FrameTextError(f"unknown dump item {name[:40]!r}", lines.line)
        yield TextFrame(index, line, offset, lines.text(b"".join(chunk)) if text else None, columns)
        index += 1


_COORDS = (("x", "y", "z"), ("xu", "yu", "zu"), ("xs", "ys", "zs"), ("xsu", "ysu", "zsu"))


def _coordinates(columns: tuple[str, ...], atom_lines: list[bytes], first_line: int) -> None:
    """Refuse coordinates that are not finite or beyond ±`MAX_COORD_A` (ASE would wrap 1e308
    into the cell without a word). Malformed lines are left to ASE's parser to report."""
    names = next((c for c in _COORDS if all(k in columns for k in c)), None)
    if names is None:
        return
    try:
        values = np.loadtxt(
            io.BytesIO(b"".join(atom_lines)),
            usecols=[columns.index(k) for k in names],
            ndmin=2,
            dtype=np.float64,
        )
    except ValueError:
        return
    if (row := first_bad_coordinate(values)) is not None:
        shown = " ".join(f"{v:g}" for v in values[row])
        raise FrameTextError(
            f"coordinates {shown} not finite or beyond ±{MAX_COORD_A:g} Å", first_line + row
        )


def _timestep(text: str, line: int) -> None:
    try:
        step = int(text)
    except ValueError:
        raise FrameTextError(f"TIMESTEP {text[:40]!r} is not a whole number", line) from None
    if step < 0:
        raise FrameTextError(f"negative TIMESTEP {step}", line)


def _box_bounds(rows: list[str], line: int) -> None:
    for k, row in enumerate(rows):
        try:
            values = [float(t) for t in row.split()]
        except ValueError:
            raise FrameTextError(f"malformed BOX BOUNDS {row.strip()[:40]!r}", line + k) from None
        if not all(abs(v) <= MAX_COORD_A for v in values):  # also False for NaN
            raise FrameTextError(
                f"BOX BOUNDS {row.strip()[:60]!r} not finite or beyond ±{MAX_COORD_A:g} Å",
                line + k,
            )
