"""One half neighbour list per frame (vesin), for any cell: triclinic, small, or none at all."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

IntArray = NDArray[np.intp]
FloatArray = NDArray[np.float64]

# vesin objects keep internal buffers; one per thread and cutoff so that concurrent analyses
# (threaded dask workers) never share one.
_local = threading.local()


def _neighbor_list(cutoff: float) -> Any:
    cache: dict[float, Any] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    nl = cache.get(cutoff)
    if nl is None:
        from vesin import NeighborList

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
    uses to lay out its bins. Raises ValueError for bad shapes, NaN, or a singular periodic cell.
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
            box = _fill_open_directions(box, np.array(periodic), pos)
            rows = box.tolist()
            lengths = [math.sqrt(x * x + y * y + z * z) for x, y, z in rows]
        if abs(_volume(rows)) < 1e-9 * max(*lengths, 1.0) ** 3:
            raise ValueError("cell is singular (zero volume)")
    elif abs(_volume(rows)) < 1e-12:
        # Fully open: vesin accepts any box here, zero included, but not a singular nonzero one.
        box = np.zeros((3, 3))
    return pos, box, periodic


def _fill_open_directions(
    box: FloatArray, periodic: NDArray[np.bool_], pos: FloatArray
) -> FloatArray:
    box = box.copy()
    span = float(np.ptp(pos, axis=0).max()) + 1.0 if len(pos) else 1.0
    for k in np.flatnonzero(~periodic):
        others = [box[m] for m in range(3) if m != k]
        normal = np.cross(others[0], others[1])
        norm = np.linalg.norm(normal)
        if norm == 0:
            # Two open directions: any vector not parallel to the periodic one will do.
            ref = box[np.flatnonzero(periodic)[0]]
            trial = np.cross(ref, [1.0, 0.0, 0.0])
            if np.linalg.norm(trial) < 1e-9 * np.linalg.norm(ref):
                trial = np.cross(ref, [0.0, 1.0, 0.0])
            normal, norm = trial, np.linalg.norm(trial)
        if np.linalg.norm(box[k]) == 0 or abs(np.dot(box[k], normal)) < 1e-9:
            box[k] = normal / norm * span
    return box


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

    ``copy=False`` saves a copy of every array, but ``distances`` and ``shifts`` are then views
    into a per-thread buffer, valid only until the next call with the same cutoff.
    """
    n = len(positions)
    if n == 0 or cutoff <= 0:
        empty = np.zeros(0, dtype=np.intp)
        return Pairs(empty, empty.copy(), np.zeros(0), np.zeros((0, 3), dtype=np.int32))
    # Pad so that a pair exactly at the cutoff is found; the caller filters with <=.
    padded = cutoff * (1 + 1e-9) + 1e-9
    nl = _neighbor_list(padded)
    i, j, s, d = nl.compute(positions, cell, pbc, quantities="ijSd", copy=copy)
    # vesin gives uint64 indices; numpy gathers with intp several times faster.
    return Pairs(i.astype(np.intp), j.astype(np.intp), d, s)
