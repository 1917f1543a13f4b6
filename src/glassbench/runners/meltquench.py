"""Melt-quench MD with live ingest, checkpoints and resume.

Stages (docs/architecture.md, "One quench rate, end to end"): random initial structure at a target density (short fixed-cell relaxation so
pretrained models do not blow it apart), melt at ``t_melt_k`` (Langevin NVT), linear quench to
``t_final_k`` at ``quench_rate_k_ps``, anneal at ``t_final_k`` (Berendsen NPT at 0 GPa, so the
density is a result), final frame. Thermo rows are buffered and written in one transaction per
flush together with any frames (each analysed) and the run's heartbeat; the checkpoint is written
atomically *after* the database flush, so a resumed run recomputes at most one flush interval and
its re-inserted rows are skipped by the (run, step) key: the thermo table of a killed and resumed
run equals that of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine

from glassbench.chemistry import FAMILY, mass_density_g_cm3
from glassbench.errors import BadInput, Failure
from glassbench.ingest.pipeline import store_density
from glassbench.progress import make_bar
from glassbench.schema import RunStatus
from glassbench.service import repos, runs, unit_of_work
from glassbench.service.retry import retry_db

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator

log = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = 1
EV_A3_TO_GPA = 160.21766208


@dataclass(frozen=True)
class MeltQuenchParams:
    """Everything that defines a melt-quench run; the first four fields are its key."""

    mlip: str
    x: float
    quench_rate_k_ps: float
    seed: int
    formula_units: int = 8
    t_melt_k: float = 1800.0
    melt_ps: float = 10.0
    t_final_k: float = 300.0
    anneal_ps: float = 10.0
    timestep_fs: float = 1.0
    density_g_cm3: float | None = None
    friction_per_fs: float = 0.01
    taut_fs: float = 100.0
    taup_fs: float = 1000.0
    pressure_gpa: float = 0.0
    compressibility_per_gpa: float = 0.05
    relax_steps: int = 100
    thermo_every: int = 10
    frame_every: int = 100
    flush_every: int = 200
    elastic: bool = False
    elastic_strain: float = 0.005
    elastic_fmax: float = 0.01
    elastic_max_steps: int = 300
    elastic_relax_positions: bool = True

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (
                self.quench_rate_k_ps > 0 and math.isfinite(self.quench_rate_k_ps),
                "--quench-rate",
                "must be > 0",
            ),
            (self.formula_units >= 1, "--formula-units", "must be >= 1"),
            (self.t_melt_k > self.t_final_k > 0, "--t-melt/--t-final", "need t_melt > t_final > 0"),
            (self.melt_ps >= 0 and self.anneal_ps >= 0, "--melt-ps/--anneal-ps", "must be >= 0"),
            (0 < self.timestep_fs <= 10, "--timestep-fs", "must be in (0, 10]"),
            (
                self.thermo_every >= 1 and self.frame_every >= 1,
                "thermo/frame interval",
                "must be >= 1",
            ),
        ]
        for ok, where, msg in checks:
            if not ok:
                raise BadInput(msg, source=where)
        if self.flush_every % self.thermo_every:
            raise BadInput(
                "flush interval must be a multiple of the thermo interval", source="flush_every"
            )

    # Steps of each stage; the quench covers (t_melt - t_final) at the given rate.
    @property
    def melt_steps(self) -> int:
        return round(self.melt_ps * 1000.0 / self.timestep_fs)

    @property
    def quench_steps(self) -> int:
        quench_ps = (self.t_melt_k - self.t_final_k) / self.quench_rate_k_ps
        return max(1, round(quench_ps * 1000.0 / self.timestep_fs))

    @property
    def anneal_steps(self) -> int:
        return round(self.anneal_ps * 1000.0 / self.timestep_fs)

    @property
    def total_steps(self) -> int:
        return self.melt_steps + self.quench_steps + self.anneal_steps

    def protocol(self) -> dict[str, Any]:
        """Parameters outside the run key: they define the protocol record (content-hashed)."""
        d = asdict(self)
        for k in ("mlip", "x", "quench_rate_k_ps", "seed", "flush_every"):
            d.pop(k)
        for k in (
            "elastic",
            "elastic_strain",
            "elastic_fmax",
            "elastic_max_steps",
            "elastic_relax_positions",
        ):
            d.pop(k)
        d["thermostat"] = "langevin"
        d["barostat"] = "berendsen"
        d["ensemble"] = "NVT melt/quench, NPT anneal"
        return d

    def stage_at(self, step: int) -> str:
        if step <= self.melt_steps:
            return "melt"
        if step <= self.melt_steps + self.quench_steps:
            return "quench"
        return "anneal"

    def target_temperature(self, step: int) -> float:
        if step <= self.melt_steps:
            return self.t_melt_k
        q = step - self.melt_steps
        if q <= self.quench_steps:
            return self.t_melt_k + (self.t_final_k - self.t_melt_k) * q / self.quench_steps
        return self.t_final_k


@dataclass
class RunOutcome:
    run_id: int
    status: str
    steps: int
    wall_s: float
    resumed_from: int | None = None
    properties: dict[str, float] = field(default_factory=dict)
    message: str = ""


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


# --- run records ----------------------------------------------------------------------------


def ensure_run(engine: Engine, params: MeltQuenchParams) -> tuple[int, Any]:
    """Create (or find) the run row for ``params``; returns (run id, MLIP record)."""
    with unit_of_work(engine) as s:
        try:
            mlip = repos.get_mlip(s, params.mlip)
        except repos.NotFound as exc:
            raise BadInput(str(exc), field="mlip") from None
        try:
            cid = repos.composition_id(s, params.x)
        except ValueError as exc:
            raise BadInput(str(exc), field="x") from None
        pid = repos.protocol_id(s, params.protocol())
        assert mlip.id is not None
        rid = runs.ensure(
            s,
            mlip_id=mlip.id,
            composition_id=cid,
            quench_rate_k_ps=params.quench_rate_k_ps,
            seed=params.seed,
            protocol_id=pid,
        )
        s.expunge(mlip)
    return rid, mlip


# --- checkpoints ----------------------------------------------------------------------------


def checkpoint_path(directory: Path, engine: Engine, run_id: int) -> Path:
    """One file per (database, run): two databases used from one folder never collide."""
    ident = repos.content_hash(
        {"db": engine.url.render_as_string(hide_password=True), "run": run_id}
    )
    return directory / f"run-{run_id}-{ident[:12]}.npz"


def save_checkpoint(path: Path, *, step: int, atoms: Atoms, rng: np.random.Generator) -> None:
    """Atomic: write a temporary file, fsync, rename; a kill leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            schema=np.array(CHECKPOINT_SCHEMA),
            step=np.array(step),
            numbers=atoms.get_atomic_numbers(),
            positions=atoms.get_positions(),
            momenta=atoms.get_momenta(),
            cell=np.asarray(atoms.get_cell()),
            rng_state=np.array(json.dumps(rng.bit_generator.state)),
        )
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, atoms: Atoms, rng: np.random.Generator) -> int | None:
    """Restore atoms and RNG in place; return the step, or None if there is no usable file."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as d:
            if int(d["schema"]) != CHECKPOINT_SCHEMA:
                log.warning("ignoring checkpoint %s with schema %s", path, int(d["schema"]))
                return None
            if not np.array_equal(d["numbers"], atoms.get_atomic_numbers()):
                log.warning("ignoring checkpoint %s: atoms differ from this run", path)
                return None
            atoms.set_cell(d["cell"])
            # Constraints (FixCom) must not "correct" the restored state.
            atoms.set_positions(d["positions"], apply_constraint=False)
            atoms.set_momenta(d["momenta"], apply_constraint=False)
            rng.bit_generator.state = json.loads(str(d["rng_state"]))
            return int(d["step"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None


# --- the run ----------------------------------------------------------------------------


def _thermo_row(atoms: Atoms, step: int, dt_fs: float, masses_amu_total: float) -> dict[str, Any]:
    calc = atoms.calc
    results = getattr(calc, "results", {}) if calc is not None else {}
    epot = results.get("energy")
    ekin = float(atoms.get_kinetic_energy())
    vol = float(atoms.get_volume())
    stress = results.get("stress")
    pressure = None
    if stress is not None:
        s = np.asarray(stress).reshape(-1)
        pressure = float(-s[:3].mean() * EV_A3_TO_GPA)
    return {
        "step": step,
        "time_ps": step * dt_fs / 1000.0,
        "temperature_k": float(atoms.get_temperature()),
        "pressure_gpa": pressure,
        "potential_energy_ev": None if epot is None else float(epot),
        "kinetic_energy_ev": ekin,
        "total_energy_ev": None if epot is None else float(epot) + ekin,
        "volume_a3": vol,
        "density_g_cm3": mass_density_g_cm3(masses_amu_total, vol),
    }


class _Progress:
    """The run's bar: steps, with simulated ps, ns/day and temperature after each chunk."""

    def __init__(self, total: int, initial: int, dt_fs: float, enabled: bool) -> None:
        self.dt_fs = dt_fs
        self.t0 = time.perf_counter()
        self.step0 = initial
        self.bar = make_bar(total, initial=initial, unit="step", enabled=enabled)

    def update(self, step: int, temperature: float) -> None:
        self.bar.update(step - self.bar.n)
        elapsed = time.perf_counter() - self.t0
        ns_day = (step - self.step0) * self.dt_fs * 1e-6 / elapsed * 86400 if elapsed > 0 else 0.0
        self.bar.set_postfix_str(
            f"{step * self.dt_fs / 1000:.2f} ps, {ns_day:.3g} ns/day, T={temperature:.0f} K"
        )

    def close(self) -> None:
        self.bar.close()


def run_meltquench(
    engine: Engine,
    params: MeltQuenchParams,
    *,
    checkpoint_dir: Path,
    calculator: Calculator | None = None,
    progress: bool | None = None,
    force_claim: bool = True,
    max_attempts: int | None = None,
    on_flush: Callable[[int], None] | None = None,
    stale_after_s: float = 600.0,
) -> RunOutcome:
    """Run (or resume, or skip if done) one melt-quench simulation with live ingest.

    ``calculator`` overrides the registered MLIP's calculator (benchmarks, tests); otherwise it
    is built by the factory after the model file's sha256 has been checked. ``on_flush`` is
    called with the step after each database flush (tests use it to kill the run mid-way).
    """
    t_start = time.perf_counter()
    run_id, mlip = ensure_run(engine, params)
    if runs.status(engine, run_id) is RunStatus.DONE:
        return RunOutcome(run_id, RunStatus.DONE, 0, 0.0, message="already done")
    if not runs.claim(
        engine,
        run_id,
        worker=runs.worker_id(),
        force=force_claim,
        max_attempts=max_attempts,
        stale_after_s=stale_after_s,
    ):
        return RunOutcome(
            run_id, runs.status(engine, run_id), 0, 0.0, message="claimed by another worker"
        )
    try:
        outcome = _simulate(
            engine, params, run_id, mlip, checkpoint_dir, calculator, progress, on_flush
        )
    except BaseException as exc:
        msg = f"{type(exc).__name__}: {exc}".strip()
        try:
            runs.fail(engine, run_id, msg)
        except Exception:  # the database may be what failed; the original error matters more
            log.exception("could not record the failure of run %s", run_id)
        if isinstance(exc, BadInput | Failure | KeyboardInterrupt):
            raise
        raise Failure(f"run {run_id} failed: {msg.splitlines()[0]}") from exc
    outcome.wall_s = time.perf_counter() - t_start
    runs.add_wall_time(engine, run_id, outcome.wall_s)
    return outcome


def build_calculator(mlip: Any, *, device: str | None = None) -> Calculator:
    """The registered MLIP's calculator (model hash checked first) on ``device``.

    ``device`` defaults to the GLASSBENCH_DEVICE setting (``cpu``).
    """
    from glassbench.runners.calculators import make_calculator
    from glassbench.settings import get_settings

    return make_calculator(
        mlip.arch,
        mlip.model_path,
        expected_sha256=mlip.model_sha256,
        device=device or get_settings().device,
    )


def _simulate(
    engine: Engine,
    params: MeltQuenchParams,
    run_id: int,
    mlip: Any,
    checkpoint_dir: Path,
    calculator: Calculator | None,
    progress: bool | None,
    on_flush: Callable[[int], None] | None,
) -> RunOutcome:
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.nptberendsen import NPTBerendsen
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.optimize import FIRE

    from glassbench.analysis import analyze_frame
    from glassbench.runners.calculators import package_versions
    from glassbench.runners.structure import random_glass

    calc = calculator if calculator is not None else build_calculator(mlip)
    rng = np.random.default_rng(params.seed)
    try:
        atoms = random_glass(
            params.x, params.formula_units, params.seed, density_g_cm3=params.density_g_cm3
        )
    except ValueError as exc:
        raise BadInput(str(exc), field="x/formula_units") from None
    atoms.calc = calc
    # Langevin's own fixcm is deprecated (biased sampling for small cells); FixCom is exact.
    from ase.constraints import FixCom

    atoms.set_constraint(FixCom())
    mass_total = float(atoms.get_masses().sum())
    ckpt = checkpoint_path(checkpoint_dir, engine, run_id)
    resumed = load_checkpoint(ckpt, atoms, rng)
    runs.set_provenance(engine, run_id, n_atoms=len(atoms), software=package_versions(mlip.arch))
    step = 0
    if resumed is None:
        # A clean start discards rows of an earlier attempt that left no checkpoint.
        with unit_of_work(engine) as s:
            repos.clear_run_data(s, run_id)
        if params.relax_steps > 0:
            FIRE(atoms, logfile=None).run(fmax=0.5, steps=params.relax_steps)
        MaxwellBoltzmannDistribution(atoms, temperature_K=params.t_melt_k, rng=rng)
        Stationary(atoms)
        initial = atoms.copy()
        with unit_of_work(engine) as s:
            repos.add_frame(
                s,
                run_id,
                stage="initial",
                step=0,
                numbers=initial.numbers,
                positions=initial.positions,
                cell=np.asarray(initial.cell),
                time_ps=0.0,
                temperature_k=params.t_melt_k,
                analysis=analyze_frame(
                    initial.numbers, initial.positions, np.asarray(initial.cell), initial.pbc
                ),
                pbc=initial.pbc,
            )
            repos.insert_thermo(s, run_id, [_thermo_row(atoms, 0, params.timestep_fs, mass_total)])
    else:
        step = resumed
        log.info("run %s resumes from step %s (%s)", run_id, step, ckpt)

    dt = params.timestep_fs * units.fs
    total = params.total_steps
    thermo_buf: list[dict[str, Any]] = []
    frame_buf: list[tuple[int, str, Any]] = []
    bar = _Progress(
        total, step, params.timestep_fs, sys.stderr.isatty() if progress is None else progress
    )
    langevin: Any = None
    npt: Any = None

    def dynamics_for(stage: str) -> Any:
        nonlocal langevin, npt
        if stage in ("melt", "quench"):
            if langevin is None:
                langevin = Langevin(
                    atoms,
                    dt,
                    temperature_K=params.t_melt_k,
                    friction=params.friction_per_fs / units.fs,
                    rng=rng,
                    fixcm=False,
                )
            return langevin
        if npt is None:
            npt = NPTBerendsen(
                atoms,
                dt,
                temperature_K=params.t_final_k,
                pressure_au=params.pressure_gpa * units.GPa,
                taut=params.taut_fs * units.fs,
                taup=params.taup_fs * units.fs,
                compressibility_au=params.compressibility_per_gpa / units.GPa,
            )
        return npt

    def write_buffers() -> None:
        with unit_of_work(engine) as s:
            repos.insert_thermo(s, run_id, thermo_buf)
            for fstep, stage, snap in frame_buf:
                cell = np.asarray(snap.cell)
                repos.add_frame(
                    s,
                    run_id,
                    stage=stage,
                    step=fstep,
                    numbers=snap.numbers,
                    positions=snap.positions,
                    cell=cell,
                    pbc=snap.pbc,
                    time_ps=fstep * params.timestep_fs / 1000.0,
                    temperature_k=params.target_temperature(fstep),
                    analysis=analyze_frame(snap.numbers, snap.positions, cell, snap.pbc),
                )
            runs.heartbeat(s, run_id)

    def flush(upto: int) -> None:
        # A database outage waits here (the writes are idempotent upserts, so a retry after
        # a lost commit acknowledgement is harmless); the checkpoint follows the write.
        retry_db(
            write_buffers, url=_url(engine), what=f"run {run_id}: flush at step {upto}", log=log
        )
        thermo_buf.clear()
        frame_buf.clear()
        save_checkpoint(ckpt, step=upto, atoms=atoms, rng=rng)
        if on_flush is not None:
            on_flush(upto)

    try:
        while step < total:
            # Advance to the next thermo point, never across a stage boundary.
            nxt = min((step // params.thermo_every + 1) * params.thermo_every, total)
            for boundary in (params.melt_steps, params.melt_steps + params.quench_steps):
                if step < boundary < nxt:
                    nxt = boundary
            stage = params.stage_at(step + 1)
            dyn = dynamics_for(stage)
            if stage == "quench":
                # Linear ramp: the target is updated every chunk (<= thermo_every steps).
                dyn.set_temperature(temperature_K=params.target_temperature(nxt))
            dyn.run(nxt - step)
            step = nxt
            if step % params.thermo_every == 0 or step == total:
                thermo_buf.append(_thermo_row(atoms, step, params.timestep_fs, mass_total))
            if step % params.frame_every == 0 and step < total:
                frame_buf.append((step, params.stage_at(step), atoms.copy()))
            if step % params.flush_every == 0 or step == total:
                flush(step)
            bar.update(step, float(atoms.get_temperature()))
    finally:
        bar.close()
    return _finish(engine, params, run_id, atoms, calc, resumed)


def _finish(
    engine: Engine,
    params: MeltQuenchParams,
    run_id: int,
    atoms: Atoms,
    calc: Any,
    resumed: int | None,
) -> RunOutcome:
    from glassbench.analysis import analyze_frame

    props: dict[str, float] = {}

    elastic: Any = None
    if params.elastic:
        from glassbench.runners.elastic import elastic_moduli

        elastic = elastic_moduli(
            atoms.copy(),
            calc,
            strain=params.elastic_strain,
            fmax=params.elastic_fmax,
            max_steps=params.elastic_max_steps,
            relax_positions=params.elastic_relax_positions,
        )
    final = atoms.copy()
    cell = np.asarray(final.cell)

    def write_final() -> None:
        with unit_of_work(engine) as s:
            repos.add_frame(
                s,
                run_id,
                stage="final",
                step=params.total_steps,
                numbers=final.numbers,
                positions=final.positions,
                cell=cell,
                pbc=final.pbc,
                time_ps=params.total_steps * params.timestep_fs / 1000.0,
                temperature_k=params.t_final_k,
                analysis=analyze_frame(final.numbers, final.positions, cell, final.pbc),
            )
            anneal_start = params.melt_steps + params.quench_steps
            est = store_density(
                s,
                run_id,
                step_from=anneal_start + params.anneal_steps // 2 + 1,
                window="the last half of the NPT anneal",
            )
            if est is None:  # no anneal: the density of the final structure
                value = mass_density_g_cm3(float(final.get_masses().sum()), final.get_volume())
                repos.set_property(
                    s, run_id, "density_g_cm3", value, method="density of the final structure"
                )
                props["density_g_cm3"] = value
            else:
                props["density_g_cm3"] = est.value
            if elastic is not None:
                method = elastic.method
                if params.elastic_relax_positions and not elastic.converged:
                    method += " (position relaxation NOT converged)"
                for name, (value, err) in elastic.moduli().items():
                    props[name] = value
                    repos.set_property(
                        s, run_id, name, value, stderr=err, method=method, details=elastic.to_dict()
                    )
            runs.finish(s, run_id)

    retry_db(write_final, url=_url(engine), what=f"run {run_id}: final frame", log=log)
    return RunOutcome(
        run_id, RunStatus.DONE, params.total_steps, 0.0, resumed_from=resumed, properties=props
    )


def describe_params(params: MeltQuenchParams) -> Mapping[str, Any]:
    return {"family": FAMILY, **asdict(params)}
