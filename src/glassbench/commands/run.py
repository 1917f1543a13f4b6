"""``glassbench run``: simulations with live ingest (melt-quench, crystal volumes)."""

from __future__ import annotations

from pathlib import Path

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import RUN_KEY_OPTIONS
from glassbench.schema.models import DISPERSION


@click.group("run")
def cli() -> None:
    """Run simulations with live ingest."""


_FROM_PROTOCOL = "default: as the protocol says"


@cli.command("meltquench")
@RUN_KEY_OPTIONS
@click.option(
    "--protocol",
    default="default",
    show_default=True,
    help="Preset (default, study) or a protocol .toml file; `glassbench protocol show` prints it.",
)
@click.option("--formula-units", type=int, default=None, help=f"Cell size; {_FROM_PROTOCOL} (8).")
@click.option("--t-melt", type=float, default=None, help=f"K; {_FROM_PROTOCOL} (1800).")
@click.option("--melt-ps", type=float, default=None, help=f"Melt stage; {_FROM_PROTOCOL}.")
@click.option("--t-final", type=float, default=None, help=f"K; {_FROM_PROTOCOL} (300).")
@click.option("--anneal-ps", type=float, default=None, help=f"Anneal stage; {_FROM_PROTOCOL}.")
@click.option(
    "--production-ps", type=float, default=None, help=f"Production stage; {_FROM_PROTOCOL}."
)
@click.option("--pressure", type=float, default=None, help=f"GPa, NPT stages; {_FROM_PROTOCOL}.")
@click.option("--timestep-fs", type=float, default=None, help=f"{_FROM_PROTOCOL} (1).")
@click.option(
    "--density", type=float, default=None, help="Initial density in g/cm3 (default: estimate)."
)
@click.option("--thermo-every", type=int, default=None, help=f"steps; {_FROM_PROTOCOL} (10).")
@click.option("--frame-every", type=int, default=None, help=f"steps; {_FROM_PROTOCOL} (100).")
@click.option(
    "--block-frames", type=int, default=None, help=f"Window block size; {_FROM_PROTOCOL} (5)."
)
@click.option(
    "--relax-steps",
    type=int,
    default=None,
    help=f"FIRE steps on the random start; {_FROM_PROTOCOL} (100).",
)
@click.option(
    "--friction", type=float, default=None, help=f"1/fs, Langevin stages; {_FROM_PROTOCOL} (0.01)."
)
@click.option(
    "--taut-fs", type=float, default=None, help=f"Thermostat time constant; {_FROM_PROTOCOL} (100)."
)
@click.option(
    "--taup-fs", type=float, default=None, help=f"Barostat time constant; {_FROM_PROTOCOL} (1000)."
)
@click.option(
    "--compressibility",
    type=float,
    default=None,
    help=f"1/GPa, Berendsen barostats; {_FROM_PROTOCOL} (0.05).",
)
@click.option(
    "--dispersion",
    type=click.Choice(DISPERSION),
    default=None,
    help="Override the MLIP's registered dispersion correction for this protocol.",
)
@click.option(
    "--flush-every",
    type=int,
    default=None,
    help="Steps between database writes and checkpoints (a multiple of --thermo-every; "
    "default: about 200). Not part of the protocol.",
)
@click.option("--elastic/--no-elastic", default=False, show_default=True)
@click.option(
    "--elastic-relax-cell/--no-elastic-relax-cell",
    default=True,
    show_default=True,
    help="Relax the cell at the last stage's pressure before straining.",
)
@click.option(
    "--elastic-temperature",
    type=float,
    default=None,
    help="K: finite-temperature moduli (stress averaged over NVT MD per strain); default static.",
)
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
    protocol: str,
    formula_units: int | None,
    t_melt: float | None,
    melt_ps: float | None,
    t_final: float | None,
    anneal_ps: float | None,
    production_ps: float | None,
    pressure: float | None,
    timestep_fs: float | None,
    density: float | None,
    thermo_every: int | None,
    frame_every: int | None,
    block_frames: int | None,
    relax_steps: int | None,
    friction: float | None,
    taut_fs: float | None,
    taup_fs: float | None,
    compressibility: float | None,
    dispersion: str | None,
    flush_every: int | None,
    elastic: bool,
    elastic_relax_cell: bool,
    elastic_temperature: float | None,
    checkpoint_dir: Path,
    in_process: bool,
) -> None:
    """Melt-quench one glass; resumes from its checkpoint if it was interrupted.

    The protocol (stages, ensembles, thermostats) comes from --protocol; the other options
    override the matching stage (`--protocol study --melt-ps 2`: the study protocol with a
    2 ps melt, stored as the protocol "study (melt_ps=2)"). A campaign spec's [protocol] takes
    the same options as keys with their unit (--t-melt: t_melt_k). See docs/protocol.md.

    Progress: a bar on a terminal; otherwise one line per stage on stderr.
    """
    from glassbench.runners.meltquench import MeltQuenchParams, run_meltquench

    params = MeltQuenchParams(
        mlip=mlip,
        x=x,
        quench_rate_k_ps=quench_rate,
        seed=seed,
        protocol=protocol,
        formula_units=formula_units,
        t_melt_k=t_melt,
        melt_ps=melt_ps,
        t_final_k=t_final,
        anneal_ps=anneal_ps,
        production_ps=production_ps,
        pressure_gpa=pressure,
        timestep_fs=timestep_fs,
        density_g_cm3=density,
        thermo_every=thermo_every,
        frame_every=frame_every,
        block_frames=block_frames,
        relax_steps=relax_steps,
        friction_per_fs=friction,
        taut_fs=taut_fs,
        taup_fs=taup_fs,
        compressibility_per_gpa=compressibility,
        dispersion=dispersion,
        flush_every=flush_every,
        elastic=elastic,
        elastic_relax_cell=elastic_relax_cell,
        elastic_temperature_k=elastic_temperature,
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
