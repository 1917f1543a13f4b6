"""``glassbench analyze`` end to end with CliRunner: formats, frame selection, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from click.testing import CliRunner, Result

from glassbench.analysis import analyze_atoms
from glassbench.cli import cli as root
from glassbench.testing.synthetic import dimer_glass as random_glass
from glassbench.testing.synthetic import skewed_basis

TYPE_OF = {"Na": 1, "P": 2, "S": 3, "O": 4}


def glass_atoms(formula_units: int, seed: int, x: float = 1.0, skewed: bool = False) -> Atoms:
    f = random_glass(x, formula_units=formula_units, seed=seed)
    cell = skewed_basis(f.cell) if skewed else f.cell
    return Atoms(numbers=f.numbers, positions=f.positions, cell=cell, pbc=True)


@pytest.fixture(scope="module")
def frames() -> list[Atoms]:
    # Different sizes, so the output says which frame was analysed.
    return [glass_atoms(3 + k, seed=k) for k in range(4)]


def run(*args: str) -> Result:
    return CliRunner().invoke(root, ["analyze", *args])


def expected(atoms: Atoms, **cutoffs: float) -> dict:
    return analyze_atoms(atoms, {k.replace("_", "-"): v for k, v in cutoffs.items()}).to_dict()


def write_lammps_dump(path: Path, images: list[Atoms], *, shuffle_ids: bool = True) -> None:
    """A text dump in the standard layout, ids shuffled, for lower-triangular cells."""
    rng = np.random.default_rng(0)
    lines = []
    for step, atoms in enumerate(images):
        cell = atoms.cell.array
        assert np.allclose(cell[np.triu_indices(3, 1)], 0.0), "LAMMPS cells are lower triangular"
        lx, ly, lz = cell[0, 0], cell[1, 1], cell[2, 2]
        xy, xz, yz = cell[1, 0], cell[2, 0], cell[2, 1]
        lines += ["ITEM: TIMESTEP", str(step * 100), "ITEM: NUMBER OF ATOMS", str(len(atoms))]
        if xy == xz == yz == 0:
            lines += ["ITEM: BOX BOUNDS pp pp pp", f"0.0 {lx}", f"0.0 {ly}", f"0.0 {lz}"]
        else:
            lines += [
                "ITEM: BOX BOUNDS xy xz yz pp pp pp",
                f"{min(0, xy, xz, xy + xz)} {lx + max(0, xy, xz, xy + xz)} {xy}",
                f"{min(0, yz)} {ly + max(0, yz)} {xz}",
                f"0.0 {lz} {yz}",
            ]
        lines.append("ITEM: ATOMS id type x y z")
        order = rng.permutation(len(atoms)) if shuffle_ids else np.arange(len(atoms))
        for k in order:
            x, y, z = atoms.positions[k]
            lines.append(f"{k + 1} {TYPE_OF[atoms[k].symbol]} {x:.8f} {y:.8f} {z:.8f}")
    path.write_text("\n".join(lines) + "\n")


def assert_bad_input(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("Error: ")
    assert "\n" not in err, err
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for needle in needles:
        assert needle in err


# --- formats and frame selection ----------------------------------------------------------


def test_extxyz_default_is_last_frame(tmp_path, frames):
    path = tmp_path / "run.extxyz"
    ase.io.write(path, frames)
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected(frames[-1])


@pytest.mark.parametrize(("frame", "index"), [("0", 0), ("2", 2), ("-1", 3), ("-4", 0)])
def test_frame_selection(tmp_path, frames, frame, index):
    path = tmp_path / "run.extxyz"
    ase.io.write(path, frames)
    result = run(str(path), "--frame", frame)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected(frames[index])


def test_all_frames_json_lines_from_traj(tmp_path, frames):
    path = tmp_path / "run.traj"
    ase.io.write(path, frames)
    result = run(str(path), "--all-frames")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().split("\n")
    assert len(lines) == len(frames)
    for k, (line, atoms) in enumerate(zip(lines, frames, strict=True)):
        obj = json.loads(line)
        assert obj.pop("frame") == k
        assert obj == expected(atoms)
    # stderr is not a TTY under CliRunner: no progress bar.
    assert result.stderr == ""


def test_traj_single_frame_and_negative_index(tmp_path, frames):
    path = tmp_path / "run.traj"
    ase.io.write(path, frames)
    result = run(str(path), "--frame", "-3")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected(frames[1])


@pytest.mark.parametrize(("name", "fmt"), [("POSCAR", "vasp"), ("glass.cif", "cif")])
def test_single_frame_formats(tmp_path, frames, name, fmt):
    atoms = glass_atoms(4, seed=9, skewed=True)
    path = tmp_path / name
    ase.io.write(path, atoms, format=fmt)
    want = expected(ase.io.read(path, format=fmt))
    for args in ([], ["--frame", "0"], ["--frame", "-1"], ["--all-frames"]):
        result = run(str(path), *args)
        assert result.exit_code == 0, result.output
        got = json.loads(result.stdout)
        got.pop("frame", None)
        assert got == want
    # File precision loses nothing that matters: the same units as the original.
    assert want["P"] == expected(atoms)["P"]
    assert want["anions"] == expected(atoms)["anions"]
    assert_bad_input(run(str(path), "--frame", "1"), "frame 1", "out of range", "1 frame")


@pytest.mark.parametrize("skewed", [False, True], ids=["orthogonal", "triclinic"])
def test_lammps_dump_with_type_map(tmp_path, skewed):
    images = [glass_atoms(4, seed=s, skewed=skewed) for s in (1, 2)]
    path = tmp_path / "traj.lammpstrj"
    write_lammps_dump(path, images)
    result = run(str(path), "--type-map", "Na,P,S,O", "--all-frames")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().split("\n")]
    assert [line.pop("frame") for line in lines] == [0, 1]
    for got, atoms in zip(lines, images, strict=True):
        want = expected(atoms)
        assert got["P"] == want["P"] and got["anions"] == want["anions"]
        assert got["Na"] == want["Na"]
        assert got["n_atoms"] == len(atoms)
    single = run(str(path), "--type-map", "Na,P,S,O", "--frame", "0")
    assert json.loads(single.stdout)["P"] == expected(images[0])["P"]


def test_lammps_dump_without_type_map_uses_the_ingest_default(tmp_path):
    """Types 1-4 are Na, P, S, O as for `ingest lammps` (they were read as H..Be, all counts
    zero); the output says which map named them."""
    atoms = glass_atoms(3, seed=1)
    path = tmp_path / "traj.dump"
    write_lammps_dump(path, [atoms])
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert "default type map" in result.stderr and "--type-map" in result.stderr
    assert "1=Na  2=P  3=S  4=O" in result.stderr
    got = json.loads(result.stdout)
    assert got.pop("type_map") == "Na,P,S,O"
    assert got == expected(atoms)
    assert got["P"] != expected(Atoms(numbers=atoms.numbers * 0 + 1, cell=atoms.cell))["P"]
    table = run(str(path), "--format", "table", "--all-frames")
    assert table.exit_code == 0, table.output
    assert "LAMMPS types: 1=Na  2=P  3=S  4=O" in table.stdout
    # An explicit map is the same map, without the note.
    given = run(str(path), "--type-map", "Na,P,S,O")
    assert given.stderr == "" and json.loads(given.stdout) == {**got, "type_map": "Na,P,S,O"}


def test_lammps_dump_with_element_column_ignores_the_type_map(tmp_path):
    atoms = glass_atoms(3, seed=1)
    path = tmp_path / "traj.dump"
    write_lammps_dump(path, [atoms])
    lines = path.read_text().splitlines()
    start = lines.index("ITEM: ATOMS id type x y z")
    lines[start] = "ITEM: ATOMS id type element x y z"
    symbol = {v: k for k, v in TYPE_OF.items()}
    for k in range(start + 1, len(lines)):
        i, t, *xyz = lines[k].split()
        lines[k] = " ".join([i, t, symbol[int(t)], *xyz])
    path.write_text("\n".join(lines) + "\n")
    result = run(str(path))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    got = json.loads(result.stdout)
    assert "type_map" not in got and got == expected(atoms)


# --- options -----------------------------------------------------------------------------


def test_cutoff_override_is_applied_and_reported(tmp_path, frames):
    path = tmp_path / "run.extxyz"
    ase.io.write(path, frames)
    result = run(str(path), "--cutoff", "S-P=1.9", "--cutoff", "Na-S=3.0")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["cutoffs"] == {
        "P-S": 1.9,
        "P-O": 2.0,
        "P-P": 2.5,
        "S-S": 2.5,
        "Na-S": 3.0,
        "Na-O": 3.1,
    }
    assert got == expected(frames[-1], P_S=1.9, Na_S=3.0)
    assert got["anions"]["NBS"] == 0  # no P-S bond is shorter than 1.9 Å


def test_table_format(tmp_path, frames):
    path = tmp_path / "run.extxyz"
    ase.io.write(path, frames)
    want = expected(frames[-1])
    result = run(str(path), "--format", "table")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "cutoffs (Å): P-S 2.6  P-O 2.0  P-P 2.5  S-S 2.5  Na-S 3.6  Na-O 3.1" in out
    table = {ln.split()[0]: ln.split()[-2] for ln in out.splitlines() if len(ln.split()) >= 3}
    for key in ("P0", "P1", "P_other", "BS", "NBO", "free_S"):
        assert table[key] == str(want["P"].get(key, want["anions"].get(key)))
    assert f"Na ({want['Na']['n']}): CN {want['Na']['cn_mean']:.2f}" in out


def test_table_all_frames(tmp_path, frames):
    path = tmp_path / "run.extxyz"
    ase.io.write(path, frames)
    result = run(str(path), "--format", "table", "--all-frames", "--cutoff", "P-S=2.4")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("cutoffs (Å): P-S 2.4")
    assert lines[1].split()[:4] == ["frame", "atoms", "P0", "P1"]
    rows = [ln.split() for ln in lines[2:]]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]
    assert [int(r[1]) for r in rows] == [len(a) for a in frames]
    assert [int(r[3]) for r in rows] == [expected(a, P_S=2.4)["P"]["P1"] for a in frames]


def test_suggest_cutoffs(tmp_path):
    path = tmp_path / "one.extxyz"
    ase.io.write(path, glass_atoms(12, seed=3, x=3.5))
    result = run(str(path), "--suggest-cutoffs")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert 2.1 < got["suggested_cutoffs"]["P-S"] < 2.9
    table = run(str(path), "--suggest-cutoffs", "--format", "table")
    assert "suggested cutoffs" in table.stdout


def test_non_periodic_molecule(tmp_path):
    atoms = Atoms(
        "PS4",
        positions=[
            [0, 0, 0],
            [1.18, 1.18, 1.18],
            [1.18, -1.18, -1.18],
            [-1.18, 1.18, -1.18],
            [-1.18, -1.18, 1.18],
        ],
    )
    path = tmp_path / "mol.xyz"
    ase.io.write(path, atoms)
    result = run(str(path))
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["P"]["P0"] == 1 and got["anions"]["NBS"] == 4


# --- bad input ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert_bad_input(run(str(tmp_path / "nope.extxyz")), "nope.extxyz", "no such file")


def test_directory(tmp_path):
    assert_bad_input(run(str(tmp_path)), "directory")


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("empty.extxyz", "", "format"),
        ("junk.xyz", "hello\nworld\n", "cannot read"),
        ("data.weird", "1 2 3\n", "unsupported file format"),
        (
            "cut.extxyz",
            '5\nLattice="10 0 0 0 10 0 0 0 10" Properties=species:S:1:pos:R:3\nP 0 0 0\n',
            "cannot read",
        ),
    ],
)
def test_unreadable_files(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_text(content)
    assert_bad_input(run(str(path)), name, needle)


@pytest.mark.parametrize("frame", ["4", "-5", "100"])
def test_frame_out_of_range(tmp_path, frames, frame):
    path = tmp_path / "run.extxyz"
    ase.io.write(path, frames)
    assert_bad_input(run(str(path), "--frame", frame), f"frame {frame}", "out of range", "4 frames")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("P-Q=2.0", "unknown pair"),
        ("Na-P=2.0", "unknown pair"),
        ("P-S=two", "not a number"),
        ("P-S=0", "positive"),
        ("P-S=-2", "positive"),
        ("P-S", "PAIR=VALUE"),
    ],
)
def test_malformed_cutoff(tmp_path, frames, spec, needle):
    path = tmp_path / "run.extxyz"
    ase.io.write(path, frames)
    assert_bad_input(run(str(path), "--cutoff", spec), "--cutoff", needle)


def test_input_format_option(tmp_path, frames):
    path = tmp_path / "frames.data"  # an extension that says nothing
    ase.io.write(path, frames, format="extxyz")
    result = run(str(path), "--input-format", "extxyz", "--frame", "1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected(frames[1])
    assert_bad_input(run(str(path), "--input-format", "nonsense"), "--input-format", "nonsense")


def test_frame_and_all_frames_exclusive(tmp_path, frames):
    path = tmp_path / "run.extxyz"
    ase.io.write(path, frames)
    assert_bad_input(run(str(path), "--frame", "0", "--all-frames"), "--all-frames")


def test_type_map_errors(tmp_path, frames):
    xyz = tmp_path / "run.extxyz"
    ase.io.write(xyz, frames)
    assert_bad_input(run(str(xyz), "--type-map", "Na,P,S,O"), "--type-map", "LAMMPS")
    dump = tmp_path / "t.lammpstrj"
    write_lammps_dump(dump, [glass_atoms(3, seed=1)])
    assert_bad_input(run(str(dump), "--type-map", "Na,P"), "type id", "--type-map")
    assert_bad_input(run(str(dump), "--type-map", "Na,P,Qq,O"), "--type-map", "'Qq'")


def test_all_frames_streams_then_fails_on_a_bad_frame(tmp_path, frames):
    """Frames before a corrupt one are printed (streamed), then exit 2 naming the frame."""
    path = tmp_path / "run.extxyz"
    ase.io.write(path, frames[:2])
    with path.open("a") as fh:
        fh.write('3\nLattice="10 0 0 0 10 0 0 0 10" Properties=species:S:1:pos:R:3\nP 0 0 0\n')
    result = run(str(path), "--all-frames")
    assert result.exit_code == 2
    lines = result.stdout.strip().split("\n")
    assert [json.loads(ln)["frame"] for ln in lines] == [0, 1]
    assert result.stderr.strip().startswith("Error: ")
    assert "frame 2" in result.stderr
    assert "Traceback" not in result.output


def test_all_frames_never_reads_the_whole_file(tmp_path, frames, monkeypatch):
    path = tmp_path / "run.extxyz"
    ase.io.write(path, frames)

    def refuse(*args, **kwargs):
        raise AssertionError("ase.io.read loads every frame of a slice")

    monkeypatch.setattr(ase.io, "read", refuse)
    result = run(str(path), "--all-frames")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().split("\n")) == len(frames)


def _chain_and_na_frame() -> Atoms:
    """S3P-PS2-PS3 (two P-P chain ends) and 13 Na each with four S at 2.9 Å (52 Na-S
    contacts, enough for a g(r) peak), built from bond lengths and angles."""
    v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / np.sqrt(3)

    def cap(p: np.ndarray, u: np.ndarray, phase: float) -> list[np.ndarray]:
        # Three S at 109.5 degrees from the P-P bond (direction u), 120 degrees apart.
        e1 = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.8 else [0.0, 1.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        t = np.arccos(-1 / 3)
        return [
            p + 2.05 * (np.cos(t) * u + np.sin(t) * (np.cos(f) * e1 + np.sin(f) * e2))
            for f in phase + 2 * np.pi * np.arange(3) / 3
        ]

    def chain(phase: float) -> np.ndarray:
        pa, pc = 2.25 * v[0], 2.25 * v[1]
        caps = [*cap(pa, -v[0], phase), *cap(pc, -v[1], phase + 1.0)]
        return np.array([np.zeros(3), pa, pc, 2.05 * v[2], 2.05 * v[3], *caps])

    def clearance(pos: np.ndarray) -> float:
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        return float(d[d > 2.3].min())

    best = max((chain(f) for f in np.linspace(0, 2.1, 22)), key=clearance)
    assert clearance(best) > 2.7  # no contact but the bonds built
    symbols = ["P"] * 3 + ["S"] * 8
    positions = list(best - best.mean(axis=0) + [13.5, 13.5, 24.0])
    rng = np.random.default_rng(0)
    for k in range(13):
        centre = np.array([k % 3 + 0.5, (k // 3) % 3 + 0.5, 0.0]) * 9.0
        centre[2] = 4.5 if k < 9 else 13.5
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        symbols += ["Na"] + ["S"] * 4
        positions += [centre, *(centre + 2.9 * v @ q.T)]
    return Atoms(symbols, positions=positions, cell=[27.0, 27.0, 32.0], pbc=True)


def test_new_quantities_in_json_and_table(tmp_path):
    """PPend, S-S long share, Na-S share and first peaks: JSON keys and table lines."""
    from ase.neighborlist import neighbor_list

    atoms = _chain_and_na_frame()
    i, j = neighbor_list("ij", atoms, {("Na", "S"): 3.6, ("Na", "O"): 3.1, ("P", "P"): 2.5})
    symbols = np.array(atoms.get_chemical_symbols())
    assert np.count_nonzero((symbols[i] == "Na") & (symbols[j] == "S")) == 52
    assert np.count_nonzero((symbols[i] == "P") & (symbols[j] == "P")) == 4  # 2 bonds, both ways
    path = tmp_path / "chain.extxyz"
    ase.io.write(path, atoms)

    result = run(str(path))
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert list(got["P"])[5:7] == ["P1P", "PPend"]
    assert (got["P"]["P1P"], got["P"]["PPend"], got["P"]["P_other"]) == (0, 2, 1)
    assert got["P"]["PPchain"] == 3
    assert got["SS"]["long_share"] is None  # no S-S bond
    assert got["Na"]["s_share"] == 1.0
    assert got["Na"]["peak_S"] == pytest.approx(2.9, abs=0.02)
    assert got["Na"]["peak_O"] is None

    table = run(str(path), "--format", "table")
    assert table.exit_code == 0, table.output
    rows = {ln.split()[0]: ln.split()[1:] for ln in table.stdout.splitlines() if ln.strip()}
    assert rows["PPend"] == ["2", f"{2 / 3:.3f}"]
    assert rows["P1P"] == ["0", "0.000"]
    assert "longer than two -;" in table.stdout
    assert f"Na: S share 1.000; first g(r) peak (Å) Na-S {got['Na']['peak_S']:.2f}  Na-O -" in (
        table.stdout
    )

    lines = run(str(path), "--format", "table", "--all-frames").stdout.splitlines()
    header, row = lines[1].split(), lines[2].split()
    assert header[header.index("P1P") + 1] == "PPend"
    assert row[header.index("PPend")] == "2"
    assert row[header.index("Na_S")] == "1.00"
