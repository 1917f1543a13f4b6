"""The run an ingest writes to: its key, its slot (new, replaced or unchanged) and its end.

:func:`open_run` resolves a :class:`RunKey` to a run id inside the caller's transaction,
honouring idempotency (the same content is not written twice); :func:`finish_run` marks the run
done through the run store (``service/runs.py``). :class:`InvalidData` is what every writer of
the pipeline raises for data that cannot be stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlmodel import Session, select

from glassbench.schema import Run, RunStatus
from glassbench.service import runs
from glassbench.service.repos import clear_run_data, composition_id, get_mlip, protocol_id


class InvalidData(ValueError):
    """Data that cannot be stored; ``where`` names the frame/line for the user's message."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where


@dataclass(frozen=True)
class RunKey:
    """The natural key of a run, by names and values as the user gives them.

    ``protocol`` identifies how the data were made (content-hashed into the ``protocol``
    table); empty, the file ingests use ``{"source": "lammps"}`` / ``{"source": "traj"}``.
    """

    mlip: str
    x: float
    quench_rate_k_ps: float
    seed: int
    protocol: Mapping[str, Any] = field(default_factory=dict)
    protocol_kind: str = "external"

    def describe(self) -> str:
        return (
            f"mlip={self.mlip} x={self.x:g} quench_rate={self.quench_rate_k_ps:g} K/ps "
            f"seed={self.seed}"
        )


@dataclass(frozen=True)
class RunSlot:
    """Where an ingest writes: ``unchanged`` means the same content is already stored."""

    run_id: int
    action: Literal["new", "replace", "unchanged"]


class RunExists(Exception):
    """The key holds a run with other content and the caller did not ask to replace it."""

    def __init__(self, run_id: int, stored_hash: str | None, source: str | None) -> None:
        super().__init__(f"run {run_id} exists with other content")
        self.run_id = run_id
        self.stored_hash = stored_hash
        self.source = source


def open_run(
    session: Session,
    key: RunKey,
    *,
    source: str,
    content_hash: str,
    replace: bool = False,
) -> RunSlot:
    """Resolve ``key`` to a run id ready for writing, honouring idempotency.

    Same ``content_hash`` already stored: ``unchanged`` and nothing is written. Other content
    stored: :class:`RunExists` unless ``replace``, in which case the run's data are cleared
    (inside the caller's transaction, so a failed replacement restores the old data).
    Raises ``repos.NotFound`` for an unknown MLIP.
    """
    mlip_id = get_mlip(session, key.mlip).id
    assert mlip_id is not None
    existing = _find_run(session, key, mlip_id)
    if existing is not None and existing.content_hash == content_hash:
        assert existing.id is not None
        return RunSlot(existing.id, "unchanged")

    cid = composition_id(session, key.x)
    pid = protocol_id(session, dict(key.protocol), kind=key.protocol_kind)
    run_id = runs.ensure(
        session,
        mlip_id=mlip_id,
        composition_id=cid,
        quench_rate_k_ps=key.quench_rate_k_ps,
        seed=key.seed,
        protocol_id=pid,
        source=source,
    )
    # Re-read under a row lock: a concurrent ingest of the same key may have committed
    # between our look-up and the upsert, and its content decides what we may do.
    stmt = (
        select(Run)
        .where(Run.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    row = session.exec(stmt).one()
    if row.content_hash == content_hash:
        return RunSlot(run_id, "unchanged")
    has_data = row.content_hash is not None or row.status != RunStatus.PENDING
    if has_data and not replace:
        raise RunExists(run_id, row.content_hash, row.source)
    clear_run_data(session, run_id)
    return RunSlot(run_id, "replace" if has_data else "new")


def _find_run(session: Session, key: RunKey, mlip_id: int) -> Run | None:
    from glassbench.schema import Composition, Protocol
    from glassbench.service.repos import content_hash as params_hash

    stmt = (
        select(Run)
        .join(Composition, Composition.id == Run.composition_id)  # type: ignore[arg-type]
        .join(Protocol, Protocol.id == Run.protocol_id)  # type: ignore[arg-type]
        .where(
            Run.mlip_id == mlip_id,
            Composition.x == round(float(key.x), 6),
            Run.quench_rate_k_ps == float(key.quench_rate_k_ps),
            Run.seed == int(key.seed),
            Protocol.content_hash == params_hash({"kind": key.protocol_kind, **dict(key.protocol)}),
        )
    )
    return session.exec(stmt).first()


def finish_run(
    session: Session,
    run_id: int,
    *,
    source: str,
    content_hash: str | None,
    n_atoms: int | None,
    software: Mapping[str, Any] | None = None,
) -> None:
    """Mark the ingested run done with its provenance (the caller's commit makes it visible)."""
    runs.finish(
        session,
        run_id,
        source=source,
        content_hash=content_hash,
        n_atoms=n_atoms,
        software=software,
    )
