"""The simulation of one claimed melt-quench run: stages, flushes, checkpoints, final frame.

:func:`simulate` is what :func:`glassbench.runners.meltquench.run_meltquench` runs once the
run is claimed (see that module for the stages). Thermo rows are buffered and written in one
transaction per flush together with any frames (each analysed) and the run's heartbeat; the
checkpoint is written after the flush, so the thermo table of a killed and resumed run equals
that of an uninterrupted one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine

from glassbench.chemistry import mass_density_g_cm3
from glassbench.errors import BadInput
from glassbench.ingest.properties import store_density
from glassbench.progress import make_bar
from glassbench.runners.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from glassbench.runners.meltquench import MeltQuenchParams, RunOutcome, build_calculator
from glassbench.schema import RunStatus
from glassbench.service import repos, runs, unit_of_work
from glassbench.service.retry import retry_db

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator

log = logging.getLogger(__name__)

EV_A3_TO_GPA = 160.21766208


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


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


def simulate(
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
