"""Crystal-volume benchmark with storage: relax each structure, compare with experiment."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from glassbench.errors import BadInput
from glassbench.hashing import sha256_file
from glassbench.service import repos, unit_of_work

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrystalOutcome:
    crystal: str
    volume_per_fu_a3: float
    exp_volume_per_fu_a3: float | None
    deviation_pct: float | None
    converged: bool
    source: str | None


def reference_for(name: str) -> dict[str, Any] | None:
    from glassbench.runners.structure import read_crystal_reference

    for row in read_crystal_reference():
        if str(row["crystal"]).lower() == name.lower():
            return row
    return None


def read_structure(path: Path) -> Any:
    import ase.io

    if not path.exists():
        raise BadInput("structure file does not exist", source=str(path))
    try:
        atoms = ase.io.read(path)
    except Exception as exc:  # ASE raises many types for unreadable input
        raise BadInput(
            f"not a structure ASE can read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            source=str(path),
        ) from None
    if isinstance(atoms, list):
        atoms = atoms[-1]
    if len(atoms) == 0 or not atoms.pbc.all() or atoms.get_volume() <= 0:
        raise BadInput(
            "a crystal needs atoms and a periodic cell with positive volume", source=str(path)
        )
    return atoms


def run_crystals(
    engine: Engine,
    mlip_name: str,
    files: list[Path],
    *,
    calculator: Any = None,
    fmax: float = 0.01,
    steps: int = 500,
) -> list[CrystalOutcome]:
    """Relax each crystal (positions and cell) and store relaxed vs experimental volume.

    The crystal's name is the file's stem (``c-Na3PS4.cif`` -> ``c-Na3PS4``); the experimental
    volume comes from the packaged reference lattices (../shared/reference/crystals.csv, with
    their sources), which are recorded in the ``experiment`` table as they are used.
    """
    from glassbench.runners.crystal import crystal_volume

    structures = [(p.stem, read_structure(p), p) for p in files]
    for name, atoms, path in structures:
        formula_units_for(name, atoms, path)  # refuse mismatches before any work
    with unit_of_work(engine) as s:
        try:
            mlip = repos.get_mlip(s, mlip_name)
        except repos.NotFound as exc:
            raise BadInput(str(exc), field="mlip") from None
        s.expunge(mlip)
    if calculator is None:
        from glassbench.runners.meltquench import build_calculator

        calculator = build_calculator(mlip)
    out: list[CrystalOutcome] = []
    for name, atoms, path in structures:
        ref = reference_for(name)
        fu = formula_units_for(name, atoms, path)
        relaxed, v_fu = crystal_volume(atoms, calculator, fmax=fmax, steps=steps, formula_units=fu)
        exp = float(ref["volume_per_formula_unit_a3"]) if ref else None
        dev = 100.0 * (v_fu - exp) / exp if exp else None
        with unit_of_work(engine) as s:
            if ref is not None:
                repos.set_experiment(
                    s,
                    {
                        "subject": repos.experiment_subject(x=None, crystal=name),
                        "composition_id": None,
                        "crystal": name,
                        "property": "volume_per_formula_unit_a3",
                        "value": exp,
                        "uncertainty": None,
                        "source": ref["source"],
                    },
                )
            assert mlip.id is not None
            repos.set_crystal_volume(
                s,
                {
                    "mlip_id": mlip.id,
                    "crystal": name,
                    "volume_per_fu_a3": v_fu,
                    "exp_volume_per_fu_a3": exp,
                    "deviation_pct": dev,
                    "structure_sha256": sha256_file(path),
                },
            )
        out.append(
            CrystalOutcome(
                name,
                v_fu,
                exp,
                dev,
                bool(relaxed.info.get("relax_converged", True)),
                ref["source"] if ref else None,
            )
        )
    return out


def formula_units_for(name: str, atoms: Any, path: Path) -> int | None:
    """Formula units from the formula in the crystal's name (``c-Na3PS4`` -> Na3PS4).

    A structure whose composition does not match the name is refused: its volume per formula
    unit would be compared with the wrong experiment. Names without a formula: None (the
    runner then uses the gcd of the element counts).
    """
    from collections import Counter

    from ase.formula import Formula

    formula = re.sub(r"^[a-z]+-", "", name)
    try:
        per_fu = Formula(formula).count()
    except ValueError:
        return None
    if not per_fu or not all(el.isalpha() for el in per_fu):
        return None
    have = Counter(atoms.get_chemical_symbols())
    n = have.get(next(iter(per_fu)), 0) // per_fu[next(iter(per_fu))]
    if (
        n == 0
        or any(have.get(el, 0) != c * n for el, c in per_fu.items())
        or set(have) != set(per_fu)
    ):
        raise BadInput(
            f"composition {dict(have)} does not match the crystal name {name!r} ({formula})",
            source=str(path),
        )
    return n
