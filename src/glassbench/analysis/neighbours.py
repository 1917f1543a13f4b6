"""One half neighbour list per frame (vesin), for any cell: triclinic, small, or none at all.

Every analysis of every path (``analyze``, ingests, stored frames, the runner) builds its
neighbour list through `half_pairs`, so the bounds of `check_neighbour_load` (atoms, density,
list size; numbers in ``analysis/limits.py``) hold for all of them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from glassbench.analysis.limits import MAX_ATOMS, MAX_DENSITY, MAX_LOCAL_DENSITY, MAX_PAIRS

IntArray = NDArray[np.intp]
FloatArray = NDArray[np.float64]

# vesin objects keep internal buffers; one per thread and cutoff so that concurrent analyses
# (threaded dask workers) never share one.
_local = threading.local()


def _import_vesin() -> Any:
    """vesin's NeighborList, without vesin importing torch or cupy.

    vesin probes for torch/cupy at import (for GPU tensors we never pass); importing torch
    costs seconds and ~200 MiB per process, in every ingest. Hide them during the import
    unless the process has already loaded them.
    """
    import sys

    hidden = [m for m in ("torch", "cupy") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]
    try:
        from vesin import NeighborList
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
    return NeighborList


def _neighbor_list(cutoff: float) -> Any:
    cache: dict[float, Any] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    nl = cache.get(cutoff)
    if nl is None:
        NeighborList = _import_vesin()
        # One thread: frames are small and analyses run in parallel at a coarser grain.
        nl = NeighborList(cutoff=cutoff, full_list=False, n_threads=1)
        cache[cutoff] = nl
    return nl


def _volume(box: list[list[float]]) -> float:
    (a, b, c), (d, e, f), (g, h, k) = box
    return a * (e * k - f * h) - b * (d * k - f * g) + c * (d * h - e * g)


def normalise_geometry(
    positions: ArrayLike, cell: ArrayLike | None, pbc: bool | ArrayLike
) -> tuple[FloatArray, FloatArray, list[bool]]:
    """Validate shapes and return (positions, cell, pbc) as float64 arrays and three bools.

    A non-periodic direction may have a zero cell vector (ASE writes a zero cell for molecules);
    it is replaced by a vector perpendicular to the others, which the neighbour search only
    uses to lay out its bins. Positions are wrapped into the cell along periodic directions:
    MD trajectories are often unwrapped, and vesin is several times slower on atoms outside
    the cell. Raises ValueError for bad shapes, NaN, or a singular periodic cell.
    """
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {pos.shape}")
    if not np.isfinite(pos).all():
        raise ValueError("positions contain NaN or infinity")
    box = np.zeros((3, 3)) if cell is None else np.array(cell, dtype=np.float64)
    if box.shape == (3,):
        box = np.diag(box)
    if box.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3) or (3,), got {box.shape}")
    rows = box.tolist()
    # Plain floats: for a 3x3 cell this is several times faster than numpy.linalg.
    lengths = [math.sqrt(x * x + y * y + z * z) for x, y, z in rows]
    if not all(math.isfinite(v) for v in lengths):
        raise ValueError("cell contains NaN or infinity")
    periodic = [bool(v) for v in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))]

    if any(periodic):
        if any(p and v == 0 for p, v in zip(periodic, lengths, strict=True)):
            raise ValueError("periodic direction with a zero cell vector")
        if not all(periodic):
            box = _fill_open_directions(box, periodic, pos)
            rows = box.tolist()
            lengths = [math.sqrt(x * x + y * y + z * z) for x, y, z in rows]
        volume = _volume(rows)
        if abs(volume) < 1e-9 * lengths[0] * lengths[1] * lengths[2]:
            raise ValueError("cell is singular (zero volume)")
        pos = _wrap(pos, box, rows, volume, periodic)
    else:
        # Fully open: the cell plays no part (vesin is given a zero box).
        box = np.zeros((3, 3))
    return pos, box, periodic


def _open_basis(box: FloatArray, periodic: list[bool]) -> FloatArray:
    """Orthonormal rows spanning the directions perpendicular to every periodic cell vector."""
    per: list[FloatArray] = [box[m] for m in range(3) if periodic[m]]
    if len(per) == 0:
        return np.eye(3)
    if len(per) == 2:
        n = np.cross(per[0], per[1])
        return (n / np.linalg.norm(n))[None, :]
    a = per[0] / np.linalg.norm(per[0])
    helper = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.8 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(a, helper)
    e1 /= np.linalg.norm(e1)
    return np.array([e1, np.cross(a, e1)])


def _fill_open_directions(box: FloatArray, periodic: list[bool], pos: FloatArray) -> FloatArray:
    # Open cell vectors are replaced by the perpendicular directions, as long as the atoms'
    # extent along them: vesin uses them only to lay out its bins.
    box = box.copy()
    basis = _open_basis(box, periodic)
    for k, n in zip([m for m in range(3) if not periodic[m]], basis, strict=True):
        t = pos @ n
        box[k] = n * (float(np.ptp(t)) + 1.0 if len(t) else 1.0)
    return box


# Beyond this extent along an open direction vesin's bins blow up (it hangs or dies of SIGFPE
# near 1e5-1e6 Å), so empty stretches are squeezed out first.
_MAX_OPEN_EXTENT = 500.0


def _compact_open(
    pos: FloatArray, box: FloatArray, periodic: list[bool], cutoff: float
) -> tuple[FloatArray, FloatArray]:
    """Close gaps wider than ``cutoff`` along open directions, keeping every contact.

    Along a direction perpendicular to all periodic vectors, two atoms (and all their periodic
    images) are at least as far apart as their separation along it. Shrinking each gap wider
    than ``cutoff + 1`` to exactly that therefore creates no contact and breaks none.
    """
    basis = _open_basis(box, periodic)
    moved = False
    for n in basis:
        t = pos @ n
        if not len(t) or np.ptp(t) <= _MAX_OPEN_EXTENT:
            continue
        order = np.argsort(t)
        excess = np.maximum(np.diff(t[order]) - (cutoff + 1.0), 0.0)
        delta = np.empty_like(t)
        delta[order] = np.concatenate([[0.0], np.cumsum(excess)])
        pos = pos - delta[:, None] * n
        moved = True
    if moved and not all(periodic):
        box = box if not any(periodic) else _fill_open_directions(box, periodic, pos)
    return pos, box


def _wrap(
    pos: FloatArray, box: FloatArray, rows: list[list[float]], volume: float, periodic: list[bool]
) -> FloatArray:
    (a, b, c), (d, e, f), (g, h, k) = rows
    # Inverse of the row-vector cell from its adjugate: cheaper than numpy.linalg for 3 x 3.
    inv = (
        np.array(
            [
                [e * k - f * h, c * h - b * k, b * f - c * e],
                [f * g - d * k, a * k - c * g, c * d - a * f],
                [d * h - e * g, b * g - a * h, a * e - b * d],
            ]
        )
        / volume
    )
    frac = pos @ inv
    cols = [m for m in range(3) if periodic[m]]
    sub = frac[:, cols]
    if not len(pos) or (sub.min() >= 0.0 and sub.max() < 1.0):
        return pos
    frac[:, cols] = sub - np.floor(sub)
    return frac @ box


# vesin's MAX_NUMBER_OF_CELLS (vesin/src/cpu_cell_list.cpp, 0.6): a finer bin grid is scaled
# down to about this many bins without keeping one bin per direction, so a very elongated box
# (e.g. 1e4 x 1e4 x 2 A) gets zero bins along one axis and vesin dies of SIGFPE (x % 0).
_VESIN_MAX_CELLS = 1e5
# A box far thinner than the cutoff along one direction (a sheared or corrupted cell) makes
# vesin visit 2 ceil(cutoff / width) + 1 image cells along it for every bin: uninterruptible
# C++ that runs for hours, or billions of pairs. The limits are far above physical cells (a
# glass of N atoms: ~10 N pair candidates and ~6 N pairs).
_MAX_WORK = 1e9  # pair candidates vesin would test (or 5000 per atom for huge systems)
_MAX_PAIRS = 1e8


def _check_vesin_box(box: FloatArray, cutoff: float, n_atoms: int) -> None:
    """Raise ValueError for a periodic box that would crash vesin or make it run away."""
    box = np.asarray(box, dtype=float)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        volume = abs(float(np.linalg.det(box)))
        faces = [np.linalg.norm(np.cross(box[(m + 1) % 3], box[(m + 2) % 3])) for m in range(3)]
    if volume == 0.0:
        return  # fully open: vesin bins the atoms' bounding box
    if not math.isfinite(volume):
        raise ValueError("cell too large for the neighbour search (its volume overflows)")
    widths = [volume / float(f) if f > 0 else math.inf for f in faces]
    described = " x ".join(f"{w:.4g}" for w in widths)
    elongated = ValueError(
        f"cell too elongated for the neighbour search (distances between faces {described} "
        f"A at cutoff {cutoff:.3g} A)"
    )
    if not all(0.0 < w < math.inf for w in widths):
        raise elongated
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        n = [max(1.0, float(np.trunc(w / cutoff))) for w in widths]
        total = n[0] * n[1] * n[2]
        if total > _VESIN_MAX_CELLS:  # vesin's rescaling of the grid (n >= 1, finite)
            ratio_xy, ratio_yz = np.float64(n[0]) / n[1], np.float64(n[1]) / n[2]
            nz = float(np.trunc(np.cbrt(_VESIN_MAX_CELLS / (ratio_xy * ratio_yz * ratio_yz))))
            n = [
                float(np.trunc(ratio_xy * np.trunc(ratio_yz * nz))),
                float(np.trunc(ratio_yz * nz)),
                nz,
            ]
    if not all(math.isfinite(v) and v >= 1 for v in (total, *n)):
        raise elongated
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        images = math.prod(
            2.0 * max(1.0, math.ceil(cutoff * k / w)) + 1.0 for k, w in zip(n, widths, strict=True)
        )
        bins = n[0] * n[1] * n[2]
        work = images * max(bins, n_atoms * n_atoms / bins)
        pairs = n_atoms * n_atoms * (4.0 / 3.0) * math.pi * cutoff**3 / (2.0 * volume)
    if not work <= max(_MAX_WORK, 5e3 * n_atoms) or not pairs <= _MAX_PAIRS:
        raise ValueError(
            f"cell too thin for the neighbour search (distances between faces {described} A "
            f"at cutoff {cutoff:.3g} A)"
        )


# Local density is judged in bins no thinner than this (Å): a real glass holds ~1.2 atoms in
# 3 x 3 x 3 Å^3, never the 27 that `MAX_LOCAL_DENSITY` allows there.
_DENSITY_BIN_A = 3.0
# Bins per direction (bin keys fit in 64 bits); coarser bins only loosen the estimate.
_MAX_BINS_PER_AXIS = 2**20


@dataclass(frozen=True)
class _Bins:
    """Atoms binned for the density check and the contact estimate."""

    index: NDArray[np.int64]  # (N, 3) bin of every atom
    counts: list[int]  # bins per direction
    # per direction: {bin offset: multiplicity} of the bins within the cutoff, periodic
    # images included (a cell thinner than the cutoff is met through several images)
    reach: list[dict[int, int]]
    periodic: list[bool]
    bin_volume: float  # Å^3


def _bins(pos: FloatArray, box: FloatArray, periodic: list[bool], cutoff: float) -> _Bins | None:
    """Bins at least ``max(cutoff, 3 Å)`` wide (None for a cell whose volume overflows).

    Periodic directions are cut into whole fractions of the cell (one bin when the cell is
    thinner than that); open directions into bins of that width from the lowest atom.
    Open cell rows are perpendicular to the periodic ones (`normalise_geometry`).
    """
    width = max(cutoff, _DENSITY_BIN_A)
    box = np.array(box, dtype=np.float64)
    index = np.zeros((len(pos), 3), dtype=np.int64)
    counts = [1, 1, 1]
    reach: list[dict[int, int]] = [{0: 1}, {0: 1}, {0: 1}]
    for k in range(3):
        if periodic[k]:
            continue
        norm = float(np.linalg.norm(box[k]))
        unit = box[k] / norm if norm > 0 else np.eye(3)[k]
        t = pos @ unit
        t = t - t.min()
        w = max(width, float(t.max()) / (_MAX_BINS_PER_AXIS - 1))
        index[:, k] = np.floor(t / w).astype(np.int64)
        counts[k] = int(index[:, k].max()) + 1
        # The open row becomes exactly the binned extent, so the cell volume is the bins'.
        box[k] = unit * w * counts[k]
        reach[k] = {-1: 1, 0: 1, 1: 1}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        volume = abs(float(np.linalg.det(box)))
    if not (0.0 < volume < math.inf):
        return None  # `_check_vesin_box` words it
    if any(periodic):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            frac = pos @ np.linalg.inv(box)
        for k in range(3):
            if not periodic[k]:
                continue
            face = float(np.linalg.norm(np.cross(box[(k + 1) % 3], box[(k + 2) % 3])))
            face_width = volume / face if face > 0 else math.inf
            if not (0.0 < face_width < math.inf):
                return None  # `_check_vesin_box` words it
            n = int(min(max(1.0, math.floor(face_width / width)), _MAX_BINS_PER_AXIS))
            f = frac[:, k] - np.floor(frac[:, k])
            index[:, k] = np.clip((f * n).astype(np.int64), 0, n - 1)
            counts[k] = n
            if n == 1:  # one bin, met through 2m + 1 images
                reach[k] = {0: 2 * math.ceil(cutoff / face_width) + 1}
            else:  # bins at least `cutoff` wide: the next one on each side
                reach[k] = {}
                for off in (-1, 0, 1):
                    reach[k][off % n] = reach[k].get(off % n, 0) + 1
    return _Bins(index, counts, reach, list(periodic), volume / math.prod(counts))


def check_neighbour_load(
    pos: FloatArray, box: FloatArray, periodic: list[bool], cutoff: float
) -> None:
    """Raise ValueError before a neighbour search that no real structure would need.

    Refused: more than `MAX_ATOMS` atoms; an atom number density above `MAX_DENSITY` in a
    periodic cell (far too small, or lengths not in Å) or above `MAX_LOCAL_DENSITY` in any bin
    of at least (3 Å)^3 (atoms piled on each other); more than `MAX_PAIRS` contacts by
    `estimate_contacts`. ``pos``, ``box``,
    ``periodic`` as `normalise_geometry` returns them.
    """
    estimate = _load(pos, box, periodic, cutoff, exact=False)
    if estimate > MAX_PAIRS:
        raise ValueError(
            f"the neighbour list at {cutoff:.3g} Å would hold ~{estimate:.2g} contacts for "
            f"{len(pos)} atoms, above the limit of {MAX_PAIRS:.0e} (~3 GB of memory): use "
            "shorter cutoffs or a smaller structure"
        )


def estimate_contacts(
    pos: FloatArray, box: FloatArray, periodic: list[bool], cutoff: float
) -> float:
    """Estimated size of the half list within ``cutoff``, without building it.

    For every atom, the atoms in the bins around it (periodic images included) times the
    fraction of that volume inside the cutoff sphere, halved: n rho 4/3 pi rc^3 / 2 for a
    uniform structure, more where atoms crowd. Raises ValueError as `check_neighbour_load`
    does for too many atoms or an unphysical density.
    """
    return _load(pos, box, periodic, cutoff, exact=True)


def _load(
    pos: FloatArray, box: FloatArray, periodic: list[bool], cutoff: float, *, exact: bool
) -> float:
    n = len(pos)
    if n > MAX_ATOMS:
        raise ValueError(f"{n} atoms in one frame, above the limit of {MAX_ATOMS:,}")
    if n == 0 or cutoff <= 0:
        return 0.0
    bins = _bins(pos, box, periodic, cutoff)
    if bins is None:
        return 0.0  # a cell whose volume overflows: `_check_vesin_box` words it
    nb = bins.counts
    keys = (bins.index[:, 0] * nb[1] + bins.index[:, 1]) * nb[2] + bins.index[:, 2]
    occupied, per_bin = np.unique(keys, return_counts=True)
    if all(periodic):
        cell_volume = bins.bin_volume * math.prod(bins.counts)
        if n > MAX_DENSITY * cell_volume:
            raise ValueError(
                f"{n} atoms in a cell of {cell_volume:.3g} Å^3: {n / cell_volume:.3g} "
                f"atoms/Å^3, above the physical maximum of {MAX_DENSITY:g} (a Na-P-S-O glass "
                "has ~0.045): a cell far too small, or lengths not in Å"
            )
    densest = int(per_bin.max())
    density = densest / bins.bin_volume
    # A bin thinner than 3 Å (a periodic direction shorter than that) is judged as a
    # (3 Å)^3 one: a few atoms more or less in a small bin are chance, not density.
    if densest > MAX_LOCAL_DENSITY * max(bins.bin_volume, _DENSITY_BIN_A**3):
        raise ValueError(
            f"{densest} atoms within one {bins.bin_volume:.3g} Å^3 region: {density:.3g} "
            f"atoms/Å^3, above the physical maximum of {MAX_LOCAL_DENSITY:g} there (a "
            "Na-P-S-O glass has ~0.045): atoms piled on each other"
        )
    sphere = 4.0 / 3.0 * math.pi * cutoff**3
    bound = n * density * sphere / 2.0  # every atom amid the densest bin's density
    if not exact and bound <= MAX_PAIRS:
        return bound
    # Neighbourhood of every occupied bin, periodic images included (at most 27 offsets).
    cells = np.stack(np.unravel_index(occupied, nb), axis=1)
    around = np.zeros(len(occupied), dtype=np.float64)
    for o0, m0 in bins.reach[0].items():
        for o1, m1 in bins.reach[1].items():
            for o2, m2 in bins.reach[2].items():
                other = cells + np.array([o0, o1, o2])
                valid = np.ones(len(cells), dtype=bool)
                for k in range(3):
                    if bins.periodic[k]:
                        other[:, k] %= nb[k]
                    else:
                        valid &= (other[:, k] >= 0) & (other[:, k] < nb[k])
                key = (other[:, 0] * nb[1] + other[:, 1]) * nb[2] + other[:, 2]
                at = np.minimum(np.searchsorted(occupied, key), len(occupied) - 1)
                hit = valid & (occupied[at] == key)
                around += np.where(hit, per_bin[at], 0) * float(m0 * m1 * m2)
    volume = bins.bin_volume * math.prod(sum(r.values()) for r in bins.reach)
    return float(per_bin @ around) * sphere / volume / 2.0


@dataclass(frozen=True)
class Pairs:
    """Half list: each pair within the cutoff once, in either orientation.

    ``i == j`` appears for an atom bonded to its own periodic image (cells smaller than the
    cutoff), and one pair of atoms appears once per image it is bonded through.

    ``shifts[p]`` is the integer cell offset of atom ``j`` seen from atom ``i``:
    ``r_j - r_i + shifts @ cell`` is the bond vector.
    """

    i: IntArray
    j: IntArray
    distances: FloatArray
    shifts: NDArray[np.int32]


def half_pairs(
    positions: FloatArray, cell: FloatArray, pbc: list[bool], cutoff: float, *, copy: bool = True
) -> Pairs:
    """All pairs within ``cutoff`` (inclusive), each listed once, over periodic images.

    Raises ValueError, before any search, for a frame `check_neighbour_load` refuses (too many
    atoms, unphysical density, too many contacts) and for a cell vesin cannot search.

    ``copy=False`` saves a copy of every array, but ``distances`` and ``shifts`` are then views
    into a per-thread buffer, valid only until the next call with the same cutoff.
    """
    n = len(positions)
    if n == 0 or cutoff <= 0:
        empty = np.zeros(0, dtype=np.intp)
        return Pairs(empty, empty.copy(), np.zeros(0), np.zeros((0, 3), dtype=np.int32))
    if not all(pbc):
        positions, cell = _compact_open(positions, cell, pbc, cutoff)
    # Pad so that a pair exactly at the cutoff is found; the caller filters with <=.
    padded = cutoff * (1 + 1e-9) + 1e-9
    # Density and size first: a cell far too small is also "too thin" for vesin, and the
    # density is the cause to report.
    check_neighbour_load(positions, cell, pbc, padded)
    _check_vesin_box(cell, padded, n)
    nl = _neighbor_list(padded)
    i, j, s, d = nl.compute(positions, cell, pbc, quantities="ijSd", copy=copy)
    # vesin gives uint64 indices; numpy gathers with intp several times faster.
    return Pairs(i.astype(np.intp), j.astype(np.intp), d, s)
