"""Streaming results into the database: one transaction per ingested run.

Every writer takes the caller's session and never commits, so a whole ingest (run row, thermo,
frames, analyses, properties) is one transaction: if a reader finds bad data half-way through a
1 GB file, the rollback removes the run and everything stored under it.

The pieces, shared by the file ingests (``ingest/usecases.py``) and the live runner:

- ``ingest/slots.py``: :class:`~glassbench.ingest.slots.RunKey`, ``open_run`` (idempotency)
  and ``finish_run``;
- ``ingest/thermo.py``: ``ThermoWriter`` / ``store_thermo``, batched bulk inserts;
- ``ingest/frames.py``: ``store_frames`` / ``add_frames``, validated, analysed, batched;
- ``ingest/properties.py``: ``store_density``, the one density estimator.

This module puts them together for a file: :func:`ingest_run` runs a reader's ``body`` inside
one transaction and returns an :class:`IngestResult`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session

from glassbench.chemistry import per_formula_unit
from glassbench.errors import BadInput
from glassbench.ingest.properties import TailMean, store_density
from glassbench.ingest.slots import InvalidData, RunExists, RunKey, finish_run, open_run


@dataclass
class WriteSummary:
    """What an ingest body wrote (filled in by the body)."""

    n_thermo: int = 0
    n_frames: int = 0
    n_atoms: int | None = None
    software: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did: ``action`` is ``new``, ``replace`` or ``unchanged`` (nothing written)."""

    run_id: int
    action: Literal["new", "replace", "unchanged"]
    n_thermo: int = 0
    n_frames: int = 0
    n_atoms: int | None = None
    density: TailMean | None = None
    key: RunKey | None = None
    files: tuple[str, ...] = ()

    def describe(self) -> str:
        """The one line ``glassbench ingest`` prints."""
        names = " + ".join(self.files)
        key = self.key.describe() if self.key is not None else ""
        if self.action == "unchanged":
            return (
                f"{names}: already ingested as run {self.run_id} ({key}), "
                "same content; nothing to do"
            )
        verb = "replaced" if self.action == "replace" else "ingested"
        density = ""
        if self.density is not None:
            d = self.density
            err = f" +- {d.stderr:.4f}" if d.stderr is not None else ""
            density = f", density {d.value:.4f}{err} g/cm3"
        return (
            f"{names}: run {self.run_id} {verb} ({key}): {self.n_thermo} thermo "
            f"rows, {self.n_frames} frames{density}"
        )


class RunConflict(BadInput):
    """The run key holds other data and ``replace`` was not given (``summary`` says which)."""

    def __init__(self, summary: str, *, source: str) -> None:
        self.summary = summary
        super().__init__(f"{summary}; pass replace=True to replace it", source=source)


def content_hash_of(paths: Sequence[Any], options: Mapping[str, Any]) -> str:
    """sha256 over the input files and the options that change how they are read."""
    import hashlib

    from glassbench.hashing import sha256_file
    from glassbench.service.repos import canonical_json

    h = hashlib.sha256()
    for p in paths:
        h.update(sha256_file(p).encode())
    h.update(canonical_json(options).encode())
    return h.hexdigest()


def ingest_run(
    engine: sa.engine.Engine,
    key: RunKey,
    *,
    source: str,
    content_hash: str,
    replace: bool,
    body: Callable[[Session, int], WriteSummary],
    data_source: str,
    files: Sequence[Any] = (),
    software: Mapping[str, Any] | None = None,
) -> IngestResult:
    """One transaction: resolve the run, let ``body`` stream the data, add the density.

    ``body(session, run_id)`` writes thermo and frames; anything it raises rolls everything
    back, the run row included. :class:`InvalidData` and unknown MLIPs become ``BadInput``
    (``data_source`` names the file for data errors); other data under the key without
    ``replace`` is a :class:`RunConflict`.
    """
    from glassbench.service import unit_of_work
    from glassbench.service.repos import NotFound

    names = tuple(str(p) for p in files)
    try:
        with unit_of_work(engine) as session:
            try:
                slot = open_run(
                    session, key, source=source, content_hash=content_hash, replace=replace
                )
            except NotFound as exc:
                raise BadInput(str(exc).strip("'\""), field="mlip") from None
            except RunExists as exc:
                raise RunConflict(
                    f"run {exc.run_id} ({key.describe()}) already holds other data "
                    f"(source {exc.source}, content sha256 {str(exc.stored_hash)[:12]})",
                    source=data_source,
                ) from None
            if slot.action == "unchanged":
                return IngestResult(slot.run_id, "unchanged", key=key, files=names)
            written = body(session, slot.run_id)
            density = store_density(session, slot.run_id)
            finish_run(
                session,
                slot.run_id,
                source=source,
                content_hash=content_hash,
                n_atoms=written.n_atoms,
                software={**(software or {}), **written.software},
            )
    except InvalidData as exc:
        raise BadInput(exc.message, source=data_source, where=exc.where) from None
    return IngestResult(
        slot.run_id,
        slot.action,
        n_thermo=written.n_thermo,
        n_frames=written.n_frames,
        n_atoms=written.n_atoms,
        density=density,
        key=key,
        files=names,
    )


def validate_key(key: RunKey) -> None:
    """Check a run key's values before any file is read."""
    q = key.quench_rate_k_ps
    if not math.isfinite(q) or q <= 0:
        raise BadInput(f"must be a positive number of K/ps, got {q:g}", field="quench_rate_k_ps")
    try:
        per_formula_unit(key.x)
    except ValueError as exc:
        raise BadInput(str(exc), field="x") from None
    if not -(2**63) <= key.seed < 2**63:
        raise BadInput("out of range", field="seed")


@contextlib.contextmanager
def progress_bar(
    total: float | None, *, unit: str, desc: str | None = None, enabled: bool | None = None
) -> Iterator[Callable[[int], object]]:
    """:func:`glassbench.progress.make_bar` for the readers, which take its ``update``."""
    from glassbench.progress import make_bar

    with make_bar(total, unit=unit, desc=desc, enabled=enabled, leave=False) as bar:
        yield bar.update
