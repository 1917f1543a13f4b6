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
from glassbench.ingest.properties import store_density, store_elastic
from glassbench.progress import make_bar
from glassbench.runners.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from glassbench.runners.meltquench import (
    MeltQuenchParams,
    RunOutcome,
    build_calculator,
    effective_dispersion,
)
from glassbench.runners.protocol import Segment, window_start
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
    *,
    stage_lines: Callable[[str], object] | None = None,
) -> RunOutcome:
    """Run the claimed run ``run_id`` to its end; see the module docstring.

    Progress: the bar when ``progress`` says so (None: when stderr is a terminal); without a
    bar, ``stage_lines`` (if given) gets one line per stage as it ends, for logs and pipes.
    """
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.optimize import FIRE

    from glassbench.analysis import analyze_frame
    from glassbench.runners.calculators import package_versions
    from glassbench.runners.structure import random_glass

    spec = params.spec
    dispersion = effective_dispersion(mlip, spec.dispersion)
    if calculator is None:
        calc = build_calculator(mlip, dispersion=spec.dispersion)
    else:
        from glassbench.runners.dispersion import DispersionCorrected, with_dispersion

        # A given calculator is the bare MLIP (campaign workers share one per model): the run's
        # dispersion goes on top, so the provenance below is true whoever built the model.
        calc = calculator
        if dispersion != "none" and not isinstance(calculator, DispersionCorrected):
            calc = with_dispersion(calculator, dispersion, mlip.functional)
    rng = np.random.default_rng(params.seed)
    try:
        atoms = random_glass(
            params.x, spec.formula_units, params.seed, density_g_cm3=spec.density_g_cm3
        )
    except ValueError as exc:
        raise BadInput(str(exc), field="x/formula_units") from None
    atoms.calc = calc
    # Langevin's own fixcm is deprecated (biased sampling for small cells); FixCom is exact.
    from ase.constraints import FixCom

    atoms.set_constraint(FixCom())
    mass_total = float(atoms.get_masses().sum())
    ckpt = checkpoint_path(checkpoint_dir, engine, run_id)
    loaded = load_checkpoint(ckpt, atoms, rng)
    resumed = None if loaded is None else loaded.step
    software: dict[str, Any] = dict(package_versions(mlip.arch))
    if dispersion != "none":
        from glassbench.runners.dispersion import dispersion_provenance

        prov = dispersion_provenance(dispersion, mlip.functional)
        software.update(prov)
    runs.set_provenance(engine, run_id, n_atoms=len(atoms), software=software)
    segments = params.segments
    bar_on = sys.stderr.isatty() if progress is None else progress
    say = stage_lines if stage_lines is not None and not bar_on else None
    if say is not None:
        plan = ", ".join(f"{seg.stage.name} {seg.steps}" for seg in segments)
        start = "" if loaded is None else f"; resuming from step {loaded.step}"
        say(f"run {run_id}: {len(atoms)} atoms, {params.total_steps} steps ({plan}){start}")
    step = 0
    if loaded is None:
        # A clean start discards rows of an earlier attempt that left no checkpoint.
        with unit_of_work(engine) as s:
            repos.clear_run_data(s, run_id)
        if spec.relax_steps > 0:
            t_relax = time.perf_counter()
            fire = FIRE(atoms, logfile=None)
            fire.run(fmax=0.5, steps=spec.relax_steps)
            if say is not None:
                say(
                    f"relax: {fire.get_number_of_steps()} FIRE steps, "
                    f"{_seconds(time.perf_counter() - t_relax)}"
                )
        t0 = segments[0].stage.t_start_k
        MaxwellBoltzmannDistribution(atoms, temperature_K=t0, rng=rng)
        Stationary(atoms)
        initial = atoms.copy()
        forces, energy = _forces_energy(atoms)
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
                temperature_k=t0,
                analysis=analyze_frame(
                    initial.numbers, initial.positions, np.asarray(initial.cell), initial.pbc
                ),
                pbc=initial.pbc,
                forces=forces,
                energy_ev=energy,
            )
            repos.insert_thermo(s, run_id, [_thermo_row(atoms, 0, spec.timestep_fs, mass_total)])
    else:
        step = loaded.step
        log.info("run %s resumes from step %s (%s)", run_id, step, ckpt)

    total = params.total_steps
    thermo_every, frame_every, flush_every = spec.thermo_every, spec.frame_every, params.flush_steps
    thermo_buf: list[dict[str, Any]] = []
    frame_buf: list[tuple[int, str, Any, tuple[np.ndarray, float]]] = []
    bar = _Progress(total, step, spec.timestep_fs, bar_on)
    current: tuple[int, Any] | None = None  # (segment index, its dynamics)
    stage_clock: dict[int, float] = {}  # segment index -> when this invocation entered it

    def dynamics_for(seg: Segment) -> Any:
        nonlocal current
        if current is not None and current[0] == seg.index:
            return current[1]
        dyn = stage_dynamics(atoms, seg, spec.timestep_fs, rng)
        # Resuming inside the stage whose integrator state the checkpoint holds: restore it, so
        # Nose-Hoover and MTK variables continue exactly (a new stage starts them from rest).
        if loaded is not None and loaded.stage_index == seg.index and step > seg.start:
            set_dynamics_state(dyn, loaded.dynamics)
        current = (seg.index, dyn)
        return dyn

    def write_buffers() -> None:
        with unit_of_work(engine) as s:
            repos.insert_thermo(s, run_id, thermo_buf)
            for fstep, stage, snap, (forces, energy) in frame_buf:
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
                    time_ps=fstep * spec.timestep_fs / 1000.0,
                    temperature_k=params.target_temperature(fstep),
                    analysis=analyze_frame(snap.numbers, snap.positions, cell, snap.pbc),
                    forces=forces,
                    energy_ev=energy,
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
        index, dyn = current if current is not None else (-1, None)
        save_checkpoint(
            ckpt,
            step=upto,
            atoms=atoms,
            rng=rng,
            stage_index=index,
            dynamics=dynamics_state(dyn),
        )
        if on_flush is not None:
            on_flush(upto)

    try:
        while step < total:
            t_chunk = time.perf_counter()
            seg = params.segment_at(step + 1)
            # Advance to the next thermo point, never across a stage boundary.
            nxt = min((step // thermo_every + 1) * thermo_every, seg.end, total)
            dyn = dynamics_for(seg)
            if seg.stage.t_end_k is not None:
                # Linear ramp: the target is updated every chunk (<= thermo_every steps).
                set_target_temperature(dyn, seg.temperature_at(nxt))
            dyn.run(nxt - step)
            step = nxt
            if step % thermo_every == 0 or step == total:
                thermo_buf.append(_thermo_row(atoms, step, spec.timestep_fs, mass_total))
            if step % frame_every == 0 and step < total:
                frame_buf.append((step, params.stage_at(step), atoms.copy(), _forces_energy(atoms)))
            if step % flush_every == 0 or step == total:
                flush(step)
            temperature = float(atoms.get_temperature())
            bar.update(step, temperature)
            stage_clock.setdefault(seg.index, t_chunk)
            if say is not None and step == seg.end:
                say(_stage_line(seg, spec.timestep_fs, atoms, mass_total, stage_clock, resumed))
    finally:
        bar.close()
    return _finish(engine, params, run_id, atoms, calc, resumed)


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 100 else f"{s:.0f} s"


def _stage_line(
    seg: Segment,
    timestep_fs: float,
    atoms: Atoms,
    mass_total: float,
    clock: dict[int, float],
    resumed: int | None,
) -> str:
    """``melt: 2000 steps, 10 ps, T=1803 K, 41 s``: one finished stage, for a log."""
    ps = seg.steps * timestep_fs / 1000.0
    parts = [f"{seg.steps} steps", f"{ps:g} ps", f"T={atoms.get_temperature():.0f} K"]
    if seg.stage.ensemble == "npt":
        parts.append(f"density {mass_density_g_cm3(mass_total, atoms.get_volume()):.3g} g/cm3")
    wall = _seconds(time.perf_counter() - clock[seg.index])
    if resumed is not None and seg.start < resumed:
        wall += f" since step {resumed}"
    parts.append(wall)
    return f"{seg.stage.name}: {', '.join(parts)}"


def _forces_energy(atoms: Atoms) -> tuple[np.ndarray, float]:
    """The MLIP's forces (without the centre-of-mass constraint) and potential energy of
    ``atoms``: the step's results, which the calculator holds already (stored with the frame,
    the reference of a later cross-evaluation)."""
    forces = np.array(atoms.get_forces(apply_constraint=False), dtype=np.float64)
    return forces, float(atoms.get_potential_energy())


# --- integrators per stage ------------------------------------------------------------------


def stage_dynamics(atoms: Atoms, seg: Segment, timestep_fs: float, rng: np.random.Generator) -> Any:
    """The ASE integrator of one stage, starting at the stage's first target temperature.

    Langevin and Berendsen stages keep the exact centre-of-mass constraint (FixCom); the
    Nose-Hoover and MTK integrators keep their own positions and refuse constraints (they
    conserve the zero total momentum the run starts with).
    """
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT
    from ase.md.nptberendsen import NPTBerendsen

    st = seg.stage
    dt = timestep_fs * units.fs
    t0 = seg.temperature_at(seg.start)
    if st.thermostat in ("langevin", "berendsen"):
        if not atoms.constraints:
            atoms.set_constraint(FixCom())
    else:
        atoms.set_constraint()
    if st.ensemble == "nvt" and st.thermostat == "langevin":
        return Langevin(
            atoms,
            dt,
            temperature_K=t0,
            friction=st.friction_per_fs / units.fs,
            rng=rng,
            fixcm=False,
        )
    if st.ensemble == "nvt" and st.thermostat == "nose-hoover":
        return NoseHooverChainNVT(atoms, dt, temperature_K=t0, tdamp=st.tdamp_fs * units.fs)
    if st.ensemble == "nvt" and st.thermostat == "berendsen":
        from ase.md.nvtberendsen import NVTBerendsen

        return NVTBerendsen(atoms, dt, temperature_K=t0, taut=st.tdamp_fs * units.fs)
    if st.barostat == "berendsen":
        return NPTBerendsen(
            atoms,
            dt,
            temperature_K=t0,
            pressure_au=st.pressure_gpa * units.GPa,
            taut=st.tdamp_fs * units.fs,
            taup=st.pdamp_fs * units.fs,
            compressibility_au=st.compressibility_per_gpa / units.GPa,
        )
    if st.barostat == "mtk":
        return IsotropicMTKNPT(
            atoms,
            dt,
            temperature_K=t0,
            pressure_au=st.pressure_gpa * units.GPa,
            tdamp=st.tdamp_fs * units.fs,
            pdamp=st.pdamp_fs * units.fs,
        )
    raise BadInput(f"no integrator for {st.describe()}", field="protocol")


def set_target_temperature(dyn: Any, temperature_k: float) -> None:
    """Move the target of a ramp. Nose-Hoover/MTK masses follow the target temperature, as
    LAMMPS's fix nvt/npt recompute theirs from ``t_target`` every step."""
    from ase import units

    thermostat = getattr(dyn, "_thermostat", None)
    if thermostat is None:
        dyn.set_temperature(temperature_K=temperature_k)
        return
    kt = units.kB * temperature_k
    thermostat._kT = kt
    tdamp = thermostat._tdamp
    thermostat._Q[0] = 3 * thermostat._num_atoms_global * kt * tdamp**2
    thermostat._Q[1:] = kt * tdamp**2
    barostat = getattr(dyn, "_barostat", None)
    if barostat is not None:
        pdamp = barostat._pdamp
        barostat._kT = kt
        barostat._W = (3 * barostat._num_atoms_global + 3) * kt * pdamp**2
        barostat._R[0] = 9 * kt * pdamp**2
        barostat._R[1:] = kt * pdamp**2
        dyn._kT = kt
        dyn._temperature_K = temperature_k


# Integrator variables beyond positions, momenta and cell (which the checkpoint holds anyway).
_STATE = {
    "thermostat": ("_eta", "_p_eta"),
    "barostat": ("_xi", "_p_xi"),
    "dyn": ("_eps", "_p_eps", "_volume0", "_cell0"),
}


def _owners(dyn: Any) -> dict[str, Any]:
    return {
        "thermostat": getattr(dyn, "_thermostat", None),
        "barostat": getattr(dyn, "_barostat", None),
        "dyn": dyn,
    }


def dynamics_state(dyn: Any) -> dict[str, np.ndarray]:
    """The extended-system variables of a Nose-Hoover or MTK integrator (empty for others)."""
    out: dict[str, np.ndarray] = {}
    if dyn is None:
        return out
    owners = _owners(dyn)
    for part, names in _STATE.items():
        obj = owners[part]
        if obj is None:
            continue
        for name in names:
            if hasattr(obj, name):
                out[f"{part}.{name}"] = np.array(getattr(obj, name), dtype=float)
    return out


def set_dynamics_state(dyn: Any, state: dict[str, np.ndarray]) -> None:
    owners = _owners(dyn)
    for key, value in state.items():
        part, name = key.split(".", 1)
        obj = owners.get(part)
        if obj is None or not hasattr(obj, name):
            continue
        current = getattr(obj, name)
        setattr(obj, name, float(value) if np.ndim(current) == 0 else np.array(value))


def _finish(
    engine: Engine,
    params: MeltQuenchParams,
    run_id: int,
    atoms: Atoms,
    calc: Any,
    resumed: int | None,
) -> RunOutcome:
    from glassbench.analysis import analyze_frame
    from glassbench.ingest.window import store_window_stats

    spec = params.spec
    props: dict[str, float] = {}

    elastic: Any = None
    if params.elastic:
        # The recipe `glassbench compute elastic` uses too (one code path).
        elastic = params.elastic_settings(spec.stages[-1].pressure_gpa).compute(atoms, calc)
    final = atoms.copy()
    final_forces, final_energy = _forces_energy(atoms)
    cell = np.asarray(final.cell)
    total = params.total_steps
    step_from, window = window_start(spec, params.segments), spec.window_description

    def write_final() -> None:
        with unit_of_work(engine) as s:
            repos.add_frame(
                s,
                run_id,
                stage="final",
                step=total,
                numbers=final.numbers,
                positions=final.positions,
                cell=cell,
                pbc=final.pbc,
                time_ps=total * spec.timestep_fs / 1000.0,
                temperature_k=spec.stages[-1].t_final_k,
                analysis=analyze_frame(final.numbers, final.positions, cell, final.pbc),
                forces=final_forces,
                energy_ev=final_energy,
            )
            est = store_density(s, run_id, step_from=step_from, window=window)
            if est is None:  # a last stage too short for thermo rows: the final structure
                value = mass_density_g_cm3(float(final.get_masses().sum()), final.get_volume())
                repos.set_property(
                    s, run_id, "density_g_cm3", value, method="density of the final structure"
                )
                props["density_g_cm3"] = value
            else:
                props["density_g_cm3"] = est.value
            store_window_stats(
                s,
                run_id,
                stages=(spec.window_stage,),
                step_from=step_from,
                block_frames=spec.block_frames,
            )
            if elastic is not None:
                props.update(store_elastic(s, run_id, elastic))
            runs.finish(s, run_id)

    retry_db(write_final, url=_url(engine), what=f"run {run_id}: final frame", log=log)
    return RunOutcome(run_id, RunStatus.DONE, total, 0.0, resumed_from=resumed, properties=props)
