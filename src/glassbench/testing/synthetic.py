"""Synthetic Na4P2S(7-x)O(x) frames of intact P2X7 dimers, for tests, benchmarks and examples.

Not a glass model: P2X7 dimers (X = S or O) and Na ions dropped at random positions and
orientations into a periodic box at a given density, with a minimum distance between atoms of
different molecules. Good enough to give the analysis a realistic number of neighbours, with a
speciation known by construction (every P is P1, one bridging anion per dimer).

`glassbench.runners.structure.random_glass` is the builder of random *atomic* cells (the
melt-quench starting structure); `dimer_glass` keeps its composition rules and cell size
(`composition_counts`, `cubic_cell_length`: same masses, same amu/A^3 -> g/cm^3 constant) and
differs only in what it places: rigid dimers instead of single atoms, which the analysis tests
need and independent atoms cannot give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from glassbench.chemistry import ATOMIC_NUMBERS
from glassbench.runners.structure import composition_counts, cubic_cell_length

_BOND = {16: 2.05, 8: 1.55}  # P-X bond length by anion Z, Å
_TETRA = np.degrees(np.arccos(-1.0 / 3.0))  # 109.47°


@dataclass(frozen=True)
class Frame:
    numbers: NDArray[np.int64]
    positions: NDArray[np.float64]
    cell: NDArray[np.float64]
    pbc: bool = True


def tetrahedral_directions(u: ArrayLike, phase: float = 0.0) -> NDArray[np.float64]:
    """Three unit vectors at the tetrahedral angle to ``u`` and 120° apart around it."""
    axis = np.asarray(u, dtype=float)
    axis = axis / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    t = np.radians(_TETRA)
    phis = phase + np.radians([0.0, 120.0, 240.0])
    return np.array(
        [np.cos(t) * axis + np.sin(t) * (np.cos(p) * e1 + np.sin(p) * e2) for p in phis]
    )


def p2x7(anions: ArrayLike, bridge_angle_deg: float = 110.0) -> NDArray[np.float64]:
    """Positions of a P2X7 dimer: order P, P, bridging X, 3 terminal X on each P.

    ``anions``: the seven anion atomic numbers in that order (bridging first).
    """
    z = np.asarray(anions)
    half = np.radians(bridge_angle_deg) / 2
    xb = np.zeros(3)
    d1 = np.array([np.sin(half), np.cos(half), 0.0])
    d2 = np.array([-np.sin(half), np.cos(half), 0.0])
    p1, p2 = xb + _BOND[int(z[0])] * d1, xb + _BOND[int(z[0])] * d2
    out = [p1, p2, xb]
    for p, d, zt in ((p1, d1, z[1:4]), (p2, d2, z[4:7])):
        # Seen from P, the bridging anion lies along -d.
        for v, zz in zip(tetrahedral_directions(-d, phase=0.3), zt, strict=True):
            out.append(p + _BOND[int(zz)] * v)
    return np.array(out)


def _random_rotations(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return np.asarray(q, dtype=np.float64)


def skewed_basis(cell: ArrayLike) -> NDArray[np.float64]:
    """The same lattice described by a strongly skewed cell (a unimodular change of basis).

    Atoms valid in ``cell`` are valid, unchanged, in the returned cell: the periodic structure
    is identical, only its description differs (angles of about 55 and 35 degrees for a cube).
    """
    basis = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=np.float64)
    return np.asarray(basis @ np.asarray(cell, dtype=np.float64), dtype=np.float64)


class _Placer:
    """Random sequential placement in a cubic periodic box, keeping a minimum distance."""

    def __init__(self, length: float, rng: np.random.Generator, batch: int = 64):
        self.length = length
        self.rng = rng
        self.batch = batch
        self.fixed = np.zeros((0, 3))
        self.pending = np.zeros((0, 3))
        self.tree: Any = None

    def _rebuild(self) -> None:
        from scipy.spatial import cKDTree

        self.fixed = np.concatenate([self.fixed, self.pending])
        self.pending = np.zeros((0, 3))
        self.tree = cKDTree(self.fixed, boxsize=self.length)

    def place(
        self, local: NDArray[np.float64], limit: float, floor: float, max_batches: int
    ) -> NDArray[np.float64]:
        """Place ``local`` (a rigid molecule) at a random position and orientation.

        The first candidate at least ``limit`` from every placed atom wins; when none is found
        in ``max_batches`` batches the best one seen is taken if it is at least ``floor`` away,
        which lets the box fill up past the jamming density of pure random placement.
        """
        b, m = self.batch, len(local)
        best: NDArray[np.float64] | None = None
        best_d = -1.0
        for _ in range(max_batches):
            rot = _random_rotations(self.rng, b)
            cand = np.einsum("kj,bij->bki", local, rot) + self.rng.random((b, 1, 3)) * self.length
            cand %= self.length
            dmin = np.full(b, np.inf)
            if self.tree is not None:
                d, _ = self.tree.query(cand.reshape(-1, 3))
                dmin = d.reshape(b, m).min(axis=1)
            if len(self.pending):
                # Atoms placed since the last tree build are checked directly.
                diff = cand[:, :, None, :] - self.pending[None, None, :, :]
                diff -= self.length * np.round(diff / self.length)
                d2 = np.einsum("bkpi,bkpi->bkp", diff, diff).min(axis=(1, 2))
                dmin = np.minimum(dmin, np.sqrt(d2))
            k = int(np.argmax(dmin))
            if dmin[k] > best_d:
                best, best_d = cand[k], float(dmin[k])
            if best_d >= limit:
                break
        if best is None or best_d < floor:
            raise RuntimeError("cell too full")
        self.pending = np.concatenate([self.pending, best])
        if len(self.pending) > 150:
            self._rebuild()
        return best


def _relax_overlaps(
    pos: NDArray[np.float64],
    molecule: NDArray[np.int64],
    limit: NDArray[np.float64],
    length: float,
    max_steps: int,
) -> tuple[NDArray[np.float64], float]:
    """Push apart atoms of different molecules closer than ``limit[i] + limit[j]`` (halves).

    Molecules are held together by stiff springs on every intramolecular pair, so they move
    almost rigidly. Plain gradient descent with a step cap: crude, but only overlaps move.
    Returns the positions and the worst remaining overlap in Å.
    """
    from vesin import NeighborList

    # Intramolecular springs: all pairs within a molecule at their initial (ideal) distances.
    starts = np.flatnonzero(np.r_[True, molecule[1:] != molecule[:-1]])
    ends = np.r_[starts[1:], len(molecule)]
    sa_l, sb_l = [], []
    for a0, b0 in zip(starts, ends, strict=True):
        if b0 - a0 > 1:
            ia, ib = np.triu_indices(b0 - a0, k=1)
            sa_l.append(ia + a0)
            sb_l.append(ib + a0)
    sa = np.concatenate(sa_l) if sa_l else np.zeros(0, dtype=np.int64)
    sb = np.concatenate(sb_l) if sb_l else np.zeros(0, dtype=np.int64)

    def min_image(v: NDArray[np.float64]) -> NDArray[np.float64]:
        return v - length * np.round(v / length)

    rest = np.linalg.norm(min_image(pos[sb] - pos[sa]), axis=1)
    n = len(pos)
    cell = np.eye(3) * length
    # Pushing towards a slightly larger distance than required ends the descent in far fewer
    # steps than creeping up on the exact limit.
    margin = 0.1
    nl = NeighborList(cutoff=float(2 * limit.max()) + margin, full_list=False, n_threads=1)
    worst = np.inf
    for _ in range(max_steps):
        i, j, vec, d = nl.compute(pos % length, cell, True, quantities="ijDd")
        want = limit[i] + limit[j]
        other = molecule[i] != molecule[j]
        short = other & (d < want)
        worst = float((want[short] - d[short]).max()) if short.any() else 0.0
        if worst < 0.01:
            break
        bad = other & (d < want + margin)
        i, j, vec, d, want = i[bad], j[bad], vec[bad], d[bad], want[bad] + margin
        push = ((want - d) / np.maximum(d, 1e-6))[:, None] * vec
        sv = min_image(pos[sb] - pos[sa])
        sd = np.linalg.norm(sv, axis=1)
        pull = ((sd - rest) / sd)[:, None] * sv
        # Descent on overlap^2 + springs, with separate rates: the springs (up to 8 per atom)
        # need a small one to stay stable, overlaps converge faster with a larger one.
        step = np.empty_like(pos)
        for k in range(3):
            step[:, k] = 0.25 * (
                np.bincount(j, push[:, k], minlength=n) - np.bincount(i, push[:, k], minlength=n)
            ) + 0.15 * (
                np.bincount(sa, pull[:, k], minlength=n) - np.bincount(sb, pull[:, k], minlength=n)
            )
        norm = np.linalg.norm(step, axis=1)
        step *= np.minimum(1.0, 0.05 / np.maximum(norm, 1e-12))[:, None]
        pos = pos + step
    return pos, worst


def dimer_glass(
    x: float = 0.0,
    formula_units: int = 154,
    *,
    density_g_cm3: float = 2.2,
    cell_shape: str = "cubic",
    min_distance: float = 2.8,
    na_min_distance: float = 2.5,
    seed: int = 0,
    max_steps: int = 2000,
) -> Frame:
    """A random Na4P2S(7-x)O(x) frame: one P2X7 dimer and four Na per formula unit.

    O replaces S at random anion sites; ``x * formula_units`` must be a whole number of O atoms
    (ValueError otherwise, as for `glassbench.runners.structure.random_glass`).
    154 formula units give 2002 atoms. Dimers, then Na, are dropped at the best of 64 random
    positions and orientations, then overlaps are relaxed away until atoms of different dimers
    are at least ``min_distance`` apart and Na at least ``na_min_distance`` from anything
    (to 0.01 Å; random placement alone jams well below glass density). ``cell_shape="skewed"`` describes
    the same cubic lattice by `skewed_basis`. Raises RuntimeError if overlaps remain.
    """
    if cell_shape not in ("cubic", "skewed"):
        raise ValueError(f"unknown cell shape {cell_shape!r} (cubic, skewed)")
    counts = composition_counts(x, formula_units)
    length = cubic_cell_length(counts, density_g_cm3)
    rng = np.random.default_rng(seed)
    n_anion = 7 * formula_units
    anion_z = np.full(n_anion, ATOMIC_NUMBERS["S"])
    anion_z[rng.choice(n_anion, size=counts["O"], replace=False)] = ATOMIC_NUMBERS["O"]
    placer = _Placer(length, rng)

    positions: list[NDArray[np.float64]] = []
    numbers: list[int] = []
    for k in range(formula_units):
        anions = anion_z[7 * k : 7 * k + 7]
        local = p2x7(anions, bridge_angle_deg=110.0 if anions[0] == 16 else 130.0)
        positions.append(placer.place(local - local.mean(axis=0), min_distance, 0.0, 1))
        numbers += [15, 15, *anions.tolist()]
    for _ in range(4 * formula_units):
        positions.append(placer.place(np.zeros((1, 3)), na_min_distance, 0.0, 1))
        numbers.append(11)
    z = np.asarray(numbers, dtype=np.int64)
    molecule = np.concatenate([np.full(len(p), k) for k, p in enumerate(positions)])
    # Each atom keeps half the required distance: Na-Na and Na-X give na_min_distance,
    # X-X across dimers min_distance (Na-X at the mean is slightly more than required).
    half = np.where(z == 11, na_min_distance / 2, min_distance / 2)
    # Intramolecular pairs are left out of the overlap test, so joined pairs Na-X only need
    # ``na_min_distance``: use the smaller half for Na and let the dimers take the rest.
    pos, worst = _relax_overlaps(np.concatenate(positions), molecule, half, length, max_steps)
    if worst > 0.01:
        raise RuntimeError(
            f"could not fit {formula_units} formula units at {density_g_cm3} g/cm3 with "
            f"min_distance {min_distance} Å, na_min_distance {na_min_distance} Å "
            f"(overlap {worst:.2f} Å left)"
        )
    cell = np.eye(3) * length
    if cell_shape == "skewed":
        cell = skewed_basis(cell)
    # Wrap into the (possibly skewed) cell so that files look like MD output.
    frac = pos @ np.linalg.inv(cell)
    pos = (frac - np.floor(frac)) @ cell
    return Frame(z, pos, cell, True)
