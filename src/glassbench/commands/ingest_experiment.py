"""``glassbench ingest experiment CSV``."""

from __future__ import annotations

from pathlib import Path

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import require_schema


@click.command("experiment")
@click.argument("csv_path", metavar="CSV", type=click.Path(path_type=Path))
@pass_app
def cli(app: AppContext, csv_path: Path) -> None:
    """Ingest experimental reference values (columns x,property,value,uncertainty,source)."""
    from glassbench.ingest.experiment import read_experiment_csv
    from glassbench.service import unit_of_work
    from glassbench.service.repos import composition_id, experiment_subject, set_experiment

    rows = read_experiment_csv(csv_path)
    engine = app.engine
    require_schema(engine)
    with unit_of_work(engine) as session:
        for r in rows:
            cid = composition_id(session, r.x, r.family) if r.x is not None else None
            set_experiment(
                session,
                {
                    "subject": experiment_subject(x=r.x, crystal=r.crystal, family=r.family),
                    "composition_id": cid,
                    "crystal": r.crystal,
                    "property": r.property,
                    "value": r.value,
                    "uncertainty": r.uncertainty,
                    "source": r.source,
                },
            )
    subjects = {(r.x, r.crystal) for r in rows}
    click.echo(f"{csv_path}: {len(rows)} experimental values for {len(subjects)} subjects ingested")
