"""Fixtures for the ingest tests: real LAMMPS output (tests/data/lammps) and files written by
ASE's own writers from those LAMMPS frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

LAMMPS_DATA = Path(__file__).resolve().parents[1] / "data" / "lammps"
TYPE_Z = np.array([0, 11, 15, 16, 8])  # LAMMPS types 1..4 = Na, P, S, O


def lammps_file(name: str) -> Path:
    return LAMMPS_DATA / name


@pytest.fixture
def mlip(gb: Any) -> str:
    """A registered MLIP (chgnet's pretrained model needs no file)."""
    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    return "MP0"


def key_args(mlip: str = "MP0", x: float = 0.0, q: float = 1.0, seed: int = 1) -> list[str]:
    return ["--mlip", mlip, "--x", f"{x:g}", "--quench-rate", f"{q:g}", "--seed", str(seed)]


def ase_images(
    temperature_k: float = 600.0, *, drop_atoms: dict[int, int] | None = None
) -> list[Any]:
    """The metal-units LAMMPS frames (x = 0) as ASE Atoms with energy, stress, forces, momenta.

    Read with ASE's own LAMMPS dump reader; calculator results are what an MLIP-driven ASE MD
    would attach (SinglePointCalculator), with deterministic numbers.
    """
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.units import kB

    images = ase.io.read(  # a list: index=":"
        lammps_file("dump.metal.lammpstrj"), format="lammps-dump-text", index=":"
    )
    rng = np.random.default_rng(7)
    out = []
    for i, atoms in enumerate(images):
        atoms.numbers = TYPE_Z[atoms.numbers]  # ASE reads bare type ids as atomic numbers
        if drop_atoms and i in drop_atoms:
            del atoms[: drop_atoms[i]]
        # Maxwell-Boltzmann momenta, sqrt(m kT) per component
        sigma = np.sqrt(atoms.get_masses() * kB * temperature_k)[:, None]
        atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * sigma)
        stress = rng.normal(scale=0.01, size=6)  # eV/Å^3
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=-150.0 + i,
            stress=stress,
            forces=rng.normal(size=(len(atoms), 3)),
        )
        atoms.info["step"] = 100 * (i + 1)
        out.append(atoms)
    return out


@pytest.fixture(scope="session")
def ase_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """extxyz and .traj written by ase.io.write from the same images."""
    import ase.io

    d = tmp_path_factory.mktemp("ase")
    images = ase_images()
    files = {"extxyz": d / "quench.extxyz", "traj": d / "quench.traj"}
    ase.io.write(files["extxyz"], images, format="extxyz")
    ase.io.write(files["traj"], images, format="traj")
    return files
