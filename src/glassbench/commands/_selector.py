"""The run selector's options, shared by ``compute``, ``reanalyze`` and ``export``.

The selector itself is :class:`glassbench.service.selection.RunSelector`; docs/stored-data.md
documents the options once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from glassbench.commands._common import OptionsDecorator, _compose, format_rows
from glassbench.schema.models import RUN_SOURCE, RUN_STATUS
from glassbench.service.selection import RunSelector, SelectedRun


def selector_options(mlip_flag: str = "--mlip") -> OptionsDecorator:
    """The selector's options. ``mlip_flag`` is ``--run-mlip`` in ``compute``, where
    ``--mlip`` names the MLIP that computes."""
    return _compose(
        click.option(
            mlip_flag,
            "sel_mlip",
            multiple=True,
            metavar="NAME",
            help="Runs made by this MLIP (repeatable).",
        ),
        click.option("--x", "sel_x", multiple=True, type=float, help="Composition x (repeatable)."),
        click.option(
            "--quench-rate",
            "sel_quench_rate",
            multiple=True,
            type=float,
            metavar="K/PS",
            help="Quench rate in K/ps (repeatable).",
        ),
        click.option("--seed", "sel_seed", multiple=True, type=int, help="Seed (repeatable)."),
        click.option(
            "--protocol",
            "sel_protocol",
            multiple=True,
            metavar="NAME",
            help="Protocol name or content-hash prefix (repeatable).",
        ),
        click.option(
            "--source",
            "sel_source",
            multiple=True,
            type=click.Choice(RUN_SOURCE),
            help="Where the run came from (repeatable).",
        ),
        click.option(
            "--status",
            "sel_status",
            multiple=True,
            type=click.Choice(RUN_STATUS),
            help="Run status (repeatable)  [default: done]",
        ),
        click.option(
            "--run", "sel_run", multiple=True, type=int, metavar="ID", help="Run id (repeatable)."
        ),
        click.option("--dry-run", is_flag=True, help="List the runs it would work on, and stop."),
    )


def selector_from(kwargs: dict[str, Any]) -> RunSelector:
    """The selector the options gave (removes them from ``kwargs``)."""
    status = tuple(kwargs.pop("sel_status")) or ("done",)
    return RunSelector(
        mlip=tuple(kwargs.pop("sel_mlip")),
        x=tuple(kwargs.pop("sel_x")),
        quench_rate=tuple(kwargs.pop("sel_quench_rate")),
        seed=tuple(kwargs.pop("sel_seed")),
        protocol=tuple(kwargs.pop("sel_protocol")),
        source=tuple(kwargs.pop("sel_source")),
        status=status,
        run_ids=tuple(kwargs.pop("sel_run")),
    )


def format_runs(runs: Sequence[SelectedRun]) -> str:
    """The table ``--dry-run`` prints: one line per run."""
    cols = [
        "run",
        "mlip",
        "x",
        "quench_rate_k_ps",
        "seed",
        "protocol",
        "source",
        "status",
        "frames",
    ]
    rows = [
        [s.run_id, s.mlip, s.x, s.quench_rate_k_ps, s.seed, s.protocol, s.source, s.status,
         s.n_frames]
        for s in runs
    ]  # fmt: skip
    return format_rows(cols, rows, "table")


def listing(runs: Sequence[SelectedRun], selector: RunSelector) -> str:
    """What ``--dry-run`` prints: the runs, or that none match."""
    return format_runs(runs) if runs else no_runs_message(selector)


def no_runs_message(selector: RunSelector) -> str:
    return f"no runs match ({selector.describe()})"
