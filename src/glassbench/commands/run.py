"""``glassbench run``: simulations with live ingest (melt-quench, crystal volumes)."""

from __future__ import annotations

from pathlib import Path

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import RUN_KEY_OPTIONS
from glassbench.errors import BadInput


@click.group("run")
def cli() -> None:
    """Run simulations with live ingest."""


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
        flush_every=max(thermo_every, (200 // thermo_every) * thermo_every),
        elastic=elastic,
    )
    outcome = run_meltquench(
        app.engine,
        params,
        checkpoint_dir=checkpoint_dir,
        threads=app.settings.threads,
        delegate=not in_process,
        notify=_to_stderr,
    )
    click.echo(outcome.describe())


def _to_stderr(message: str) -> None:
    click.echo(message, err=True)


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

    outcomes = run_crystals(
        app.engine,
        mlip,
        list(structures),
        fmax=fmax,
        steps=steps,
        delegate=not in_process,
        notify=_to_stderr,
    )
    for o in outcomes:
        click.echo(o.describe())
