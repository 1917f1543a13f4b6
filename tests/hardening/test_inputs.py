"""Structure and LAMMPS inputs of the hostile kinds of issue 17, refused in bounded memory.

Every structure meets the bounds of ``analysis/limits.py`` wherever it enters: ``analyze``,
``ingest lammps``, ``ingest traj`` and stored frames in ``reanalyze`` (the check sits in the
neighbour builder all of them use). Resource cases run the real CLI in a child under
``RLIMIT_AS`` (`gb_limited`), so a regression fails with MemoryError instead of swapping.
Database cases run on SQLite and PostgreSQL and check that no table changed.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from glassbench.analysis.limits import MAX_ATOMS, MAX_LINE_BYTES, MAX_PAIRS
from glassbench.analysis.neighbours import (
    check_neighbour_load,
    estimate_contacts,
    half_pairs,
    normalise_geometry,
)
from tests.conftest import Cli
from tests.hardening.conftest import gb_limited, table_counts
from tests.ingest.conftest import key_args, lammps_file

TYPE_OF = {"Na": 1, "P": 2, "S": 3, "O": 4}
# 104 atoms of Na4P2S7 (8 formula units), as in the hostile trial.
SYMBOLS = ["Na"] * 32 + ["P"] * 16 + ["S"] * 56


# --- files ---------------------------------------------------------------------------------


def write_extxyz(path: Path, symbols: list[str], positions: Any, cell: Any) -> Path:
    """An extxyz frame written by hand, so that any number (1e308, nan) reaches the file."""
    lattice = " ".join(str(v) for v in np.asarray(cell, dtype=float).ravel())
    lines = [str(len(symbols)), f'Lattice="{lattice}" Properties=species:S:1:pos:R:3 pbc="T T T"']
    lines += [f"{s} {x} {y} {z}" for s, (x, y, z) in zip(symbols, positions, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_dump(
    path: Path,
    symbols: list[str],
    positions: Any,
    length: float | str,
    *,
    step: int | str = 0,
    n_atoms: int | str | None = None,
) -> Path:
    """A LAMMPS text dump (one frame, orthogonal box 0..length), any value written as given."""
    lines = ["ITEM: TIMESTEP", str(step), "ITEM: NUMBER OF ATOMS"]
    lines.append(str(len(symbols) if n_atoms is None else n_atoms))
    lines += ["ITEM: BOX BOUNDS pp pp pp"] + [f"0.0 {length}"] * 3
    lines.append("ITEM: ATOMS id type x y z")
    for k, (s, (x, y, z)) in enumerate(zip(symbols, positions, strict=True)):
        lines.append(f"{k + 1} {TYPE_OF[s]} {x} {y} {z}")
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_cell(seed: int = 0) -> tuple[list[str], Any, Any]:
    """104 atoms in a 1 Å cube: ~2300 times a glass's atom density."""
    rng = np.random.default_rng(seed)
    return SYMBOLS, rng.random((104, 3)), np.eye(3)


def glass(formula_units: int = 100) -> tuple[list[str], Any, Any]:
    """A realistic Na4P2S6O glass (13 atoms per formula unit, ~0.048 atoms/Å^3)."""
    from ase.data import chemical_symbols

    from glassbench.testing.synthetic import dimer_glass

    f = dimer_glass(1.0, formula_units=formula_units, seed=1)
    return [chemical_symbols[z] for z in f.numbers], f.positions, f.cell


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, one ``Error:`` line containing every needle, no Python exception, no output."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in err.splitlines() if not ln.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "MemoryError" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture
def url(gb: Cli, db_url: str) -> str:
    """A migrated database of each kind with the MLIP the ingests name."""
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    return db_url


KEY = key_args("MP0", x=0.0)


# --- 1. density and neighbour-list size, under a memory limit ---------------------------------


def test_analyze_tiny_cell_refused_in_bounded_memory(tmp_path: Path) -> None:
    """The hostile trial's 104 atoms in a 1 Å cube: 8-20 GB before, now refused in ~100 MB."""
    xyz = write_extxyz(tmp_path / "tiny.extxyz", *tiny_cell())
    dump = write_dump(tmp_path / "tiny.lammpstrj", SYMBOLS, tiny_cell()[1], 1.0)
    for path in (xyz, dump):
        proc = gb_limited(None, "analyze", str(path))
        one_line_error(proc, path.name, "frame 0", "104 atoms in a cell of 1 Å^3", "0.5")
        proc = gb_limited(None, "analyze", str(path), "--all-frames", "--suggest-cutoffs")
        one_line_error(proc, "frame 0", "atoms/Å^3")


def test_analyze_atoms_piled_up_in_a_normal_cell(tmp_path: Path) -> None:
    """A sane cell whose atoms sit on a few points: the local density gives it away."""
    rng = np.random.default_rng(1)
    pos = 10.0 + rng.normal(scale=0.05, size=(104, 3))
    path = write_extxyz(tmp_path / "piled.extxyz", SYMBOLS, pos, np.eye(3) * 20.0)
    one_line_error(gb_limited(None, "analyze", str(path)), "atoms within one", "Å^3 region")


def test_ingests_refuse_tiny_cells_in_bounded_memory(url: str, engine: Any, tmp_path: Path) -> None:
    symbols, pos, cell = tiny_cell()
    xyz = write_extxyz(tmp_path / "tiny.extxyz", symbols, pos, cell)
    dump = write_dump(tmp_path / "tiny.lammpstrj", symbols, pos, 1.0)
    log = lammps_file("log.metal.lammps")
    before = table_counts(engine)
    proc = gb_limited(url, "ingest", "traj", str(xyz), *KEY)
    one_line_error(proc, "tiny.extxyz", "frame 0", "atoms/Å^3")
    # x = 0 needs 104 = 8 Na4P2S7: the dump passes the composition check and meets the density.
    proc = gb_limited(url, "ingest", "lammps", "--log", str(log), "--dump", str(dump), *KEY)
    one_line_error(proc, "tiny.lammpstrj", "frame 0", "atoms/Å^3")
    proc = gb_limited(url, "ingest", "traj", str(xyz), *KEY, "--cutoff", "Na-S=8")
    one_line_error(proc, "atoms/Å^3")
    assert table_counts(engine) == before


def test_max_cutoff_on_a_realistic_glass_runs_under_the_limit(
    url: str, engine: Any, tmp_path: Path
) -> None:
    """Every pair at the 8 Å maximum on a 1300-atom glass: analysed, not refused."""
    symbols, pos, cell = glass(100)
    path = write_extxyz(tmp_path / "glass.extxyz", symbols, pos, cell)
    at_max = [f"--cutoff={p}=8" for p in ("P-S", "P-O", "P-P", "S-S", "Na-S", "Na-O")]
    proc = gb_limited(None, "analyze", str(path), *at_max, "--suggest-cutoffs")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["n_atoms"] == 1300 and out["cutoffs"]["Na-S"] == 8.0
    assert out["Na"]["cn_mean"] > 10  # a second-shell cutoff sees many neighbours
    proc = gb_limited(url, "ingest", "traj", str(path), *key_args("MP0", x=1.0), *at_max)
    assert proc.returncode == 0, proc.stderr
    assert table_counts(engine)["frame"] == 1


def test_neighbour_list_too_large_for_memory_is_refused(tmp_path: Path) -> None:
    """Physical density, but more contacts at 8 Å than `MAX_PAIRS`: refused before the search."""
    rng = np.random.default_rng(2)
    n = 600_000  # 600,000 x 0.045 x (4/3 pi 8^3) / 2 ~ 2.9e7 contacts
    length = (n / 0.045) ** (1 / 3)
    symbols = [["Na", "P", "S", "O"][k] for k in rng.integers(0, 4, n)]
    path = write_extxyz(
        tmp_path / "big.extxyz", symbols, rng.random((n, 3)) * length, np.eye(3) * length
    )
    proc = gb_limited(None, "analyze", str(path), "--cutoff", "Na-S=8", timeout=300)
    one_line_error(proc, "frame", "contacts", f"{MAX_PAIRS:.0e}")


def test_reanalyze_of_a_stored_tiny_cell_is_bounded(url: str, engine: Any, gb: Cli) -> None:
    """Frames stored before these bounds existed meet them in reanalyze (the same builder)."""
    import sqlalchemy as sa

    log, dump = lammps_file("log.metal.lammps"), lammps_file("dump.metal.lammpstrj")
    gb.ok("ingest", "lammps", "--log", str(log), "--dump", str(dump), *KEY)
    gb.ok("analysis", "add", "tight", "--cutoff", "P-S=2.4")
    with engine.begin() as c:  # what an older glassbench could have stored: a 1 Å cell
        c.execute(sa.text("UPDATE frame SET cell_json = '[[1,0,0],[0,1,0],[0,0,1]]'"))
    before = table_counts(engine)
    proc = gb_limited(url, "reanalyze", "--analysis", "tight")
    one_line_error(proc, "run 1 (MP0", "frame", "(step 100)", "52 atoms in a cell of 1 Å^3")
    assert table_counts(engine) == before


def test_estimate_follows_the_real_list() -> None:
    """The estimate that decides refusals tracks the list vesin builds: periodic, slab, open."""
    symbols, pos, cell = glass(60)
    numbers = np.array([TYPE_OF[s] for s in symbols])
    assert len(numbers) == 780
    for box, pbc in ((cell, True), (cell * [[1], [1], [0]], [True, True, False]), (None, False)):
        p, b, per = normalise_geometry(pos, box, pbc)
        for rc in (3.6, 8.0):
            real = len(half_pairs(p, b, per, rc).i)
            assert 0.6 * real < estimate_contacts(p, b, per, rc) < 1.5 * real, (pbc, rc)
    # A cell far thinner than the cutoff: images count (n rho 4/3 pi rc^3 / 2).
    p, b, per = normalise_geometry(
        np.random.default_rng(3).random((10, 3)) * 6, np.eye(3) * 6, True
    )
    real = len(half_pairs(p, b, per, 8.0).i)
    assert 0.8 * real < estimate_contacts(p, b, per, 8.0) < 1.25 * real


def test_atom_count_bound_in_the_engine() -> None:
    pos = np.zeros((MAX_ATOMS + 1, 3))
    with pytest.raises(ValueError, match="above the limit of 1,000,000"):
        check_neighbour_load(pos, np.eye(3) * 1e5, [True] * 3, 3.6)


def test_edge_sharing_work_is_bounded() -> None:
    """P-S at the 8 Å maximum on a P/S-rich structure bonds every S to ~50 P: the pairwise
    edge-sharing test would need gigabytes, so it is refused with the reason."""
    from glassbench.analysis import analyze_frame

    rng = np.random.default_rng(4)
    n = 20_000
    length = (n / 0.045) ** (1 / 3)
    numbers = np.where(rng.random(n) < 0.5, 15, 16)
    with pytest.raises(ValueError, match=r"sharing an anion.*P-S/P-O cutoffs"):
        analyze_frame(numbers, rng.random((n, 3)) * length, np.eye(3) * length, True, {"P-S": 8})


# --- 2. units a log states win over a contradicting --units -------------------------------------


def _thermo(engine: Any) -> list[tuple[Any, ...]]:
    import sqlalchemy as sa

    with engine.connect() as c:
        return [
            tuple(r)
            for r in c.execute(
                sa.text(
                    "SELECT step, time_ps, potential_energy_ev, pressure_gpa FROM thermo ORDER BY run_id, step"
                )
            )
        ]


@pytest.mark.parametrize(
    ("log", "given", "stated"),
    [("log.metal.lammps", "real", "metal"), ("log.real.lammps", "metal", "real")],
)
def test_contradicting_units_refused(
    gb: Cli, url: str, engine: Any, log: str, given: str, stated: str
) -> None:
    before = table_counts(engine)
    x = "0" if "metal" in log else "1"
    res = gb(
        "ingest",
        "lammps",
        "--log",
        str(lammps_file(log)),
        "--units",
        given,
        *key_args("MP0", x=float(x)),
    )
    assert res.exit_code == 2, res.output
    msg = res.output.strip()
    assert len(msg.splitlines()) == 1 and msg.startswith("Error: --units:"), msg
    assert f"'{given}' contradicts `units {stated}` at line 7 of" in msg and log in msg, msg
    assert table_counts(engine) == before
    # Agreeing units are fine (and change nothing in the numbers).
    gb.ok(
        "ingest",
        "lammps",
        "--log",
        str(lammps_file(log)),
        "--units",
        stated,
        *key_args("MP0", x=float(x)),
    )


def test_units_given_apply_where_the_log_states_none(
    gb: Cli, url: str, engine: Any, tmp_path: Path
) -> None:
    """A real-units log written with `echo none`: --units real gives what the echoed log gives;
    without --units it is refused; --units metal would be 1000x off, and nothing can tell."""
    text = lammps_file("log.real.lammps").read_text()
    assert "units           real\n" in text
    silent = tmp_path / "log.silent"
    silent.write_text(text.replace("units           real\n", ""))
    gb.ok(
        "ingest",
        "lammps",
        "--log",
        str(lammps_file("log.real.lammps")),
        *key_args("MP0", x=1.0, seed=1),
    )
    echoed = _thermo(engine)
    before = table_counts(engine)
    res = gb("ingest", "lammps", "--log", str(silent), *key_args("MP0", x=1.0, seed=2))
    assert res.exit_code == 2 and "no `units` command" in res.output, res.output
    assert table_counts(engine) == before
    gb.ok(
        "ingest", "lammps", "--log", str(silent), "--units", "real", *key_args("MP0", x=1.0, seed=2)
    )
    both = _thermo(engine)
    assert both[: len(echoed)] == echoed and both[len(echoed) :] == echoed


def test_unit_style_summary_line_counts_as_stated(
    gb: Cli, url: str, engine: Any, tmp_path: Path
) -> None:
    """LAMMPS >= 2022 prints `Unit style    : metal` in its run summary, also without echo."""
    text = lammps_file("log.metal.lammps").read_text().replace("units           metal\n", "")
    at = text.index("Per MPI rank memory")
    log = tmp_path / "log.summary"
    log.write_text(text[:at] + "Unit style    : metal\n" + text[at:])
    before = table_counts(engine)
    res = gb("ingest", "lammps", "--log", str(log), "--units", "real", *KEY)
    assert res.exit_code == 2 and "contradicts `units metal`" in res.output, res.output
    assert table_counts(engine) == before


def test_dump_units_contradicting_the_log(gb: Cli, url: str, engine: Any, tmp_path: Path) -> None:
    text = lammps_file("dump.metal.lammpstrj").read_text()
    dump = tmp_path / "dump.units"
    dump.write_text(text.replace("ITEM: TIMESTEP\n", "ITEM: UNITS\nreal\nITEM: TIMESTEP\n"))
    before = table_counts(engine)
    res = gb(
        "ingest", "lammps", "--log", str(lammps_file("log.metal.lammps")), "--dump", str(dump), *KEY
    )
    assert res.exit_code == 2, res.output
    assert "dump.units:frame 0" in res.output and "'real'" in res.output and "'metal'" in res.output
    assert table_counts(engine) == before


# --- 3. values out of bounds in dumps and extxyz -------------------------------------------------


def _edit_dump(tmp: Path, edit: Callable[[list[str]], None]) -> Path:
    lines = lammps_file("dump.metal.lammpstrj").read_text().splitlines()
    edit(lines)
    path = tmp / "dump.bad"
    path.write_text("\n".join(lines) + "\n")
    return path


def _set(index: int, value: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:
        lines[index] = value

    return edit


def _atom(column: int, value: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:  # the third atom of the first frame (line 12)
        tokens = lines[11].split()
        tokens[column] = value
        lines[11] = " ".join(tokens)

    return edit


# (edit of dump.metal.lammpstrj, where, words of the reason) - line numbers are 1-based
BAD_DUMPS = {
    "negative TIMESTEP": (_set(1, "-100"), "line 2", "negative TIMESTEP -100"),
    "coordinate 1e308": (_atom(2, "1e308"), "line 12", "1e+308"),
    "coordinate -2e6": (_atom(4, "-2e6"), "line 12", "-2e+06"),
    "coordinate nan": (_atom(3, "nan"), "line 12", "NaN"),
    "coordinate inf": (_atom(3, "inf"), "line 12", "inf"),
    "box bound 1e308": (_set(5, "0.0 1e308"), "frame 0", "BOX BOUNDS"),
    "box bound inf": (_set(6, "0.0 inf"), "frame 0", "BOX BOUNDS"),
    "box bound nan": (_set(7, "nan 9.5"), "frame 0", "BOX BOUNDS"),
    "type 0": (_atom(1, "0"), "line 12", "type"),
}


@pytest.mark.parametrize("case", sorted(BAD_DUMPS))
def test_bad_dump_values_refused(gb: Cli, url: str, engine: Any, tmp_path: Path, case: str) -> None:
    edit, where, reason = BAD_DUMPS[case]
    dump = _edit_dump(tmp_path, edit)
    before = table_counts(engine)
    res = gb(
        "ingest", "lammps", "--log", str(lammps_file("log.metal.lammps")), "--dump", str(dump), *KEY
    )
    assert res.exit_code == 2, res.output
    msg = res.output.strip()
    assert len(msg.splitlines()) == 1 and "dump.bad:frame 0" in msg and where in msg, msg
    assert reason.lower() in msg.lower(), msg
    assert table_counts(engine) == before
    proc = gb_limited(None, "analyze", str(dump), "--all-frames")
    one_line_error(proc, "dump.bad:frame 0")


# (positions or cell edit, words of the reason)
BAD_EXTXYZ = {
    "position 1e308": ("pos", "1e308", "1e+308"),
    "position -5e6": ("pos", "-5e6", "-5e+06"),
    "position nan": ("pos", "nan", "NaN"),
    "cell nan": ("cell", "nan", "cell"),
    "cell inf": ("cell", "inf", "cell"),
}


@pytest.mark.parametrize("case", sorted(BAD_EXTXYZ))
def test_bad_extxyz_values_refused(
    gb: Cli, url: str, engine: Any, tmp_path: Path, case: str
) -> None:
    what, value, reason = BAD_EXTXYZ[case]
    symbols, pos, cell = glass(4)
    pos = pos.astype(object)
    cell = np.asarray(cell, dtype=object)
    if what == "pos":
        pos[5, 1] = value
    else:
        cell[1, 1] = value
    path = write_extxyz(tmp_path / "bad.extxyz", symbols, pos, cell)
    before = table_counts(engine)
    res = gb("ingest", "traj", str(path), *key_args("MP0", x=1.0))
    assert res.exit_code == 2, res.output
    msg = res.output.strip()
    assert len(msg.splitlines()) == 1 and "bad.extxyz:frame 0" in msg, msg
    assert reason.lower() in msg.lower(), msg
    assert table_counts(engine) == before
    one_line_error(gb_limited(None, "analyze", str(path)), "bad.extxyz:frame 0")


# --- 4. one default type map for analyze and ingest lammps ---------------------------------------


def test_analyze_and_ingest_read_dump_types_alike(gb: Cli, url: str, engine: Any) -> None:
    """Without --type-map both read types 1-4 as Na, P, S, O, say so, and count the same."""
    import sqlalchemy as sa

    dump = lammps_file("dump.metal.lammpstrj")
    res = gb.ok(
        "ingest", "lammps", "--log", str(lammps_file("log.metal.lammps")), "--dump", str(dump), *KEY
    )
    assert "LAMMPS types: 1=Na  2=P  3=S  4=O" in res.output
    proc = gb_limited(None, "analyze", str(dump))
    assert proc.returncode == 0, proc.stderr
    assert "default type map (1=Na  2=P  3=S  4=O)" in proc.stderr
    analysed = json.loads(proc.stdout)
    assert analysed["type_map"] == "Na,P,S,O"
    with engine.connect() as c:
        stored = dict(
            c.execute(
                sa.text(
                    "SELECT s.unit, s.count FROM speciation s JOIN frame f ON f.id = s.frame_id "
                    "WHERE f.stage = 'final' AND s.analysis_id = 1"
                )
            ).all()
        )
    assert stored["n_Na"] == analysed["Na"]["n"] == 16 and stored["n_P"] == 8
    assert {k: stored[k] for k in analysed["P"]} == analysed["P"]
    assert {k: stored[k] for k in analysed["anions"]} == analysed["anions"]


# --- 5. other hostile sizes: declared atom counts, long lines ------------------------------------


def test_declared_atom_counts_allocate_nothing(url: str, engine: Any, tmp_path: Path) -> None:
    """Headers claiming 10^12 atoms: refused at the header, under the memory limit."""
    dump = _edit_dump(tmp_path, _set(3, "1000000000000"))
    xyz = write_extxyz(tmp_path / "claims.extxyz", *glass(4))
    xyz.write_text("1000000000000" + xyz.read_text()[xyz.read_text().index("\n") :])
    before = table_counts(engine)
    log = str(lammps_file("log.metal.lammps"))
    proc = gb_limited(url, "ingest", "lammps", "--log", log, "--dump", str(dump), *KEY)
    one_line_error(proc, "dump.bad:frame 0, line 4", f"limit of {MAX_ATOMS:,}")
    proc = gb_limited(url, "ingest", "traj", str(xyz), *key_args("MP0", x=1.0))
    one_line_error(proc, "claims.extxyz:frame 0, line 1", f"limit of {MAX_ATOMS:,}")
    assert table_counts(engine) == before
    one_line_error(gb_limited(None, "analyze", str(dump)), "line 4", f"limit of {MAX_ATOMS:,}")
    one_line_error(gb_limited(None, "analyze", str(xyz)), "line 1", f"limit of {MAX_ATOMS:,}")


def test_long_lines_are_not_read_whole(url: str, engine: Any, tmp_path: Path) -> None:
    """A 10 MB line (a comment in a log, a coordinate in a dump, an extxyz comment line) is
    refused at its line after reading `MAX_LINE_BYTES`, not slurped."""
    pad = "x" * (10 << 20)
    assert len(pad) > MAX_LINE_BYTES
    log_text = lammps_file("log.metal.lammps").read_text()
    log = tmp_path / "log.long"
    log.write_text(log_text.replace("atom_style      atomic", f"atom_style      atomic # {pad}", 1))
    dump = _edit_dump(tmp_path, _atom(4, "1" + "0" * (10 << 20)))
    xyz = write_extxyz(tmp_path / "long.extxyz", *glass(4))
    lines = xyz.read_text().split("\n")
    lines[1] += f" note={pad}"
    xyz.write_text("\n".join(lines))
    before = table_counts(engine)
    metal = str(lammps_file("log.metal.lammps"))
    cases = [
        (["ingest", "lammps", "--log", str(log), *KEY], "log.long:line 8"),
        (
            ["ingest", "lammps", "--log", metal, "--dump", str(dump), *KEY],
            "dump.bad:frame 0, line 12",
        ),
        (["ingest", "traj", str(xyz), *key_args("MP0", x=1.0)], "long.extxyz:frame 0, line 2"),
        (["analyze", str(dump), "--all-frames"], "dump.bad:frame 0, line 12"),
        (["analyze", str(xyz)], "long.extxyz:frame 0, line 2"),
    ]
    for args, where in cases:
        db = url if args[0] == "ingest" else None
        msg = one_line_error(gb_limited(db, *args, mem_mb=1000), where, "longer than 1024 KiB")
        assert re.search(r"line \d+", msg)
    assert table_counts(engine) == before


def test_declared_counts_and_steps_in_logs_and_extxyz(
    url: str, engine: Any, tmp_path: Path
) -> None:
    """A log stating 10^13 atoms (it sizes densities and normalised energies) and an extxyz
    frame at a negative step are refused like a dump's NUMBER OF ATOMS and TIMESTEP."""
    text = lammps_file("log.metal.lammps").read_text()
    log = tmp_path / "log.atoms"
    log.write_text(text.replace("with 52 atoms", "with 12999999999948 atoms"))
    xyz = write_extxyz(tmp_path / "step.extxyz", *glass(4))
    lines = xyz.read_text().split("\n")
    lines[1] += " step=-5"
    xyz.write_text("\n".join(lines))
    before = table_counts(engine)
    proc = gb_limited(url, "ingest", "lammps", "--log", str(log), *KEY)
    one_line_error(proc, "log.atoms:line 53", f"above the limit of {MAX_ATOMS:,}")
    proc = gb_limited(url, "ingest", "traj", str(xyz), *key_args("MP0", x=1.0))
    one_line_error(proc, "step.extxyz:frame 0", "negative step -5")
    assert table_counts(engine) == before
