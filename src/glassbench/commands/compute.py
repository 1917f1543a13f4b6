"""``glassbench compute``: compute on stored runs with an MLIP (elastic moduli, energies).

Each sub-command lives in its own module; this group only collects them.
"""

from __future__ import annotations

import click

from glassbench.commands.compute_elastic import elastic
from glassbench.commands.compute_energy import energy


@click.group()
def cli() -> None:
    """Compute on stored runs with an MLIP: ``--mlip`` names the MLIP that computes, the
    runs are chosen by the selector (docs/stored-data.md; its MLIP option is ``--run-mlip``
    here)."""


cli.add_command(elastic)
cli.add_command(energy)
