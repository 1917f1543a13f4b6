"""The ``glassbench`` command: a click group whose sub-commands load lazily.

Lazy loading keeps ``glassbench sql`` and ``glassbench report`` free of heavy imports: each
sub-command module is imported only when it is invoked (or listed in ``--help``).
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from glassbench import __version__
from glassbench.errors import GlassbenchError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from glassbench.settings import Settings

# name -> "module:attribute"; every entry is a click command or group.
COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("glassbench.commands.db", "Database schema: upgrade, downgrade, current, check."),
    "mlip": ("glassbench.commands.mlip", "Register and list MLIPs."),
    "sql": ("glassbench.commands.sql", "Run a read-only SQL query."),
    "ingest": ("glassbench.commands.ingest", "Bring results from files into the database."),
    "analyze": ("glassbench.commands.analyze", "Structural analysis of a structure file."),
    "run": ("glassbench.commands.run", "Run simulations with live ingest."),
    "protocol": ("glassbench.commands.protocol", "Show melt-quench protocols (presets, files)."),
    "campaign": ("glassbench.commands.campaign", "Run or inspect a campaign matrix."),
    "compute": ("glassbench.commands.compute", "Compute on stored runs: elastic moduli, energies."),
    "analysis": ("glassbench.commands.analysis", "Named cutoff sets for re-analysis."),
    "reanalyze": ("glassbench.commands.reanalyze", "Re-analyse stored frames under a cutoff set."),
    "export": ("glassbench.commands.export", "Write stored frames or runs to files."),
    "report": ("glassbench.commands.report", "Generate or schedule reports."),
    "demo": ("glassbench.commands.demo", "Run the whole system on embedded defaults."),
}


# Library errors name fields; where a field came from a command-line option the user typed the
# flag, so messages on the command line say the flag. Only parameters (no source file) map.
FLAG_OF_FIELD: dict[str, str] = {
    "mlip": "--mlip",
    "x": "--x",
    "quench_rate_k_ps": "--quench-rate",
    "seed": "--seed",
    "formula_units": "--formula-units",
    "x/formula_units": "--x/--formula-units",
    "executor": "--executor",
    "database_url": "--db",
    "type_map": "--type-map",
    "cutoffs": "--cutoff",
    "stage": "--stage",
    "scheduler": "--scheduler",
    "t_melt_k/t_final_k": "--t-melt/--t-final",
    "melt_ps/anneal_ps": "--melt-ps/--anneal-ps",
    "protocol": "--protocol",
    "t_melt_k": "--t-melt",
    "t_final_k": "--t-final",
    "melt_ps": "--melt-ps",
    "anneal_ps": "--anneal-ps",
    "production_ps": "--production-ps",
    "pressure_gpa": "--pressure",
    "thermo_every": "--thermo-every",
    "frame_every": "--frame-every",
    "block_frames": "--block-frames",
    "density_g_cm3": "--density",
    "dispersion": "--dispersion",
    "elastic_temperature_k": "--elastic-temperature",
    "timestep_fs": "--timestep-fs",
    "thermo_every/frame_every": "thermo/frame interval",  # as the command has always said
    "input_format": "--input-format",
    "out_dir": "--out",
    "name": "NAME",  # arguments by their metavar
    "model": "--model",
    "functional": "--functional",
    "parent": "--parent",
    "query": "QUERY",
    "where_unit": "--where-unit",
    "run_mlip": "--run-mlip",
    "strain": "--strain",
    "fmax": "--fmax",
    "max_steps": "--max-steps",
    "temperature_k": "--temperature",
    "quantity": "QUANTITY",
    "analysis": "--analysis",
    "every": "--every",
    "format": "--format",
    "key": "KEY",
    "frames": "--frames",
    "quench_rate": "--quench-rate",
    "source": "--source",
    "status": "--status",
    "revision": "REVISION",
    "units": "--units",
    "checkpoint_dir": "--checkpoint-dir",
    "relax_steps": "--relax-steps",
    "flush_every": "--flush-every",
    "friction_per_fs": "--friction",
    "taut_fs": "--taut-fs",
    "taup_fs": "--taup-fs",
    "compressibility_per_gpa": "--compressibility",
    "python": "--python",
    "training_data": "--training-data",
}


class CliError(click.ClickException):
    """A :class:`~glassbench.errors.GlassbenchError` as click shows it (``Error: ...``).

    click declares ``exit_code`` a class variable, so each exit status is a subclass of its
    own: build instances with :func:`cli_error`.
    """


@functools.cache
def _cli_error_class(status: int) -> type[CliError]:
    class _CliError(CliError):
        exit_code = status

    _CliError.__name__ = _CliError.__qualname__ = CliError.__name__
    return _CliError


def cli_error(message: str, exit_code: int) -> CliError:
    """A :class:`CliError` that makes click exit with ``exit_code``."""
    return _cli_error_class(exit_code)(message)


def to_click(exc: GlassbenchError) -> CliError:
    """The one mapping from library errors to exit statuses and flag names."""
    from glassbench.settings import mask_url

    label = None
    if exc.field and not exc.source and not exc.where:
        label = FLAG_OF_FIELD.get(exc.field)
    return cli_error(mask_url(exc.render(label)), exc.exit_code)


class MaskingFilter(logging.Filter):
    """Masks database passwords in every log record a handler writes (messages and args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from glassbench.settings import mask_url

        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        masked = mask_url(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class LazyGroup(click.Group):
    """A group that imports a sub-command's module only when that sub-command is needed."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GlassbenchError as exc:
            raise to_click(exc) from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, _ = COMMANDS[cmd_name]
        module = importlib.import_module(module_name)
        cmd = getattr(module, "cli", None)
        if not isinstance(cmd, click.Command):
            raise RuntimeError(f"{module_name}.cli is not a click command")
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help lists the short descriptions without importing every module.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


# Services that start while the database is down and retry until it is back (a report
# scheduler outlives outages): their engine is neither checked nor connected at start, and still
# never creates an SQLite file.
WAIT_FOR_DATABASE = frozenset({"report schedule"})


def _command_path() -> str:
    """The sub-command being run, without the program name: ``report schedule``."""
    ctx = click.get_current_context(silent=True)
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


@dataclass
class AppContext:
    """Built once by the root group and handed to every sub-command as ``ctx.obj``.

    ``db_url_label`` names where the database URL came from, for messages: ``database_url``
    (shown as ``--db``) when typed, ``GLASSBENCH_DATABASE_URL`` when read from the environment,
    None for the default.
    """

    db_url: str | None = None
    verbose: bool = False
    db_url_label: str | None = "database_url"
    _settings: Settings | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from glassbench.settings import get_settings

            self._settings = get_settings(database_url=self.db_url, url_label=self.db_url_label)
        return self._settings

    @property
    def engine(self) -> Engine:
        """The engine of the configured database; an SQLite file must exist already.

        Only the commands that create databases (``db upgrade``, ``demo``) ask for
        :meth:`engine_for` ``(create=True)``: any other command on a missing file exits 2
        instead of leaving an empty database behind. The engine has connected once (an
        unreachable server fails now, naming host and port), except for the services of
        ``WAIT_FOR_DATABASE``, which retry on their own.
        """
        return self.engine_for(create=False)

    def engine_for(self, *, create: bool) -> Engine:
        if self._engine is None:
            from glassbench.service.db import make_engine, verify_connection

            settings = self.settings
            waits = _command_path() in WAIT_FOR_DATABASE
            try:
                engine = make_engine(
                    settings.database_url, settings=settings, create=create, check_exists=not waits
                )
                if not waits:
                    verify_connection(engine)
            except GlassbenchError as exc:
                if exc.field != "database_url":
                    raise
                # the label of where the URL came from (--db, the variable, or none: default)
                exc.field = self.db_url_label
                raise
            self._engine = engine
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


pass_app = click.make_pass_decorator(AppContext)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    envvar="GLASSBENCH_DATABASE_URL",
    default=None,
    help="Database URL (default: sqlite:///glassbench.db; env GLASSBENCH_DATABASE_URL).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.version_option(__version__, prog_name="glassbench")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, verbose: bool) -> None:
    """glassbench: benchmark MLIPs on glass simulations, backed by one database."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
    logging.getLogger("glassbench").setLevel(logging.DEBUG if verbose else logging.INFO)
    from click.core import ParameterSource

    source = ctx.get_parameter_source("db_url")
    if db_url is None:
        label = None
    elif source is ParameterSource.ENVIRONMENT:
        label = "GLASSBENCH_DATABASE_URL"
    else:
        label = "database_url"
    app = AppContext(db_url=db_url, verbose=verbose, db_url_label=label)
    ctx.obj = app
    ctx.call_on_close(app.close)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: unexpected errors become one line and exit 1 (traceback with -v)."""
    from glassbench.runners.interpreter import prefer_passive_wait

    # Before any command can import torch: OpenMP reads its wait policy once, at start-up.
    prefer_passive_wait()
    try:
        return cli.main(args=argv, prog_name="glassbench", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into Abort (from the KeyboardInterrupt): the shell's convention
        # for an interrupted command is 130, as `glassbench sql` documents.
        if isinstance(exc.__cause__, KeyboardInterrupt):
            click.echo("Error: interrupted", err=True)
            sys.exit(130)
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except GlassbenchError as exc:
        to_click(exc).show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        from glassbench.settings import mask_url

        if "-v" in sys.argv or "--verbose" in sys.argv:
            import traceback

            # The traceback too may quote a connection string.
            click.echo(mask_url(traceback.format_exc()).rstrip(), err=True)
            sys.exit(1)
        msg = mask_url(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        click.echo(f"Error: {type(exc).__name__}: {msg} (run with -v for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
