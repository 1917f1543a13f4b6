"""Crystal-volume benchmark with storage: relax each structure, compare with experiment."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from glassbench.errors import BadInput, first_line
from glassbench.hashing import sha256_file
from glassbench.runners.delegation import call_in_interpreter, interpreter_for
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

    def describe(self) -> str:
        """The one line ``glassbench run crystal`` prints for this crystal."""
        exp = f"{self.exp_volume_per_fu_a3:.2f}" if self.exp_volume_per_fu_a3 else "n/a"
        dev = f"{self.deviation_pct:+.2f} %" if self.deviation_pct is not None else "no reference"
        conv = "" if self.converged else " (NOT converged)"
        return (
            f"{self.crystal}: {self.volume_per_fu_a3:.2f} A^3/f.u. vs experiment {exp} ({dev})"
            f"{conv}"
        )


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
            f"not a structure ASE can read: {first_line(exc)}",
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
    files: Sequence[str | Path],
    *,
    calculator: Any = None,
    fmax: float = 0.01,
    steps: int = 500,
    delegate: bool = True,
    notify: Callable[[str], object] | None = None,
) -> list[CrystalOutcome]:
    """Relax each crystal (positions and cell) and store relaxed vs experimental volume.

    The crystal's name is the file's stem (``c-Na3PS4.cif`` -> ``c-Na3PS4``); the experimental
    volume comes from the packaged reference lattices (../shared/reference/crystals.csv, with
    their sources), which are recorded in the ``experiment`` table as they are used. Without a
    ``calculator``, an MLIP registered with an interpreter of another environment runs there
    (unless ``delegate`` is False); ``notify`` is told so in one line.
    """
    from glassbench.runners.crystal import crystal_volume
    from glassbench.runners.meltquench import build_calculator, mlip_record
    from glassbench.service.migrations import require_schema

    require_schema(engine)
    mlip = mlip_record(engine, mlip_name)
    python = interpreter_for(mlip, notify) if calculator is None and delegate else None
    if python is not None:
        request = {
            "mlip": mlip_name,
            "files": [str(Path(p).absolute()) for p in files],
            "fmax": fmax,
            "steps": steps,
        }
        answer = call_in_interpreter(python, f"{__name__}:serve_crystals", request, engine=engine)
        return [CrystalOutcome(**o) for o in answer]
    structures = [(p.stem, read_structure(p), p) for p in map(Path, files)]
    for name, atoms, path in structures:
        formula_units_for(name, atoms, path)  # refuse mismatches before any work
    if calculator is None:
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


def serve_crystals(engine: Engine, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Delegated crystals, in the MLIP's interpreter (see ``runners/delegation.py``)."""
    outcomes = run_crystals(
        engine,
        request["mlip"],
        request["files"],
        fmax=request["fmax"],
        steps=request["steps"],
        delegate=False,
    )
    return [asdict(o) for o in outcomes]
