"""``glassbench run``: simulations with live ingest (melt-quench, crystal volumes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import RUN_KEY_OPTIONS, require_schema
from glassbench.errors import BadInput, Failure


@click.group("run")
def cli() -> None:
    """Run simulations with live ingest."""


def _mlip_record(app: AppContext, name: str) -> Any:
    from sqlmodel import Session

    from glassbench.service.repos import NotFound, get_mlip

    with Session(app.engine) as s:
        try:
            m = get_mlip(s, name)
        except NotFound as exc:
            raise BadInput(str(exc), source="--mlip") from None
        s.expunge(m)
        return m


def limit_threads(threads: int | None) -> None:
    """Apply GLASSBENCH_THREADS to OpenMP and torch (oversubscribed torch spin-waits)."""
    if not threads:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def delegate_if_needed(app: AppContext, mlip: Any, argv: list[str]) -> bool:
    """Re-run this command in the MLIP's own interpreter when it names one.

    The database URL travels in the environment, not on the command line (where `ps` shows it).
    Returns True if the command ran elsewhere (its exit status is propagated).
    """
    if not mlip.python:
        return False
    target = Path(mlip.python)
    if target.absolute() == Path(sys.executable).absolute():
        return False
    if not target.exists():
        raise Failure(f"interpreter {mlip.python} registered for MLIP {mlip.name!r} does not exist")
    env = dict(os.environ)
    env["GLASSBENCH_DATABASE_URL"] = app.settings.database_url
    cmd = [str(target), "-m", "glassbench", *argv]
    click.echo(f"running MLIP {mlip.name!r} in {target}", err=True)
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        raise click.exceptions.Exit(rc)
    return True


@cli.command("meltquench")
@RUN_KEY_OPTIONS
@click.option("--formula-units", type=int, default=8, show_default=True)
@click.option("--t-melt", type=float, default=1800.0, show_default=True, help="K")
@click.option("--melt-ps", type=float, default=10.0, show_default=True)
@click.option("--t-final", type=float, default=300.0, show_default=True, help="K")
@click.option("--anneal-ps", type=float, default=10.0, show_default=True)
@click.option("--timestep-fs", type=float, default=1.0, show_default=True)
@click.option(
    "--density", type=float, default=None, help="Initial density in g/cm3 (default: estimate)."
)
@click.option("--thermo-every", type=int, default=10, show_default=True, help="steps")
@click.option("--frame-every", type=int, default=100, show_default=True, help="steps")
@click.option("--elastic/--no-elastic", default=False, show_default=True)
@click.option(
    "--checkpoint-dir",
    type=click.Path(path_type=Path),
    default=Path(".glassbench/checkpoints"),
    show_default=True,
)
@click.option(
    "--in-process", is_flag=True, hidden=True, help="Do not delegate to the MLIP's interpreter."
)
@pass_app
def meltquench(
    app: AppContext,
    mlip: str,
    x: float,
    quench_rate: float,
    seed: int,
    formula_units: int,
    t_melt: float,
    melt_ps: float,
    t_final: float,
    anneal_ps: float,
    timestep_fs: float,
    density: float | None,
    thermo_every: int,
    frame_every: int,
    elastic: bool,
    checkpoint_dir: Path,
    in_process: bool,
) -> None:
    """Melt-quench one glass; resumes from its checkpoint if it was interrupted."""
    from glassbench.runners.meltquench import MeltQuenchParams, run_meltquench

    if quench_rate <= 0:
        raise BadInput(f"must be > 0, got {quench_rate}", source="--quench-rate")
    flush_every = max(thermo_every, (200 // thermo_every) * thermo_every)
    params = MeltQuenchParams(
        mlip=mlip,
        x=x,
        quench_rate_k_ps=quench_rate,
        seed=seed,
        formula_units=formula_units,
        t_melt_k=t_melt,
        melt_ps=melt_ps,
        t_final_k=t_final,
        anneal_ps=anneal_ps,
        timestep_fs=timestep_fs,
        density_g_cm3=density,
        thermo_every=thermo_every,
        frame_every=frame_every,
        flush_every=flush_every,
        elastic=elastic,
    )
    engine = app.engine
    require_schema(engine)
    record = _mlip_record(app, mlip)
    if not in_process and delegate_if_needed(app, record, _rebuild_argv(params, checkpoint_dir)):
        return
    limit_threads(app.settings.threads)
    out = run_meltquench(engine, params, checkpoint_dir=checkpoint_dir)
    props = ", ".join(f"{k}={v:.4g}" for k, v in out.properties.items())
    resumed = f" (resumed from step {out.resumed_from})" if out.resumed_from else ""
    click.echo(
        f"run {out.run_id}: {out.status}{resumed}; {out.steps} steps in {out.wall_s:.1f} s {props} {out.message}".rstrip()
    )


def _rebuild_argv(p: Any, checkpoint_dir: Path) -> list[str]:
    argv = [
        "run",
        "meltquench",
        "--mlip",
        p.mlip,
        "--x",
        repr(p.x),
        "--quench-rate",
        repr(p.quench_rate_k_ps),
        "--seed",
        str(p.seed),
        "--formula-units",
        str(p.formula_units),
        "--t-melt",
        repr(p.t_melt_k),
        "--melt-ps",
        repr(p.melt_ps),
        "--t-final",
        repr(p.t_final_k),
        "--anneal-ps",
        repr(p.anneal_ps),
        "--timestep-fs",
        repr(p.timestep_fs),
        "--thermo-every",
        str(p.thermo_every),
        "--frame-every",
        str(p.frame_every),
        "--checkpoint-dir",
        str(checkpoint_dir.absolute()),
        "--elastic" if p.elastic else "--no-elastic",
        "--in-process",
    ]
    if p.density_g_cm3 is not None:
        argv += ["--density", repr(p.density_g_cm3)]
    return argv


@cli.command("crystal")
@click.option("--mlip", required=True, help="Registered MLIP name.")
@click.argument("structures", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--fmax", type=float, default=0.01, show_default=True, help="eV/A")
@click.option("--steps", type=int, default=500, show_default=True)
@click.option("--in-process", is_flag=True, hidden=True)
@pass_app
def crystal(
    app: AppContext,
    mlip: str,
    structures: tuple[Path, ...],
    fmax: float,
    steps: int,
    in_process: bool,
) -> None:
    """Relax crystal STRUCTURES (cell + positions) and store volume vs experiment.

    The crystal name is the file name's stem (e.g. c-Na3PS4.cif); known names are compared with
    the packaged experimental lattices (see `glassbench sql "SELECT * FROM crystal_volume"`).
    """
    from glassbench.runners.crystal_run import run_crystals

    engine = app.engine
    require_schema(engine)
    record = _mlip_record(app, mlip)
    argv = [
        "run",
        "crystal",
        "--mlip",
        mlip,
        "--fmax",
        repr(fmax),
        "--steps",
        str(steps),
        "--in-process",
        *[str(p.absolute()) for p in structures],
    ]
    if not in_process and delegate_if_needed(app, record, argv):
        return
    for o in run_crystals(engine, mlip, list(structures), fmax=fmax, steps=steps):
        exp = f"{o.exp_volume_per_fu_a3:.2f}" if o.exp_volume_per_fu_a3 else "n/a"
        dev = f"{o.deviation_pct:+.2f} %" if o.deviation_pct is not None else "no reference"
        conv = "" if o.converged else " (NOT converged)"
        click.echo(
            f"{o.crystal}: {o.volume_per_fu_a3:.2f} A^3/f.u. vs experiment {exp} ({dev}){conv}"
        )
