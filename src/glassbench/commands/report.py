"""``glassbench report generate|schedule``.

Only click is imported at module level: pandas and matplotlib load when a report is built,
and no ML framework is ever imported on this path.
"""

from __future__ import annotations

from pathlib import Path

import click

from glassbench.cli import AppContext, pass_app
from glassbench.errors import BadInput, Failure

_OUT = click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder (default: GLASSBENCH_REPORT_DIR or ./report). File names inside are fixed.",
)
_FORMAT = click.option(
    "--format",
    "formats",
    default="html,md,csv",
    show_default=True,
    metavar="LIST",
    help="Comma-separated subset of html,md,csv.",
)
_TRACE = click.option(
    "--trace-run",
    "trace_runs",
    type=click.IntRange(min=1),
    multiple=True,
    metavar="RUN_ID",
    help="Run id to trace speciation vs temperature for (repeatable; default: one per MLIP).",
)

_LAB_RATE = click.option(
    "--lab-rate",
    "lab_rate",
    type=float,
    default=None,
    metavar="K_PER_PS",
    # The default is extrapolation.DEFAULT_LAB_RATE_K_PS (not imported here: it loads scipy);
    # a test checks that this text names it.
    help="Laboratory cooling rate in K/ps the quench-rate extrapolation reaches for "
    "(default 1e-10 K/ps, i.e. 100 K/s, an assumed order of magnitude; docs/reports.md).",
)


def _lab_rate(value: float | None) -> float | None:
    """Checked before the database is touched: a bad rate is exit 2 with nothing written."""
    if value is None:
        return None
    from glassbench.reports.generate import check_lab_rate

    try:
        return check_lab_rate(value)
    except BadInput as exc:
        raise BadInput(exc.detail, source="--lab-rate") from None


def _formats(text: str) -> tuple[str, ...]:
    from glassbench.reports.generate import parse_formats

    try:
        return parse_formats(text)
    except ValueError as exc:
        raise BadInput(str(exc), source="--format") from None


def _out(app: AppContext, out_dir: Path | None, formats: tuple[str, ...]) -> Path:
    """The output folder, created and proven writable before the database is touched."""
    from glassbench.reports.generate import prepare_out_dir

    return prepare_out_dir(out_dir if out_dir is not None else app.settings.report_dir, formats)


@click.group("report")
def cli() -> None:
    """Generate or schedule the MLIP benchmark report (HTML, Markdown, CSV)."""


@cli.command("generate")
@_OUT
@_FORMAT
@click.option("--force", is_flag=True, help="Regenerate even if the data did not change.")
@_TRACE
@_LAB_RATE
@pass_app
def generate(
    app: AppContext,
    out_dir: Path | None,
    formats: str,
    force: bool,
    trace_runs: tuple[int, ...],
    lab_rate: float | None,
) -> None:
    """Write the report of the database's current data to --out.

    A report of unchanged data is not rewritten (the report table records a fingerprint of the
    data each report used); --force regenerates it anyway.
    """
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from glassbench.commands._common import db_error, require_schema
    from glassbench.reports.generate import generate_report

    fmts = _formats(formats)
    lab = _lab_rate(lab_rate)
    # The database first (a missing SQLite file is exit 2 before a folder is made), then the
    # folder (before any query), then the schema.
    engine = app.engine
    out = _out(app, out_dir, fmts)
    require_schema(engine)
    try:
        result = generate_report(
            engine,
            out_dir=out,
            formats=fmts,
            force=force,
            trace_runs=trace_runs or None,
            lab_rate_k_ps=lab,
        )
    except (OperationalError, ProgrammingError) as exc:
        raise db_error(exc, engine) from None
    except OSError as exc:
        raise Failure(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    if result.status == "unchanged":
        when = f" of {result.previous_at:%Y-%m-%d %H:%M:%S}" if result.previous_at else ""
        click.echo(
            f"data unchanged since the report{when}: reusing {result.out_dir} "
            f"(fingerprint {result.fingerprint[:12]}); use --force to regenerate"
        )
        return
    click.echo(
        f"report written to {result.out_dir} in {result.seconds:.1f} s "
        f"({', '.join(result.formats)}; {len(result.files)} files; "
        f"fingerprint {result.fingerprint[:12]})"
    )


@cli.command("schedule")
@click.option(
    "--cron",
    default=None,
    metavar="EXPR",
    help='Five-field crontab expression, e.g. "0 6 * * *" (daily at 06:00 local time).',
)
@_OUT
@_FORMAT
@_TRACE
@_LAB_RATE
@click.option("--interval-seconds", type=click.FloatRange(min=0.1), default=None, hidden=True)
@click.option("--retry-initial", type=click.FloatRange(min=0.01), default=5.0, hidden=True)
@click.option("--retry-max", type=click.FloatRange(min=0.01), default=300.0, hidden=True)
@pass_app
def schedule(
    app: AppContext,
    cron: str | None,
    out_dir: Path | None,
    formats: str,
    trace_runs: tuple[int, ...],
    lab_rate: float | None,
    interval_seconds: float | None,
    retry_initial: float,
    retry_max: float,
) -> None:
    """Regenerate the report on a schedule until SIGTERM (logs each generation).

    An unreachable database is retried with exponential backoff. For a plain cron job or a
    systemd timer, call `glassbench report generate` instead (see docs/reports.md).
    """
    from glassbench.reports.generate import generate_report
    from glassbench.reports.schedule import Backoff, ReportScheduler
    from glassbench.service.db import describe

    if (cron is None) == (interval_seconds is None):
        raise BadInput("give one schedule: --cron EXPR", source="report schedule")
    fmts = _formats(formats)
    lab = _lab_rate(lab_rate)
    if cron is not None:
        from apscheduler.triggers.cron import CronTrigger

        try:
            trigger = CronTrigger.from_crontab(cron)
        except ValueError as exc:
            raise BadInput(f"invalid crontab expression {cron!r}: {exc}", source="--cron") from None
        description = f"cron {cron!r}"
    else:
        from apscheduler.triggers.interval import IntervalTrigger

        assert interval_seconds is not None
        trigger = IntervalTrigger(seconds=interval_seconds)
        description = f"every {interval_seconds:g} s"
    engine = app.engine
    out = _out(app, out_dir, fmts)
    runner = ReportScheduler(
        engine,
        lambda: generate_report(
            engine,
            out_dir=out,
            formats=fmts,
            trace_runs=trace_runs or None,
            lab_rate_k_ps=lab,
        ),
        database=describe(engine),
        backoff=Backoff(initial_s=retry_initial, max_s=max(retry_max, retry_initial)),
    )
    runner.run(trigger, description=f"{description}, output {out.resolve()}")
