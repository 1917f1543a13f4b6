"""The run store: the only code that changes a ``run`` row.

A run's life (:class:`~glassbench.schema.RunStatus`): it is *ensured* (created ``pending`` on its
natural key, or found), *claimed* by one worker (``running``, with a heartbeat), *finished*
(``done``, with provenance) or *failed* (with the error), and a run whose worker is gone is
*released* (``failed``, so that a normal claim can take it over). Runners, campaigns and ingests
all go through these functions; no other module writes ``UPDATE run`` or ``INSERT INTO run``.

Functions that take a ``Session`` join the caller's transaction (a flush writes thermo rows,
frames and the heartbeat together); functions that take an ``Engine`` are one transaction each.
See docs/architecture.md, "The run store".
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from glassbench.schema import Run, RunStatus
from glassbench.schema.models import utcnow
from glassbench.service.db import unit_of_work

log = logging.getLogger(__name__)

_RUN: sa.Table = Run.__table__  # type: ignore[attr-defined]
_ERROR_MAX_CHARS = 2000
_CHUNK = 500

DEFAULT_STALE_AFTER_S = 600.0


def worker_id() -> str:
    """``host:pid`` of this process: what a claim records in ``claimed_by``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RunRow:
    """The scheduling state of one run."""

    id: int
    status: RunStatus
    attempts: int
    error: str | None
    claimed_by: str | None
    created_at: datetime | None


# --- create -------------------------------------------------------------------------------


def ensure(
    session: Session,
    *,
    mlip_id: int,
    composition_id: int,
    quench_rate_k_ps: float,
    seed: int,
    protocol_id: int,
    source: str = "runner",
) -> int:
    """The id of the run with this natural key, created ``pending`` if it does not exist."""
    from glassbench.service.repos import upsert

    return upsert(
        session,
        Run,
        {
            "mlip_id": mlip_id,
            "composition_id": composition_id,
            "quench_rate_k_ps": float(quench_rate_k_ps),
            "seed": int(seed),
            "protocol_id": protocol_id,
            "status": RunStatus.PENDING.value,
            "source": source,
            "attempts": 0,
            "created_at": utcnow(),
        },
        key=("mlip_id", "composition_id", "quench_rate_k_ps", "seed", "protocol_id"),
    )


class RunKey(NamedTuple):
    """The natural key of a run (the ``run`` table's unique constraint)."""

    mlip_id: int
    composition_id: int
    quench_rate_k_ps: float
    seed: int
    protocol_id: int


_KEY = ("mlip_id", "composition_id", "quench_rate_k_ps", "seed", "protocol_id")
# Keys per chunk: the id look-up binds 5 values per key, well inside SQLite's 32,766 variables
# per statement.
_BULK_CHUNK = 1000


def ensure_many(session: Session, keys: Sequence[RunKey], *, source: str = "runner") -> list[int]:
    """:func:`ensure` for many runs: their ids in the order of ``keys``, missing ones created
    ``pending``, in the caller's transaction.

    Per 1,000 keys: one executemany of ``INSERT ... ON CONFLICT DO NOTHING`` (one cached
    statement; psycopg pipelines it), then one ``(key columns) IN (...)`` look-up of the ids:
    registering a campaign's matrix no longer costs four round trips per run (measured in
    benchmarks/campaign_register.py). Existing rows keep their values whatever their status,
    as with :func:`ensure` (whose upsert also locks them; this does not); a concurrent insert
    of the same key is absorbed by the conflict clause.
    """
    from glassbench.service.repos import _insert

    norm = [RunKey(int(k[0]), int(k[1]), float(k[2]), int(k[3]), int(k[4])) for k in keys]
    ids: dict[RunKey, int] = {}
    now = utcnow()
    key_cols = sa.tuple_(*(_RUN.c[c] for c in _KEY))
    insert = _insert(session, Run).on_conflict_do_nothing(index_elements=list(_KEY))
    for i in range(0, len(norm), _BULK_CHUNK):
        chunk = list(dict.fromkeys(norm[i : i + _BULK_CHUNK]))
        rows = [
            {
                **k._asdict(),
                "status": RunStatus.PENDING.value,
                "source": source,
                "attempts": 0,
                "created_at": now,
            }
            for k in chunk
        ]
        # executemany of one cached statement: .values(rows) would compile 9,000 bound
        # parameters per chunk, which was slower than the inserts themselves.
        session.execute(insert, rows)
        found = session.execute(
            sa.select(_RUN.c.id, *(_RUN.c[c] for c in _KEY)).where(key_cols.in_(chunk))
        )
        for r in found:
            ids[RunKey(int(r[1]), int(r[2]), float(r[3]), int(r[4]), int(r[5]))] = int(r[0])
    return [ids[k] for k in norm]


# --- read ---------------------------------------------------------------------------------


def status(bind: Engine | Connection | Session, run_id: int) -> RunStatus:
    """The run's status now."""
    stmt = sa.select(_RUN.c.status).where(_RUN.c.id == run_id)
    if isinstance(bind, Engine):
        with bind.connect() as c:
            return RunStatus(c.execute(stmt).scalar_one())
    return RunStatus(bind.execute(stmt).scalar_one())


def rows(engine: Engine, ids: Sequence[int]) -> dict[int, RunRow]:
    """Scheduling state of the runs ``ids`` (read in chunks: a matrix may hold 10^5 runs)."""
    out: dict[int, RunRow] = {}
    cols = (
        _RUN.c.id,
        _RUN.c.status,
        _RUN.c.attempts,
        _RUN.c.error,
        _RUN.c.claimed_by,
        _RUN.c.created_at,
    )
    with engine.connect() as c:
        for i in range(0, len(ids), _CHUNK):
            chunk = list(ids[i : i + _CHUNK])
            for r in c.execute(sa.select(*cols).where(_RUN.c.id.in_(chunk))):
                out[int(r.id)] = RunRow(
                    int(r.id),
                    RunStatus(r.status),
                    int(r.attempts),
                    r.error,
                    r.claimed_by,
                    r.created_at,
                )
    return out


# --- claim and heartbeat ----------------------------------------------------------------------


def claim(
    engine: Engine,
    run_id: int,
    *,
    worker: str | None = None,
    force: bool = False,
    max_attempts: int | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> bool:
    """Atomically mark a run ``running`` for ``worker``; False if it is not claimable.

    Claimable: ``pending`` or ``failed`` (with fewer than ``max_attempts`` claims so far), or
    ``running`` with a heartbeat older than ``stale_after_s`` (its worker died). ``force``
    claims any run that is not done: the user restarting one run by hand. On PostgreSQL the
    row is locked with ``FOR UPDATE SKIP LOCKED`` first, so a claim never waits behind
    another worker's; the UPDATE repeats the conditions, so SQLite (one writer at a time)
    gets the same atomicity from its single statement.
    """
    now = utcnow()
    stale = datetime.fromtimestamp(now.timestamp() - stale_after_s, UTC)
    c = _RUN.c
    if force:
        cond: Any = c.status != RunStatus.DONE.value
    else:
        cond = sa.or_(
            c.status.in_([RunStatus.PENDING.value, RunStatus.FAILED.value]),
            sa.and_(
                c.status == RunStatus.RUNNING.value,
                sa.or_(c.heartbeat_at.is_(None), c.heartbeat_at < stale),
            ),
        )
        if max_attempts is not None:
            cond = sa.and_(cond, c.attempts < max_attempts)
    with unit_of_work(engine) as s:
        if engine.dialect.name == "postgresql":
            locked = s.execute(
                sa.select(c.id).where(c.id == run_id, cond).with_for_update(skip_locked=True)
            ).first()
            if locked is None:
                return False
        res = s.execute(
            sa.update(_RUN)
            .where(c.id == run_id, cond)
            .values(
                status=RunStatus.RUNNING.value,
                claimed_by=worker or worker_id(),
                heartbeat_at=now,
                attempts=c.attempts + 1,
                started_at=sa.func.coalesce(c.started_at, now),
                error=None,
                host=socket.gethostname(),
            )
        )
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def heartbeat(session: Session, run_id: int) -> None:
    """Record that the run's worker is alive (joins the caller's flush transaction)."""
    session.execute(sa.update(_RUN).where(_RUN.c.id == run_id).values(heartbeat_at=utcnow()))


def set_provenance(
    engine: Engine, run_id: int, *, n_atoms: int, software: Mapping[str, Any]
) -> None:
    """Record the size of the simulated system and the packages that simulate it."""
    from glassbench.service.repos import canonical_json

    with unit_of_work(engine) as s:
        s.execute(
            sa.update(_RUN)
            .where(_RUN.c.id == run_id)
            .values(n_atoms=n_atoms, software_json=canonical_json(software))
        )


def add_wall_time(engine: Engine, run_id: int, seconds: float) -> None:
    """Add ``seconds`` to the run's wall time (a resumed run sums its attempts)."""
    with unit_of_work(engine) as s:
        s.execute(
            sa.update(_RUN)
            .where(_RUN.c.id == run_id)
            .values(wall_s=sa.func.coalesce(_RUN.c.wall_s, 0) + seconds)
        )


# --- end of a run ------------------------------------------------------------------------------


def finish(
    session: Session,
    run_id: int,
    *,
    source: str | None = None,
    content_hash: str | None = None,
    n_atoms: int | None = None,
    software: Mapping[str, Any] | None = None,
) -> None:
    """Mark the run ``done`` (in the caller's transaction, with the data it completes).

    An ingest passes its provenance (``source``, the files' ``content_hash``, ``n_atoms``,
    ``software``); the runner recorded those when it started and passes none.
    """
    from glassbench.service.repos import canonical_json

    values: dict[str, Any] = {
        "status": RunStatus.DONE.value,
        "error": None,
        "finished_at": utcnow(),
    }
    if source is not None:
        values.update(
            source=source,
            content_hash=content_hash,
            n_atoms=n_atoms,
            software_json=canonical_json(software) if software else None,
        )
    session.execute(sa.update(_RUN).where(_RUN.c.id == run_id).values(**values))


def fail(engine: Engine, run_id: int, error: str) -> None:
    """Mark the run ``failed`` with its error (cut to 2000 characters)."""
    with unit_of_work(engine) as s:
        s.execute(
            sa.update(_RUN)
            .where(_RUN.c.id == run_id)
            .values(
                status=RunStatus.FAILED.value,
                error=error[:_ERROR_MAX_CHARS],
                finished_at=utcnow(),
            )
        )


def release(
    engine: Engine,
    run_id: int,
    *,
    owner: str,
    attempts: int,
    error: str,
    older_than: datetime | None = None,
) -> int:
    """Mark a run held by a gone worker ``failed``, so that a normal claim can take it over.

    One conditional UPDATE on the exact claim (worker and attempt number; and a heartbeat
    older than ``older_than``): a no-op if the worker is alive after all or another worker
    took the run over meanwhile. Returns how many runs were released (0 or 1).
    """
    c = _RUN.c
    conds = [
        c.id == run_id,
        c.status == RunStatus.RUNNING.value,
        c.claimed_by == owner,
        c.attempts == attempts,
    ]
    if older_than is not None:
        # Compared in SQL with a typed parameter: drivers store timestamps differently.
        conds.append(sa.or_(c.heartbeat_at.is_(None), c.heartbeat_at < older_than))
    stmt = (
        sa.update(_RUN)
        .where(*conds)
        .values(
            status=RunStatus.FAILED.value,
            error=error[:_ERROR_MAX_CHARS],
            finished_at=utcnow(),
        )
    )
    with unit_of_work(engine) as s:
        n = int(s.execute(stmt).rowcount)  # type: ignore[attr-defined]
    if n:
        log.warning("run %s: %s", run_id, error)
    return n


def release_stale(engine: Engine, ids: Sequence[int], stale_after_s: float) -> int:
    """Release the runs among ``ids`` whose worker has not beaten for ``stale_after_s``."""
    limit = datetime.now(UTC) - timedelta(seconds=stale_after_s)
    n = 0
    for rid, row in rows(engine, ids).items():
        if row.status is RunStatus.RUNNING:
            owner = row.claimed_by or ""
            msg = f"interrupted: no heartbeat from {owner} for {stale_after_s:g} s"
            n += release(
                engine, rid, owner=owner, attempts=row.attempts, error=msg, older_than=limit
            )
    return n


def release_dead_local_workers(engine: Engine, ids: Sequence[int]) -> int:
    """Release runs held by processes of this host that no longer exist (a killed campaign).

    Conditional on the exact claim, like :func:`release`: a no-op if another worker has taken
    the run over meanwhile.
    """
    host = socket.gethostname()
    n = 0
    for rid, row in rows(engine, ids).items():
        owner = row.claimed_by or ""
        if row.status is not RunStatus.RUNNING or not owner.startswith(host + ":"):
            continue
        try:
            pid = int(owner.rsplit(":", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and pid_dead(pid):
            msg = f"interrupted: worker {owner} is gone"
            n += release(engine, rid, owner=owner, attempts=row.attempts, error=msg)
    return n


def pid_dead(pid: int) -> bool:
    """Whether process ``pid`` of this host is gone (or a zombie that will never beat)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    # A killed worker whose parent died too may linger as a zombie where PID 1 does not reap
    # (some containers): it answers kill(0) but will never beat again.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]
