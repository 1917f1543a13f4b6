"""Artefact pictures: the located units, their neighbours and their geometry are what was built.

Frames are built from hand-made units (tests/analysis/conftest.py: P-S 2.05, P-P 2.25, S-S 2.05
Å), placed far apart in one cubic periodic cell with Na filler, and ingested with the real
``glassbench ingest traj``. Every expectation comes from the construction or from a brute-force
distance check here, never from the code under test. All structures are SYNTHETIC.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from glassbench.analysis import DEFAULT_CUTOFFS
from glassbench.errors import BadInput
from glassbench.reports.pictures import (
    ARTEFACT_KINDS,
    EXAMPLE_COLUMNS,
    MAX_FRAMES,
    example_caption,
    load_examples,
    picture_png,
)
from glassbench.reports.queries import load_runs
from tests.analysis.conftest import (
    B_PP,
    B_PS,
    B_SS,
    Unit,
    p2s6_es,
    p2s6_pp,
    p2x7,
    pp_chain,
    ps3_pyramid,
    ps4,
    s_chain,
)

MLIP = "SYNTH-MLIP-PICS"
L = 26.0  # cubic cell edge, Å: units 13 Å apart, none within a cutoff of another
# Unit centres (fractional); Na filler where no unit is within 5 Å.
SLOTS = [(a, b, c) for a in (0.25, 0.75) for b in (0.25, 0.75) for c in (0.25, 0.75)]
NA_SITES = [(a, b, c) for a in (0.0, 0.5) for b in (0.0, 0.5) for c in (0.0, 0.5)] + [
    (a, b, 0.25) for a in (0.0, 0.5) for b in (0.0, 0.5)
]
ORDER = {"Na": 0, "P": 1, "S": 2}
Z = {"Na": 11, "P": 15, "S": 16}
P_RGB = np.array([0x8E, 0x44, 0xAD])  # the P colour of docs/make_unit_figures.py
FAR_NA_S = 3.7  # one Na this far from an S: a neighbour only under a longer Na-S cutoff


def s3_with_na() -> Unit:
    """An S3 chain with four Na around it: three within the Na-S cutoff of some S, one at
    FAR_NA_S from the last S only."""
    s = s_chain(3)
    centred = s.positions - s.positions.mean(axis=0)
    na = np.array([[0, 0, 2.8], [0, 0, -2.8], [0, -3.0, 0], centred[2] + [FAR_NA_S, 0, 0]])
    return Unit("S3+Na", ["S"] * 3 + ["Na"] * 4, np.vstack([centred, na]))


def s_alone() -> Unit:
    return Unit("S", ["S"], np.zeros((1, 3)))


@dataclass
class Built:
    """A frame: element-sorted numbers, wrapped positions, the true (unwrapped) positions and,
    per unit, the frame indices of its atoms."""

    numbers: np.ndarray
    positions: np.ndarray
    true: np.ndarray
    units: list[np.ndarray]
    symbols: list[str]


def build(units: list[Unit], shift: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Built:
    """Units at SLOTS (the first straddles the cell corner after the default shift of a quarter
    cell), Na filler up to 12 Na, everything translated by -L/4 + ``shift`` and wrapped."""
    symbols: list[str] = []
    pos: list[np.ndarray] = []
    owner: list[int] = []
    for k, unit in enumerate(units):
        centred = unit.positions - unit.positions.mean(axis=0)
        for sym, p in zip(unit.symbols, centred + np.array(SLOTS[k]) * L, strict=True):
            symbols.append(sym)
            pos.append(p)
            owner.append(k)
    n_na = 12 - symbols.count("Na")
    for site in NA_SITES[:n_na]:
        symbols.append("Na")
        pos.append(np.array(site) * L)
        owner.append(-1)
    true = np.array(pos) - L / 4 + np.array(shift)
    order = sorted(range(len(symbols)), key=lambda i: (ORDER[symbols[i]], i))
    true = true[order]
    sym_sorted = [symbols[i] for i in order]
    owner_sorted = np.array([owner[i] for i in order])
    wrapped = true - np.floor(true / L) * L
    assert (sym_sorted.count("P"), sym_sorted.count("S"), sym_sorted.count("Na")) == (6, 21, 12)
    return Built(
        numbers=np.array([Z[s] for s in sym_sorted]),
        positions=wrapped,
        true=true,
        units=[np.flatnonzero(owner_sorted == k) for k in range(len(units))],
        symbols=sym_sorted,
    )


def all_kinds(shift: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Built:
    """Edge-sharing P2S6, S3P-PS2-PS3, PS3 pyramid, S3 chain (+ Na), a lone S."""
    return build([p2s6_es(), pp_chain(), ps3_pyramid(), s3_with_na(), s_alone()], shift)


def clean() -> Built:
    """Three corner-sharing P2S7 dimers: no artefact at all."""
    return build([p2x7("S")] * 3)


ONLY = {
    "p3c": lambda: build([ps3_pyramid(), p2x7("S"), p2x7("S"), ps4("S")]),
    "edge_sharing": lambda: build([p2s6_es(), p2x7("S"), ps4("S"), ps4("S")]),
    "pp_chain": lambda: build([pp_chain(), p2x7("S"), ps4("S"), s_alone(), s_alone()]),
    "ss_chain": lambda: build([s3_with_na(), p2s6_pp(), p2s6_pp(), p2s6_pp()]),
}


# Where each kind's unit is in all_kinds(), and which of its atoms the unit is.
ALL_SLOT = {"edge_sharing": 0, "pp_chain": 1, "p3c": 2, "ss_chain": 3}


def expected_unit(built: Built, kind: str, slot: int | None = None) -> set[int]:
    """Frame indices of the unit of ``kind`` (its P, or the S of a chain), by construction."""
    idx = built.units[ALL_SLOT[kind] if slot is None else slot]
    element = "S" if kind == "ss_chain" else "P"
    return {int(i) for i in idx if built.symbols[i] == element}


def within(built: Built, a: int, b: int, cutoffs: dict[str, float]) -> bool:
    """Brute force: minimum-image distance (cubic cell) within the pair's cutoff."""
    pair = f"{built.symbols[a]}-{built.symbols[b]}"
    rev = f"{built.symbols[b]}-{built.symbols[a]}"
    cut = cutoffs.get(pair, cutoffs.get(rev))
    if cut is None:
        return False
    d = built.positions[b] - built.positions[a]
    d -= np.round(d / L) * L
    return bool(np.linalg.norm(d) <= cut)


def write(path: Path, frames: list[Built]) -> Path:
    import ase.io
    from ase import Atoms

    images = []
    for step, b in enumerate(frames, start=1):
        atoms = Atoms(numbers=b.numbers, positions=b.positions, cell=np.eye(3) * L, pbc=True)
        atoms.info["step"] = 100 * step
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return path


def ingest(gb: Any, path: Path, seed: int, *extra: str, rate: float = 5.0) -> None:
    gb.ok(
        "ingest", "traj", str(path), "--mlip", MLIP, "--x", "0", "--quench-rate", f"{rate:g}",
        "--seed", str(seed), *extra,
    )  # fmt: skip


def run_id(engine: Any, seed: int) -> int:
    with engine.connect() as c:
        return int(
            c.execute(sa.text("SELECT id FROM run WHERE seed = :s"), {"s": seed}).scalar_one()
        )


def frame_ids(engine: Any, rid: int) -> list[int]:
    with engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT id FROM frame WHERE run_id = :r ORDER BY step"), {"r": rid}
        )
        return [int(r[0]) for r in rows]


@contextmanager
def frames_read(engine: Any) -> Iterator[list[int]]:
    """Number of frame ids in every statement that reads frame positions."""
    counts: list[int] = []

    def listen(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "positions" in statement and "frame" in statement:
            counts.append(len(parameters))

    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        yield counts
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)


def examples(engine: Any, status: Callable[[pd.DataFrame], pd.Series] | None = None) -> Any:
    with engine.connect() as conn:
        runs = load_runs(conn)
        if status is not None:
            runs = runs.assign(status=status(runs))
        return load_examples(conn, runs)


def check_example(
    ex: pd.DataFrame, built: Built, kind: str, cutoffs: dict[str, float], slot: int | None = None
) -> tuple[set[int], set[int]]:
    """Unit atoms, neighbours and geometry of one example against the construction."""
    unit = {int(a) for a in ex.loc[ex["role"] == "unit", "atom"]}
    neighbours = {int(a) for a in ex.loc[ex["role"] == "neighbour", "atom"]}
    assert unit == expected_unit(built, kind, slot), kind
    brute = {
        j
        for j in range(len(built.numbers))
        for u in unit
        if j not in unit and within(built, u, j, cutoffs)
    }
    assert neighbours == brute, kind
    assert len(ex) == len(unit) + len(neighbours)
    assert list(ex["element"]) == [built.symbols[int(a)] for a in ex["atom"]]
    # Unwrapped: the example is the built unit, rigidly translated.
    atoms = ex["atom"].to_numpy(dtype=int)
    got = ex[["px", "py", "pz"]].to_numpy(dtype=float)
    assert np.allclose(got - got[0], built.true[atoms] - built.true[atoms[0]], atol=1e-4), kind
    # ...so every covalent bond drawn has the length it was built with.
    for a in range(len(atoms)):
        for b in range(a + 1, len(atoms)):
            pair = {built.symbols[atoms[a]], built.symbols[atoms[b]]}
            if "Na" in pair or not within(built, atoms[a], atoms[b], cutoffs):
                continue
            built_length = {frozenset({"P", "S"}): B_PS, frozenset({"P"}): B_PP}.get(
                frozenset(pair), B_SS
            )
            assert np.linalg.norm(got[a] - got[b]) == pytest.approx(built_length, abs=1e-4)
    return unit, neighbours


def png_pixels(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    img = imread(io.BytesIO(png), format="png")
    return np.round(np.asarray(img)[..., :3] * 255).astype(int)


def test_one_example_of_each_kind_from_the_preferred_frame(
    gb: Any, engine: Any, tmp_path: Path
) -> None:
    gb.ok("mlip", "add", MLIP, "--arch", "chgnet")
    final = all_kinds(shift=(1.3, -0.7, 2.1))
    # Seed 1: artefacts only in strain frames. Seed 2: only in a non-final frame. Seed 3: in
    # both frames (the final one is chosen). Seed 4: none anywhere.
    ingest(gb, write(tmp_path / "strain.extxyz", [all_kinds(), clean()]), 1, "--stage", "strain")
    ingest(gb, write(tmp_path / "early.extxyz", [all_kinds(), clean()]), 2, "--stage", "quench")
    ingest(gb, write(tmp_path / "both.extxyz", [all_kinds(), final]), 3, "--stage", "quench")
    ingest(gb, write(tmp_path / "clean.extxyz", [clean(), clean()]), 4)
    r_strain, r_early, r_both, r_clean = (run_id(engine, s) for s in (1, 2, 3, 4))

    with frames_read(engine) as reads:
        ex = examples(engine)
    assert reads == [1]  # one frame serves all four kinds
    assert list(ex.columns) == list(EXAMPLE_COLUMNS)
    assert list(dict.fromkeys(ex["kind"])) == list(ARTEFACT_KINDS)
    assert set(ex["run_id"]) == {r_both}
    assert set(ex["frame_id"]) == {frame_ids(engine, r_both)[-1]}
    assert set(ex["mlip"]) == {MLIP} and set(ex["seed"]) == {3}
    assert set(ex["x"]) == {0.0} and set(ex["quench_rate_k_ps"]) == {5.0}
    assert ex["complete"].all()
    cutoffs = dict(DEFAULT_CUTOFFS)
    for kind in ARTEFACT_KINDS:
        one = ex[ex["kind"] == kind]
        unit, _ = check_example(one, final, kind, cutoffs)
        assert set(one["n_unit"]) == {len(unit)}
        assert example_caption(one).startswith(
            f"run {r_both} ({MLIP}, x = 0, 5 K/ps, seed 3), frame {frame_ids(engine, r_both)[-1]}: "
        )
    # The S chain's neighbours are Na only; the one at FAR_NA_S is beyond the default 3.6 Å.
    ss = ex[(ex["kind"] == "ss_chain") & (ex["role"] == "neighbour")]
    assert set(ss["element"]) == {"Na"} and len(ss) == 3
    es = ex[ex["kind"] == "edge_sharing"]
    assert "sharing 2 anions" in example_caption(es)
    assert "with its 6 bonded neighbours (6 S)" in example_caption(es)

    # Without the preferred run: the non-final frame of seed 2, never the strain frames.
    ex2 = examples(engine, lambda r: r["status"].where(r["run_id"] != r_both, "failed"))
    assert set(ex2["frame_id"]) == {frame_ids(engine, r_early)[0]}
    for kind in ARTEFACT_KINDS:
        check_example(ex2[ex2["kind"] == kind], all_kinds(), kind, cutoffs)
    # Artefacts only in strain frames, or none at all: nothing to show.
    only = {r_strain, r_clean}
    empty = examples(engine, lambda r: r["status"].where(r["run_id"].isin(only), "failed"))
    assert empty.empty and list(empty.columns) == list(EXAMPLE_COLUMNS)

    # Pictures: valid, non-blank PNGs, small, with the P colour in them.
    for kind in ARTEFACT_KINDS:
        one = ex[ex["kind"] == kind]
        png = picture_png(one, title=f"{kind}: {example_caption(one)}")
        assert len(png) <= 150_000
        px = png_pixels(png)
        assert px.var() > 0
        colours = {tuple(c) for c in px.reshape(-1, 3)[::7]}
        assert len(colours) >= 6
        has_p = (np.abs(px - P_RGB).max(axis=-1) <= 2).any()
        assert has_p == (kind != "ss_chain"), kind


def test_at_most_four_frames_lowest_runs_first(gb: Any, engine: Any, tmp_path: Path) -> None:
    gb.ok("mlip", "add", MLIP, "--arch", "chgnet")
    kinds = ("ss_chain", "pp_chain", "edge_sharing", "p3c")
    for seed, kind in enumerate(kinds, start=1):
        ingest(gb, write(tmp_path / f"{kind}.extxyz", [ONLY[kind]()]), seed)
    ingest(gb, write(tmp_path / "all5.extxyz", [all_kinds()]), 5)
    ingest(gb, write(tmp_path / "all6.extxyz", [all_kinds()]), 6)
    ids = {seed: run_id(engine, seed) for seed in range(1, 7)}

    with frames_read(engine) as reads:
        ex = examples(engine)
    assert reads == [MAX_FRAMES]  # one SELECT of four frames
    for seed, kind in enumerate(kinds, start=1):
        one = ex[ex["kind"] == kind]
        assert set(one["run_id"]) == {ids[seed]}, kind
        check_example(one, ONLY[kind](), kind, dict(DEFAULT_CUTOFFS), slot=0)

    # Runs 1-4 not done: the lowest remaining run serves every kind, one frame read.
    not_done = {ids[s] for s in range(1, 5)}
    with frames_read(engine) as reads:
        ex = examples(engine, lambda r: r["status"].where(~r["run_id"].isin(not_done), "running"))
    assert reads == [1]
    assert set(ex["run_id"]) == {ids[5]}
    assert list(dict.fromkeys(ex["kind"])) == list(ARTEFACT_KINDS)


def test_the_frames_own_cutoffs_are_used(gb: Any, engine: Any, tmp_path: Path) -> None:
    gb.ok("mlip", "add", MLIP, "--arch", "chgnet")
    built = all_kinds()
    ingest(gb, write(tmp_path / "long.extxyz", [built]), 1, "--cutoff", "Na-S=3.8")
    ex = examples(engine)
    cutoffs = {**DEFAULT_CUTOFFS, "Na-S": 3.8}
    for kind in ARTEFACT_KINDS:
        check_example(ex[ex["kind"] == kind], built, kind, cutoffs)
    ss = ex[(ex["kind"] == "ss_chain") & (ex["role"] == "neighbour")]
    assert len(ss) == 4  # the Na at FAR_NA_S joins


def test_long_units_are_cut_and_say_so(
    gb: Any, engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounds small enough to cut the three-P chain: a connected piece from its lowest atom,
    the nearest neighbours of that piece, and a caption that says what was left out."""
    import glassbench.reports.pictures as pictures

    gb.ok("mlip", "add", MLIP, "--arch", "chgnet")
    built = all_kinds()
    ingest(gb, write(tmp_path / "cut.extxyz", [built]), 1)
    monkeypatch.setattr(pictures, "MAX_UNIT_ATOMS", 2)
    monkeypatch.setattr(pictures, "MAX_EXAMPLE_ATOMS", 5)
    ex = examples(engine)
    one = ex[ex["kind"] == "pp_chain"]
    chain = expected_unit(built, "pp_chain")
    unit = [int(a) for a in one.loc[one["role"] == "unit", "atom"]]
    neighbours = [int(a) for a in one.loc[one["role"] == "neighbour", "atom"]]
    cutoffs = dict(DEFAULT_CUTOFFS)
    assert len(one) == 5 and len(unit) == 2 and unit[0] == min(chain)
    assert set(unit) <= chain and within(built, unit[0], unit[1], cutoffs)
    assert not set(neighbours) & chain
    assert all(any(within(built, u, n, cutoffs) for u in unit) for n in neighbours)
    assert set(one["n_unit"]) == {3} and not one["complete"].any()
    assert "only the first 2 of its 3 atoms are drawn" in example_caption(one)
    p3c = ex[ex["kind"] == "p3c"]  # one P and three S: within the bounds
    assert p3c["complete"].all() and "drawn" not in example_caption(p3c)


def test_bad_input_names_the_field(sqlite_gb: tuple[Any, Any]) -> None:
    _, engine = sqlite_gb
    with engine.connect() as conn, pytest.raises(BadInput, match="runs"):
        load_examples(conn, pd.DataFrame({"run_id": [1]}))
    with pytest.raises(BadInput, match="example"):
        picture_png(pd.DataFrame(columns=list(EXAMPLE_COLUMNS)), title="nothing")
    with engine.connect() as conn:
        empty = load_examples(conn, load_runs(conn))
    assert empty.empty and list(empty.columns) == list(EXAMPLE_COLUMNS)
