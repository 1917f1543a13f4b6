"""The LAMMPS readers on their own (no database): real fixtures compared with ASE's reader,
and edits of them for the cases LAMMPS prints only sometimes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glassbench.errors import BadInput
from glassbench.ingest.lammps_dump import LammpsDump, StepMapper, dump_frames
from glassbench.ingest.lammps_log import LammpsLog, LogInfo, StepSegment
from tests.ingest.conftest import TYPE_Z, lammps_file

TYPES = ["Na", "P", "S", "O"]


@pytest.mark.parametrize("name", ["metal", "triclinic", "real"])
def test_lammps_dump_matches_ase_reader(name: str) -> None:
    import ase.io

    path = lammps_file(f"dump.{name}.lammpstrj")
    ours = list(LammpsDump(path, type_map=TYPES).frames())
    ref = ase.io.read(path, format="lammps-dump-text", index=":")
    assert len(ours) == len(ref) > 3
    for f, atoms in zip(ours, ref, strict=True):
        np.testing.assert_allclose(f.cell, atoms.cell.array, atol=1e-9)
        # ours are always relative to the box origin; ASE's only for scaled coordinates
        # (for Cartesian ones it keeps the origin, as celldisp)
        scaled = name == "triclinic"
        shifted = atoms.positions - (0.0 if scaled else atoms.get_celldisp().reshape(3))
        frac = np.linalg.solve(f.cell.T, (f.positions - shifted).T).T
        np.testing.assert_allclose(frac - np.round(frac), 0.0, atol=1e-9)
        z = atoms.numbers if name == "triclinic" else TYPE_Z[atoms.numbers]
        assert f.numbers.tolist() == z.tolist()
        assert f.pbc == (True, True, True)


def test_lammps_dump_column_order_and_coordinate_kinds() -> None:
    """LAMMPS wrote the same frames twice: element + scaled coordinates (``element xs ys zs id
    type``) and type + Cartesian coordinates (``z id x type y``); both read alike."""
    scaled = list(LammpsDump(lammps_file("dump.triclinic.lammpstrj"), type_map=TYPES).frames())
    cartesian = LammpsDump(lammps_file("dump.triclinic-xyz.lammpstrj"), type_map=TYPES)
    pairs = list(zip(scaled, cartesian.frames(), strict=True))
    assert len(pairs) == 5
    for a, b in pairs:
        assert a.step == b.step
        np.testing.assert_allclose(a.cell, b.cell)
        assert a.numbers.tolist() == b.numbers.tolist()
        frac = np.linalg.solve(a.cell.T, (a.positions - b.positions).T).T
        # dumps print 6 significant digits
        np.testing.assert_allclose(frac - np.round(frac), 0.0, atol=2e-5)


def _rows(path: Path, **kw: object) -> list[dict[str, float | int | None]]:
    return list(LammpsLog(path, **kw).rows())  # type: ignore[arg-type]


def test_lammps_log_warnings_and_messages_inside_blocks(tmp_path: Path) -> None:
    src = lammps_file("log.metal.lammps")
    lines = src.read_text().splitlines(keepends=True)
    i = next(k for k, ln in enumerate(lines) if ln.lstrip().startswith("120 "))
    lines.insert(i, "WARNING: Bond/angle/dihedral extent > half of periodic box length\n")
    lines.insert(i, "Fix halt condition for fix-id 5 met on step 120 with value 0\n")
    edited = tmp_path / "log"
    edited.write_text("".join(lines))
    assert _rows(edited, x=0.0) == _rows(src, x=0.0)


def test_lammps_log_units_override_and_echo_none(tmp_path: Path) -> None:
    text = lammps_file("log.metal.lammps").read_text()
    no_echo = tmp_path / "log"
    no_echo.write_text(text.replace("units           metal\n", ""))
    with pytest.raises(BadInput, match="no `units` command"):
        _rows(no_echo)
    assert _rows(no_echo, units="metal") == _rows(lammps_file("log.metal.lammps"))


def test_lammps_log_multi_record_incomplete(tmp_path: Path) -> None:
    text = lammps_file("log.triclinic.lammps").read_text()
    cut = text.index("Volume   =", text.index("Step      250"))
    bad = tmp_path / "log"
    bad.write_text(text[:cut] + text[text.index("----------------", cut) :])
    with pytest.raises(BadInput, match=r"incomplete thermo record \(missing: volume\)"):
        _rows(bad)


def test_lammps_log_row_with_missing_column(tmp_path: Path) -> None:
    lines = lammps_file("log.real.lammps").read_text().splitlines(keepends=True)
    i = next(k for k, ln in enumerate(lines) if ln.lstrip().startswith("60 "))
    lines[i] = " ".join(lines[i].split()[:-1]) + "\n"
    bad = tmp_path / "log"
    bad.write_text("".join(lines))
    with pytest.raises(BadInput, match=rf"line {i + 1}: thermo row has 5 values"):
        _rows(bad)


def test_lammps_log_binary_tail(tmp_path: Path) -> None:
    bad = tmp_path / "log"
    bad.write_bytes(lammps_file("log.metal.lammps").read_bytes() + b"\x89PNG\x00\x01\xff")
    with pytest.raises(BadInput, match="binary data"):
        _rows(bad)


def test_lammps_step_mapper_follows_resets() -> None:
    segments = [StepSegment(0, 0, 149), StepSegment(149, 0, 120)]
    m = StepMapper(segments)
    assert [m(s) for s in (40, 80, 120, 0, 40, 120)] == [40, 80, 120, 149, 189, 269]
    assert StepMapper([StepSegment(0, 0, 10)])(500) == 500  # no reset: steps as they are
    m = StepMapper(segments)
    assert m(130) == 130 and m(125) is None  # backwards beyond every later segment


def test_lammps_log_time_axis_is_piecewise_linear() -> None:
    log = LammpsLog(lammps_file("log.real.lammps"), x=1.0)
    rows = list(log.rows())
    info: LogInfo = log.info
    assert len(info.time_knots) <= 4  # minimizer (constant), then one slope
    for r in rows:
        assert info.time_at(int(r["step"] or 0)) == pytest.approx(r["time_ps"])
    frames = list(dump_frames(LammpsDump(lammps_file("dump.real.lammpstrj"), type_map=TYPES), info))
    assert [f.time_ps for f in frames] == pytest.approx(
        [0.011, 0.051, 0.091, 0.12, 0.16, 0.2, 0.24]
    )
