"""``glassbench protocol``: inspect melt-quench protocols (presets and TOML files)."""

from __future__ import annotations

import click


@click.group("protocol")
def cli() -> None:
    """Inspect melt-quench protocols (docs/protocol.md)."""


@cli.command("show")
@click.argument("ref", metavar="NAME|FILE")
@click.option(
    "--toml", "as_toml", is_flag=True, help="Print it as a protocol file (to edit and reuse)."
)
def show(ref: str, as_toml: bool) -> None:
    """Print the stages of preset NAME or of protocol FILE, and its record's hash."""
    from glassbench.runners.protocol import resolve
    from glassbench.service.repos import content_hash

    proto = resolve(ref)
    if as_toml:
        click.echo(proto.to_toml(), nl=False)
        return
    click.echo(proto.describe())
    record = {"kind": "meltquench", **proto.record()}
    click.echo(f"  record hash   {content_hash(record)[:16]}")


@cli.command("list")
def list_presets() -> None:
    """The named presets."""
    from glassbench.runners.protocol import PRESETS

    for name, make in PRESETS.items():
        click.echo(f"{name:<10} {make().notes}")
