"""Cross-check against an independent brute-force O(N^2) implementation on ~2000 atoms.

The structure: planted units of every kind (so that every class is populated), then random
Na/P/S/O atoms at glass density with a minimum distance, which bond to each other at random
(over-coordinated anions, P-P pairs, S-S chains, odd P environments...). The reference finds
contacts by explicit enumeration of periodic images and classifies them with plain loops;
it also gives the atoms of each located unit (`locate_units`) and the Na-S / Na-O first peaks.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest

from glassbench.analysis import DEFAULT_CUTOFFS, analyze_frame, locate_units

Z_EL = {11: "Na", 15: "P", 16: "S", 8: "O"}
MASS = {"Na": 22.99, "P": 30.97, "S": 32.06, "O": 16.00}


# --- reference implementation ------------------------------------------------------------------


def brute_contacts(numbers, pos, cell, cutoffs):
    """Directed contacts (i, j, n): atom j in image n (integer triple) within the pair cutoff
    of atom i (i == j allowed for n != 0). Minimum image for large orthorhombic cells,
    explicit enumeration of every image that can hold a contact otherwise."""
    el = [Z_EL.get(int(z)) for z in numbers]
    cut = {}
    for name, v in cutoffs.items():
        a, b = name.split("-")
        cut[(a, b)] = cut[(b, a)] = v
    rmax = max(cutoffs.values())
    inv = np.linalg.inv(cell)
    frac = pos @ inv
    frac -= np.floor(frac)
    pos = frac @ cell
    vol = abs(np.linalg.det(cell))
    heights = [
        vol / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)
    ]
    reach = [math.ceil(1 + rmax / h) for h in heights]
    # Fractional differences lie in (-1, 1): image n_k can only hold a contact if the interval
    # (n_k - 1, n_k + 1) comes within rmax / h_k of zero.
    images = [
        n
        for n in itertools.product(*(range(-r, r + 1) for r in reach))
        if all(max(abs(nk) - 1, 0) * h <= rmax for nk, h in zip(n, heights, strict=True))
    ]
    pair_cut = np.full((len(numbers), len(numbers)), -1.0)
    for (a, b), v in cut.items():
        ia = np.array([e == a for e in el])
        ib = np.array([e == b for e in el])
        pair_cut[np.ix_(ia, ib)] = v
    cut2 = np.where(pair_cut > 0, pair_cut**2, -1.0)
    contacts = []
    if np.allclose(cell, np.diag(np.diag(cell))) and min(heights) > 2 * rmax:
        # Orthorhombic and large: the minimum image is the only image within rmax.
        lengths = np.diag(cell)
        for start in range(0, len(pos), 400):
            rows = slice(start, start + 400)
            diff = pos[None, :, :] - pos[rows, None, :]
            n_img = -np.round(diff / lengths)
            diff += n_img * lengths
            ii, jj = np.nonzero(np.einsum("ijk,ijk->ij", diff, diff) <= cut2[rows])
            for i, j in zip(ii, jj, strict=True):
                if i + start != j:
                    contacts.append((int(i + start), int(j), tuple(int(x) for x in n_img[i, j])))
        return el, contacts
    for n in images:
        shift = np.array(n, float) @ cell
        for start in range(0, len(pos), 400):
            rows = slice(start, start + 400)
            diff = pos[None, :, :] + shift - pos[rows, None, :]
            ii, jj = np.nonzero(np.einsum("ijk,ijk->ij", diff, diff) <= cut2[rows])
            for i, j in zip(ii + start, jj, strict=True):
                if i == j and not any(n):
                    continue
                contacts.append((int(i), int(j), n))
    return el, contacts


def brute_components(atoms, links):
    """Components of the bond graph over ``atoms``; ``links[a]``: (b, image of b seen from a).

    Every atom gets an image offset as the search reaches it; reaching an atom again at another
    offset means the component runs into its own periodic image (an infinite cluster).
    Returns [(set of atoms, infinite)].
    """
    seen, comps = set(), []
    for start in atoms:
        if start in seen:
            continue
        offset = {start: (0, 0, 0)}
        stack, infinite = [start], False
        while stack:
            a = stack.pop()
            for b, n in links[a]:
                at = tuple(x + y for x, y in zip(offset[a], n, strict=True))
                if b not in offset:
                    offset[b] = at
                    stack.append(b)
                elif offset[b] != at:
                    infinite = True
        seen |= set(offset)
        comps.append((set(offset), infinite))
    return comps


def brute_classify(numbers, pos, cell, cutoffs):
    el, contacts = brute_contacts(numbers, pos, cell, cutoffs)
    nbrs = defaultdict(list)
    for i, j, n in contacts:
        nbrs[i].append((j, n))
    n_p = {a: sum(el[j] == "P" for j, _ in nbrs[a]) for a in range(len(el)) if el[a] in ("S", "O")}

    def via_anion(i, j, n):
        """Whether P i and the image n of P j are both bonded to one anion (a corner/edge)."""
        for a, na in nbrs[i]:
            if el[a] not in ("S", "O"):
                continue
            for b, nb in nbrs[a]:
                if b == j and tuple(x + y for x, y in zip(na, nb, strict=True)) == n:
                    return True
        return False

    # P-P bonds: contacts within the cutoff that are not a shared corner or edge.
    pp_bonds = {
        i: [(j, n) for j, n in nbrs[i] if el[j] == "P" and not via_anion(i, j, n)]
        for i in range(len(el))
        if el[i] == "P"
    }
    unbonded = sum(el[i] == el[j] == "P" for i, j, _ in contacts) - sum(map(len, pp_bonds.values()))
    p_atoms = [i for i, e in enumerate(el) if e == "P"]
    pp_comps = brute_components(p_atoms, pp_bonds)
    in_chain = {a for c, inf in pp_comps if len(c) >= 3 or inf for a in c}
    out = dict.fromkeys(
        [
            "P0",
            "P1",
            "P2",
            "P3",
            "P4",
            "P1P",
            "PPend",
            "P3c",
            "P_other",
            "P2ES",
            "PPchain",
            "BS",
            "NBS",
            "BO",
            "NBO",
            "free_S",
            "free_O",
            "over_S",
            "over_O",
            "S_in_chains",
        ],
        0,
    )
    sites = {"p3c": set(), "edge_pairs": set()}
    for i in p_atoms:
        anions = [(j, n) for j, n in nbrs[i] if el[j] in ("S", "O")]
        ps = pp_bonds[i]
        if len(anions) == 4 and not ps:
            out[f"P{sum(n_p[j] >= 2 for j, _ in anions)}"] += 1
        elif len(anions) == 3 and len(ps) == 1:
            out["PPend" if i in in_chain else "P1P"] += 1
        elif len(anions) == 3 and not ps:
            out["P3c"] += 1
            sites["p3c"].add(i)
        else:
            out["P_other"] += 1
        # Edge sharing: which P images does each bridging anion image lead to?
        shared = defaultdict(set)
        for a, na in anions:
            if n_p[a] < 2:
                continue
            for b, nb in nbrs[a]:
                if el[b] != "P":
                    continue
                image = tuple(x + y for x, y in zip(na, nb, strict=True))
                if (b, image) != (i, (0, 0, 0)):
                    shared[(b, image)].add((a, na))
        partners = {b for (b, _), s in shared.items() if len(s) >= 2}
        out["P2ES"] += bool(partners)
        sites["edge_pairs"] |= {(min(i, b), max(i, b)) for b in partners}
    for a, k in n_p.items():
        x = el[a]
        key = {0: f"free_{x}", 1: f"NB{x}", 2: f"B{x}"}.get(k, f"over_{x}")
        out[key] += 1

    out["PPchain"] = len(in_chain)
    s_atoms = [i for i, e in enumerate(el) if e == "S"]
    ss_links = {i: [(j, n) for j, n in nbrs[i] if el[j] == "S"] for i in s_atoms}
    ss_comps = [c for c, inf in brute_components(s_atoms, ss_links) if len(c) >= 2 or inf]
    chains = [len(c) for c in ss_comps]
    out["S_in_chains"] = sum(chains)
    hist: dict[int, int] = defaultdict(int)
    for length in chains:
        hist[length] += 1
    na_atoms = [i for i, e in enumerate(el) if e == "Na"]
    cn_s = [sum(el[j] == "S" for j, _ in nbrs[i]) for i in na_atoms]
    cn_o = [sum(el[j] == "O" for j, _ in nbrs[i]) for i in na_atoms]
    cn_hist: dict[int, int] = defaultdict(int)
    for s, o in zip(cn_s, cn_o, strict=True):
        cn_hist[s + o] += 1
    sites["pp_chains"] = {tuple(sorted(c)) for c, inf in pp_comps if len(c) >= 3 or inf}
    sites["ss_chains"] = {tuple(sorted(c)) for c in ss_comps}
    return {
        "units": out,
        "chains": dict(hist),
        "long_share": sum(n > 2 for n in chains) / len(chains) if chains else None,
        "cn_hist": dict(cn_hist),
        "cn_s": float(np.mean(cn_s)),
        "cn_o": float(np.mean(cn_o)),
        "s_share": sum(cn_s) / (sum(cn_s) + sum(cn_o)) if sum(cn_s) + sum(cn_o) else None,
        "na_distances": na_distances(el, pos, cell, contacts),
        "sites": sites,
        "pp_unbonded": unbonded,
    }


def na_distances(el, pos, cell, contacts):
    """Distances of the directed Na-S and Na-O contacts (each Na-X pair once, from the Na)."""
    out = {"S": [], "O": []}
    for i, j, n in contacts:
        if el[i] == "Na" and el[j] in out:
            d = pos[j] + np.asarray(n, float) @ cell - pos[i]
            out[el[j]].append(float(np.linalg.norm(d)))
    return {k: np.array(v) for k, v in out.items()}


# --- structure ---------------------------------------------------------------------------------


def star(geom, n_bridging: int):
    """A central P with ``n_bridging`` S bridging to outer PS3 groups (a P{n} and n P1)."""
    v = geom.tetra_vertices()
    syms, pos = ["P"], [np.zeros(3)]
    for k in range(4):
        s = geom.B_PS * v[k]
        syms.append("S")
        pos.append(s)
        if k < n_bridging:
            # Outer P continues outwards from S, P-S-P 110 degrees.
            e1, _ = geom._perp(v[k])
            ang = np.radians(180.0 - 110.0)
            d = np.cos(ang) * v[k] + np.sin(ang) * e1
            p = s + geom.B_PS * d
            syms.append("P")
            pos.append(p)
            for t in p + geom.B_PS * geom.cone(d, np.pi - geom.TETRA, phase=1.0):
                syms.append("S")
                pos.append(t)
    return syms, np.array(pos)


def over_anion(x: str):
    b = 2.05 if x == "S" else 1.55
    ang = np.radians([90.0, 210.0, 330.0])
    p = b * np.column_stack([np.cos(ang), np.sin(ang), np.zeros(3)])
    return [x, "P", "P", "P"], np.vstack([np.zeros(3), p])


def glass_like(geom, cell: np.ndarray, n_fu: int, seed: int):
    """Planted units (kept 3.7 Å clear of everything else), then random Na4P2S6O atoms."""
    rng = np.random.default_rng(seed)
    inv = np.linalg.inv(cell)

    def min_dist(p, others):
        if not len(others):
            return np.inf
        df = (p[:, None, :] - others[None, :, :]) @ inv
        df -= np.round(df)
        return float(np.linalg.norm(df @ cell, axis=-1).min())

    planted = [geom.ALL_UNITS[name]() for name in sorted(geom.ALL_UNITS)]
    groups = [(u.symbols, u.centred()) for u in planted]
    groups += [star(geom, 4), star(geom, 3), over_anion("S"), over_anion("O")]
    symbols: list[str] = []
    planted_pos = np.zeros((0, 3))
    for syms, local in groups:
        while True:
            q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
            p = (local - local.mean(axis=0)) @ q.T + rng.random(3) @ cell
            if min_dist(p, planted_pos) > 4.0:
                break
        symbols += syms
        planted_pos = np.vstack([planted_pos, p])
    random_syms = (["Na"] * 4 + ["P"] * 2 + ["S"] * 6 + ["O"]) * n_fu
    rng.shuffle(random_syms)
    rand_pos = np.zeros((0, 3))
    for _ in random_syms:
        while True:
            p = (rng.random(3) @ cell)[None, :]
            if min_dist(p, planted_pos) > 3.7 and min_dist(p, rand_pos) > 1.6:
                break
        rand_pos = np.vstack([rand_pos, p])
    symbols += random_syms
    pos = np.vstack([planted_pos, rand_pos])
    numbers = np.array([geom.Z[s] for s in symbols])
    perm = rng.permutation(len(numbers))
    return numbers[perm], pos[perm]


def glass_cell(kind: str, n_fu: int) -> np.ndarray:
    mass = n_fu * sum(MASS[e] * c for e, c in (("Na", 4), ("P", 2), ("S", 6), ("O", 1)))
    volume = mass * 1.66054 / 2.2 * 1.08  # planted units add ~8 %
    if kind == "ortho":
        shape = np.diag([1.0, 1.1, 0.9])
    else:
        al, be, ga = np.radians([70.0, 80.0, 60.0])
        cx = np.cos(be)
        cy = (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
        shape = np.array(
            [[1, 0, 0], [np.cos(ga), np.sin(ga), 0], [cx, cy, np.sqrt(1 - cx**2 - cy**2)]]
        )
    return shape * (volume / abs(np.linalg.det(shape))) ** (1 / 3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ortho", "triclinic"])
def test_matches_brute_force(geom, kind):
    n_fu = 145
    cell = glass_cell(kind, n_fu)
    numbers, pos = glass_like(geom, cell, n_fu, seed=11 if kind == "ortho" else 12)
    assert 1900 <= len(numbers) <= 2200

    res = analyze_frame(numbers, pos, cell, True)
    ref = brute_classify(numbers, pos, cell, dict(DEFAULT_CUTOFFS))
    got = {k: v for k, v in res.unit_counts().items() if not k.startswith("n_")}
    assert got == ref["units"]
    assert res.ss.chains == ref["chains"]
    assert res.ss.long_share == pytest.approx(ref["long_share"])
    assert res.na.histogram == ref["cn_hist"]
    assert res.na.cn_S_mean == pytest.approx(ref["cn_s"])
    assert res.na.cn_O_mean == pytest.approx(ref["cn_o"])
    assert res.na.s_share == pytest.approx(ref["s_share"])
    for x, peak in (("S", res.na.peak_S), ("O", res.na.peak_O)):
        distances = ref["na_distances"][x]
        assert len(distances) >= 50  # enough contacts for a peak
        assert peak == pytest.approx(
            geom.brute_peak(distances, DEFAULT_CUTOFFS[f"Na-{x}"]), abs=1e-4
        )
    # The cross-check means something only if every class is populated, and if some P-P
    # contacts are corners or edges rather than bonds.
    assert all(v > 0 for v in ref["units"].values()), {
        k: v for k, v in ref["units"].items() if not v
    }
    assert ref["pp_unbonded"] > 0

    sites = locate_units(numbers, pos, cell, True)
    assert set(sites.p3c) == ref["sites"]["p3c"]
    assert set(sites.edge_pairs) == ref["sites"]["edge_pairs"]
    assert set(sites.pp_chains) == ref["sites"]["pp_chains"]
    assert set(sites.ss_chains) == ref["sites"]["ss_chains"]

    # Same answer after wrapping differently, shuffling and moving the origin.
    perm = np.random.default_rng(0).permutation(len(numbers))
    moved = (
        pos[perm]
        + [3.3, -7.1, 12.9]
        + np.random.default_rng(1).integers(-2, 3, (len(pos), 1)) * cell[0]
    )
    again = analyze_frame(numbers[perm], moved, cell, True)
    assert again.unit_counts() == res.unit_counts()
