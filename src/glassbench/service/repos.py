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
    Speciation,
    Thermo,
    pack_array,
)
from glassbench.schema.models import DEFAULT_ANALYSIS_ID, FrameEval, WindowStat

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


# The per-run tables that clear_run_data empties besides frames, and the per-frame tables
# that hang off frames (every analysis, every evaluation): lists that a new table joins (and
# that a test writing at an older revision can trim).
RUN_DATA_TABLES: tuple[type[SQLModel], ...] = (Thermo, Property, WindowStat)
FRAME_DATA_TABLES: tuple[type[SQLModel], ...] = (Speciation, Coordination, FrameEval)


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
    if existing is None and not replace:
        # Insert, don't check-then-insert: a concurrent registration of the same name may
        # commit between the look-up and this insert. ON CONFLICT DO NOTHING leaves its row
        # alone (an upsert would silently overwrite it) and the comparison below runs on it.
        stmt = (
            _insert(session, MLIP)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(MLIP.__table__.c.id)  # type: ignore[attr-defined]
        )
        new_id = session.execute(stmt).scalar_one_or_none()
        if new_id is not None:
            return int(new_id)
        existing = session.exec(
            select(MLIP)
            .where(MLIP.name == values["name"])
            .execution_options(populate_existing=True)
        ).one()
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


_PROTOCOL_NAME_LENGTH: int = Protocol.__table__.c.name.type.length  # type: ignore[attr-defined]


def protocol_id(
    session: Session,
    params: Mapping[str, Any],
    *,
    kind: str = "meltquench",
    name: str | None = None,
) -> int:
    """The id of the protocol with these parameters, stored if new.

    The identity is the content hash of ``kind`` and ``params`` only: ``name`` is a label (a
    preset such as ``study``, or a protocol file's stem), and two files with the same stages
    under different names describe the same simulation, whose runs must share one key. The
    first name stored wins; a protocol stored without one takes the first name given later.
    Raises ValueError for a name longer than the column (64 characters).
    """
    if name is not None and len(name) > _PROTOCOL_NAME_LENGTH:
        # SQLite would store it whole and PostgreSQL refuse it: refuse on both.
        raise ValueError(
            f"protocol name {name[:20]!r}... is longer than {_PROTOCOL_NAME_LENGTH} characters"
        )
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
    if name is None:
        # Leaves the column out of the statement, so that a nameless write also works on a
        # database still at a revision without it.
        return upsert(session, Protocol, values, key=("content_hash",))
    table: sa.Table = Protocol.__table__  # type: ignore[attr-defined]
    stmt = _insert(session, Protocol).values(**values, name=name)
    stmt = stmt.on_conflict_do_update(
        index_elements=["content_hash"],
        set_={"name": sa.func.coalesce(table.c.name, stmt.excluded.name)},
    ).returning(table.c.id)
    return int(session.execute(stmt).scalar_one())


def clear_run_data(session: Session, run_id: int) -> None:
    """Delete everything stored under a run (frames, their analyses and evaluations, thermo,
    properties, windows)."""
    frame_ids = select(Frame.id).where(Frame.run_id == run_id)
    # Core deletes on the tables: an ORM delete would also fetch every deleted key.
    for table in FRAME_DATA_TABLES:
        tbl: sa.Table = table.__table__  # type: ignore[attr-defined]
        session.execute(sa.delete(tbl).where(tbl.c.frame_id.in_(frame_ids)))
    session.execute(sa.delete(Frame).where(Frame.run_id == run_id))  # type: ignore[arg-type]
    for table in RUN_DATA_TABLES:
        session.execute(sa.delete(table).where(table.run_id == run_id))  # type: ignore[attr-defined]


# --- bulk data --------------------------------------------------------------------------


class BadRows(ValueError):
    """Rows that cannot be stored as given (two frames with one step, a step out of range)."""


def _clean(v: Any) -> Any:
    """A plain Python value for a column: numpy scalars unwrapped, NaN and infinities NULL."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def insert_thermo(
    session: Session, run_id: int, rows: Iterable[Mapping[str, Any]], *, copy: bool = False
) -> int:
    """Insert thermo rows in bulk (keys from ``THERMO_COLUMNS``, missing keys are NULL).

    Returns the number of rows given. Non-finite values are stored as NULL.

    ``copy=False``: one executemany ``INSERT ... ON CONFLICT DO NOTHING`` on both engines, so
    a row whose (run, step) is already stored is skipped and the first write wins.
    ``copy=True``: PostgreSQL binary COPY (several times faster), only for rows known to be
    new (a fresh ingest): COPY cannot skip, so a step already stored (or repeated in ``rows``)
    fails the COPY and with it the transaction; a step outside 32 bits raises
    :class:`BadRows`. On SQLite ``copy=True`` falls back to the executemany path.
    """
    rows = list(rows)
    if not rows:
        return 0
    if copy and session.get_bind().dialect.name == "postgresql":
        _copy_in(session, "thermo", ("run_id", *THERMO_COLUMNS), _thermo_copy_payload(run_id, rows))
        return len(rows)
    data = [{"run_id": run_id, **{c: _clean(r.get(c)) for c in THERMO_COLUMNS}} for r in rows]
    stmt = _insert(session, Thermo).on_conflict_do_nothing(index_elements=["run_id", "step"])
    session.execute(stmt, data)
    return len(data)


_THERMO_VALUES = THERMO_COLUMNS[1:]  # every column after step is a float
_PG_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\0" + b"\0\0\0\0" + b"\0\0\0\0"
_PG_COPY_TRAILER = b"\xff\xff"
_INT4 = (-(2**31), 2**31 - 1)


def _thermo_copy_payload(run_id: int, rows: Sequence[Mapping[str, Any]]) -> list[bytes | bytearray]:
    """The rows in PostgreSQL's binary COPY format, built with numpy (no per-row Python).

    Rows are grouped by which values are missing or non-finite (NULL), so each group has one
    fixed row layout: a template row repeated, then the step and value columns written in as
    big-endian bytes. COPY does not care about row order.
    """
    steps = np.fromiter((r["step"] for r in rows), dtype=np.int64, count=len(rows))
    if steps.min() < _INT4[0] or steps.max() > _INT4[1]:
        raise BadRows("thermo step outside the 32-bit range of the thermo table")
    # None -> NaN in a float array; NaN and infinities become NULL below
    values = np.array([tuple(map(r.get, _THERMO_VALUES)) for r in rows], dtype=np.float64)
    values = values.reshape(len(rows), len(_THERMO_VALUES))
    missing = ~np.isfinite(values)
    codes = np.packbits(missing, axis=1, bitorder="little")[:, 0]  # 8 value columns: 1 byte
    groups = np.unique(codes)
    parts: list[bytes | bytearray] = [_PG_COPY_SIGNATURE]
    for code in groups:
        sel = np.flatnonzero(codes == code) if len(groups) > 1 else slice(None)
        group_steps, group_values = steps[sel], values[sel]
        pattern = missing[sel][0]
        n = len(group_steps)
        # field count, run_id and step (length 4 each), then per value: length 8 + float8,
        # or length -1 for NULL
        template = bytearray(np.array([2 + len(pattern)], dtype=">i2").tobytes())
        template += np.array([4, run_id, 4, 0], dtype=">i4").tobytes()
        offsets = []
        for null in pattern:
            if null:
                template += b"\xff\xff\xff\xff"
            else:
                template += np.array([8], dtype=">i4").tobytes()
                offsets.append(len(template))
                template += bytes(8)
        block = bytearray(template * n)
        view = np.frombuffer(block, dtype=np.uint8).reshape(n, len(template))
        view[:, 14:18] = group_steps.astype(">i4").view(np.uint8).reshape(n, 4)
        present = [k for k, null in enumerate(pattern) if not null]
        for off, k in zip(offsets, present, strict=True):
            column = np.ascontiguousarray(group_values[:, k], dtype=">f8")
            view[:, off : off + 8] = column.view(np.uint8).reshape(n, 8)
        parts.append(block)
    parts.append(_PG_COPY_TRAILER)
    return parts


def _copy_in(
    session: Session, table: str, columns: Sequence[str], parts: Iterable[bytes | bytearray]
) -> None:
    """Stream a binary COPY payload into ``table`` on the session's connection (psycopg 3)."""
    dbapi = session.connection().connection.dbapi_connection
    assert dbapi is not None
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with dbapi.cursor() as cur, cur.copy(sql) as cp:  # type: ignore[attr-defined]
        for part in parts:
            cp.write(part)


def frame_row(
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
    forces: np.ndarray | None = None,
    energy_ev: float | None = None,
) -> dict[str, Any]:
    """The frame table's row for one structure (arrays compressed), for :func:`add_frames`.

    ``forces`` (eV/Å) and ``energy_ev`` are those of the MLIP that made the structure, where
    known; the keys are left out when not given.
    """
    row = {
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
    if forces is not None:
        f = np.asarray(forces, dtype=np.float64)
        if f.shape != (len(numbers), 3):
            raise BadRows(f"forces have shape {f.shape}, expected ({len(numbers)}, 3)")
        row["forces"] = pack_array(f)
    if energy_ev is not None:
        row["energy_ev"] = _clean(energy_ev)
    return row


_OPTIONAL_FRAME_COLUMNS = ("forces", "energy_ev")


def add_frames(
    session: Session,
    rows: Sequence[Mapping[str, Any]],
    analyses: Sequence[FrameAnalysis | None],
) -> list[int]:
    """Store frame rows (from :func:`frame_row`) and their analyses; the frames' ids.

    An existing (run, step) is replaced, and so is its analysis where one is given (with
    None a stored analysis stays). One executemany per table, however many frames: a batch
    of frames costs about half of what a statement per table and frame costs on PostgreSQL.
    Raises :class:`BadRows` if two rows have the same run and step.
    """
    if len(rows) != len(analyses):
        raise ValueError(f"{len(rows)} frame rows but {len(analyses)} analyses")
    if not rows:
        return []
    keys = [(int(r["run_id"]), int(r["step"])) for r in rows]
    if len(set(keys)) != len(keys):
        raise BadRows("two frames of one batch have the same step")
    # One executemany needs one set of keys: a column some rows give is NULL in the others.
    optional = [c for c in _OPTIONAL_FRAME_COLUMNS if any(c in r for r in rows)]
    if optional:
        rows = [{**{c: None for c in optional}, **r} for r in rows]
    table: sa.Table = Frame.__table__  # type: ignore[attr-defined]
    replaced = _existing_frames(session, keys)
    stmt = _insert(session, Frame)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "step"],
        set_={c: stmt.excluded[c] for c in rows[0] if c not in ("run_id", "step")},
    ).returning(table.c.run_id, table.c.step, table.c.id)
    # Match ids by key, not by position: SQLAlchemy's sort_by_parameter_order orders
    # PostgreSQL's rows by id, which is wrong when the upsert updated an older row.
    by_key = {(int(r), int(s)): int(fid) for r, s, fid in session.execute(stmt, list(rows))}
    ids = [by_key[k] for k in keys]
    if replaced:
        # A rewritten structure invalidates whatever was computed from the old one: other
        # analyses and evaluations go (the default analysis is replaced below when given).
        for model in FRAME_DATA_TABLES:
            derived: sa.Table = model.__table__  # type: ignore[attr-defined]
            stale = sa.delete(derived).where(derived.c.frame_id.in_(replaced))
            if "analysis_id" in derived.c:
                stale = stale.where(derived.c.analysis_id != DEFAULT_ANALYSIS_ID)
            session.execute(stale)
    _write_analyses(
        session, [(fid, a) for fid, a in zip(ids, analyses, strict=True) if a is not None]
    )
    return ids


def _existing_frames(session: Session, keys: Sequence[tuple[int, int]]) -> list[int]:
    """Ids of the frames among ``keys`` (run, step) already stored (usually none)."""
    by_run: dict[int, list[int]] = {}
    for run_id, step in keys:
        by_run.setdefault(run_id, []).append(step)
    table: sa.Table = Frame.__table__  # type: ignore[attr-defined]
    found: list[int] = []
    for run_id, steps in by_run.items():
        query = sa.select(table.c.id).where(table.c.run_id == run_id, table.c.step.in_(steps))
        found += [int(f) for f in session.execute(query).scalars()]
    return found


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
    forces: np.ndarray | None = None,
    energy_ev: float | None = None,
) -> int:
    """Store one frame (arrays compressed) and its analysis; an existing step is replaced."""
    row = frame_row(
        run_id,
        stage=stage,
        step=step,
        numbers=numbers,
        positions=positions,
        cell=cell,
        pbc=pbc,
        time_ps=time_ps,
        temperature_k=temperature_k,
        forces=forces,
        energy_ev=energy_ev,
    )
    return add_frames(session, [row], [analysis])[0]


def add_analysis(
    session: Session,
    frame_id: int,
    analysis: FrameAnalysis,
    *,
    analysis_id: int = DEFAULT_ANALYSIS_ID,
) -> None:
    """Store (or replace) a frame's speciation and coordination under one analysis."""
    _write_analyses(session, [(frame_id, analysis)], analysis_id=analysis_id)


def add_analyses(
    session: Session,
    analysed: Sequence[tuple[int, FrameAnalysis]],
    *,
    analysis_id: int = DEFAULT_ANALYSIS_ID,
) -> None:
    """Store (or replace) the speciation and coordination of many frames under one analysis:
    two deletes and two executemany however many frames."""
    _write_analyses(session, analysed, analysis_id=analysis_id)


def speciation_rows(
    frame_id: int, analysis: FrameAnalysis, analysis_id: int = DEFAULT_ANALYSIS_ID
) -> list[dict[str, Any]]:
    """The speciation table's rows for one analysed frame (one per unit).

    The default analysis is the column's default and is left out of the rows (so writes of
    the default analysis also work on a database at a revision before analyses).
    """
    extra = {} if analysis_id == DEFAULT_ANALYSIS_ID else {"analysis_id": analysis_id}
    return [
        {"frame_id": frame_id, "unit": u, "count": int(c), **extra}
        for u, c in analysis.unit_counts().items()
    ]


def coordination_row(
    frame_id: int, analysis: FrameAnalysis, analysis_id: int = DEFAULT_ANALYSIS_ID
) -> dict[str, Any]:
    """The coordination table's row for one analysed frame (analysis as in speciation_rows)."""
    na, ss = analysis.na, analysis.ss
    extra = {} if analysis_id == DEFAULT_ANALYSIS_ID else {"analysis_id": analysis_id}
    return {
        **extra,
        "frame_id": frame_id,
        "na_n": int(na.n),
        "na_cn_mean": _clean(na.cn_mean) if na.n else None,
        "na_cn_s_mean": _clean(na.cn_S_mean) if na.n else None,
        "na_cn_o_mean": _clean(na.cn_O_mean) if na.n else None,
        "na_cn_histogram_json": json.dumps({str(k): int(v) for k, v in na.histogram.items()}),
        "ss_fraction": _clean(ss.fraction),
        "ss_mean_length": _clean(ss.mean_length),
        "ss_chains_json": json.dumps({str(k): int(v) for k, v in ss.chains.items()}),
        "cutoffs_json": canonical_json(analysis.cutoffs),
        "na_s_share": _clean(na.s_share),
        "na_s_peak_a": _clean(na.peak_S),
        "na_o_peak_a": _clean(na.peak_O),
        "ss_long_share": _clean(ss.long_share),
    }


def _write_analyses(
    session: Session,
    analysed: Sequence[tuple[int, FrameAnalysis]],
    *,
    analysis_id: int = DEFAULT_ANALYSIS_ID,
) -> None:
    """Replace one analysis of the frames ``analysed`` names: two deletes, two executemany.

    A new default analysis (the frames were just stored, or stored again) replaces every
    analysis of those frames: the others were computed from what was there before. Another
    analysis replaces only its own rows.
    """
    if not analysed:
        return
    frame_ids = [fid for fid, _ in analysed]
    for model in (Speciation, Coordination):
        tbl: sa.Table = model.__table__  # type: ignore[union-attr]
        stmt = sa.delete(tbl).where(tbl.c.frame_id.in_(frame_ids))
        if analysis_id != DEFAULT_ANALYSIS_ID:
            stmt = stmt.where(tbl.c.analysis_id == analysis_id)
        session.execute(stmt)
    spec = [row for fid, a in analysed for row in speciation_rows(fid, a, analysis_id)]
    if spec:
        session.execute(sa.insert(Speciation.__table__), spec)  # type: ignore[attr-defined]
    session.execute(
        sa.insert(Coordination.__table__),  # type: ignore[attr-defined]
        [coordination_row(fid, a, analysis_id) for fid, a in analysed],
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
