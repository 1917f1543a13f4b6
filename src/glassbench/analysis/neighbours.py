"""One half neighbour list per frame (vesin), for any cell: triclinic, small, or none at all."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

# vesin objects keep internal buffers; one per thread and cutoff so that concurrent analyses
# (threaded dask workers) never share one.
_local = threading.local()


def _neighbor_list(cutoff: float):  # -> vesin.NeighborList
    cache: dict[float, object] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    nl = cache.get(cutoff)
    if nl is None:
        from vesin import NeighborList

        # One thread: frames are small and analyses run in parallel at a coarser grain.
        nl = NeighborList(cutoff=cutoff, full_list=False, n_threads=1)
        cache[cutoff] = nl
    return nl


def normalise_geometry(
    positions: ArrayLike, cell: ArrayLike | None, pbc: bool | ArrayLike
) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
    """Validate shapes and return (positions, cell, pbc) as float64/bool arrays.

    A non-periodic direction may have a zero cell vector (ASE writes a zero cell for molecules);
    it is replaced by a vector perpendicular to the others, which the neighbour search only
    uses to lay out its bins.
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
    if not np.isfinite(box).all():
        raise ValueError("cell contains NaN or infinity")
    periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()

    lengths = np.linalg.norm(box, axis=1)
    if periodic.any():
        if (lengths[periodic] == 0).any():
            raise ValueError("periodic direction with a zero cell vector")
        if not periodic.all():
            box = _fill_open_directions(box, periodic, pos)
        if abs(np.linalg.det(box)) < 1e-9 * max(lengths.max(), 1.0) ** 3:
            raise ValueError("cell is singular (zero volume)")
    else:
        # Fully open: vesin accepts any box here, zero included.
        box = np.zeros((3, 3)) if abs(np.linalg.det(box)) < 1e-12 else box
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
    positions: FloatArray, cell: FloatArray, pbc: NDArray[np.bool_], cutoff: float
) -> Pairs:
    """All pairs within ``cutoff`` (inclusive), each listed once, over periodic images."""
    n = len(positions)
    if n == 0 or cutoff <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty.copy(), np.zeros(0), np.zeros((0, 3), dtype=np.int32))
    # Pad so that a pair exactly at the cutoff is found; the caller filters with <=.
    padded = cutoff * (1 + 1e-9) + 1e-9
    nl = _neighbor_list(padded)
    i, j, s, d = nl.compute(  # type: ignore[attr-defined]
        positions, cell, pbc.tolist(), quantities="ijSd", copy=True
    )
    return Pairs(i.astype(np.int64), j.astype(np.int64), d, s)
