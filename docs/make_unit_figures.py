"""Pictures of the structural units glassbench counts, checked against the analysis itself.

Run from the repository root with the project's environment:

    .venv/bin/python docs/make_unit_figures.py [--out docs/img/units] [--check]

Each unit is built from bond lengths and angles (P-S 2.05, P-O 1.55, P-P 2.25, S-S 2.05 Å;
the builders are ported from tests/analysis/conftest.py), analysed with
`glassbench.analysis.analyze_frame` exactly as a frame of a simulation would be (no cell, no
periodicity, default cutoffs), and drawn as an orthographic ball-and-stick projection. The title
of each picture is the analysis' own result, and the script fails if that result differs from
the classification the unit was built to have. ``--check`` verifies without writing files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glassbench.analysis import DEFAULT_CUTOFFS, FrameAnalysis, analyze_frame
from glassbench.reports.pictures import rotations

B_PS, B_PO, B_PP, B_SS = 2.05, 1.55, 2.25, 2.05
TETRA = float(np.arccos(-1.0 / 3.0))
Z = {"Na": 11, "P": 15, "S": 16, "O": 8}
COLOURS = {"P": "#8e44ad", "S": "#f1c40f", "O": "#e03131", "Na": "#1f6fd1"}
RADII = {"P": 0.42, "S": 0.48, "O": 0.36, "Na": 0.52}  # drawing radii in Å (not physical)
_PHASES = np.linspace(0.0, 2 * np.pi / 3, 24, endpoint=False)


# --------------------------------------------------------------------------- geometry


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


def _clearance(pos: np.ndarray, n_fixed: int) -> float:
    """Closest distance between atoms not bonded by construction (all > 2.3 Å apart, and
    not both in the first ``n_fixed``): the larger, the clearer the picture."""
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    d[np.tril_indices(len(pos))] = np.inf
    d[:n_fixed, :n_fixed] = np.inf
    d[d < 2.3] = np.inf
    return float(d.min())


def _most_open(
    build: Callable[..., np.ndarray], choices: list[tuple[float, ...]], n_fixed: int
) -> np.ndarray:
    return max((build(*c) for c in choices), key=lambda p: _clearance(p, n_fixed))


@dataclass
class Unit:
    key: str  # file name
    name: str  # title
    symbols: list[str]
    positions: np.ndarray
    expected: dict[str, float] = field(default_factory=dict)
    label_also: tuple[int, ...] = ()  # anions to label besides bridging/over/free ones

    @property
    def numbers(self) -> np.ndarray:
        return np.array([Z[s] for s in self.symbols])


def _terminal(p: np.ndarray, away: np.ndarray, b: float, phase: float) -> np.ndarray:
    """Three terminal anions of a tetrahedral P at ``p``, on the cone opposite ``-away``."""
    return p + b * cone(away, np.pi - TETRA, phase=phase)


def ps4() -> Unit:
    pos = np.vstack([[0, 0, 0], B_PS * tetra_vertices()])
    return Unit("P0_PS4", "PS4 (ortho-thiophosphate)", ["P"] + ["S"] * 4, pos, {"P0": 1, "NBS": 4})


def ps3o() -> Unit:
    v = tetra_vertices()
    pos = np.vstack([[0, 0, 0], B_PS * v[:3], B_PO * v[3]])
    return Unit(
        "P0_PS3O",
        "PS3O (mixed ortho unit)",
        ["P", "S", "S", "S", "O"],
        pos,
        {"P0": 1, "NBS": 3, "NBO": 1},
    )


def p2x7(bridge: str, key: str, name: str) -> Unit:
    """X3P-Y-PX3 with a bridging Y (S or O) and terminal S: two P1."""
    b = B_PS if bridge == "S" else B_PO
    angle = np.radians(110.0 if bridge == "S" else 130.0)
    d1 = np.array([np.sin(angle / 2), np.cos(angle / 2), 0.0])
    d2 = np.array([-np.sin(angle / 2), np.cos(angle / 2), 0.0])
    p1, p2 = b * d1, b * d2

    def build(ph1: float, ph2: float) -> np.ndarray:
        return np.vstack(
            [[0, 0, 0], p1, p2, _terminal(p1, d1, B_PS, ph1), _terminal(p2, d2, B_PS, ph2)]
        )

    pos = _most_open(build, [(a, c) for a in _PHASES for c in _PHASES], n_fixed=3)
    exp = {"P1": 2, f"B{bridge}": 1, "NBS": 6}
    return Unit(key, name, [bridge, "P", "P"] + ["S"] * 6, pos, exp)


def p3s9_ring() -> Unit:
    """Cyclic P3S9: a P3S3 six-ring with two terminal S on each P (three P2)."""
    ang = np.arange(6) * np.pi / 3
    ring = B_PS * np.column_stack([np.cos(ang), np.sin(ang), np.zeros(6)])
    syms, pos = [], []
    z = np.array([0.0, 0.0, 1.0])
    for k in range(6):
        syms.append("P" if k % 2 == 0 else "S")
        pos.append(ring[k])
        if k % 2 == 0:
            out = ring[k] / np.linalg.norm(ring[k])
            for sgn in (1, -1):
                syms.append("S")
                pos.append(ring[k] + B_PS * (np.cos(TETRA / 2) * out + sgn * np.sin(TETRA / 2) * z))
    return Unit(
        "P2_P3S9_ring",
        "P3S9 ring (metathiophosphate)",
        syms,
        np.array(pos),
        {"P2": 3, "BS": 3, "NBS": 6},
    )


def _branched(n_arms: int) -> tuple[list[str], np.ndarray]:
    """A central P with ``n_arms`` of its four S bridging to PS3 groups (greedy open layout)."""
    v = tetra_vertices()
    syms = ["P"] + ["S"] * 4
    pos = [np.zeros(3), *(B_PS * v)]
    psp = np.radians(109.0)
    for k in range(n_arms):
        s = B_PS * v[k]
        best, best_d = None, -1.0
        for ph in np.linspace(0, 2 * np.pi, 36, endpoint=False):
            w = cone(v[k], np.pi - psp, n=1, phase=ph)[0]
            p_out = s + B_PS * w
            for ph2 in _PHASES[::2]:
                trial = np.vstack([*pos, p_out, _terminal(p_out, w, B_PS, ph2)])
                d = _clearance(trial, n_fixed=len(pos))
                if d > best_d:
                    best, best_d = trial, d
        assert best is not None
        pos = list(best)
        syms += ["P", "S", "S", "S"]
    return syms, np.array(pos)


def p4s13() -> Unit:
    syms, pos = _branched(3)
    return Unit(
        "P3_P4S13", "P(SPS3)3S: a P3 centre", syms, pos, {"P3": 1, "P1": 3, "BS": 3, "NBS": 10}
    )


def p5s16() -> Unit:
    syms, pos = _branched(4)
    return Unit(
        "P4_P5S16", "P(SPS3)4: a P4 centre", syms, pos, {"P4": 1, "P1": 4, "BS": 4, "NBS": 12}
    )


def over_s() -> Unit:
    """S bonded to three PS3 groups: an over-coordinated S (bridging for its P: three P1)."""
    syms = ["S"]
    pos = [np.zeros(3)]
    dirs = cone(np.array([0.0, 0.0, 1.0]), np.radians(75.0))  # P-S-P ~ 112 degrees
    for k, d in enumerate(dirs):
        p = B_PS * d
        syms += ["P", "S", "S", "S"]
        pos += [p, *_terminal(p, d, B_PS, phase=0.35 + k * 0.0)]
    return Unit(
        "over_S",
        "S(PS3)3: over-coordinated S",
        syms,
        np.array(pos),
        {"P1": 3, "over_S": 1, "NBS": 9},
    )


def p2s6_pp() -> Unit:
    """Ethane-like S3P-PS3 (staggered): two P1P."""
    z = np.array([0.0, 0.0, 1.0])
    p1, p2 = -z * B_PP / 2, z * B_PP / 2
    pos = np.vstack([p1, p2, _terminal(p1, -z, B_PS, 0.0), _terminal(p2, z, B_PS, np.pi / 3)])
    return Unit("P1P_P2S6", "P2S6 (P-P bond)", ["P", "P"] + ["S"] * 6, pos, {"P1P": 2, "NBS": 6})


def ps3_pyramid() -> Unit:
    polar = np.arccos(np.sqrt((np.cos(np.radians(100.0)) + 0.5) / 1.5))  # S-P-S 100 degrees
    s = B_PS * cone(np.array([0.0, 0.0, -1.0]), polar)
    return Unit(
        "P3c_PS3",
        "PS3 pyramid (three-coordinated P)",
        ["P", "S", "S", "S"],
        np.vstack([[0, 0, 0], s]),
        {"P3c": 1, "NBS": 3},
    )


def _edge_pair(x_el: str, pp: float) -> tuple[list[str], np.ndarray]:
    """Two P sharing an X-X edge, P...P ``pp`` Å, two terminal X on each P."""
    b = B_PS if x_el == "S" else B_PO
    x, z = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    half_pp = pp / 2
    y = np.sqrt(b**2 - half_pp**2)
    pos = [[-half_pp, 0, 0], [half_pp, 0, 0], [0, y, 0], [0, -y, 0]]
    syms = ["P", "P", x_el, x_el]
    for sx in (-1, 1):
        p = np.array([sx * half_pp, 0.0, 0.0])
        for sz in (1, -1):
            syms.append(x_el)
            pos.append(p + b * (np.cos(TETRA / 2) * sx * x + sz * np.sin(TETRA / 2) * z))
    return syms, np.array(pos, float)


def p2s6_es() -> Unit:
    """Edge-sharing P2S6: P...P 2.9 Å (no P-P bond), two bridging S: two P2, both P2ES."""
    syms, pos = _edge_pair("S", 2.9)
    return Unit(
        "P2ES_P2S6", "P2S6 edge-sharing", syms, pos, {"P2": 2, "P2ES": 2, "BS": 2, "NBS": 4}
    )


def p2o6_es_short() -> Unit:
    """Edge-sharing P2O6 with P...P 2.45 Å, inside the P-P cutoff (O-P-O 76 degrees in the
    ring): the two P share two O, so they are an edge, not a P-P bond. Two P2, both P2ES."""
    syms, pos = _edge_pair("O", 2.45)
    return Unit(
        "P2ES_P2O6_short",
        "P2O6 edge-sharing, P...P 2.45 Å: no P-P bond",
        syms,
        pos,
        {"P2": 2, "P2ES": 2, "BO": 2, "NBO": 4},
    )


def pp_chain() -> Unit:
    """S3P-PS2-PS3: three P bonded in a chain (two PPend ends, a P_other middle, PPchain 3)."""
    v = tetra_vertices()
    pa, pc = B_PP * v[0], B_PP * v[1]

    def build(ph1: float, ph2: float) -> np.ndarray:
        return np.vstack(
            [
                np.zeros(3),
                pa,
                pc,
                B_PS * v[2],
                B_PS * v[3],
                _terminal(pa, v[0], B_PS, ph1),
                _terminal(pc, v[1], B_PS, ph2),
            ]
        )

    pos = _most_open(build, [(a, c) for a in _PHASES for c in _PHASES], n_fixed=5)
    return Unit(
        "PPchain_P3S8",
        "S3P-PS2-PS3 (P-P chain)",
        ["P"] * 3 + ["S"] * 8,
        pos,
        {"PPend": 2, "P_other": 1, "PPchain": 3, "NBS": 8},
    )


def s_chain(n: int) -> Unit:
    """Planar zig-zag S_n, S-S-S 105 degrees."""
    half = np.radians(105.0) / 2
    pos = np.array(
        [[k * B_SS * np.sin(half), (k % 2) * B_SS * np.cos(half), 0.0] for k in range(n)]
    )
    return Unit(
        f"SS_S{n}",
        f"S{n} chain (polysulfide)",
        ["S"] * n,
        pos,
        {"free_S": n, "S_in_chains": n, "chains": {n: 1}},
    )


def ss_bridge() -> Unit:
    """S3P-S-S-PS3: two PS4 joined by an S-S bond. Each S has one P neighbour (NBS): two P0."""
    half = np.radians(105.0) / 2
    s1 = np.array([-B_SS / 2, 0.0, 0.0])
    s2 = -s1
    d1 = np.array([-np.cos(half), np.sin(half), 0.0])  # S-S-P 105 degrees
    d2 = np.array([np.cos(half), np.sin(half), 0.0])
    p1, p2 = s1 + B_PS * d1, s2 + B_PS * d2

    def build(ph1: float, ph2: float) -> np.ndarray:
        return np.vstack(
            [s1, s2, p1, p2, _terminal(p1, d1, B_PS, ph1), _terminal(p2, d2, B_PS, ph2)]
        )

    pos = _most_open(build, [(a, c) for a in _PHASES for c in _PHASES], n_fixed=4)
    return Unit(
        "SS_P2S8",
        "S3P-S-S-PS3 (S-S bond)",
        ["S", "S", "P", "P"] + ["S"] * 6,
        pos,
        {"P0": 2, "NBS": 8, "S_in_chains": 2, "chains": {2: 1}},
        (0, 1),
    )


def na_on_face(kind: str) -> Unit:
    """Na above a face of PS4 (three Na-S contacts), or of PS3O opposite one S (2 S + 1 O)."""
    v = tetra_vertices()
    if kind == "S":
        syms, pos = ["P"] + ["S"] * 4, [np.zeros(3), *(B_PS * v)]
        exp = {"P0": 1, "NBS": 4, "cn_S": 3.0, "cn_O": 0.0}
        name = "Na on a PS4 face"
    else:
        syms, pos = ["P", "S", "S", "S", "O"], [np.zeros(3), *(B_PS * v[:3]), B_PO * v[3]]
        exp = {"P0": 1, "NBS": 3, "NBO": 1, "cn_S": 2.0, "cn_O": 1.0}
        name = "Na on a PS3O face"
    # Na on the face opposite vertex 0, placed by scanning the distance along -v[0] until
    # every face atom is within its Na-X cutoff with a margin.
    face = np.array(pos[2:])
    for h in np.linspace(0.5, 4.0, 351):
        na = -v[0] * h
        d = np.linalg.norm(face - na, axis=1)
        lim = np.array([DEFAULT_CUTOFFS["Na-S" if s == "S" else "Na-O"] for s in syms[2:]])
        if np.all(d <= lim - 0.45) and np.all(d >= 2.2):
            break
    return Unit(
        f"Na_{'PS4' if kind == 'S' else 'PS3O'}", name, [*syms, "Na"], np.vstack([*pos, na]), exp
    )


UNITS: list[Callable[[], Unit]] = [
    ps4,
    ps3o,
    lambda: p2x7("S", "P1_P2S7", "P2S7 (pyrothiophosphate)"),
    lambda: p2x7("O", "P1_P2S6O", "P2S6O (bridging O)"),
    p3s9_ring,
    p4s13,
    p5s16,
    p2s6_pp,
    ps3_pyramid,
    p2s6_es,
    p2o6_es_short,
    pp_chain,
    over_s,
    lambda: s_chain(3),
    ss_bridge,
    lambda: na_on_face("S"),
    lambda: na_on_face("O"),
]


# --------------------------------------------------------------------------- analysis


def analyse(unit: Unit) -> FrameAnalysis:
    return analyze_frame(unit.numbers, unit.positions, None, False)


def bonds(unit: Unit) -> list[tuple[int, int]]:
    """Pairs within their default cutoff (the same rule as the analysis: distance <= cutoff),
    except two P bonded to a common anion: a corner or an edge, never a P-P bond."""
    out = []
    sym = unit.symbols
    for i in range(len(sym)):
        for j in range(i + 1, len(sym)):
            a, b = sorted((sym[i], sym[j]), key=["Na", "P", "S", "O"].index)
            cut = DEFAULT_CUTOFFS.get(f"{a}-{b}")
            if cut is not None and np.linalg.norm(unit.positions[i] - unit.positions[j]) <= cut:
                out.append((i, j))
    anions_of: dict[int, set[int]] = {}
    for i, j in out:
        if {sym[i], sym[j]} in ({"P", "S"}, {"P", "O"}):
            p, x = (i, j) if sym[i] == "P" else (j, i)
            anions_of.setdefault(p, set()).add(x)
    return [
        (i, j)
        for i, j in out
        if not (sym[i] == sym[j] == "P" and anions_of.get(i, set()) & anions_of.get(j, set()))
    ]


def atom_labels(unit: Unit, bond_list: list[tuple[int, int]]) -> dict[int, str]:
    """Per-atom class labels for the picture, derived from the bonds with the rules of docs/speciation.md
    (the totals are checked against `analyze_frame`, which only returns counts)."""
    sym = unit.symbols
    nb: dict[int, list[int]] = {i: [] for i in range(len(sym))}
    for i, j in bond_list:
        nb[i].append(j)
        nb[j].append(i)

    def n_p(i: int) -> int:
        return sum(sym[j] == "P" for j in nb[i])

    def p_cluster(i: int) -> set[int]:
        seen, stack = {i}, [i]
        while stack:
            for j in nb[stack.pop()]:
                if sym[j] == "P" and j not in seen:
                    seen.add(j)
                    stack.append(j)
        return seen

    labels: dict[int, str] = {}
    for i, s in enumerate(sym):
        if s in ("S", "O"):
            k = n_p(i)
            labels[i] = {0: f"free_{s}", 1: f"NB{s}", 2: f"B{s}"}.get(k, f"over_{s}")
        elif s == "P":
            anions = [j for j in nb[i] if sym[j] in ("S", "O")]
            pp = n_p(i)
            n_bridge = sum(n_p(j) >= 2 for j in anions)
            if len(anions) == 4 and pp == 0:
                labels[i] = f"P{n_bridge}"
            elif len(anions) == 3 and pp == 1:
                # One P-P bond: P2S6 dimer (P1P) or the end of a longer P-P cluster (PPend).
                labels[i] = "P1P" if len(p_cluster(i)) == 2 else "PPend"
            elif len(anions) == 3 and pp == 0:
                labels[i] = "P3c"
            else:
                labels[i] = "P_other"
    return labels


def summary(res: FrameAnalysis) -> str:
    """The analysis result in words, e.g. '2 x P1, 1 BS, 6 NBS'."""
    parts = []
    p = res.p.to_dict()
    for k in ("P0", "P1", "P2", "P3", "P4", "P1P", "PPend", "P3c", "P_other"):
        if p[k]:
            parts.append(f"{p[k]} x {k}")
    for k in ("P2ES", "PPchain"):
        if p[k]:
            parts.append(f"{k} {p[k]}")
    for k, v in res.anions.to_dict().items():
        if v:
            parts.append(f"{v} {k}")
    if res.ss.S_in_chains:
        chains = ", ".join(f"{n} x {L} S" for L, n in sorted(res.ss.chains.items()))
        parts.append(f"S-S chains {chains}")
    if res.na.n:
        parts.append(f"Na CN {res.na.cn_mean:g} (S {res.na.cn_S_mean:g}, O {res.na.cn_O_mean:g})")
    return ", ".join(parts)


def check(unit: Unit, res: FrameAnalysis) -> list[str]:
    """Differences between the analysis and what the unit was built to be."""
    got: dict[str, object] = {**res.p.to_dict(), **res.anions.to_dict()}
    got["S_in_chains"] = res.ss.S_in_chains
    got["chains"] = res.ss.chains
    got["cn_S"] = res.na.cn_S_mean
    got["cn_O"] = res.na.cn_O_mean
    errors = []
    for k, v in unit.expected.items():
        if got[k] != v:
            errors.append(f"{k}: expected {v}, analysis gives {got[k]}")
    for k, v in got.items():
        if k not in unit.expected and isinstance(v, int) and v:
            errors.append(f"{k}: unexpected {v}")
    return errors


# --------------------------------------------------------------------------- drawing


def _view(unit: Unit, bond_list: list[tuple[int, int]]) -> np.ndarray:
    """Coordinates rotated to the clearest orthographic view: the fewest overlapping balls,
    then the least foreshortened bonds, among a fixed set of orientations."""
    c = unit.positions - unit.positions.mean(axis=0)
    radii = np.array([RADII[s] for s in unit.symbols])
    iu = np.triu_indices(len(c), 1)
    need = (radii[:, None] + radii[None] + 0.25)[iu]
    bi = np.array([i for i, _ in bond_list], dtype=int)
    bj = np.array([j for _, j in bond_list], dtype=int)
    length = np.linalg.norm(c[bi] - c[bj], axis=1) if len(bi) else np.ones(0)
    best, best_score = c, np.inf
    for rot in rotations(3000):
        r = c @ rot.T
        d2 = np.linalg.norm(r[:, None, :2] - r[None, :, :2], axis=-1)[iu]
        overlap = float(np.sum(np.clip(need - d2, 0.0, None) ** 2))
        short = 0.0
        if len(bi):
            proj = np.linalg.norm(r[bi, :2] - r[bj, :2], axis=1)
            short = float(np.sum((1.0 - proj / length) ** 2))
        score = 10.0 * overlap + short
        if score < best_score:
            best, best_score = r, score
    return best


def draw(unit: Unit, res: FrameAnalysis, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    bond_list = bonds(unit)
    labels = atom_labels(unit, bond_list)
    xyz = _view(unit, bond_list)
    depth = xyz[:, 2]
    fig = plt.figure(figsize=(4, 4), dpi=100)
    ax = fig.add_axes((0.02, 0.08, 0.96, 0.76))
    ax.set_aspect("equal")
    ax.axis("off")
    for i, j in bond_list:
        # Drawn just behind the farther of its two atoms: both balls cover its ends.
        z = min(depth[i], depth[j]) - 0.01
        pair = {unit.symbols[i], unit.symbols[j]}
        if "Na" in pair:  # Na-S / Na-O contacts: coordination, not covalent bonds
            ax.plot(
                xyz[[i, j], 0],
                xyz[[i, j], 1],
                color=COLOURS["Na"],
                lw=1.6,
                ls=(0, (3, 2)),
                zorder=z,
            )
            continue
        colour = (
            {"P": "#8e44ad", "S": "#b59a00"}.get(pair.pop(), "#555555")
            if len(pair) == 1
            else "#555555"
        )
        ax.plot(
            xyz[[i, j], 0],
            xyz[[i, j], 1],
            color=colour,
            lw=3.2 if colour != "#555555" else 2.4,
            solid_capstyle="round",
            zorder=z,
        )
    span = np.ptp(depth) or 1.0
    to_label: list[tuple[int, str, float]] = []
    for i, s in enumerate(unit.symbols):
        r = RADII[s] * (0.9 + 0.2 * (depth[i] - depth.min()) / span)  # nearer: a little bigger
        x, y, z = xyz[i]
        ax.add_patch(Circle((x, y), r, facecolor=COLOURS[s], edgecolor="#222222", lw=0.8, zorder=z))
        ax.add_patch(
            Circle(
                (x - 0.3 * r, y + 0.3 * r),
                0.3 * r,
                facecolor="white",
                alpha=0.45,
                lw=0,
                zorder=z + 1e-4,
            )
        )
        lab = labels.get(i, "")
        if s == "P" or lab.startswith(("B", "over", "free")) or i in unit.label_also:
            to_label.append((i, lab, r))
    # Each label goes in the free direction around its atom: of eight candidate positions, the
    # one farthest from the other balls and from the labels already placed.
    placed: list[np.ndarray] = []
    radii = np.array([RADII[s] for s in unit.symbols])
    for i, lab, r in to_label:
        best, best_d = None, -np.inf
        for ang in np.radians(np.arange(45.0, 405.0, 45.0)):
            d = np.array([np.cos(ang), np.sin(ang)])
            pos = xyz[i, :2] + d * (r + 0.1 + 0.09 * len(lab) * abs(d[0]) + 0.12)
            others = np.delete(np.arange(len(xyz)), i)
            clear = np.linalg.norm(xyz[others, :2] - pos, axis=1) - radii[others]
            score = clear.min() if len(others) else 1.0
            if placed:
                score = min(score, np.linalg.norm(np.array(placed) - pos, axis=1).min() - 0.3)
            if score > best_d:
                best, best_d = pos, score
        assert best is not None
        placed.append(best)
        ax.annotate(
            lab,
            (best[0], best[1]),
            fontsize=7.5,
            color="#111111",
            zorder=100,
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.75},
        )
    lo, hi = xyz[:, :2].min(axis=0) - 0.75, xyz[:, :2].max(axis=0) + 0.75
    half = max(hi - lo) / 2
    mid = (lo + hi) / 2
    ax.set_xlim(mid[0] - half, mid[0] + half)
    ax.set_ylim(mid[1] - half, mid[1] + half)
    title = f"{unit.name}\n{summary(res)}"
    fig.text(0.5, 0.985, title, ha="center", va="top", fontsize=8.5, wrap=True)
    present = [s for s in ("P", "S", "O", "Na") if s in unit.symbols]
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            markersize=7,
            markerfacecolor=COLOURS[s],
            markeredgecolor="#222222",
            label=s,
        )
        for s in present
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=len(present),
        frameon=False,
        fontsize=8,
        handletextpad=0.2,
        columnspacing=1.0,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "img" / "units")
    ap.add_argument("--check", action="store_true", help="Verify only; write no pictures.")
    args = ap.parse_args(argv)
    failed = 0
    if not args.check:
        args.out.mkdir(parents=True, exist_ok=True)
    for make in UNITS:
        unit = make()
        res = analyse(unit)
        errors = check(unit, res)
        # The per-atom labels of the picture must add up to the analysis' counts.
        labels = atom_labels(unit, bonds(unit))
        counts = {**res.p.to_dict(), **res.anions.to_dict()}
        for lab in set(labels.values()):
            n = sum(v == lab for v in labels.values())
            if counts.get(lab) != n:
                errors.append(f"picture labels {n} x {lab}, analysis {counts.get(lab)}")
        print(f"{unit.key:<14} {unit.name}: {summary(res)}")
        if errors:
            failed += 1
            for e in errors:
                print(f"  MISMATCH {e}", file=sys.stderr)
            continue
        if not args.check:
            draw(unit, res, args.out / f"{unit.key}.png")
    if failed:
        print(f"{failed} unit(s) not classified as built", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
