"""Cross-evaluation: stored frames made by one MLIP, evaluated by another (``compute energy``).

Each selected frame gets MLIP B's energy, forces and stress in ``frame_eval``, beside how far
they are from the making MLIP A's (the reference: see ``schema.models.FrameEval``). A
committee of two is the cheapest uncertainty signal there is: where A and B disagree, A's
structure is outside what at least one of them knows.

References, per quantity, first found wins: the frame's own (``frame.forces``,
``frame.energy_ev``: the runner stores them, an ingested file may), A's own ``frame_eval`` row
of the frame, and, for the energy only, the run's thermo row at the frame's step. ``ref_source``
names the source, ``forces+energy`` (e.g. ``frame+thermo``) where the two differ. When B is
A and the frame has no stored forces, B's new row is the reference other evaluators of that
frame lacked: their disagreement is recomputed in the same transaction.

Idempotent and resumable: frames already evaluated by B are skipped (unless ``force``), and
rows are written ``EVAL_BATCH`` frames per transaction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from numpy.typing import NDArray

from glassbench.errors import BadInput, Failure
from glassbench.schema.arrays import pack_array, unpack_array
from glassbench.schema.models import FrameEval, utcnow
from glassbench.service import repos, unit_of_work
from glassbench.service.selection import RunSelector, SelectedRun, select_runs
from glassbench.stored.frames import StoredFrame, final_frame_id, frame_index, read_frames

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator
    from sqlalchemy.engine import Connection, Engine
    from sqlmodel import Session

# Frames evaluated per transaction: an interruption loses at most this many evaluations.
EVAL_BATCH = 32
_SKIPPED_STAGES = ("strain",)  # deformed copies made by the elastic calculation, not the run's


@dataclass
class RunEnergy:
    """One run's outcome. The statistics are over every frame of the selection that B has
    evaluated (this call's and earlier ones), so a call that evaluated nothing still reports."""

    run_id: int
    label: str
    frames: int
    evaluated: int = 0
    skipped: int = 0
    refs_updated: int = 0
    with_force_ref: int = 0
    mean_energy_diff_per_atom_ev: float | None = None
    mean_force_rmse_ev_a: float | None = None
    max_force_rmse_ev_a: float | None = None

    def describe(self) -> str:
        parts = [f"{self.frames} frames: {self.evaluated} evaluated, {self.skipped} skipped"]
        if self.mean_energy_diff_per_atom_ev is not None:
            parts.append(f"mean dE {self.mean_energy_diff_per_atom_ev:+.4g} eV/atom")
        if self.mean_force_rmse_ev_a is not None and self.max_force_rmse_ev_a is not None:
            parts.append(
                f"force RMSE mean {self.mean_force_rmse_ev_a:.4g}, "
                f"max {self.max_force_rmse_ev_a:.4g} eV/Å ({self.with_force_ref} frames)"
            )
        else:
            parts.append("no reference forces")
        if self.refs_updated:
            parts.append(f"{self.refs_updated} other evaluations given this reference")
        return f"{self.label}: " + "; ".join(parts)


@dataclass
class EnergyReport:
    """What :func:`compute_energy` did: one :class:`RunEnergy` per selected run."""

    mlip: str
    selection: str
    runs: list[RunEnergy] = field(default_factory=list)

    @property
    def evaluated(self) -> int:
        return sum(r.evaluated for r in self.runs)

    @property
    def skipped(self) -> int:
        return sum(r.skipped for r in self.runs)

    def describe(self) -> str:
        if not self.runs:
            return f"no runs match ({self.selection})"
        lines = [r.describe() for r in self.runs]
        lines.append(
            f"{self.evaluated} frames evaluated with {self.mlip}, {self.skipped} already were "
            f"(--force recomputes), over {len(self.runs)} run(s); see the cross_eval view: "
            f"glassbench sql \"SELECT * FROM cross_eval WHERE evaluator = '{self.mlip}'\""
        )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnergyReport:
        return cls(
            mlip=str(data["mlip"]),
            selection=str(data["selection"]),
            runs=[RunEnergy(**r) for r in data["runs"]],
        )


@dataclass(frozen=True)
class _Reference:
    forces: NDArray[np.float64] | None = None
    force_source: str | None = None
    energy_ev: float | None = None
    energy_source: str | None = None

    @property
    def source(self) -> str | None:
        if self.force_source == self.energy_source or self.energy_source is None:
            return self.force_source
        if self.force_source is None:
            return self.energy_source
        return f"{self.force_source}+{self.energy_source}"


def disagreement(energy_ev: float, forces: NDArray[np.float64], ref: _Reference) -> dict[str, Any]:
    """The ``frame_eval`` disagreement columns of an evaluation against a reference."""
    n = len(forces)
    out: dict[str, Any] = {
        "ref_energy_per_atom_ev": None,
        "energy_diff_per_atom_ev": None,
        "force_rmse_ev_a": None,
        "force_max_ev_a": None,
        "ref_source": ref.source,
    }
    if ref.energy_ev is not None and n:
        out["ref_energy_per_atom_ev"] = ref.energy_ev / n
        out["energy_diff_per_atom_ev"] = energy_ev / n - ref.energy_ev / n
    if ref.forces is not None and ref.forces.shape == forces.shape and n:
        diff = forces - ref.forces
        out["force_rmse_ev_a"] = float(np.sqrt(np.mean(diff**2)))
        out["force_max_ev_a"] = float(np.max(np.linalg.norm(diff, axis=1)))
    return out


def _choose_frames(
    conn: Connection, run: SelectedRun, stages: Sequence[str] | None, every: int
) -> list[int]:
    """The run's frames to evaluate: not strain, of ``stages``, every ``every``-th in step
    order, the last one and the run's final frame always."""
    index = [f for f in frame_index(conn, run.run_id, stages=stages) if f[2] not in _SKIPPED_STAGES]
    chosen = [fid for fid, _, _ in index[::every]]
    keep = {fid for fid, _, _ in index}
    for extra in (index[-1][0] if index else None, final_frame_id(conn, run.run_id)):
        if extra is not None and extra in keep and extra not in chosen:
            chosen.append(extra)
    return chosen


def _evaluate(calc: Calculator, frame: StoredFrame) -> tuple[float, NDArray[np.float64], Any]:
    """B's energy (eV), forces (eV/Å) and Voigt stress (GPa, None without a periodic cell)."""
    from ase.units import GPa

    atoms = frame.atoms()
    atoms.calc = calc
    energy = float(atoms.get_potential_energy())
    forces = np.asarray(atoms.get_forces(), dtype=np.float64)
    stress = None
    if all(frame.pbc):
        stress = [float(v) / GPa for v in atoms.get_stress(voigt=True)]
    if not math.isfinite(energy) or not np.isfinite(forces).all():
        raise Failure(f"non-finite energy or forces for frame {frame.frame_id} (step {frame.step})")
    return energy, forces, stress


def _references(
    session: Session,
    run_id: int,
    making_mlip_id: int,
    frames: Sequence[tuple[int, int, NDArray[np.float64] | None, float | None]],
    *,
    use_mlip: bool,
) -> dict[int, _Reference]:
    """The reference of each (frame id, step, frame forces, frame energy), by precedence."""
    ids = [f[0] for f in frames]
    own: dict[int, tuple[float, bytes]] = {}
    if use_mlip and ids:
        stmt = sa.text(
            "SELECT frame_id, energy_ev, forces FROM frame_eval "
            "WHERE mlip_id = :m AND frame_id IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True))
        for fid, e, blob in session.execute(stmt, {"m": making_mlip_id, "ids": ids}):
            own[int(fid)] = (float(e), bytes(blob))
    steps = [f[1] for f in frames if f[3] is None and f[0] not in own]
    thermo: dict[int, float] = {}
    if steps:
        stmt = sa.text(
            "SELECT step, potential_energy_ev FROM thermo WHERE run_id = :r AND step IN :steps "
            "AND potential_energy_ev IS NOT NULL"
        ).bindparams(sa.bindparam("steps", expanding=True))
        thermo = {int(s): float(e) for s, e in session.execute(stmt, {"r": run_id, "steps": steps})}
    refs: dict[int, _Reference] = {}
    for fid, step, forces, energy in frames:
        f_src = e_src = None
        if forces is not None:
            f_src = "frame"
        elif fid in own:
            forces, f_src = unpack_array(own[fid][1]).astype(np.float64), "mlip"
        if energy is not None:
            e_src = "frame"
        elif fid in own:
            energy, e_src = own[fid][0], "mlip"
        elif step in thermo:
            energy, e_src = thermo[step], "thermo"
        refs[fid] = _Reference(forces, f_src, energy, e_src)
    return refs


def _update_others(
    session: Session,
    run_id: int,
    mlip_id: int,
    frames: Sequence[tuple[int, int, NDArray[np.float64] | None, float | None]],
) -> int:
    """Recompute the disagreement of other MLIPs' evaluations of ``frames`` (made by
    ``mlip_id``, which has just evaluated them itself); the number of rows updated."""
    ids = [f[0] for f in frames]
    stmt = sa.text(
        "SELECT id, frame_id, energy_ev, forces FROM frame_eval "
        "WHERE mlip_id != :m AND frame_id IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    others = list(session.execute(stmt, {"m": mlip_id, "ids": ids}))
    if not others:
        return 0
    refs = _references(session, run_id, mlip_id, frames, use_mlip=True)
    table: sa.Table = FrameEval.__table__  # type: ignore[attr-defined]
    for row_id, fid, energy, blob in others:
        forces = unpack_array(bytes(blob)).astype(np.float64)
        values = disagreement(float(energy), forces, refs[int(fid)])
        session.execute(sa.update(table).where(table.c.id == int(row_id)).values(**values))
    return len(others)


def _run_stats(conn: Connection, mlip_id: int, frame_ids: Sequence[int], out: RunEnergy) -> None:
    if not frame_ids:
        return
    stmt = sa.text(
        "SELECT AVG(energy_diff_per_atom_ev), AVG(force_rmse_ev_a), MAX(force_rmse_ev_a), "
        "COUNT(force_rmse_ev_a) FROM frame_eval WHERE mlip_id = :m AND frame_id IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    e, rmse, rmax, n = conn.execute(stmt, {"m": mlip_id, "ids": list(frame_ids)}).one()
    out.mean_energy_diff_per_atom_ev = None if e is None else float(e)
    out.mean_force_rmse_ev_a = None if rmse is None else float(rmse)
    out.max_force_rmse_ev_a = None if rmax is None else float(rmax)
    out.with_force_ref = int(n)


def _method(mlip: Any, dispersion: str) -> str:
    sha = (mlip.model_sha256 or "")[:12]
    model = f", model sha256 {sha}" if sha else ""
    return f"{mlip.name} ({mlip.arch}{model}), dispersion {dispersion}, single point"


def compute_energy(
    engine: Engine,
    mlip: str,
    selector: RunSelector | None = None,
    *,
    stages: Sequence[str] | None = None,
    every: int = 1,
    force: bool = False,
    progress: bool | None = None,
    threads: int | None = None,
    delegate: bool = True,
    calculator: Calculator | None = None,
    notify: Callable[[str], object] | None = None,
) -> EnergyReport:
    """Evaluate the stored frames of the selected runs with MLIP ``mlip`` (see module doc).

    ``selector`` (default: every done run, whatever MLIP made it) chooses the runs;
    ``stages`` keeps frames of those stages, ``every`` every n-th frame in step order (the
    last frame always). ``calculator`` replaces the registered MLIP's (tests, benchmarks); an
    MLIP registered with another interpreter runs the whole call there (unless ``delegate``
    is False), ``notify`` being told so. Raises ``BadInput`` for an unknown MLIP, a bad
    ``every`` or a selected run without frames to evaluate (nothing is written then), and
    ``Failure`` when the MLIP's calculator cannot be built (its package missing).
    """
    from glassbench.runners.delegation import call_in_interpreter, interpreter_for
    from glassbench.runners.interpreter import limit_threads
    from glassbench.runners.meltquench import (
        effective_dispersion,
        mlip_record,
        named_calculator,
    )
    from glassbench.service.migrations import require_schema

    require_schema(engine)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise BadInput(f"must be a positive integer, not {every!r}", field="every")
    selector = selector or RunSelector()
    record = mlip_record(engine, mlip)
    python = interpreter_for(record, notify) if calculator is None and delegate else None
    if python is not None:
        request = {
            "mlip": mlip,
            "selector": selector.as_dict(),
            "stages": None if stages is None else list(stages),
            "every": every,
            "force": force,
            "progress": progress,
            "threads": threads,
        }
        target = f"{__name__}:serve_compute_energy"
        answer = call_in_interpreter(python, target, request, engine=engine, threads=threads)
        return EnergyReport.from_dict(answer)
    limit_threads(threads)
    # the selector's MLIP is the runs' (--run-mlip), not the evaluating one
    runs = select_runs(engine, selector, mlip_field="run_mlip")
    report = EnergyReport(mlip=mlip, selection=selector.describe())
    if not runs:
        return report
    with engine.connect() as conn:
        plan = [(run, _choose_frames(conn, run, stages, every)) for run in runs]
    empty = next((run for run, ids in plan if not ids), None)
    if empty is not None:
        what = f" of stage {', '.join(stages)}" if stages else ""
        raise BadInput(
            f"{empty.label()} has no stored frames{what} to evaluate; leave it out of the "
            "selection (e.g. --run, --source)"
        )
    dispersion = effective_dispersion(record, None)
    calc = calculator if calculator is not None else named_calculator(record)
    method = _method(record, dispersion)
    todo: list[tuple[SelectedRun, list[int], list[int]]] = []
    with engine.connect() as conn:
        for run, ids in plan:
            done = set() if force else _evaluated(conn, record.id, ids)
            todo.append((run, ids, [f for f in ids if f not in done]))
    from glassbench.progress import make_bar

    total = sum(len(t) for _, _, t in todo)
    with make_bar(total, unit="frame", desc=f"evaluate {mlip}", enabled=progress) as bar:
        for run, ids, pending in todo:
            out = RunEnergy(run.run_id, run.label(), len(ids), skipped=len(ids) - len(pending))
            for start in range(0, len(pending), EVAL_BATCH):
                batch = pending[start : start + EVAL_BATCH]
                with engine.connect() as conn:  # read, then compute, then write: no long locks
                    frames = list(read_frames(conn, batch))
                results = []
                for frame in frames:
                    results.append((frame, *_evaluate(calc, frame)))
                    bar.update(1)
                out.refs_updated += _write(engine, run, record.id, results, dispersion, method)
                out.evaluated += len(frames)
            with engine.connect() as conn:
                _run_stats(conn, record.id, ids, out)
            report.runs.append(out)
    return report


def _evaluated(conn: Connection, mlip_id: int, frame_ids: Sequence[int]) -> set[int]:
    stmt = sa.text(
        "SELECT frame_id FROM frame_eval WHERE mlip_id = :m AND frame_id IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    found: set[int] = set()
    for start in range(0, len(frame_ids), 500):  # bounded IN lists
        chunk = list(frame_ids[start : start + 500])
        found |= {int(f) for f in conn.execute(stmt, {"m": mlip_id, "ids": chunk}).scalars()}
    return found


def _write(
    engine: Engine,
    run: SelectedRun,
    mlip_id: int,
    results: Sequence[tuple[StoredFrame, float, NDArray[np.float64], Any]],
    dispersion: str,
    method: str,
) -> int:
    """One transaction: B's rows of a batch of frames (replacing B's earlier ones) and, when
    B made the run, the disagreement of other evaluators that lacked a reference."""
    if not results:
        return 0
    own = mlip_id == run.mlip_id
    keys = [(f.frame_id, f.step, f.forces, f.energy_ev) for f, *_ in results]
    now = utcnow()
    with unit_of_work(engine) as session:
        refs = _references(session, run.run_id, run.mlip_id, keys, use_mlip=not own)
        for frame, energy, forces, stress in results:
            n = frame.n_atoms
            values = {
                "frame_id": frame.frame_id,
                "mlip_id": mlip_id,
                "n_atoms": n,
                "energy_ev": energy,
                "energy_per_atom_ev": energy / n,
                "forces": pack_array(forces),
                "stress_gpa_json": None if stress is None else json.dumps(stress),
                "dispersion": dispersion,
                "method": method,
                "created_at": now,
                **disagreement(energy, forces, refs[frame.frame_id]),
            }
            update = [k for k in values if k not in ("frame_id", "mlip_id")]
            repos.upsert(session, FrameEval, values, key=("frame_id", "mlip_id"), update=update)
        if not own:
            return 0
        # B made these frames: where the frame lacks forces (or energy), B's row is the
        # reference other evaluators were compared against, or lacked.
        lacking = [k for k in keys if k[2] is None or k[3] is None]
        return _update_others(session, run.run_id, mlip_id, lacking) if lacking else 0


def serve_compute_energy(engine: Engine, request: dict[str, Any]) -> dict[str, Any]:
    """A delegated call, in the MLIP's interpreter (see ``runners/delegation.py``)."""
    report = compute_energy(
        engine,
        request["mlip"],
        RunSelector(**request["selector"]),
        stages=request["stages"],
        every=int(request["every"]),
        force=bool(request["force"]),
        progress=request["progress"],
        threads=request["threads"],
        delegate=False,
    )
    return report.as_dict()
