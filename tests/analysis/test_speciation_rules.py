"""P1P and PPend, the P-P bond rule, S-S chain shares, Na-S share and first peaks, locate_units.

Structures are built from bond lengths and angles; their contacts are enumerated independently
with ``ase.neighborlist`` before the analysis is asked about them.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from glassbench.analysis import DEFAULT_CUTOFFS, analyze_frame, locate_units
from glassbench.analysis.speciation import PEAK_BIN_A, PEAK_MIN_CONTACTS
from glassbench.testing.synthetic import dimer_glass

SYM = {11: "Na", 15: "P", 16: "S", 8: "O"}
Z = {v: k for k, v in SYM.items()}


def contacts(numbers, pos, cell, pbc, cutoffs=DEFAULT_CUTOFFS):
    """Contacts within the pair cutoffs from ase.neighborlist: (i, j, image of j from i, d),
    each pair once (i <= j; a contact with one's own image once per +-image pair)."""
    cut = {}
    for name, v in cutoffs.items():
        a, b = name.split("-")
        cut[(Z[a], Z[b])] = v
    atoms = Atoms(numbers=numbers, positions=pos, cell=cell if cell is not None else None, pbc=pbc)
    i, j, shift, d = neighbor_list("ijSd", atoms, cut)
    out = []
    for a, b, s, dist in zip(i, j, shift, d, strict=True):
        s = tuple(int(x) for x in s)
        if a < b or (a == b and s > (0, 0, 0)):
            out.append((int(a), int(b), s, float(dist)))
    return out


def pair_counts(numbers, found) -> Counter:
    return Counter("-".join(sorted((SYM[numbers[i]], SYM[numbers[j]]))) for i, j, _, _ in found)


def counts_of(res, **expected) -> None:
    """Every P class and flag as expected (zero unless given); classes add up to n_P."""
    keys = ("P0", "P1", "P2", "P3", "P4", "P1P", "PPend", "P3c", "P_other", "P2ES", "PPchain")
    got = res.p.to_dict()
    assert got == {k: expected.get(k, 0) for k in keys}
    assert sum(got[k] for k in keys[:9]) == res.n_P


# --- P-P bonded units ------------------------------------------------------------------------


def p_chain(geom, n: int):
    """S3P-(PS2)_(n-2)-PS3: a zig-zag P backbone (P-P 2.25 Å, tetrahedral angles) in the xy
    plane; middle P carry two S out of the plane, end P three S on a cone."""
    half = geom.TETRA / 2
    z = np.array([0.0, 0.0, 1.0])
    backbone = np.array(
        [[k * geom.B_PP * np.sin(half), (k % 2) * geom.B_PP * np.cos(half), 0.0] for k in range(n)]
    )
    middle, ends = [], []
    for k in range(n):
        nbr = [backbone[j] - backbone[k] for j in (k - 1, k + 1) if 0 <= j < n]
        away = -sum(u / np.linalg.norm(u) for u in nbr)
        away /= np.linalg.norm(away)
        if len(nbr) == 2:
            for sz in (1, -1):
                middle.append(
                    backbone[k] + geom.B_PS * (np.cos(half) * away + sz * np.sin(half) * z)
                )
        else:
            ends.append((backbone[k], away))

    def build(ph1: float, ph2: float) -> np.ndarray:
        caps = [
            p + geom.B_PS * geom.cone(d, np.pi - geom.TETRA, phase=ph)
            for (p, d), ph in zip(ends, (ph1, ph2), strict=True)
        ]
        return np.vstack([backbone, *middle, *caps])

    pos = geom._most_open(build, [(a, c) for a in geom._PHASES for c in geom._PHASES], n_fixed=n)
    symbols = ["P"] * n + ["S"] * (len(pos) - n)
    return np.array([Z[s] for s in symbols]), pos


def p_star(geom):
    """P(PS3)3S: a P bonded to three PS3 and one S (three chain ends around a P_other)."""
    v = geom.tetra_vertices()
    arms = geom.B_PP * v[:3]

    def build(*phases: float) -> np.ndarray:
        caps = [
            p + geom.B_PS * geom.cone(d, np.pi - geom.TETRA, phase=ph)
            for p, d, ph in zip(arms, v[:3], phases, strict=True)
        ]
        return np.vstack([np.zeros(3), arms, geom.B_PS * v[3], *caps])

    ph = geom._PHASES[::3]
    pos = geom._most_open(build, [(a, b, c) for a in ph for b in ph for c in ph], n_fixed=5)
    symbols = ["P"] * 4 + ["S"] * 10
    return np.array([Z[s] for s in symbols]), pos


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_p_chain_ends_are_ppend_and_the_dimer_is_p1p(geom, n):
    numbers, pos = p_chain(geom, n)
    found = contacts(numbers, pos, None, False)
    # Built as intended: n - 1 P-P bonds, three S on each end, two on each middle P, nothing else.
    assert pair_counts(numbers, found) == Counter({"P-P": n - 1, "P-S": 2 * n + 2})
    res = analyze_frame(numbers, pos, None, False)
    if n == 2:
        counts_of(res, P1P=2)  # S3P-PS3, the P2S6 unit of 31P NMR
    else:
        counts_of(res, PPend=2, P_other=n - 2, PPchain=n)
    n_terminal = 2 * n + 2
    assert n_terminal == res.anions.NBS


def test_branched_p_cluster(geom):
    numbers, pos = p_star(geom)
    found = contacts(numbers, pos, None, False)
    assert pair_counts(numbers, found) == Counter({"P-P": 3, "P-S": 10})
    counts_of(analyze_frame(numbers, pos, None, False), PPend=3, P_other=1, PPchain=4)


def test_dimer_and_chain_in_one_cell(geom):
    """A P2S6 dimer next to a P3 chain: 2 P1P from the dimer, 2 PPend from the chain."""
    cell = np.diag([30.0, 20.0, 20.0])
    n2, p2 = p_chain(geom, 2)
    n3, p3 = p_chain(geom, 3)
    numbers = np.concatenate([n2, n3])
    pos = np.vstack([p2 - p2.mean(0) + [7.0, 10, 10], p3 - p3.mean(0) + [22.0, 10, 10]])
    counts_of(analyze_frame(numbers, pos, cell, True), P1P=2, PPend=2, P_other=1, PPchain=3)


# --- the P-P bond rule: P that share an anion are a corner or an edge, never bonded ---------


@pytest.mark.parametrize("name", ["P2O6_ES_short", "P2S6_ES_short", "P2S7_corner_short"])
def test_anion_sharing_p_within_the_pp_cutoff_are_not_bonded(geom, name):
    unit = geom.ALL_UNITS[name]()
    found = contacts(unit.numbers, unit.positions, None, False)
    pp = [d for i, j, _, d in found if unit.symbols[i] == unit.symbols[j] == "P"]
    # The contact is there (P...P 2.45 Å <= 2.5 Å): a rule by distance alone made it a P-P bond
    # and both P P_other (four or three anions plus a P).
    assert pp == [pytest.approx(2.45)]
    assert pp[0] <= DEFAULT_CUTOFFS["P-P"]
    res = analyze_frame(unit.numbers, unit.positions, None, False)
    counts_of(res, **{k: v for k, v in unit.expected.items() if k.startswith("P")})
    # The shared anions decide, not the distance: the same result without the contact.
    shorter = analyze_frame(unit.numbers, unit.positions, None, False, cutoffs={"P-P": 2.0})
    assert shorter.unit_counts() == res.unit_counts()


def test_real_pp_bond_next_to_an_edge_stays_a_bond(geom):
    """The 2.25 Å P2S6 dimer and the 2.45 Å O-O edge in one frame: only the edge is unbonded."""
    dimer, edge = geom.p2s6_pp(), geom.p2x6_es("O", 2.45)
    numbers = np.concatenate([dimer.numbers, edge.numbers])
    pos = np.vstack([dimer.centred(), edge.centred() + np.array([12.0, 0.0, 0.0])])
    counts_of(analyze_frame(numbers, pos, None, False), P1P=2, P2=2, P2ES=2)


def _skew(cell: np.ndarray) -> np.ndarray:
    return np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], float) @ cell


def _terminal_o(p: np.ndarray, partners: list[np.ndarray]) -> list[np.ndarray]:
    """Two terminal O on P at ``p``, away from its in-plane (xy) partners, above and below."""
    away = -sum((q - p) / np.linalg.norm(q - p) for q in partners)
    away /= np.linalg.norm(away)
    z = np.array([0.0, 0.0, 1.0])
    half = math.radians(54.7)
    return [p + 1.55 * (math.cos(half) * away + sz * math.sin(half) * z) for sz in (1, -1)]


@pytest.mark.parametrize("skew", [False, True], ids=["ortho", "skewed"])
class TestImageRelation:
    """Cells shorter than the P...P + anion geometry: the anion must bridge the same image."""

    def run(self, numbers, pos, a, skew):
        cell = np.diag([a, 16.0, 16.0])
        if skew:
            cell = _skew(cell)
        found = contacts(numbers, pos, cell, True)
        return analyze_frame(numbers, pos, cell, True), found, cell

    def test_bond_kept_when_the_anion_bridges_another_image(self, skew):
        # P_a-P_b 2.25 Å in the cell; an O bridges P_b to the next image of P_a (P...P 2.9 Å,
        # no contact). P_a and P_b share that O by index, not by image: they stay bonded.
        a = 5.15
        pa, pb = np.array([0.0, 8.0, 8.0]), np.array([2.25, 8.0, 8.0])
        o = np.array([3.7, 8.0 + math.sqrt(1.55**2 - 1.45**2), 8.0])
        pos = [pa, pb, o]
        pos += _terminal_o(pa, [pb, o - [a, 0, 0]]) + _terminal_o(pb, [pa, o])
        numbers = np.array([15, 15, 8, 8, 8, 8, 8])
        res, found, _ = self.run(numbers, np.array(pos), a, skew)
        pp = [(i, j, s) for i, j, s, _ in found if numbers[i] == numbers[j] == 15]
        assert pp == [(0, 1, (0, 0, 0))]
        assert pair_counts(numbers, found) == Counter({"P-P": 1, "O-P": 6})
        counts_of(res, P1P=2)
        assert (res.anions.BO, res.anions.NBO) == (1, 4)

    def test_contact_through_an_image_unbonded_by_its_corner(self, skew):
        # P_a-P_b 2.25 Å (a bond) and P_b...P_a' 2.45 Å through the cell boundary, with an O
        # bridging exactly that pair of images (P-O-P 104 degrees). Counting both contacts
        # made an infinite ...P-P-P... chain of P_other; only the first is a bond.
        a = 4.7
        pa, pb = np.array([0.0, 8.0, 8.0]), np.array([2.25, 8.0, 8.0])
        o = np.array([3.475, 8.0 + math.sqrt(1.55**2 - 1.225**2), 8.0])
        pos = [pa, pb, o]
        pos += _terminal_o(pa, [pb, o - [a, 0, 0]]) + _terminal_o(pb, [pa, o])
        numbers = np.array([15, 15, 8, 8, 8, 8, 8])
        res, found, cell = self.run(numbers, np.array(pos), a, skew)
        pp = sorted((round(d, 3), i, j) for i, j, s, d in found if numbers[i] == numbers[j] == 15)
        assert [d for d, _, _ in pp] == [2.25, 2.45]
        assert pair_counts(numbers, found) == Counter({"P-P": 2, "O-P": 6})
        counts_of(res, P1P=2)
        assert (res.anions.BO, res.anions.NBO) == (1, 4)
        assert locate_units(numbers, np.array(pos), cell, True).pp_chains == ()

    def test_edge_with_own_image_inside_the_pp_cutoff(self, skew):
        # One P per 2.45 Å cell, two O each bridging it to its next image (an edge-sharing
        # PO2 chain, O-P-O 76 degrees): the P...P' contact is an edge, not an infinite P chain.
        a = 2.45
        y = math.sqrt(1.55**2 - (a / 2) ** 2)
        pos = np.array([[0.0, 8.0, 8.0], [a / 2, 8.0 + y, 8.0], [a / 2, 8.0 - y, 8.0]])
        numbers = np.array([15, 8, 8])
        res, found, cell = self.run(numbers, pos, a, skew)
        assert pair_counts(numbers, found) == Counter({"P-P": 1, "O-P": 4})
        counts_of(res, P4=1, P2ES=1)
        assert res.anions.BO == 2
        sites = locate_units(numbers, pos, cell, True)
        assert sites.edge_pairs == ((0, 0),) and sites.pp_chains == ()


# --- S-S chains and Na ----------------------------------------------------------------------


def test_long_share_of_chains(geom):
    """Chains of 2, 3, 4 and 5 S: three of four are longer than two."""
    parts = [geom.s_chain(n) for n in (2, 3, 4, 5)]
    numbers = np.concatenate([u.numbers for u in parts])
    pos = np.vstack([u.centred() + np.array([12.0 * k, 0.0, 0.0]) for k, u in enumerate(parts)])
    res = analyze_frame(numbers, pos, None, False)
    assert res.ss.chains == {2: 1, 3: 1, 4: 1, 5: 1}
    assert res.ss.long_share == pytest.approx(0.75)
    assert res.to_dict()["SS"]["long_share"] == pytest.approx(0.75)


def na_clusters(geom, n_s: int, n_o: int, d_s, d_o, seed: int = 0):
    """Na atoms each with four S (or four O) at the tetrahedron's vertices, at the distances
    ``d_s(rng, 4)`` / ``d_o(rng, 4)``, randomly rotated, on a 9 Å grid (every other contact
    beyond 6 Å). Returns numbers, positions, cell."""
    rng = np.random.default_rng(seed)
    kinds = ["S"] * n_s + ["O"] * n_o
    side = math.ceil(len(kinds) ** (1 / 3))
    cell = np.eye(3) * 9.0 * side
    numbers, pos = [], []
    for k, x in enumerate(kinds):
        centre = (np.array([k % side, (k // side) % side, k // side**2]) + 0.5) * 9.0
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        dist = (d_s if x == "S" else d_o)(rng, 4)
        numbers += [11] + [Z[x]] * 4
        pos += [centre, *(centre + (geom.tetra_vertices() @ q.T) * dist[:, None])]
    return np.array(numbers), np.array(pos), cell


def _near(value):
    return lambda rng, n: value + rng.uniform(-0.002, 0.002, n)


def test_na_peaks_at_known_distances(geom):
    numbers, pos, cell = na_clusters(geom, 20, 15, _near(2.9), _near(2.35))
    res = analyze_frame(numbers, pos, cell, True)
    found = contacts(numbers, pos, cell, True)
    assert pair_counts(numbers, found) == Counter({"Na-S": 80, "Na-O": 60})
    assert res.na.s_share == pytest.approx(80 / 140)
    assert res.na.peak_S == pytest.approx(2.9, abs=PEAK_BIN_A)
    assert res.na.peak_O == pytest.approx(2.35, abs=PEAK_BIN_A)


def test_na_peak_of_a_broad_shell(geom):
    """Na-S spread normally around 2.85 Å (sd 0.08): the peak near 2.85, and exactly where the
    documented method puts it for the contacts ase finds."""
    numbers, pos, cell = na_clusters(
        geom, 150, 0, lambda rng, n: rng.normal(2.85, 0.08, n), _near(2.35), seed=3
    )
    res = analyze_frame(numbers, pos, cell, True)
    found = contacts(numbers, pos, cell, True)
    d = np.array([dist for i, j, _, dist in found if {numbers[i], numbers[j]} == {11, 16}])
    assert len(d) == 600
    assert res.na.peak_S == pytest.approx(geom.brute_peak(d, DEFAULT_CUTOFFS["Na-S"]), abs=1e-4)
    assert res.na.peak_S == pytest.approx(2.85, abs=0.06)
    assert res.na.peak_O is None and res.na.s_share == 1.0


def test_na_peak_needs_enough_contacts_and_a_peak_inside_the_cutoff(geom):
    few = PEAK_MIN_CONTACTS // 4  # clusters of four contacts: just below the minimum
    numbers, pos, cell = na_clusters(geom, few, 0, _near(2.9), _near(2.35))
    assert 4 * few < PEAK_MIN_CONTACTS
    assert analyze_frame(numbers, pos, cell, True).na.peak_S is None
    numbers, pos, cell = na_clusters(geom, few + 1, 0, _near(2.9), _near(2.35))
    assert 4 * (few + 1) >= PEAK_MIN_CONTACTS
    res = analyze_frame(numbers, pos, cell, True)
    assert res.na.peak_S == pytest.approx(2.9, abs=PEAK_BIN_A)
    # A cutoff just above the contacts: g(r) has not come down inside it, no peak to report.
    tight = analyze_frame(numbers, pos, cell, True, cutoffs={"Na-S": 2.95})
    assert tight.na.cn_S_mean == pytest.approx(4.0) and tight.na.peak_S is None


# --- a random periodic Na-P-S-O structure against ase.neighborlist --------------------------


def random_soup(n: int, seed: int):
    """Random Na/P/S/O atoms, at least 1.7 Å apart, at glass density in a periodic cube: every
    kind of odd environment (P3c, edges, P-P clusters, S-S chains) at random."""
    rng = np.random.default_rng(seed)
    length = (n / 0.045) ** (1 / 3)
    symbols = rng.choice(["Na", "P", "S", "O"], size=n, p=[0.3, 0.2, 0.4, 0.1])
    pos = np.zeros((0, 3))
    while len(pos) < n:
        p = rng.random(3) * length
        diff = pos - p
        diff -= np.round(diff / length) * length
        if not len(pos) or np.min(np.einsum("ij,ij->i", diff, diff)) > 1.7**2:
            pos = np.vstack([pos, p])
    return np.array([Z[s] for s in symbols]), pos, np.eye(3) * length


def components(edges: list[tuple[int, int]], n: int) -> list[set[int]]:
    """Connected components (two or more atoms) of a plain graph, scipy on ase's bonds."""
    if not edges:
        return []
    a, b = np.array(edges).T
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    used = np.unique(np.concatenate([a, b]))
    out: dict[int, set[int]] = {}
    for atom in used:
        out.setdefault(int(labels[atom]), set()).add(int(atom))
    return list(out.values())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_structure_against_ase(geom, seed):
    numbers, pos, cell = random_soup(400, seed)
    res = analyze_frame(numbers, pos, cell, True)
    found = contacts(numbers, pos, cell, True)
    # No cell is shorter than twice a cutoff here: every pair has at most one contact.
    assert len({(i, j) for i, j, _, _ in found}) == len(found)
    el = [SYM[z] for z in numbers]
    by_pair = {}
    for i, j, _, d in found:
        by_pair.setdefault("-".join(sorted((el[i], el[j]))), []).append(d)

    n_s, n_o = len(by_pair.get("Na-S", [])), len(by_pair.get("Na-O", []))
    assert res.na.s_share == pytest.approx(n_s / (n_s + n_o))
    for x, peak in (("S", res.na.peak_S), ("O", res.na.peak_O)):
        d = np.array(by_pair.get(f"Na-{x}", []))
        assert peak == pytest.approx(geom.brute_peak(d, DEFAULT_CUTOFFS[f"Na-{x}"]), abs=1e-4)

    ss = components([(i, j) for i, j, _, _ in found if el[i] == el[j] == "S"], len(el))
    assert res.ss.S_in_chains == sum(map(len, ss))
    assert res.ss.long_share == (
        pytest.approx(sum(len(c) > 2 for c in ss) / len(ss)) if ss else None
    )
    assert set(locate_units(numbers, pos, cell, True).ss_chains) == {tuple(sorted(c)) for c in ss}

    # P-P bonds: P-P contacts whose two P have no anion neighbour in common.
    anions_of: dict[int, set[int]] = {}
    for i, j, _, _ in found:
        if {el[i], el[j]} in ({"P", "S"}, {"P", "O"}):
            p, x = (i, j) if el[i] == "P" else (j, i)
            anions_of.setdefault(p, set()).add(x)
    pp = [(i, j) for i, j, _, _ in found if el[i] == el[j] == "P"]
    bonds = [(i, j) for i, j in pp if not anions_of.get(i, set()) & anions_of.get(j, set())]
    n_bonds = Counter([i for i, _ in bonds] + [j for _, j in bonds])
    clusters = components(bonds, len(el))
    chain_atoms = {a for c in clusters if len(c) >= 3 for a in c}
    ends = [
        p
        for p in range(len(el))
        if el[p] == "P" and len(anions_of.get(p, ())) == 3 and n_bonds[p] == 1
    ]
    in_chains = sum(p in chain_atoms for p in ends)
    assert res.p.PPend == in_chains
    assert len(ends) - in_chains == res.p.P1P
    assert res.p.PPchain == len(chain_atoms)
    assert set(locate_units(numbers, pos, cell, True).pp_chains) == {
        tuple(sorted(c)) for c in clusters if len(c) >= 3
    }
    # Some contacts are shared corners/edges, so the rule is exercised.
    assert len(bonds) < len(pp)


# --- locate_units: the atoms behind the counts ----------------------------------------------


def assert_sites_match_counts(numbers, pos, cell, pbc):
    res = analyze_frame(numbers, pos, cell, pbc)
    sites = locate_units(numbers, pos, cell, pbc)
    numbers = np.asarray(numbers)
    assert len(sites.p3c) == res.p.P3c
    assert len({a for pair in sites.edge_pairs for a in pair}) == res.p.P2ES
    assert sum(map(len, sites.pp_chains)) == res.p.PPchain
    assert sum(map(len, sites.ss_chains)) == res.ss.S_in_chains
    assert sorted(map(len, sites.ss_chains)) == sorted(
        length for length, n in res.ss.chains.items() for _ in range(n)
    )
    # Indices into the input: the right elements.
    assert all(numbers[a] == 15 for a in sites.p3c)
    assert all(numbers[a] == 15 for pair in sites.edge_pairs for a in pair)
    assert all(numbers[a] == 15 for c in sites.pp_chains for a in c)
    assert all(numbers[a] == 16 for c in sites.ss_chains for a in c)
    return res, sites


def all_units(geom):
    names = sorted(geom.ALL_UNITS)
    cell = np.diag([48.0, 48.0, 24.0])
    symbols, pos = [], []
    for k, name in enumerate(names):
        unit = geom.ALL_UNITS[name]()
        frac = np.array([(k % 4 + 0.5) / 4, (k // 4 + 0.5) / 4, 0.5])
        pos.append(unit.centred() + frac @ cell)
        symbols += unit.symbols
    return np.array([geom.Z[s] for s in symbols]), np.concatenate(pos), cell


def test_locate_units_matches_counts_on_several_structures(geom):
    numbers, pos, cell = all_units(geom)
    res, sites = assert_sites_match_counts(numbers, pos, cell, True)
    assert res.p.P3c == 1 and res.p.P2ES == 6 and res.p.PPchain == 3
    assert sorted(map(len, sites.ss_chains)) == [2, 3]
    for seed in (1, 2, 3):
        assert_sites_match_counts(*random_soup(400, seed), True)
    glass = dimer_glass(1.0, formula_units=10, seed=5)
    assert_sites_match_counts(glass.numbers, glass.positions, glass.cell, True)


def test_locate_units_indexes_the_input_with_foreign_atoms(geom):
    """Foreign atoms (H, Si) before and among the others shift every index: sites follow."""
    numbers, pos, cell = random_soup(300, 4)
    plain = locate_units(numbers, pos, cell, True)
    assert plain.p3c and plain.ss_chains  # something to move
    rng = np.random.default_rng(0)
    at = np.sort(rng.choice(len(numbers) + 1, 25))
    foreign = rng.choice([1, 14], len(at))
    mixed_numbers = np.insert(numbers, at, foreign)
    far = np.full((len(at), 3), 1e-3) + rng.random((len(at), 3)) * cell[0, 0]
    mixed_pos = np.insert(pos, at, far, axis=0)
    moved = locate_units(mixed_numbers, mixed_pos, cell, True)
    old_to_new = np.flatnonzero(~np.isin(np.arange(len(mixed_numbers)), at + np.arange(len(at))))
    assert len(old_to_new) == len(numbers)
    assert moved.p3c == tuple(int(old_to_new[a]) for a in plain.p3c)
    assert moved.edge_pairs == tuple(tuple(int(old_to_new[a]) for a in p) for p in plain.edge_pairs)
    assert moved.pp_chains == tuple(tuple(int(old_to_new[a]) for a in c) for c in plain.pp_chains)
    assert moved.ss_chains == tuple(tuple(int(old_to_new[a]) for a in c) for c in plain.ss_chains)
    assert_sites_match_counts(mixed_numbers, mixed_pos, cell, True)


def test_locate_units_names_the_built_atoms(geom):
    chain, ps3, s3, edge = geom.pp_chain(), geom.ps3_pyramid(), geom.s_chain(3), geom.p2s6_es()
    parts = [chain, ps3, s3, edge]
    numbers = np.concatenate([u.numbers for u in parts])
    pos = np.vstack([u.centred() + np.array([14.0 * k, 0.0, 0.0]) for k, u in enumerate(parts)])
    start = np.cumsum([0] + [len(u.symbols) for u in parts])
    sites = locate_units(numbers, pos, None, False)
    assert sites.pp_chains == ((0, 1, 2),)  # the chain's three P come first
    assert sites.p3c == (int(start[1]),)
    assert sites.ss_chains == (tuple(range(start[2], start[3])),)
    assert sites.edge_pairs == ((int(start[3]), int(start[3]) + 1),)


def test_locate_units_of_an_empty_frame():
    sites = locate_units(np.zeros(0, int), np.zeros((0, 3)), np.eye(3) * 10, True)
    assert sites.p3c == () and sites.edge_pairs == () and sites.pp_chains == ()
    assert sites.ss_chains == ()
