"""The Python API of glassbench: the functions the ``glassbench`` commands run, for notebooks.

Every command parses its options and calls one of these; a script calls the same function
with the same arguments, and gets a result object instead of a printed line. See
``docs/python-api.md`` for a worked example.

    >>> from glassbench import api
    >>> engine = api.connect("sqlite:///results.db")            # migrated to head
    >>> api.register_mlip(engine, "MP0", "chgnet")
    >>> key = api.RunKey("MP0", x=0.0, quench_rate_k_ps=1.0, seed=1)
    >>> api.ingest_lammps(engine, key, "log.lammps", "dump.lammpstrj")
    >>> api.read_sql(engine, "SELECT mlip, x, density_g_cm3 FROM run_summary")

Errors are :class:`BadInput` (the input is wrong; nothing was written) and :class:`Failure`;
both name the file and line, or the parameter (``x``, ``quench_rate_k_ps``), they are about.

Importing this module is cheap and never imports an ML framework (torch, TensorFlow): the
names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from glassbench.errors import BadInput, Failure, GlassbenchError

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

    from glassbench.analysis.files import FileAnalysis as FileAnalysis
    from glassbench.analysis.files import StructureFile as StructureFile
    from glassbench.campaigns import CampaignReport as CampaignReport
    from glassbench.campaigns import CampaignSpec as CampaignSpec
    from glassbench.campaigns import load_spec as load_spec
    from glassbench.campaigns import run_campaign as run_campaign
    from glassbench.ingest.experiment import ExperimentResult as ExperimentResult
    from glassbench.ingest.experiment import ingest_experiment as ingest_experiment
    from glassbench.ingest.pipeline import IngestResult as IngestResult
    from glassbench.ingest.slots import RunKey as RunKey
    from glassbench.ingest.usecases import ingest_lammps as ingest_lammps
    from glassbench.ingest.usecases import ingest_traj as ingest_traj
    from glassbench.reports.generate import ReportResult as ReportResult
    from glassbench.reports.generate import generate_report as generate_report
    from glassbench.runners.crystal_run import CrystalOutcome as CrystalOutcome
    from glassbench.runners.crystal_run import run_crystals as run_crystals
    from glassbench.runners.meltquench import MeltQuenchParams as MeltQuenchParams
    from glassbench.runners.meltquench import RunOutcome as RunOutcome
    from glassbench.runners.meltquench import run_meltquench as run_meltquench
    from glassbench.runners.protocol import Protocol as Protocol
    from glassbench.runners.protocol import Stage as Stage
    from glassbench.runners.protocol import resolve_protocol as resolve_protocol
    from glassbench.runners.registry import Registration as Registration
    from glassbench.runners.registry import list_mlips as list_mlips
    from glassbench.runners.registry import register_mlip as register_mlip
    from glassbench.service.selection import RunSelector as RunSelector
    from glassbench.service.selection import select_runs as select_runs
    from glassbench.stored.analyses import add_analysis as add_analysis
    from glassbench.stored.analyses import compare_analyses as compare_analyses
    from glassbench.stored.analyses import list_analyses as list_analyses
    from glassbench.stored.analyses import reanalyze as reanalyze
    from glassbench.stored.elastic import compute_elastic as compute_elastic
    from glassbench.stored.energy import compute_energy as compute_energy
    from glassbench.stored.export import export_frames as export_frames
    from glassbench.stored.export import export_run as export_run

# name -> module it lives in (imported on first use)
_LAZY: dict[str, str] = {
    "RunKey": "glassbench.ingest.slots",
    "IngestResult": "glassbench.ingest.pipeline",
    "ingest_lammps": "glassbench.ingest.usecases",
    "ingest_traj": "glassbench.ingest.usecases",
    "ingest_experiment": "glassbench.ingest.experiment",
    "ExperimentResult": "glassbench.ingest.experiment",
    "register_mlip": "glassbench.runners.registry",
    "list_mlips": "glassbench.runners.registry",
    "Registration": "glassbench.runners.registry",
    "MeltQuenchParams": "glassbench.runners.meltquench",
    "RunOutcome": "glassbench.runners.meltquench",
    "run_meltquench": "glassbench.runners.meltquench",
    "Protocol": "glassbench.runners.protocol",
    "Stage": "glassbench.runners.protocol",
    "resolve_protocol": "glassbench.runners.protocol",
    "run_crystals": "glassbench.runners.crystal_run",
    "CrystalOutcome": "glassbench.runners.crystal_run",
    "load_spec": "glassbench.campaigns",
    "run_campaign": "glassbench.campaigns",
    "CampaignSpec": "glassbench.campaigns",
    "CampaignReport": "glassbench.campaigns",
    "generate_report": "glassbench.reports.generate",
    "ReportResult": "glassbench.reports.generate",
    "StructureFile": "glassbench.analysis.files",
    "FileAnalysis": "glassbench.analysis.files",
    "RunSelector": "glassbench.service.selection",
    "select_runs": "glassbench.service.selection",
    "add_analysis": "glassbench.stored.analyses",
    "list_analyses": "glassbench.stored.analyses",
    "compare_analyses": "glassbench.stored.analyses",
    "reanalyze": "glassbench.stored.analyses",
    "compute_elastic": "glassbench.stored.elastic",
    "compute_energy": "glassbench.stored.energy",
    "export_frames": "glassbench.stored.export",
    "export_run": "glassbench.stored.export",
}

__all__ = ["BadInput", "Failure", "GlassbenchError", "connect", "read_sql", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def connect(url: str | None = None, *, upgrade: bool = True) -> Engine:
    """An engine on the database at ``url``, migrated to the code's schema.

    ``url`` is a SQLAlchemy URL (``sqlite:///results.db``, ``postgresql://user@host/db``) or a
    path to an SQLite file (an existing file, or a name ending in .db, .sqlite or .sqlite3);
    None reads ``GLASSBENCH_DATABASE_URL`` (default ``sqlite:///glassbench.db``). Like
    ``glassbench db upgrade``, the schema is created or migrated to head (an SQLite file is
    created if missing); with ``upgrade=False`` it is only verified (a ``Failure`` says how to
    upgrade), also for a missing SQLite file, which it does not create. A bad URL or setting is a
    ``BadInput`` naming it (``database_url``, ``GLASSBENCH_THREADS``); an unreachable server a
    ``Failure`` naming its host and port, after ``GLASSBENCH_CONNECT_TIMEOUT_S`` at most.
    """
    from glassbench.service.admin import upgrade_schema
    from glassbench.service.db import make_engine, verify_connection
    from glassbench.service.migrations import require_schema
    from glassbench.settings import get_settings

    settings = get_settings(database_url=url)
    try:
        engine = make_engine(settings.database_url, settings=settings, create=upgrade)
    except BadInput as exc:  # a missing file under upgrade=False: nothing to verify
        raise Failure(exc.detail, field=exc.field) from None
    verify_connection(engine)
    if upgrade:
        upgrade_schema(engine)
    else:
        require_schema(engine)
    return engine


def read_sql(engine: Engine, sql: str, *, max_rows: int | None = None) -> pd.DataFrame:
    """The rows of a read-only query as a DataFrame (as ``glassbench sql`` runs it).

    Writes and DDL are refused (``BadInput``); the views (``run_summary``, ``run_detail``,
    ``run_value``, ``mlip_mae``, ...) are the stable query surface (docs/user-guide.md).
    """
    import pandas as pd

    from glassbench.service.readonly import query

    result = query(engine, sql, max_rows=max_rows)
    return pd.DataFrame.from_records(result.rows, columns=result.columns)
