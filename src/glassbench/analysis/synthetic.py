"""Synthetic Na4P2S(7-x)O(x) frames for benchmarks, examples and tests.

Not a glass model: P2X7 dimers (X = S or O) and Na ions dropped at random positions and
orientations into a cell at a given density, with a minimum distance between atoms of
different molecules. Good enough to give the analysis a realistic number of neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

_MASS = {11: 22.98976928, 15: 30.973762, 16: 32.06, 8: 15.999}
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
    u = np.asarray(u, dtype=float)
    u = u / np.linalg.norm(u)
    helper = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(u, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(u, e1)
    t = np.radians(_TETRA)
    phis = phase + np.radians([0.0, 120.0, 240.0])
    return np.array([np.cos(t) * u + np.sin(t) * (np.cos(p) * e1 + np.sin(p) * e2) for p in phis])


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
        for v, zz in zip(tetrahedral_directions(d, phase=0.3), zt, strict=True):
            out.append(p + _BOND[int(zz)] * v)
    return np.array(out)


def _random_rotation(rng: np.random.Generator) -> NDArray[np.float64]:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _cell_for(volume: float, shape: str) -> NDArray[np.float64]:
    if shape == "cubic":
        return np.eye(3) * volume ** (1 / 3)
    if shape == "triclinic":
        # a, b, c with alpha=75, beta=80, gamma=65 degrees: well away from orthorhombic.
        al, be, ga = np.radians([75.0, 80.0, 65.0])
        cx = np.cos(be)
        cy = (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
        unit = np.array(
            [[1.0, 0.0, 0.0], [np.cos(ga), np.sin(ga), 0.0], [cx, cy, np.sqrt(1 - cx**2 - cy**2)]]
        )
        return unit * (volume / abs(np.linalg.det(unit))) ** (1 / 3)
    raise ValueError(f"unknown cell shape {shape!r} (cubic, triclinic)")


def _min_image_dist(
    new: NDArray[np.float64], old: NDArray[np.float64], cell: NDArray[np.float64], inv: NDArray
) -> NDArray[np.float64]:
    # Nearest image in fractional coordinates: exact for orthorhombic cells, an upper bound
    # otherwise, which is all a placement rule needs.
    df = (new[:, None, :] - old[None, :, :]) @ inv
    df -= np.round(df)
    return np.linalg.norm(df @ cell, axis=-1)


def random_glass(
    x: float = 0.0,
    formula_units: int = 154,
    *,
    density_g_cm3: float = 2.2,
    cell_shape: str = "cubic",
    min_distance: float = 2.7,
    na_min_distance: float = 2.4,
    seed: int = 0,
    max_tries: int = 200_000,
) -> Frame:
    """A random Na4P2S(7-x)O(x) frame: one P2X7 dimer and four Na per formula unit.

    O replaces S at random anion sites; ``x * formula_units`` is rounded to whole O atoms.
    154 formula units give 2002 atoms. Dimers are placed first, at least ``min_distance`` from
    atoms of other dimers, then Na, at least ``na_min_distance`` from everything. Raises RuntimeError if the cell is too full to place a
    molecule in ``max_tries`` attempts.
    """
    rng = np.random.default_rng(seed)
    n_anion = 7 * formula_units
    n_o = round(x * formula_units)
    anion_z = np.full(n_anion, 16)
    anion_z[rng.choice(n_anion, size=n_o, replace=False)] = 8
    mass = formula_units * (4 * _MASS[11] + 2 * _MASS[15]) + sum(_MASS[int(z)] for z in anion_z)
    volume = mass * 1.66053906660 / density_g_cm3
    cell = _cell_for(volume, cell_shape)
    inv = np.linalg.inv(cell)

    placed_pos: list[NDArray[np.float64]] = []
    placed_z: list[int] = []
    all_pos = np.zeros((0, 3))
    tries = 0
    molecules = [
        (np.array([15, 15]), anion_z[7 * k : 7 * k + 7]) for k in range(formula_units)
    ] + [(np.array([11]), np.zeros(0, dtype=int))] * (4 * formula_units)
    for p_or_na, anions in molecules:
        if p_or_na[0] == 11:
            local, zs = np.zeros((1, 3)), [11]
        else:
            local = p2x7(anions, bridge_angle_deg=110.0 if anions[0] == 16 else 130.0)
            zs = [15, 15, *anions.tolist()]
        while True:
            tries += 1
            if tries > max_tries:
                raise RuntimeError(
                    f"could not place {len(molecules)} molecules at {density_g_cm3} g/cm3 "
                    f"with min_distance {min_distance} Å, na_min_distance {na_min_distance} Å"
                )
            pos = local @ _random_rotation(rng).T + rng.random(3) @ cell
            limit = na_min_distance if zs == [11] else min_distance
            if not len(all_pos) or _min_image_dist(pos, all_pos, cell, inv).min() >= limit:
                break
        placed_pos.append(pos)
        placed_z.extend(zs)
        all_pos = np.concatenate([all_pos, pos])
    positions = np.concatenate(placed_pos)
    # Wrap into the cell so that files look like MD output.
    frac = positions @ inv
    positions = (frac - np.floor(frac)) @ cell
    return Frame(np.asarray(placed_z, dtype=np.int64), positions, cell, True)
