"""Hand-built structural units with known speciation, and ways to put them in cells.

Geometry is built here from bond lengths and angles, independently of the package (which has
its own builders for synthetic glasses): P-S 2.05, P-O 1.55, P-P 2.25, S-S 2.05 Å.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

B_PS, B_PO, B_PP, B_SS = 2.05, 1.55, 2.25, 2.05
TETRA = np.arccos(-1.0 / 3.0)
Z = {"Na": 11, "P": 15, "S": 16, "O": 8, "Si": 14, "H": 1}

# Rows are cell vectors. Every lattice vector is longer than 14 Å: no unit (<= 9 Å across)
# meets its own image within the largest cutoff (3.6 Å).
CELLS = {
    "ortho": np.diag([16.0, 17.0, 18.0]),
    "triclinic": np.array([[16.0, 0.0, 0.0], [7.0, 15.0, 0.0], [-5.0, 6.0, 16.0]]),
    # The ortho lattice described by a strongly skewed cell (angles near 30-55 degrees).
    "skewed": np.array([[16.0, 0.0, 0.0], [16.0, 17.0, 0.0], [32.0, 17.0, 18.0]]),
}


def shortest_lattice_vector(cell: np.ndarray, reach: int = 3) -> float:
    rng = np.arange(-reach, reach + 1)
    n = np.array(np.meshgrid(rng, rng, rng)).reshape(3, -1).T
    n = n[np.abs(n).sum(axis=1) > 0]
    return float(np.linalg.norm(n @ cell, axis=1).min())


def _perp(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = u / np.linalg.norm(u)
    helper = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.8 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(u, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(u, e1)


def cone(u: np.ndarray, polar: float, n: int = 3, phase: float = 0.0) -> np.ndarray:
    """``n`` unit vectors at angle ``polar`` (radians) from ``u``, evenly spaced around it."""
    u = np.asarray(u, float) / np.linalg.norm(u)
    e1, e2 = _perp(u)
    phis = phase + 2 * np.pi * np.arange(n) / n
    return np.array(
        [np.cos(polar) * u + np.sin(polar) * (np.cos(p) * e1 + np.sin(p) * e2) for p in phis]
    )


def tetra_vertices() -> np.ndarray:
    return np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / np.sqrt(3)


_PHASES = np.linspace(0.0, 2 * np.pi / 3, 24, endpoint=False)


def _most_open(
    build: Callable[..., np.ndarray], choices: list[tuple[float, ...]], n_fixed: int
) -> np.ndarray:
    """The geometry, among ``build(*c)`` for c in choices, whose closest pair of atoms not both
    in the first ``n_fixed`` (the backbone, bonded by construction) and not bonded to each other
    is farthest apart: keeps terminal anions of neighbouring P well clear of each other."""
    best, best_d = None, -1.0
    for c in choices:
        pos = build(*c)
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        d[np.tril_indices(len(pos))] = np.inf
        d[:n_fixed, :n_fixed] = np.inf
        d[d < 2.3] = np.inf  # bonds made by construction (2.05, 2.25 Å)
        if d.min() > best_d:
            best, best_d = pos, d.min()
    assert best is not None
    return best


@dataclass
class Unit:
    name: str
    symbols: list[str]
    positions: np.ndarray
    expected: dict[str, int | float] = field(default_factory=dict)

    @property
    def numbers(self) -> np.ndarray:
        return np.array([Z[s] for s in self.symbols])

    def centred(self) -> np.ndarray:
        return self.positions - self.positions.mean(axis=0)


def ps4(x: str = "S") -> Unit:
    b = B_PS if x == "S" else B_PO
    pos = np.vstack([[0, 0, 0], b * tetra_vertices()])
    exp = {"P0": 1, f"NB{x}": 4}
    return Unit(f"P{x}4", ["P"] + [x] * 4, pos, exp)


# Cached: the phase search is slow and units are never mutated by the tests.
@functools.cache
def p2x7(x: str = "S") -> Unit:
    b = B_PS if x == "S" else B_PO
    angle = np.radians(110.0 if x == "S" else 130.0)
    d1 = np.array([np.sin(angle / 2), np.cos(angle / 2), 0.0])
    d2 = np.array([-np.sin(angle / 2), np.cos(angle / 2), 0.0])
    p1, p2 = b * d1, b * d2

    def build(ph1: float, ph2: float) -> np.ndarray:
        # From each P the bridging anion lies along -d: terminal anions on a tetrahedral cone
        # around +d, i.e. away from the bridge.
        t1 = p1 + b * cone(d1, np.pi - TETRA, phase=ph1)
        t2 = p2 + b * cone(d2, np.pi - TETRA, phase=ph2)
        return np.vstack([[0, 0, 0], p1, p2, t1, t2])

    pos = _most_open(build, [(a, c) for a in _PHASES for c in _PHASES], n_fixed=3)
    exp = {"P1": 2, f"B{x}": 1, f"NB{x}": 6}
    return Unit(f"P2{x}7", [x, "P", "P"] + [x] * 6, pos, exp)


@functools.cache
def strained_corner(pp: float = 2.45) -> Unit:
    """S3P-S-PS3 with P-S-P closed to put P...P at ``pp`` Å (73 degrees at 2.45): two P1.

    Each P's terminal S sit on a cone around the direction away from its two close partners
    (the bridge and the other P), phases and opening chosen to keep them clear.
    """
    p1, p2 = np.array([-pp / 2, 0.0, 0.0]), np.array([pp / 2, 0.0, 0.0])
    s = np.array([0.0, np.sqrt(B_PS**2 - pp**2 / 4), 0.0])
    axes = []
    for p, other in ((p1, p2), (p2, p1)):
        ax = -((s - p) / B_PS + (other - p) / pp)
        axes.append(ax / np.linalg.norm(ax))

    def build(ph1: float, ph2: float, polar: float) -> np.ndarray:
        t1 = p1 + B_PS * cone(axes[0], polar, phase=ph1)
        t2 = p2 + B_PS * cone(axes[1], polar, phase=ph2)
        return np.vstack([s, p1, p2, t1, t2])

    polars = np.radians([50.0, 55.0, 60.0, 65.0, 70.0])
    choices = [(a, c, t) for a in _PHASES for c in _PHASES for t in polars]
    pos = _most_open(build, choices, n_fixed=3)
    exp = {"P1": 2, "BS": 1, "NBS": 6}
    return Unit(f"P2S7 strained corner, P...P {pp} A", ["S", "P", "P"] + ["S"] * 6, pos, exp)


def p2s6_pp() -> Unit:
    """Ethane-like S3P-PS3 (staggered): two P1P."""
    z = np.array([0.0, 0.0, 1.0])
    p1, p2 = -z * B_PP / 2, z * B_PP / 2
    s1 = p1 + B_PS * cone(-z, np.pi - TETRA, phase=0.0)
    s2 = p2 + B_PS * cone(z, np.pi - TETRA, phase=np.pi / 3)
    return Unit(
        "P2S6(P-P)", ["P", "P"] + ["S"] * 6, np.vstack([p1, p2, s1, s2]), {"P1P": 2, "NBS": 6}
    )


def p3s9_ring() -> Unit:
    """Cyclic P3S9: a planar P3S3 six-ring with two terminal S on each P (three P2)."""
    ang = np.arange(6) * np.pi / 3
    ring = B_PS * np.column_stack([np.cos(ang), np.sin(ang), np.zeros(6)])  # side = radius
    syms, pos = [], []
    z = np.array([0.0, 0.0, 1.0])
    for k in range(6):
        if k % 2 == 0:  # P
            syms.append("P")
            pos.append(ring[k])
            out = ring[k] / np.linalg.norm(ring[k])
            half = TETRA / 2
            for sgn in (1, -1):
                syms.append("S")
                pos.append(ring[k] + B_PS * (np.cos(half) * out + sgn * np.sin(half) * z))
        else:
            syms.append("S")
            pos.append(ring[k])
    return Unit("P3S9 ring", syms, np.array(pos), {"P2": 3, "BS": 3, "NBS": 6})


def p2x6_es(x_el: str = "S", pp: float = 2.9) -> Unit:
    """Edge-sharing P2X6, P...P ``pp`` Å, two bridging X: two P2 + P2ES.

    2.9 Å (S) is the usual edge. 2.45 Å is inside the P-P cutoff: an O-O edge has P...P
    2.4-2.6 Å (O-P-O 76 degrees in the four-ring here); strained S-S edges come as close.
    Either way the two P share anions and are no P-P bond.
    """
    b = B_PS if x_el == "S" else B_PO
    x = np.array([1.0, 0.0, 0.0])
    z = np.array([0.0, 0.0, 1.0])
    half_pp = pp / 2
    y = np.sqrt(b**2 - half_pp**2)
    pos = [[-half_pp, 0, 0], [half_pp, 0, 0], [0, y, 0], [0, -y, 0]]
    syms = ["P", "P", x_el, x_el]
    half = TETRA / 2
    for sx in (-1, 1):
        p = np.array([sx * half_pp, 0.0, 0.0])
        for sz in (1, -1):
            syms.append(x_el)
            pos.append(p + b * (np.cos(half) * sx * x + sz * np.sin(half) * z))
    exp = {"P2": 2, "P2ES": 2, f"B{x_el}": 2, f"NB{x_el}": 4}
    return Unit(f"P2{x_el}6 edge-sharing, P...P {pp} A", syms, np.array(pos, float), exp)


def p2s6_es() -> Unit:
    return p2x6_es("S", 2.9)


def ps3_pyramid() -> Unit:
    # S-P-S 100 degrees: polar angle b with 1.5 cos^2 b - 0.5 = cos 100.
    polar = np.arccos(np.sqrt((np.cos(np.radians(100.0)) + 0.5) / 1.5))
    s = B_PS * cone(np.array([0.0, 0.0, -1.0]), polar)
    return Unit(
        "PS3 pyramid", ["P", "S", "S", "S"], np.vstack([[0, 0, 0], s]), {"P3c": 1, "NBS": 3}
    )


@functools.cache
def pp_chain() -> Unit:
    """S3P-PS2-PS3: three P bonded in a chain (two PPend ends, a P_other middle, PPchain 3)."""
    v = tetra_vertices()
    pb = np.zeros(3)
    pa, pc = B_PP * v[0], B_PP * v[1]
    syms = ["P", "P", "P", "S", "S"] + ["S"] * 6

    def build(ph1: float, ph2: float) -> np.ndarray:
        ends = [
            p + B_PS * cone(d, np.pi - TETRA, phase=ph)
            for p, d, ph in ((pa, v[0], ph1), (pc, v[1], ph2))
        ]
        return np.vstack([pb, pa, pc, B_PS * v[2], B_PS * v[3], *ends])

    pos = _most_open(build, [(a, c) for a in _PHASES for c in _PHASES], n_fixed=5)
    exp = {"PPend": 2, "P_other": 1, "PPchain": 3, "NBS": 8}
    return Unit("S3P-PS2-PS3", syms, pos, exp)


def s_chain(n: int) -> Unit:
    """Planar zig-zag S_n, S-S-S 105 degrees (S...S across 3.25 Å)."""
    half = np.radians(105.0) / 2
    step_x, step_y = B_SS * np.sin(half), B_SS * np.cos(half)
    pos = np.array([[k * step_x, (k % 2) * step_y, 0.0] for k in range(n)])
    exp = {
        "free_S": n,
        "S_in_chains": n,
        "chains": {n: 1},
        "fraction": 1.0,
        "mean_length": float(n),
    }
    return Unit(f"S{n}", ["S"] * n, pos, exp)


def na_capped(x: str = "S", d_na: float = 2.9) -> Unit:
    """PX4 with Na above the face opposite one X: three Na-X contacts, the fourth far away."""
    base = ps4(x)
    v = tetra_vertices()
    b = B_PS if x == "S" else B_PO
    centroid = b / 3.0  # distance of the opposite face from P
    circum = b * np.sqrt(8.0 / 3.0) / np.sqrt(3.0)
    h = np.sqrt(d_na**2 - circum**2)
    na = -v[0] * (centroid + h)
    exp = dict(base.expected)
    exp.update({"n_Na": 1, f"cn_{x}": 3.0, "histogram": {3: 1}})
    return Unit(f"Na on P{x}4 face", [*base.symbols, "Na"], np.vstack([base.positions, na]), exp)


ALL_UNITS = {
    "PS4": lambda: ps4("S"),
    "PO4": lambda: ps4("O"),
    "P2S7": lambda: p2x7("S"),
    "P2O7": lambda: p2x7("O"),
    "P2S6_PP": p2s6_pp,
    "P3S9_ring": p3s9_ring,
    "P2S6_ES": p2s6_es,
    # Inside the P-P cutoff, sharing anions: never P-P bonded.
    "P2O6_ES_short": lambda: p2x6_es("O", 2.45),
    "P2S6_ES_short": lambda: p2x6_es("S", 2.45),
    "P2S7_corner_short": strained_corner,
    "PS3": ps3_pyramid,
    "PP_chain": pp_chain,
    "S2": lambda: s_chain(2),
    "S3": lambda: s_chain(3),
    "Na_face_S": lambda: na_capped("S", 2.9),
    "Na_face_O": lambda: na_capped("O", 2.4),
}


def place(
    unit: Unit,
    cell: np.ndarray,
    *,
    straddle: bool = False,
    shuffle_seed: int | None = None,
    centre_frac: tuple[float, float, float] = (0.5, 0.5, 0.5),
) -> tuple[np.ndarray, np.ndarray]:
    """Numbers and wrapped positions of ``unit`` in ``cell``.

    straddle: centre the unit on a cell corner, so that wrapping splits it across all three
    periodic boundaries. shuffle_seed: permute the atoms.
    """
    centre = np.zeros(3) if straddle else np.asarray(centre_frac) @ cell
    pos = unit.centred() + centre
    frac = pos @ np.linalg.inv(cell)
    pos = (frac - np.floor(frac)) @ cell
    numbers = unit.numbers
    if shuffle_seed is not None:
        perm = np.random.default_rng(shuffle_seed).permutation(len(numbers))
        numbers, pos = numbers[perm], pos[perm]
    return numbers, pos


# --- independent references ---------------------------------------------------------------


def brute_peak(distances, cutoff, width=0.02, smooth=5, minimum=50):
    """First g(r) peak of a pair's contact distances as docs/speciation.md defines it, with
    plain numpy (np.histogram, a 5-bin moving average, a loop for the first maximum)."""
    if len(distances) < minimum:
        return None
    n_bins = math.ceil(cutoff / width - 1e-9)
    edges = np.linspace(0.0, n_bins * width, n_bins + 1)
    hist, _ = np.histogram(np.minimum(distances, edges[-1]), bins=edges)
    g = np.convolve(hist / np.diff(edges**3), np.ones(smooth) / smooth, mode="same")
    top = g.max()
    peaks = [
        k for k in range(1, n_bins - 1) if g[k] >= g[k - 1] and g[k] > g[k + 1] and g[k] >= top / 5
    ]
    if not peaks or peaks[0] >= n_bins - smooth:
        return None
    k = peaks[0]
    lo, hi = k, k
    while lo > 0 and g[lo - 1] >= g[k] - 1e-3 * top:
        lo -= 1
    while hi < n_bins - 1 and g[hi + 1] >= g[k] - 1e-3 * top:
        hi += 1
    return (edges[lo] + edges[hi + 1]) / 2


@pytest.fixture(params=sorted(CELLS))
def cell_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def geom() -> types.ModuleType:
    """This module: the unit builders and `place`, for test modules (conftest is not importable)."""
    import sys

    return sys.modules[__name__]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "unit_name" in metafunc.fixturenames:
        metafunc.parametrize("unit_name", sorted(ALL_UNITS))
