"""Hand-built units with known speciation, in every kind of cell, straddling, shuffled."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from glassbench.analysis import DEFAULT_CUTOFFS, FrameAnalysis, analyze_frame

UNIT_KEYS = (
    "P0", "P1", "P2", "P3", "P4", "P1P", "PPend", "P3c", "P_other", "P2ES", "PPchain",
    "BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O",
    "S_in_chains", "n_P", "n_S", "n_O", "n_Na",
)  # fmt: skip


def expected_counts(symbols: list[str], expected: dict) -> dict:
    """Full unit_counts() expected for a structure: zero unless the unit says otherwise."""
    out = dict.fromkeys(UNIT_KEYS, 0)
    out.update({k: v for k, v in expected.items() if k in UNIT_KEYS})
    out.update(
        n_P=symbols.count("P"),
        n_S=symbols.count("S"),
        n_O=symbols.count("O"),
        n_Na=symbols.count("Na"),
    )
    return out


def check(res: FrameAnalysis, symbols: list[str], expected: dict) -> None:
    assert res.unit_counts() == expected_counts(symbols, expected)
    assert res.n_atoms == len(symbols)
    assert res.ss.chains == expected.get("chains", {})
    n_s = symbols.count("S")
    in_chains = expected.get("S_in_chains", 0)
    assert res.ss.fraction == pytest.approx(in_chains / n_s if n_s else 0.0)
    assert res.ss.mean_length == pytest.approx(expected.get("mean_length", 0.0))
    chains = expected.get("chains", {})
    n_chains = sum(chains.values())
    long_chains = sum(v for k, v in chains.items() if k > 2)
    assert res.ss.long_share == (long_chains / n_chains if n_chains else None)
    assert res.na.n == symbols.count("Na")
    assert res.na.histogram == expected.get("histogram", {})
    assert res.na.cn_S_mean == pytest.approx(expected.get("cn_S", 0.0))
    assert res.na.cn_O_mean == pytest.approx(expected.get("cn_O", 0.0))
    assert res.na.cn_mean == pytest.approx(res.na.cn_S_mean + res.na.cn_O_mean)
    cn = expected.get("cn_S", 0.0) + expected.get("cn_O", 0.0)
    assert res.na.s_share == (pytest.approx(expected.get("cn_S", 0.0) / cn) if cn else None)
    # A few contacts make no g(r) peak.
    assert res.na.peak_S is None and res.na.peak_O is None


@pytest.mark.parametrize("straddle", [False, True], ids=["centred", "straddling"])
@pytest.mark.parametrize("shuffle", [None, 7], ids=["ordered", "shuffled"])
def test_unit_in_periodic_cell(geom, unit_name, cell_name, straddle, shuffle):
    unit = geom.ALL_UNITS[unit_name]()
    cell = geom.CELLS[cell_name]
    assert geom.shortest_lattice_vector(cell) > 14.0
    numbers, pos = geom.place(unit, cell, straddle=straddle, shuffle_seed=shuffle)
    if straddle:
        # The unit really is cut by the boundary: wrapped atoms are far apart in Cartesian space.
        assert np.ptp(pos, axis=0).max() > 10.0
    check(analyze_frame(numbers, pos, cell, True), unit.symbols, unit.expected)


@pytest.mark.parametrize("cell", ["zero", "tiny", "none"])
def test_unit_non_periodic(geom, unit_name, cell):
    unit = geom.ALL_UNITS[unit_name]()
    pos = unit.centred() + np.array([100.0, -50.0, 3.0])  # far outside any cell
    box = {"zero": np.zeros((3, 3)), "tiny": np.eye(3) * 2.0, "none": None}[cell]
    check(analyze_frame(unit.numbers, pos, box, False), unit.symbols, unit.expected)


def test_unit_in_slab_with_zero_open_vector(geom, unit_name):
    """pbc (True, True, False) with a zero third cell vector, the unit across the x/y edges."""
    unit = geom.ALL_UNITS[unit_name]()
    cell = np.array([[16.0, 0.0, 0.0], [5.0, 15.0, 0.0], [0.0, 0.0, 0.0]])
    pos = unit.centred() + np.array([0.0, 0.0, 40.0])
    frac_xy = pos[:, :2] @ np.linalg.inv(cell[:2, :2])
    pos[:, :2] = (frac_xy - np.floor(frac_xy)) @ cell[:2, :2]
    res = analyze_frame(unit.numbers, pos, cell, [True, True, False])
    check(res, unit.symbols, unit.expected)


def test_unit_in_wire_with_one_periodic_direction(geom, unit_name):
    """pbc (True, False, False), zero open vectors, the unit across the periodic boundary."""
    unit = geom.ALL_UNITS[unit_name]()
    cell = np.array([[15.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    pos = unit.centred() + np.array([0.0, -20.0, 7.0])
    pos[:, 0] %= 15.0
    res = analyze_frame(unit.numbers, pos, cell, [True, False, False])
    check(res, unit.symbols, unit.expected)


@pytest.mark.parametrize(
    ("cell", "pbc"),
    [
        (None, False),
        ([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 0]], [True, True, False]),
        ([[10.0, 0, 0], [3.0, 0, 0], [0, 0, 0]], [True, False, False]),
    ],
    ids=["open", "slab", "wire"],
)
def test_huge_open_extent(geom, cell, pbc):
    """Atoms 1e6 Å apart along open directions (vesin alone hangs or dies of SIGFPE there)."""
    ps4 = geom.ps4("S")
    s2 = geom.s_chain(2)
    far = np.array([0.0, 4e5, 1e6]) if pbc is False else np.array([0.0, 3e5, 1e6])
    pos = np.vstack([ps4.centred() + 5.0, s2.centred() + far, [[5.0, 5.0, 2e6]]])
    numbers = np.concatenate([ps4.numbers, s2.numbers, [11]])
    res = analyze_frame(numbers, pos, cell, pbc)
    symbols = [*ps4.symbols, *s2.symbols, "Na"]
    check(
        res,
        symbols,
        {
            "P0": 1,
            "NBS": 4,
            "free_S": 2,
            "S_in_chains": 2,
            "chains": {2: 1},
            "mean_length": 2.0,
            "histogram": {0: 1},
        },
    )


@pytest.mark.parametrize("cell_kind", ["ortho", "triclinic"])
def test_all_units_together(geom, cell_kind):
    """Every unit in one big cell, shuffled: the counts add up."""
    names = sorted(geom.ALL_UNITS)
    if cell_kind == "ortho":
        cell = np.diag([48.0, 48.0, 24.0])
    else:
        cell = np.array([[48.0, 0.0, 0.0], [20.0, 46.0, 0.0], [-8.0, 10.0, 24.0]])
    symbols: list[str] = []
    pos_l = []
    total: dict = {}
    for k, name in enumerate(names):
        unit = geom.ALL_UNITS[name]()
        # 4 x 4 grid, 12 Å apart in fractional space of a >= 46 Å cell, z = 0.5.
        frac = np.array([(k % 4 + 0.5) / 4, (k // 4 + 0.5) / 4, 0.5])
        pos_l.append(unit.centred() + frac @ cell)
        symbols += unit.symbols
        for key, v in unit.expected.items():
            if key == "chains" or key == "histogram":
                acc = total.setdefault(key, {})
                for length, c in v.items():
                    acc[length] = acc.get(length, 0) + c
            elif key in UNIT_KEYS or key in ("cn_S", "cn_O"):
                total[key] = total.get(key, 0) + v
    pos = np.concatenate(pos_l)
    numbers = np.array([geom.Z[s] for s in symbols])
    perm = np.random.default_rng(3).permutation(len(numbers))
    res = analyze_frame(numbers[perm], pos[perm], cell, True)

    assert res.unit_counts() == expected_counts(symbols, total)
    assert res.ss.chains == {2: 1, 3: 1}
    assert res.ss.fraction == pytest.approx(5 / symbols.count("S"))
    assert res.ss.mean_length == pytest.approx(2.5)
    assert res.ss.long_share == pytest.approx(0.5)
    assert res.na.histogram == {3: 2}
    assert res.na.cn_S_mean == pytest.approx(1.5)
    assert res.na.cn_O_mean == pytest.approx(1.5)
    assert res.na.cn_mean == pytest.approx(3.0)
    assert res.na.s_share == pytest.approx(0.5)


# --- cells smaller than twice the cutoffs: bonds through periodic images ---------------------


def _skew(cell: np.ndarray) -> np.ndarray:
    return np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], float) @ cell


@pytest.mark.parametrize("skew", [False, True], ids=["ortho", "skewed"])
class TestSmallCells:
    def run(self, symbols, pos, cell, skew):
        cell = np.asarray(cell, float)
        if skew:
            cell = _skew(cell)
        z = np.array([{"P": 15, "S": 16, "O": 8, "Na": 11}[s] for s in symbols])
        return analyze_frame(z, np.asarray(pos, float), cell, True)

    def test_corner_sharing_chain_one_p_per_cell(self, skew):
        # ...-P-S-P-S-... along x, repeat 3.4 Å: each P has two bridging S (own and image's).
        a, b = 3.4, 2.05
        y = math.sqrt(b**2 - (a / 2) ** 2)
        half = math.radians(54.74)
        pos = [
            [0, 0, 0],
            [a / 2, y, 0],
            [0, -b * math.cos(half), b * math.sin(half)],
            [0, -b * math.cos(half), -b * math.sin(half)],
        ]
        res = self.run(["P", "S", "S", "S"], pos, np.diag([a, 15.0, 15.0]), skew)
        assert res.unit_counts() == expected_counts(
            ["P", "S", "S", "S"], {"P2": 1, "BS": 1, "NBS": 2}
        )

    def test_corner_sharing_chain_two_p_per_cell_is_not_edge_sharing(self, skew):
        # P_a and P_b share two S by index, but through different images: no shared edge.
        a, b = 6.8, 2.05
        y = math.sqrt(b**2 - (a / 4) ** 2)
        half = math.radians(54.74)
        syms = ["P", "S", "P", "S"]
        pos = [[0, 0, 0], [a / 4, y, 0], [a / 2, 0, 0], [3 * a / 4, y, 0]]
        for px in (0.0, a / 2):
            for sz in (1, -1):
                syms.append("S")
                pos.append([px, -b * math.cos(half), sz * b * math.sin(half)])
        res = self.run(syms, pos, np.diag([a, 15.0, 15.0]), skew)
        assert res.unit_counts() == expected_counts(syms, {"P2": 2, "BS": 2, "NBS": 4})

    def test_edge_sharing_chain(self, skew):
        # SiS2-like chain: P at x = 0 (repeat 2.9 Å) with four S all bridging to the images.
        a, b = 2.9, 2.05
        y = math.sqrt(b**2 - (a / 2) ** 2)
        pos = [[0, 0, 0], [a / 2, y, 0], [a / 2, -y, 0]]
        res = self.run(["P", "S", "S"], pos, np.diag([a, 15.0, 15.0]), skew)
        assert res.unit_counts() == expected_counts(["P", "S", "S"], {"P4": 1, "BS": 2, "P2ES": 1})

    def test_infinite_p_chain(self, skew):
        # P bonded to its own images (P-P 2.25 Å along x): one P, an infinite PPchain.
        res = self.run(["P"], [[0, 0, 0]], np.diag([2.25, 15.0, 15.0]), skew)
        assert res.unit_counts() == expected_counts(["P"], {"P_other": 1, "PPchain": 1})

    def test_p_dimer_chain_two_per_cell(self, skew):
        # Two P per cell, bonded inside the cell and across it: an infinite chain of 2 per cell.
        res = self.run(["P", "P"], [[0, 0, 0], [2.25, 0, 0]], np.diag([4.5, 15.0, 15.0]), skew)
        assert res.unit_counts() == expected_counts(["P", "P"], {"P_other": 2, "PPchain": 2})

    def test_isolated_p_pair_is_not_a_chain(self, skew):
        res = self.run(["P", "P"], [[0, 0, 0], [2.25, 0, 0]], np.diag([8.0, 15.0, 15.0]), skew)
        assert res.unit_counts() == expected_counts(["P", "P"], {"P_other": 2})

    def test_sulfur_helix_through_images(self, skew):
        a = 3.3
        pos = [[0, 0, 0], [a / 2, math.sqrt(2.05**2 - (a / 2) ** 2), 0]]
        res = self.run(["S", "S"], pos, np.diag([a, 15.0, 15.0]), skew)
        assert res.ss.chains == {2: 1}
        assert res.ss.S_in_chains == 2
        assert res.ss.fraction == 1.0

    def test_rock_salt_na_s(self, skew):
        # Conventional NaS rock-salt cell, a = 5.6 Å < 2 x 3.6 Å: six S around every Na.
        a = 5.6
        fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) * a
        pos = np.vstack([fcc, fcc + np.array([a / 2, 0, 0])])
        syms = ["Na"] * 4 + ["S"] * 4
        res = self.run(syms, pos, np.eye(3) * a, skew)
        assert res.na.histogram == {6: 4}
        assert res.na.cn_S_mean == 6.0
        assert res.unit_counts()["free_S"] == 4


def test_rock_salt_primitive_cell():
    """One Na and one S in the 60-degree primitive fcc cell (heights 3.2 Å < cutoff)."""
    a = 5.6
    cell = a / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], float)
    res = analyze_frame([11, 16], [[0, 0, 0], [a / 2, 0, 0]], cell, True)
    assert res.na.histogram == {6: 1}
    assert res.anions.free_S == 1


# --- cutoffs, inputs, contract ---------------------------------------------------------------


def test_cutoff_override_and_order_insensitive(geom):
    unit = geom.ps4("S")
    numbers, pos = geom.place(unit, geom.CELLS["ortho"])
    res = analyze_frame(numbers, pos, geom.CELLS["ortho"], True, cutoffs={"S-P": 2.0})
    assert res.cutoffs["P-S"] == 2.0
    assert list(res.cutoffs) == list(DEFAULT_CUTOFFS)
    assert res.unit_counts()["P_other"] == 1
    assert res.unit_counts()["free_S"] == 4


def test_cutoff_is_inclusive():
    res = analyze_frame(
        [15, 16], [[1.0, 1.0, 1.0], [3.5, 1.0, 1.0]], np.eye(3) * 10, True, cutoffs={"P-S": 2.5}
    )
    assert res.anions.NBS == 1


def test_foreign_elements_ignored_but_counted(geom):
    unit = geom.ps4("S")
    numbers, pos = geom.place(unit, geom.CELLS["ortho"])
    # An H and a Si right next to P and S bond to nothing; n_atoms counts them.
    numbers = np.concatenate([numbers, [1, 14]])
    pos = np.vstack([pos, pos[0] + [0.0, 0.0, 1.0], pos[1] + [0.0, 0.0, 1.2]])
    res = analyze_frame(numbers, pos, geom.CELLS["ortho"], True)
    assert res.n_atoms == 7
    assert res.unit_counts() == expected_counts(unit.symbols, unit.expected)


def test_empty_frame():
    res = analyze_frame(np.zeros(0, int), np.zeros((0, 3)), np.eye(3) * 10, True)
    assert res.n_atoms == 0
    assert all(v == 0 for v in res.unit_counts().values())
    assert res.ss.fraction == 0.0 and res.na.cn_mean == 0.0
    assert res.ss.long_share is None and res.na.s_share is None


def test_to_dict_is_the_json_contract(geom):
    unit = geom.na_capped("S")
    numbers, pos = geom.place(unit, geom.CELLS["triclinic"])
    d = analyze_frame(numbers, pos, geom.CELLS["triclinic"], True).to_dict()
    assert list(d) == ["n_atoms", "cutoffs", "P", "anions", "SS", "Na"]
    assert list(d["cutoffs"]) == ["P-S", "P-O", "P-P", "S-S", "Na-S", "Na-O"]
    assert list(d["P"]) == [
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
    ]
    assert list(d["anions"]) == ["BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O"]
    assert list(d["SS"]) == ["S_in_chains", "fraction", "mean_length", "chains", "long_share"]
    assert list(d["Na"]) == [
        "n",
        "cn_mean",
        "cn_S_mean",
        "cn_O_mean",
        "histogram",
        "s_share",
        "peak_S",
        "peak_O",
    ]
    for group in ("P", "anions"):
        assert all(type(v) is int for v in d[group].values())
    assert type(d["n_atoms"]) is int and type(d["Na"]["n"]) is int
    assert d["Na"]["histogram"] == {"3": 1}
    assert d["Na"]["s_share"] == 1.0 and type(d["Na"]["s_share"]) is float
    assert d["Na"]["peak_S"] is None and d["SS"]["long_share"] is None
    assert json.loads(json.dumps(d)) == d


def test_over_coordinated_anion_counts_as_bridging():
    # One S shared by three P (2.05 Å each, planar): over_S, and each P sees it as bridging.
    ang = np.radians([90.0, 210.0, 330.0])
    p = 2.05 * np.column_stack([np.cos(ang), np.sin(ang), np.zeros(3)])
    pos = np.vstack([[0, 0, 0], p]) + 10.0
    res = analyze_frame([16, 15, 15, 15], pos, np.eye(3) * 20, True)
    assert res.anions.over_S == 1
    assert res.anions.BS == 0
    # Each P has a single anion: P_other, never dropped.
    assert res.p.P_other == 3


@pytest.mark.parametrize(
    ("numbers", "positions", "cell", "pbc", "match"),
    [
        ([15, 16], [[0, 0, 0]], np.eye(3) * 10, True, "atomic numbers"),
        ([15.5], [[0, 0, 0]], np.eye(3) * 10, True, "integer"),
        ([15], [[0, 0]], np.eye(3) * 10, True, "shape"),
        ([15], [[np.nan, 0, 0]], np.eye(3) * 10, True, "NaN"),
        ([15], [[0, 0, 0]], np.zeros((3, 3)), True, "zero cell vector"),
        ([15], [[0, 0, 0]], [[1, 0, 0], [2, 0, 0], [0, 0, 1]], True, "singular"),
        ([15], [[0, 0, 0]], np.eye(2), True, "cell must have shape"),
    ],
)
def test_bad_arrays_raise_value_error(numbers, positions, cell, pbc, match):
    with pytest.raises(ValueError, match=match):
        analyze_frame(numbers, positions, cell, pbc)


def test_bad_cutoff_mapping_raises():
    with pytest.raises(ValueError, match="unknown pair"):
        analyze_frame([15], [[0, 0, 0]], np.eye(3) * 10, True, cutoffs={"P-Na": 2.0})
    with pytest.raises(ValueError, match="positive"):
        analyze_frame([15], [[0, 0, 0]], np.eye(3) * 10, True, cutoffs={"P-S": 0.0})
