"""``glassbench ingest lammps --log LOG [--dump DUMP] --mlip NAME --x X ...``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from glassbench.cli import AppContext, pass_app
from glassbench.commands._common import (
    INGEST_ANALYSIS_OPTIONS,
    RUN_KEY_OPTIONS,
    require_schema,
    stage_option,
)
from glassbench.schema.models import FRAME_STAGES

if TYPE_CHECKING:
    from sqlmodel import Session

    from glassbench.ingest.pipeline import WriteSummary


@click.command("lammps")
@click.option(
    "--log", "log_path", required=True, type=click.Path(path_type=Path), help="LAMMPS log file."
)
@click.option(
    "--dump",
    "dump_path",
    default=None,
    type=click.Path(path_type=Path),
    help="LAMMPS text dump whose frames are stored and analysed.",
)
@RUN_KEY_OPTIONS
@click.option(
    "--type-map",
    default="Na,P,S,O",
    show_default=True,
    help="Elements of LAMMPS atom types 1, 2, ... (dumps without an element column).",
)
@stage_option(FRAME_STAGES)
@click.option(
    "--units",
    type=click.Choice(["metal", "real"]),
    default=None,
    help="Override the log's `units` command (for logs written with `echo none`).",
)
@INGEST_ANALYSIS_OPTIONS
@pass_app
def cli(
    app: AppContext,
    log_path: Path,
    dump_path: Path | None,
    mlip: str,
    x: float,
    quench_rate: float,
    seed: int,
    type_map: str,
    stage: str | None,
    units: str | None,
    cutoffs: tuple[str, ...],
    replace: bool,
) -> None:
    """Ingest a LAMMPS run: thermo from every block of the log, frames from the dump.

    Re-ingesting the same files for the same key does nothing; other files for an existing
    key are refused unless --replace. Everything is one transaction.
    """
    from glassbench import __version__
    from glassbench.analysis import parse_cutoffs
    from glassbench.errors import BadInput
    from glassbench.ingest.lammps import (
        ATOMS_PER_FORMULA_UNIT,
        LammpsDump,
        LammpsLog,
        check_text_file,
        dump_frames,
        parse_type_map,
    )
    from glassbench.ingest.pipeline import (
        RunKey,
        WriteSummary,
        check_composition,
        content_hash_of,
        describe_result,
        element_counts,
        ingest_run,
        progress_bar,
        store_frames,
        store_thermo,
        validate_key,
    )

    validate_key(x=x, quench_rate_k_ps=quench_rate, seed=seed)
    try:
        symbols = parse_type_map(type_map)
    except ValueError as exc:
        raise BadInput(str(exc), source="--type-map") from None
    try:
        cutoff_table = parse_cutoffs(cutoffs)
    except ValueError as exc:
        raise BadInput(str(exc), source="--cutoff") from None
    check_text_file(log_path, what="log")
    files = [log_path]
    counts = None
    if dump_path is not None:
        check_text_file(dump_path, what="dump")
        files.append(dump_path)
        # The first frame's atoms are checked against --x now, before a long parse, and give
        # log rows without a Density column their density from the volume.
        first = next(LammpsDump(dump_path, type_map=symbols).frames())
        try:
            check_composition(first.numbers, x)
        except ValueError as exc:
            raise BadInput(str(exc), source=str(dump_path), where=first.where) from None
        counts = element_counts(first.numbers)

    options = {"type_map": symbols, "stage": stage, "units": units, "cutoffs": cutoff_table}
    digest = content_hash_of(files, options)
    engine = app.engine
    require_schema(engine)
    key = RunKey(mlip, x, quench_rate, seed, {"source": "lammps"})

    with progress_bar(sum(p.stat().st_size for p in files), unit="B", desc="ingest") as update:
        log = LammpsLog(log_path, units=units, counts=counts, x=x, progress=update)

        def body(session: Session, run_id: int) -> WriteSummary:
            written = WriteSummary()
            written.n_thermo = store_thermo(session, run_id, log.rows()).n_rows
            written.n_atoms = log.info.natoms
            written.software = {"lammps": log.info.lammps_version, "units": log.info.units}
            if dump_path is None:
                n = log.info.natoms
                if n is not None and n % ATOMS_PER_FORMULA_UNIT:
                    raise BadInput(
                        f"{n} atoms is not a whole number of Na4P2S7-xOx formula units",
                        source=str(log_path),
                    )
                return written
            dump = LammpsDump(dump_path, type_map=symbols, progress=update)
            summary = store_frames(
                session,
                run_id,
                dump_frames(dump, log.info),
                x=x,
                default_stage=stage or "other",
                cutoffs=cutoff_table,
            )
            written.n_frames = summary.n_frames
            written.n_atoms = summary.n_atoms
            return written

        result = ingest_run(
            engine,
            key,
            source="lammps",
            content_hash=digest,
            replace=replace,
            body=body,
            data_source=str(dump_path or log_path),
            software={"glassbench": __version__},
        )
    click.echo(describe_result(files, key, result))
