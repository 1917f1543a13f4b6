"""The file ingests as functions: what ``glassbench ingest lammps|traj|experiment`` run.

Each takes an engine on a migrated database and returns a result object; a notebook calls
them directly (``glassbench.api``). Bad input is a :class:`~glassbench.errors.BadInput`
naming the file and line or the parameter's field (``x``, ``type_map``, ``cutoffs``), raised
before anything is written; a whole ingest is one transaction.

Re-ingesting the same files with the same options under the same key does nothing
(``action == "unchanged"``); other content under an existing key is refused with a
:class:`~glassbench.ingest.pipeline.RunConflict` unless ``replace=True``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from glassbench.analysis.cutoffs import cutoff_table
from glassbench.analysis.files import DEFAULT_TYPE_MAP
from glassbench.errors import BadInput
from glassbench.ingest.pipeline import (
    IngestResult,
    WriteSummary,
    content_hash_of,
    ingest_run,
    progress_bar,
    validate_key,
)
from glassbench.ingest.slots import RunKey
from glassbench.schema.models import FRAME_STAGES

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlmodel import Session

    from glassbench.ingest.frames import FrameData

Cutoffs = Mapping[str, float] | Iterable[str] | None


def ingest_lammps(
    engine: Engine,
    key: RunKey,
    log: str | Path,
    dump: str | Path | None = None,
    *,
    type_map: str | Sequence[str] = ",".join(DEFAULT_TYPE_MAP),
    stage: str | None = None,
    units: str | None = None,
    cutoffs: Cutoffs = None,
    replace: bool = False,
    progress: bool | None = None,
) -> IngestResult:
    """Ingest a LAMMPS run: thermo from every block of ``log``, frames from ``dump``.

    ``type_map`` names the elements of LAMMPS atom types 1, 2, ... (``"Na,P,S,O"`` or a list);
    ``stage`` is the stage of every frame but the last, which is ``final`` (default
    ``other``); ``units`` (``metal`` or ``real``) is the unit style of a log written with
    ``echo none``: a log that states other units is refused (field ``units``, naming the
    line) before anything is written; ``cutoffs`` overrides bond cutoffs of the analysis
    (``{"P-S": 2.5}`` or ``["P-S=2.5"]``). ``key.protocol`` defaults to
    ``{"source": "lammps"}``. ``progress``: a bar on stderr (None: when it is a terminal).
    """
    from glassbench import __version__
    from glassbench.ingest.frames import check_composition, element_counts, store_frames
    from glassbench.ingest.lammps_dump import LammpsDump, dump_frames, parse_type_map
    from glassbench.ingest.lammps_log import (
        ATOMS_PER_FORMULA_UNIT,
        UNIT_SYSTEMS,
        LammpsLog,
        check_text_file,
    )
    from glassbench.ingest.thermo import store_thermo

    validate_key(key)
    _check_stage(stage)
    if units is not None and units not in UNIT_SYSTEMS:
        raise BadInput(f"must be one of {', '.join(UNIT_SYSTEMS)}, got {units!r}", field="units")
    try:
        symbols = parse_type_map(type_map if isinstance(type_map, str) else ",".join(type_map))
    except ValueError as exc:
        raise BadInput(str(exc), field="type_map") from None
    table = cutoff_table(cutoffs)
    log_path = Path(log)
    dump_path = Path(dump) if dump is not None else None
    check_text_file(log_path, what="log")
    LammpsLog(log_path, units=units).check_units()
    files = [log_path]
    counts = None
    if dump_path is not None:
        check_text_file(dump_path, what="dump")
        files.append(dump_path)
        # The first frame's atoms are checked against x now, before a long parse, and give
        # log rows without a Density column their density from the volume.
        first = next(LammpsDump(dump_path, type_map=symbols).frames())
        try:
            check_composition(first.numbers, key.x)
        except ValueError as exc:
            raise BadInput(str(exc), source=str(dump_path), where=first.where) from None
        counts = element_counts(first.numbers)

    options = {"type_map": symbols, "stage": stage, "units": units, "cutoffs": table}
    digest = content_hash_of(files, options)
    _require_schema(engine)
    key = _with_source(key, "lammps")

    total = sum(p.stat().st_size for p in files)
    with progress_bar(total, unit="B", desc="ingest", enabled=progress) as update:
        reader = LammpsLog(log_path, units=units, counts=counts, x=key.x, progress=update)

        def body(session: Session, run_id: int) -> WriteSummary:
            written = WriteSummary()
            written.n_thermo = store_thermo(session, run_id, reader.rows()).n_rows
            written.n_atoms = reader.info.natoms
            written.software = {"lammps": reader.info.lammps_version, "units": reader.info.units}
            if dump_path is None:
                n = reader.info.natoms
                if n is not None and n % ATOMS_PER_FORMULA_UNIT:
                    raise BadInput(
                        f"{n} atoms is not a whole number of Na4P2S7-xOx formula units",
                        source=str(log_path),
                    )
                return written
            frames = LammpsDump(dump_path, type_map=symbols, progress=update)
            summary = store_frames(
                session,
                run_id,
                dump_frames(frames, reader.info),
                x=key.x,
                default_stage=stage or "other",
                cutoffs=table,
            )
            written.n_frames = summary.n_frames
            written.n_atoms = summary.n_atoms
            return written

        return ingest_run(
            engine,
            key,
            source="lammps",
            content_hash=digest,
            replace=replace,
            body=body,
            data_source=str(dump_path or log_path),
            files=files,
            software={"glassbench": __version__},
        )


def ingest_traj(
    engine: Engine,
    key: RunKey,
    path: str | Path,
    *,
    stage: str | None = None,
    cutoffs: Cutoffs = None,
    replace: bool = False,
    progress: bool | None = None,
) -> IngestResult:
    """Ingest an ASE trajectory (extxyz or ``.traj``): frames, analyses and per-frame thermo.

    Energy and stress come from the frames' calculator results, temperature and kinetic energy
    from the momenta, volume and density from the cell. ``stage``, ``cutoffs``, ``replace`` and
    ``progress`` as for :func:`ingest_lammps`; ``key.protocol`` defaults to
    ``{"source": "traj"}``.
    """
    import ase

    from glassbench import __version__
    from glassbench.ingest.frames import store_frames
    from glassbench.ingest.thermo import ThermoWriter
    from glassbench.ingest.traj import AseTrajectory, check_input

    validate_key(key)
    _check_stage(stage)
    table = cutoff_table(cutoffs)
    path = Path(path)
    fmt = check_input(path)
    digest = content_hash_of([path], {"stage": stage, "cutoffs": table})
    _require_schema(engine)
    key = _with_source(key, "traj")

    # A .traj file is read frame by frame through ASE: count frames, not bytes.
    total, unit = (None, "frame") if fmt == "traj" else (path.stat().st_size, "B")
    with progress_bar(total, unit=unit, desc="ingest", enabled=progress) as update:
        reader = AseTrajectory(path, fmt, progress=update)

        def body(session: Session, run_id: int) -> WriteSummary:
            thermo = ThermoWriter(session, run_id)

            # Thermo rows ride along with the frames: one pass over the file.
            def frames() -> Iterator[FrameData]:
                for tf in reader.frames():
                    thermo.add(tf.thermo)
                    yield tf.frame

            summary = store_frames(
                session,
                run_id,
                frames(),
                x=key.x,
                default_stage=stage or "other",
                cutoffs=table,
            )
            thermo.close()
            return WriteSummary(
                n_thermo=thermo.n_rows, n_frames=summary.n_frames, n_atoms=summary.n_atoms
            )

        return ingest_run(
            engine,
            key,
            source=fmt,
            content_hash=digest,
            replace=replace,
            body=body,
            data_source=str(path),
            files=[path],
            software={"glassbench": __version__, "ase": ase.__version__, "format": fmt},
        )


def _require_schema(engine: Engine) -> None:
    from glassbench.service.migrations import require_schema

    require_schema(engine)


def _with_source(key: RunKey, source: str) -> RunKey:
    return key if key.protocol else dataclasses.replace(key, protocol={"source": source})


def _check_stage(stage: str | None) -> None:
    if stage is not None and stage not in FRAME_STAGES:
        raise BadInput(f"unknown stage {stage!r} (known: {', '.join(FRAME_STAGES)})", field="stage")
