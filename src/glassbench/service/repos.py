"""Repositories: idempotent writes on natural keys.

Every function takes the session explicitly and never commits: the caller's unit of work owns
the transaction. Inserts rely on the database's unique constraints (``INSERT ... ON CONFLICT``
on both PostgreSQL and SQLite) instead of select-then-insert, so concurrent writers are safe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, select

from glassbench.chemistry import FAMILY, formula
from glassbench.schema import (
    MLIP,
    Composition,
    Coordination,
    CrystalVolume,
    Experiment,
    Frame,
    Property,
    Protocol,
    Run,
    Speciation,
    Thermo,
    pack_array,
)
from glassbench.schema.models import utcnow

if TYPE_CHECKING:
    from glassbench.analysis import FrameAnalysis

THERMO_COLUMNS = (
    "step",
    "time_ps",
    "temperature_k",
    "pressure_gpa",
    "potential_energy_ev",
    "kinetic_energy_ev",
    "total_energy_ev",
    "volume_a3",
    "density_g_cm3",
)


class NotFound(LookupError):
    """A named record does not exist."""


def canonical_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(data: Mapping[str, Any]) -> str:
    """sha256 of sorted-key JSON: the identity of a parameter set (cf. signac's job id)."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def _insert(session: Session, table: type[SQLModel]) -> Any:
    name = session.get_bind().dialect.name
    tbl = table.__table__  # type: ignore[attr-defined]
    if name == "postgresql":
        return postgresql.insert(tbl)
    if name == "sqlite":
        return sqlite.insert(tbl)
    raise NotImplementedError(f"database dialect {name!r} is not supported")


def upsert(
    session: Session,
    table: type[SQLModel],
    values: Mapping[str, Any],
    *,
    key: Sequence[str],
    update: Sequence[str] = (),
) -> int:
    """Insert ``values`` or, on a natural-key conflict, update ``update`` columns; return id.

    With no columns to update the existing row is left untouched (the key column is
    re-assigned to itself only so that RETURNING yields the existing id).
    """
    stmt = _insert(session, table).values(**values)
    set_ = {c: stmt.excluded[c] for c in update} or {key[0]: stmt.excluded[key[0]]}
    stmt = stmt.on_conflict_do_update(index_elements=list(key), set_=set_)
    stmt = stmt.returning(table.__table__.c.id)  # type: ignore[attr-defined]
    return int(session.execute(stmt).scalar_one())


# --- registry ---------------------------------------------------------------------------


def get_mlip(session: Session, name: str) -> MLIP:
    mlip = session.exec(select(MLIP).where(MLIP.name == name)).first()
    if mlip is None:
        raise NotFound(f"no MLIP named {name!r} (see `glassbench mlip list`)")
    return mlip


def add_mlip(session: Session, values: Mapping[str, Any], *, replace: bool = False) -> int:
    """Register an MLIP; re-registering identical values is a no-op.

    A different model under an existing name is refused unless ``replace``: runs keyed by that
    name would otherwise silently mix two models.
    """
    existing = session.exec(select(MLIP).where(MLIP.name == values["name"])).first()
    if existing is not None and not replace:
        diff = {
            k: (getattr(existing, k), v)
            for k, v in values.items()
            if k != "package_versions_json" and getattr(existing, k) != v
        }
        if diff:
            fields = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"MLIP {values['name']!r} is already registered with other values ({fields}); "
                "use --replace to change it"
            )
        assert existing.id is not None
        return existing.id
    update = [k for k in values if k != "name"]
    return upsert(session, MLIP, values, key=("name",), update=update)


def composition_id(session: Session, x: float, family: str = FAMILY) -> int:
    x = round(float(x), 6)
    return upsert(
        session,
        Composition,
        {"family": family, "x": x, "formula": formula(x, family)},
        key=("family", "x"),
    )


def protocol_id(session: Session, params: Mapping[str, Any], *, kind: str = "meltquench") -> int:
    full = {"kind": kind, **params}
    cols = {
        c: full.get(c)
        for c in ("formula_units", "t_melt_k", "melt_ps", "t_final_k", "anneal_ps", "timestep_fs")
    }
    values = {
        "content_hash": content_hash(full),
        "kind": kind,
        "params_json": canonical_json(full),
        **cols,
    }
    return upsert(session, Protocol, values, key=("content_hash",))


def run_key_id(
    session: Session,
    *,
    mlip_id: int,
    composition_id: int,
    quench_rate_k_ps: float,
    seed: int,
    protocol_id: int,
    source: str = "runner",
) -> int:
    """The run's id, creating it as ``pending`` if it does not exist yet."""
    return upsert(
        session,
        Run,
        {
            "mlip_id": mlip_id,
            "composition_id": composition_id,
            "quench_rate_k_ps": float(quench_rate_k_ps),
            "seed": int(seed),
            "protocol_id": protocol_id,
            "status": "pending",
            "source": source,
            "attempts": 0,
            "created_at": utcnow(),
        },
        key=("mlip_id", "composition_id", "quench_rate_k_ps", "seed", "protocol_id"),
    )


def clear_run_data(session: Session, run_id: int) -> None:
    """Delete everything stored under a run (frames, analyses, thermo, properties)."""
    frame_ids = select(Frame.id).where(Frame.run_id == run_id)
    session.execute(sa.delete(Speciation).where(Speciation.frame_id.in_(frame_ids)))  # type: ignore[attr-defined]
    session.execute(sa.delete(Coordination).where(Coordination.frame_id.in_(frame_ids)))  # type: ignore[attr-defined]
    session.execute(sa.delete(Frame).where(Frame.run_id == run_id))  # type: ignore[arg-type]
    session.execute(sa.delete(Thermo).where(Thermo.run_id == run_id))  # type: ignore[arg-type]
    session.execute(sa.delete(Property).where(Property.run_id == run_id))  # type: ignore[arg-type]


# --- bulk data --------------------------------------------------------------------------


def insert_thermo(
    session: Session, run_id: int, rows: Iterable[Mapping[str, Any]], *, copy: bool = False
) -> int:
    """Insert thermo rows in bulk; rows already present (same run and step) are skipped.

    ``copy=True`` uses PostgreSQL COPY, for runs known to have no rows yet (a fresh ingest).
    """
    data = [{"run_id": run_id, **{c: _clean(r.get(c)) for c in THERMO_COLUMNS}} for r in rows]
    if not data:
        return 0
    bind = session.get_bind()
    if copy and bind.dialect.name == "postgresql":
        cols = ("run_id", *THERMO_COLUMNS)
        dbapi = session.connection().connection.dbapi_connection
        assert dbapi is not None
        sql = f"COPY thermo ({', '.join(cols)}) FROM STDIN"
        with dbapi.cursor() as cur, cur.copy(sql) as cp:  # type: ignore[attr-defined]
            for row in data:
                cp.write_row(tuple(row[c] for c in cols))
        return len(data)
    stmt = _insert(session, Thermo).on_conflict_do_nothing(index_elements=["run_id", "step"])
    session.execute(stmt, data)
    return len(data)


def _clean(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def add_frame(
    session: Session,
    run_id: int,
    *,
    stage: str,
    step: int,
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: Sequence[bool] = (True, True, True),
    time_ps: float | None = None,
    temperature_k: float | None = None,
    analysis: FrameAnalysis | None = None,
) -> int:
    """Store one frame (arrays compressed) and its analysis; an existing step is replaced."""
    values = {
        "run_id": run_id,
        "stage": stage,
        "step": int(step),
        "time_ps": _clean(time_ps),
        "temperature_k": _clean(temperature_k),
        "n_atoms": len(numbers),
        "cell_json": json.dumps(np.asarray(cell, dtype=float).reshape(3, 3).tolist()),
        "pbc": "".join("T" if p else "F" for p in pbc),
        "numbers": pack_array(np.asarray(numbers, dtype=np.int16)),
        "positions": pack_array(np.asarray(positions, dtype=np.float64)),
    }
    fid = upsert(
        session,
        Frame,
        values,
        key=("run_id", "step"),
        update=[k for k in values if k not in ("run_id", "step")],
    )
    if analysis is not None:
        add_analysis(session, fid, analysis)
    return fid


def add_analysis(session: Session, frame_id: int, analysis: FrameAnalysis) -> None:
    session.execute(sa.delete(Speciation).where(Speciation.frame_id == frame_id))  # type: ignore[arg-type]
    session.execute(sa.delete(Coordination).where(Coordination.frame_id == frame_id))  # type: ignore[arg-type]
    counts = analysis.unit_counts()
    session.execute(
        sa.insert(Speciation.__table__),  # type: ignore[attr-defined]
        [{"frame_id": frame_id, "unit": u, "count": int(c)} for u, c in counts.items()],
    )
    na, ss = analysis.na, analysis.ss
    session.execute(
        sa.insert(Coordination.__table__),  # type: ignore[attr-defined]
        [
            {
                "frame_id": frame_id,
                "na_n": int(na.n),
                "na_cn_mean": _clean(na.cn_mean) if na.n else None,
                "na_cn_s_mean": _clean(na.cn_S_mean) if na.n else None,
                "na_cn_o_mean": _clean(na.cn_O_mean) if na.n else None,
                "na_cn_histogram_json": json.dumps(
                    {str(k): int(v) for k, v in na.histogram.items()}
                ),
                "ss_fraction": _clean(ss.fraction),
                "ss_mean_length": _clean(ss.mean_length),
                "ss_chains_json": json.dumps({str(k): int(v) for k, v in ss.chains.items()}),
                "cutoffs_json": canonical_json(analysis.cutoffs),
            }
        ],
    )


def set_property(
    session: Session,
    run_id: int,
    name: str,
    value: float,
    *,
    stderr: float | None = None,
    method: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    values = {
        "run_id": run_id,
        "name": name,
        "value": float(value),
        "stderr": _clean(stderr),
        "method": method,
        "details_json": canonical_json(details) if details else None,
    }
    return upsert(
        session,
        Property,
        values,
        key=("run_id", "name"),
        update=("value", "stderr", "method", "details_json"),
    )


def experiment_subject(*, x: float | None, crystal: str | None, family: str = FAMILY) -> str:
    if crystal is not None:
        return f"crystal:{crystal}"
    assert x is not None
    return f"{family}:x={round(float(x), 6):g}"


def set_experiment(session: Session, values: Mapping[str, Any]) -> int:
    return upsert(
        session,
        Experiment,
        values,
        key=("subject", "property", "source"),
        update=("value", "uncertainty", "composition_id", "crystal"),
    )


def set_crystal_volume(session: Session, values: Mapping[str, Any]) -> int:
    return upsert(
        session,
        CrystalVolume,
        values,
        key=("mlip_id", "crystal"),
        update=[k for k in values if k not in ("mlip_id", "crystal")],
    )


def sha256_file(path: Any, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file, streamed (model files can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
