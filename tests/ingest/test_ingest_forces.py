"""Forces (and energies) of ingested frames: LAMMPS dumps with ``fx fy fz`` (real ``lmp``
output, metal and real units) and ASE files whose frames carry forces keep them in
``frame.forces`` / ``frame.energy_ev``: the reference of ``glassbench compute energy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from glassbench.stored.frames import read_frames
from tests.conftest import Cli, table_counts
from tests.ingest.conftest import ase_images, key_args, lammps_file


def _dump_forces(path: Path) -> list[tuple[int, np.ndarray]]:
    """(step, forces sorted by atom id) of each frame of a dump, parsed here independently."""
    lines = path.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i] == "ITEM: TIMESTEP":
            step = int(lines[i + 1])
            n = int(lines[i + 3])
            cols = lines[i + 8].split()[2:]
            rows = np.array([[float(t) for t in ln.split()] for ln in lines[i + 9 : i + 9 + n]])
            rows = rows[np.argsort(rows[:, cols.index("id")])]
            out.append((step, rows[:, [cols.index(c) for c in ("fx", "fy", "fz")]]))
            i += 9 + n
        else:
            i += 1
    return out


def _stored(engine: Any) -> list[Any]:
    import sqlalchemy as sa

    with engine.connect() as c:
        ids = [int(i) for i in c.execute(sa.text("SELECT id FROM frame ORDER BY step")).scalars()]
        return list(read_frames(c, ids))


def _ingest_lammps(gb: Cli, name: str, x: float, *extra: str, dump: Path | None = None) -> Any:
    return gb(
        "ingest",
        "lammps",
        "--log",
        str(lammps_file(f"log.{name}.lammps")),
        "--dump",
        str(dump or lammps_file(f"dump.{name}.lammpstrj")),
        *key_args(x=x),
        *extra,
    )


@pytest.mark.parametrize(
    ("name", "x", "factor"), [("forces", 0.0, 1.0), ("forces-real", 1.0, None)]
)
def test_lammps_dump_forces_stored_in_ev_per_a(
    gb: Cli, engine: Any, mlip: str, name: str, x: float, factor: float | None
) -> None:
    # real units: kcal/mol/Å, from the exact SI constants (LAMMPS's); metal: eV/Å
    factor = factor if factor is not None else 4184.0 / 6.02214076e23 / 1.602176634e-19
    res = _ingest_lammps(gb, name, x)
    assert res.exit_code == 0, res.output
    expected = _dump_forces(lammps_file(f"dump.{name}.lammpstrj"))
    frames = _stored(engine)
    assert [f.step for f in frames] == [s for s, _ in expected]
    for frame, (_, forces) in zip(frames, expected, strict=True):
        assert frame.forces is not None
        np.testing.assert_allclose(frame.forces, forces * factor, rtol=1e-12, atol=0)
        assert frame.energy_ev is None  # LAMMPS frames: the energy is the log's (thermo)


def test_dump_without_forces_stores_none(gb: Cli, engine: Any, mlip: str) -> None:
    assert _ingest_lammps(gb, "metal", 0.0).exit_code == 0
    frames = _stored(engine)
    assert frames and all(f.forces is None and f.energy_ev is None for f in frames)


@pytest.mark.parametrize("fmt", ["extxyz", "traj"])
def test_ase_file_forces_and_energy_stored(
    gb: Cli, engine: Any, mlip: str, ase_files: dict[str, Path], fmt: str
) -> None:
    gb.ok("ingest", "traj", str(ase_files[fmt]), *key_args())
    import ase.io

    # what ASE itself reads back (extxyz keeps 8 decimals of what was written)
    images = ase.io.read(ase_files[fmt], index=":")
    assert len(images) == len(ase_images())
    frames = _stored(engine)
    assert len(frames) == len(images)
    for frame, atoms in zip(frames, images, strict=True):
        assert frame.forces is not None
        np.testing.assert_allclose(frame.forces, atoms.get_forces(), rtol=1e-12, atol=1e-12)
        assert frame.energy_ev == pytest.approx(atoms.get_potential_energy(), rel=1e-12)


def _without_fz(text: str) -> str:
    """The header and every atom line without the fz column."""
    lines = [" ".join(ln.split()[:-1]) if len(ln.split()) == 8 else ln for ln in text.splitlines()]
    return "\n".join(lines).replace(" fx fy fz", " fx fy") + "\n"


def _nan_force(text: str) -> str:
    """The first atom line's fz is NaN."""
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("ITEM: ATOMS")) + 1
    lines[i] = " ".join([*lines[i].split()[:-1], "nan"])
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [(_without_fz, "force columns fx fy without fz"), (_nan_force, "NaN or infinite")],
)
def test_bad_forces_refused(
    gb: Cli, engine: Any, mlip: str, tmp_path: Path, edit: Any, expected: str
) -> None:
    bad = tmp_path / "dump.lammpstrj"
    bad.write_text(edit(lammps_file("dump.forces.lammpstrj").read_text()))
    before = table_counts(engine)
    res = _ingest_lammps(gb, "forces", 0.0, dump=bad)
    assert res.exit_code == 2, res.output
    msg = res.output.strip()
    assert len(msg.splitlines()) == 1 and str(bad) in msg and expected in msg, msg
    assert table_counts(engine) == before
