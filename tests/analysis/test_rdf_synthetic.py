"""g(r), cutoff suggestion, the synthetic glass builder, and invariances of the analysis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glassbench.analysis import analyze_frame
from glassbench.analysis.rdf import first_minimum, partial_rdf, suggest_cutoffs
from glassbench.testing.synthetic import dimer_glass as random_glass
from glassbench.testing.synthetic import skewed_basis


@pytest.fixture(scope="module")
def small_glass():
    return random_glass(3.5, formula_units=12, seed=4)


def test_rdf_of_ideal_gas_is_one():
    rng = np.random.default_rng(0)
    n, length = 2000, 25.0
    pos = rng.random((n, 3)) * length
    z = rng.choice([11, 16], n)
    rdf = partial_rdf(z, pos, np.eye(3) * length, True, ["Na-S", "S-S"], r_max=6, bin_width=0.1)
    for g in rdf.g.values():
        assert g[20:].mean() == pytest.approx(1.0, abs=0.04)
    assert rdf.normalised
    assert rdf.r[0] == pytest.approx(0.05)


def test_rdf_peak_of_rock_salt_beyond_half_cell():
    # Two-atom primitive cell: r_max 6 Å is far beyond the cell, images supply the shells.
    a = 5.6
    cell = a / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], float)
    rdf = partial_rdf([11, 16], [[0, 0, 0], [a / 2, 0, 0]], cell, True, ["Na-S"], r_max=6.0)
    g = rdf.g["Na-S"]
    counts = rdf.counts["Na-S"]
    assert rdf.r[np.argmax(g)] == pytest.approx(2.8, abs=0.02)
    # 6 S at a/2, 8 at a*sqrt(3)/2 (4.85 Å).
    assert counts[rdf.r < 3.0].sum() == 6
    assert counts[(rdf.r > 4.5) & (rdf.r < 5.0)].sum() == 8


def test_rdf_needs_periodic_volume():
    with pytest.raises(ValueError, match="periodic"):
        partial_rdf([15, 16], [[0, 0, 0], [2, 0, 0]], None, False, ["P-S"])
    with pytest.raises(ValueError, match="unknown element"):
        partial_rdf([15, 16], [[0, 0, 0], [2, 0, 0]], np.eye(3) * 9, True, ["P-Xx"])


def test_first_minimum_flat_gap_and_none():
    r = np.arange(0.01, 6, 0.02)
    g = np.exp(-(((r - 2.0) / 0.05) ** 2)) + np.where(r > 3.5, 1.0, 0.0)
    # Flat zero gap from ~2.2 to 3.5 Å: the middle of it.
    assert first_minimum(r, g) == pytest.approx(2.85, abs=0.1)
    assert first_minimum(r, np.zeros_like(r)) is None
    assert first_minimum(r, np.exp(-(((r - 2.0) / 0.05) ** 2))) is None  # no rise after


def test_suggested_cutoffs_fall_between_shells(small_glass):
    f = small_glass
    got = suggest_cutoffs(f.numbers, f.positions, f.cell, True)
    # Bonds are 2.05 (P-S) and 1.55 (P-O) Å; next neighbours are beyond 2.8 Å by construction.
    assert 2.1 < got["P-S"] < 2.9
    assert 1.6 < got["P-O"] < 2.9
    # Non-periodic input works too (the shape of g does not need a volume).
    mol = suggest_cutoffs(f.numbers, f.positions, None, False, ["P-S"])
    assert 2.1 < mol["P-S"] < 2.9


def test_random_glass_composition_and_distances():
    f = random_glass(3.5, formula_units=10, seed=2)
    z = f.numbers
    assert len(z) == 130
    assert {int(k): int(v) for k, v in zip(*np.unique(z, return_counts=True), strict=True)} == {
        8: 35,
        11: 40,
        15: 20,
        16: 35,
    }
    res = analyze_frame(z, f.positions, f.cell, True)
    # Intact P2X7 dimers: every P is P1, one bridging anion per dimer, nothing else bonded.
    assert res.p.P1 == 20
    assert res.anions.BS + res.anions.BO == 10
    assert res.anions.NBS + res.anions.NBO == 60
    assert res.ss.S_in_chains == 0
    mass = 10 * (4 * 22.98976928 + 2 * 30.973762) + 35 * 32.06 + 35 * 15.999
    assert mass * 1.66053906660 / abs(np.linalg.det(f.cell)) == pytest.approx(2.2)


def test_random_glass_skewed_is_the_same_structure():
    a = random_glass(0.0, formula_units=8, seed=5)
    b = random_glass(0.0, formula_units=8, seed=5, cell_shape="skewed")
    assert np.allclose(b.cell, skewed_basis(a.cell))
    ra = analyze_frame(a.numbers, a.positions, a.cell, True)
    rb = analyze_frame(b.numbers, b.positions, b.cell, True)
    assert ra.to_dict() == rb.to_dict()
    with pytest.raises(ValueError, match="cell shape"):
        random_glass(0.0, formula_units=2, cell_shape="hexagonal")


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shift=st.tuples(*[st.floats(-50, 50)] * 3),
    rebasis=st.sampled_from(
        [
            np.eye(3),
            np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]]),
            np.array([[1, 2, 0], [0, 1, 0], [0, -3, 1]]),
            np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]]),
        ]
    ),
)
def test_invariant_to_order_origin_wrapping_and_cell_basis(small_glass, seed, shift, rebasis):
    f = small_glass
    ref = analyze_frame(f.numbers, f.positions, f.cell, True).to_dict()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(f.numbers))
    cell = rebasis.astype(float) @ f.cell
    # Unwrapped positions: whole random lattice translations per atom, plus a global shift.
    pos = f.positions[perm] + np.asarray(shift) + rng.integers(-3, 4, (len(perm), 3)) @ f.cell
    got = analyze_frame(f.numbers[perm], pos, cell, True).to_dict()
    assert got == ref
