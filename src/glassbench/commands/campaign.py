"""``glassbench campaign``: run a spec's matrix of melt-quench runs, or show its status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import FORMAT_OPTION, format_rows, require_schema
from glassbench.errors import BadInput, Failure

if TYPE_CHECKING:
    from glassbench.campaigns import CampaignSpec

SPEC_ARG = click.argument("spec", type=click.Path(path_type=Path, dir_okay=False))


@click.group("campaign")
def cli() -> None:
    """Run or inspect a campaign matrix (a TOML spec, see examples/campaign.toml)."""


def _load(spec_path: Path) -> CampaignSpec:
    from glassbench.campaigns import load_spec

    spec = load_spec(spec_path)
    for key in spec.ignored_keys:
        click.echo(f"warning: {spec_path}: {key} is not a known key; ignored", err=True)
    return spec


@cli.command("run")
@SPEC_ARG
@click.option(
    "--executor", type=click.Choice(["local", "dask"]), default=None,
    help="local: a process pool (default); dask: a Dask cluster (--scheduler, [cluster], or a "
    "LocalCluster).",
)  # fmt: skip
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="A running Dask scheduler, e.g. tcp://host:8786 (implies dask).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (local, LocalCluster) or batch jobs ([cluster]); "
    "default: cores / threads_per_run.",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=None,
    help="Retries of a failed run in this invocation (default: [resources] retries, else 1).",
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Checkpoints (shared by all workers; default: .glassbench/checkpoints beside the spec).",
)
@click.option(
    "--env-resources/--no-env-resources",
    default=None,
    help="dask: send runs of MLIPs with their own interpreter to workers advertising "
    "its env-<hash> resource instead of a subprocess (see `campaign envs`).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: if a TTY).")
@click.option(
    "--yes",
    is_flag=True,
    help="Start a matrix larger than the campaign_max_runs setting (default 10,000 runs; "
    "GLASSBENCH_CAMPAIGN_MAX_RUNS).",
)
@pass_app
def run(
    app: AppContext,
    spec: Path,
    executor: str | None,
    scheduler: str | None,
    workers: int | None,
    retries: int | None,
    checkpoint_dir: Path | None,
    env_resources: bool | None,
    progress: bool | None,
    yes: bool,
) -> None:
    """Run every run of SPEC not done yet; exit 1 with a summary if some failed.

    Safe to repeat and to run from several machines against one PostgreSQL: each run is
    claimed atomically in the database, so none is executed twice. The matrix size is
    printed first; a matrix above the campaign_max_runs setting needs --yes.
    """
    import sys

    from glassbench.campaigns import run_campaign

    if executor == "local" and scheduler:
        raise BadInput("--scheduler needs --executor dask", field="scheduler")
    executor = executor or ("dask" if scheduler else "local")
    parsed = _load(spec)
    engine = app.engine
    require_schema(engine)
    report = run_campaign(
        parsed,
        engine,
        app.settings.database_url,
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        retries=retries,
        env_resources=env_resources,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        max_runs=sys.maxsize if yes else app.settings.campaign_max_runs,
        announce=click.echo,
    )
    click.echo(report.summary())
    if not report.ok:
        raise Failure(report.failure_report())


@cli.command("status")
@SPEC_ARG
@FORMAT_OPTION
@click.option(
    "--yes", is_flag=True, help="Show a matrix larger than the campaign_max_runs setting."
)
@pass_app
def status(app: AppContext, spec: Path, fmt: str, yes: bool) -> None:
    """Runs of SPEC per MLIP and composition: done / running / pending / failed / missing."""
    import sys

    from glassbench.campaigns import (
        campaign_runs,
        check_mlips,
        failure_table,
        status_counts,
        status_table,
    )

    parsed = _load(spec)
    # The status expands the matrix too: the same limit as `campaign run`.
    parsed.check_size(sys.maxsize if yes else app.settings.campaign_max_runs)
    engine = app.engine
    require_schema(engine)
    check_mlips(parsed, engine)
    records = campaign_runs(parsed, engine)
    cols, rows = status_table(records)
    fcols, frows = failure_table(records)
    if fmt == "json":
        doc = {
            "campaign": parsed.name,
            "total": len(records),
            "counts": status_counts(records),
            "rows": json.loads(format_rows(cols, rows, "json")),
            "failures": json.loads(format_rows(fcols, frows, "json")),
        }
        click.echo(json.dumps(doc, indent=1))
    elif fmt == "csv":
        click.echo(format_rows(cols, rows, "csv"))
    else:
        click.echo(f"campaign {parsed.name!r}: {len(records)} runs")
        click.echo(format_rows(cols, rows, "table"))
        if frows:
            click.echo("\nfailed runs:")
            click.echo(format_rows(fcols, frows, "table"))


@cli.command("envs")
@SPEC_ARG
@pass_app
def envs(app: AppContext, spec: Path) -> None:
    """Dask worker resources of the spec's MLIPs that run in their own interpreter."""
    from glassbench.campaigns import check_mlips, env_resource_name

    parsed = _load(spec)
    engine = app.engine
    require_schema(engine)
    mlips = check_mlips(parsed, engine)
    own = [(n, m.python) for n, m in mlips.items() if m.python]
    if not own:
        click.echo("every MLIP of this spec runs in the default environment")
        return
    for name, python in own:
        res = env_resource_name(python)
        click.echo(f"# MLIP {name}: {python}")
        click.echo(
            f"{python} -m distributed.cli.dask_worker SCHEDULER_ADDRESS --nthreads 1 "
            f'--resources "{res}=1"'
        )


@cli.command("job-script")
@SPEC_ARG
@click.option(
    "--scheduler", metavar="ADDRESS", required=True, help="Scheduler the batch job's workers join."
)
@click.option(
    "--mlip",
    "mlip_name",
    default=None,
    help="Workers for this MLIP's own interpreter (with its env resource).",
)
@pass_app
def job_script(app: AppContext, spec: Path, scheduler: str, mlip_name: str | None) -> None:
    """Print the Slurm/PBS job script of one batch job of workers (from [cluster])."""
    from glassbench.campaigns import check_mlips, jobqueue_job

    parsed = _load(spec)
    python = None
    if mlip_name is not None:
        require_schema(app.engine)
        mlips = check_mlips(parsed, app.engine)
        if mlip_name not in mlips:
            raise BadInput(f"MLIP {mlip_name!r} is not in the spec's matrix", field="mlip")
        python = mlips[mlip_name].python
        if not python:
            raise BadInput(f"MLIP {mlip_name!r} has no interpreter of its own", field="mlip")
    click.echo(jobqueue_job(parsed, scheduler=scheduler, python=python).job_script())
