"""``glassbench ingest``: bring results from files into the database."""

from __future__ import annotations

import importlib
import importlib.util

import click

# sub-command -> module defining a click command named `cli`
SUBCOMMANDS = {
    "experiment": "glassbench.commands.ingest_experiment",
    "traj": "glassbench.commands.ingest_traj",
    "lammps": "glassbench.commands.ingest_lammps",
}


class _Lazy(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(
            name for name, mod in SUBCOMMANDS.items() if importlib.util.find_spec(mod) is not None
        )

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        mod = SUBCOMMANDS.get(cmd_name)
        if mod is None or importlib.util.find_spec(mod) is None:
            return None
        cmd = importlib.import_module(mod).cli
        assert isinstance(cmd, click.Command)
        return cmd


@click.group("ingest", cls=_Lazy)
def cli() -> None:
    """Bring results from files into the database."""
