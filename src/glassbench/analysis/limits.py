"""Bounds on what one structure or one line of a file may ask for (docs/reliability.md).

Every structure glassbench reads (``analyze``, the ingests, stored frames in ``reanalyze``,
the runner's frames) meets these before memory is spent on it. The numbers are far above any
real Na-P-S-O glass and far below what exhausts a workstation; each is justified where it is
defined. The file readers (``ingest/``, ``analysis/files.py``) and the neighbour search
(``analysis/neighbours.py``) import them from here.
"""

from __future__ import annotations

from typing import IO

import numpy as np
from numpy.typing import NDArray

# Atom number density (atoms/Å^3). A Na-P-S-O glass has ~0.045 (Na4P2S7 at 2.2 g/cm3), the
# densest solid at ambient pressure (diamond) 0.176. 0.5 leaves room for any compressed or badly
# equilibrated structure and still refuses cells far too small, lengths not in Å and atoms
# piled on each other (104 atoms in a 1 Å cube asked the neighbour search for 8-20 GB).
MAX_DENSITY = 0.5
# The same judged locally, in bins of at least (3 Å)^3 (or the cutoff cubed): twice the mean
# bound, as a few atoms more or less in one small bin are chance (a glass holds ~1.2 atoms in
# 27 Å^3, a melt-quench at the runner's 20 g/cm3 maximum ~11), while atoms piled on each other
# put dozens or thousands there.
MAX_LOCAL_DENSITY = 2 * MAX_DENSITY

# Atoms per frame: 50 times the largest glass (~2e4 atoms) an MLIP melt-quench makes here, ~100
# MB of text per frame. A file header may claim more; nothing is allocated for it.
MAX_ATOMS = 1_000_000

# Contacts (half neighbour list) one search may return. Each costs 80-150 bytes between vesin,
# the index conversion and the speciation arrays (measured: 9.2e6 contacts, +0.7 GB; 1.4e7,
# 1.2 GB in all), so 1.6-3 GB at the limit. A 10^6-atom glass has ~4e6 at the default
# cutoffs, a 4 x 10^5-atom glass ~2e7 at the 8 Å maximum cutoff (`cutoffs.MAX_CUTOFF_A`).
MAX_PAIRS = 2e7

# Coordinates and box bounds in files (Å). A simulation cell of 10^6 Å (0.1 mm) holds ~10^16
# atoms at glass density; larger values (1e308 in the hostile trial) are corrupt data that
# overflow the cell arithmetic.
MAX_COORD_A = 1e6

# One line of a text file (LAMMPS log or dump, extxyz). Real lines are < 1 KiB (a thermo row
# of 30 columns, an extxyz comment with a lattice and a dozen properties); a file without line
# breaks must not be read into memory whole.
MAX_LINE_BYTES = 1 << 20


# Text of one frame (atom lines of a LAMMPS dump or an extxyz frame): 256 bytes per atom at
# `MAX_ATOMS`; real dumps write 40-200 (id, type, coordinates, forces, velocities). The parsers
# hold about three copies of it.
MAX_FRAME_BYTES = 256 << 20


class LineTooLong(ValueError):
    """A line longer than `MAX_LINE_BYTES` (the caller names the file and line)."""

    def __init__(self) -> None:
        super().__init__(
            f"line longer than {MAX_LINE_BYTES // 1024} KiB (not a text file of this kind?)"
        )


def read_line(fh: IO[bytes]) -> bytes:
    """The next line of ``fh`` (b"" at the end), reading at most `MAX_LINE_BYTES` + 1 bytes.

    Raises LineTooLong for a longer line, before it is read whole.
    """
    raw = fh.readline(MAX_LINE_BYTES + 1)
    if len(raw) > MAX_LINE_BYTES:
        raise LineTooLong()
    return raw


def first_bad_coordinate(values: NDArray[np.floating]) -> int | None:
    """Row of the first value that is NaN, infinite or beyond ±`MAX_COORD_A`, else None."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        ok = np.abs(arr) <= MAX_COORD_A  # False for NaN
    if ok.all():
        return None
    rows = ok.reshape(len(arr), -1).all(axis=1)
    return int(np.flatnonzero(~rows)[0])
