"""The run selector: which stored runs a command over stored data works on.

One definition for ``compute elastic``, ``compute energy``, ``reanalyze`` and ``export``
(docs/stored-data.md): each criterion is a set of accepted values (empty: any), criteria
combine with AND. ``status`` defaults to ``done``: the other commands need a finished run's
final structure, and a running run's frames are still arriving.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from glassbench.errors import BadInput
from glassbench.schema.models import RUN_SOURCE, RUN_STATUS
from glassbench.schema.views import PROTOCOL_LABEL

# x and quench rates are stored floats: the selector matches them to this tolerance.
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RunSelector:
    """Criteria on runs; each field is a set of accepted values, empty for any.

    ``protocol`` matches a protocol's name, the start (at least 8 characters) of its content
    hash, or the label the views show a nameless protocol by (``external 0d52e2b2``).
    ``run_ids`` names runs directly.
    """

    mlip: tuple[str, ...] = ()
    x: tuple[float, ...] = ()
    quench_rate: tuple[float, ...] = ()
    seed: tuple[int, ...] = ()
    protocol: tuple[str, ...] = ()
    source: tuple[str, ...] = ()
    status: tuple[str, ...] = ("done",)
    run_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("mlip", "x", "quench_rate", "seed", "protocol", "source", "status", "run_ids"):
            value = getattr(self, name)
            if isinstance(value, str | int | float):
                object.__setattr__(self, name, (value,))
            else:
                object.__setattr__(self, name, tuple(value))
        for name, allowed in (("source", RUN_SOURCE), ("status", RUN_STATUS)):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad:
                raise BadInput(
                    f"unknown {name} {bad[0]!r} (one of: {', '.join(allowed)})", field=name
                )
        for name in ("x", "quench_rate"):
            if any(not math.isfinite(float(v)) for v in getattr(self, name)):
                raise BadInput("must be finite", field=name)

    def describe(self) -> str:
        """The criteria in one line, as ``--dry-run`` and "no runs match" print them."""
        parts = []
        for f in fields(self):
            values = getattr(self, f.name)
            if values:
                parts.append(
                    f"{f.name}={','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in values)}"
                )
        return " ".join(parts) or "all runs"

    def with_mlip(self, mlip: Sequence[str]) -> RunSelector:
        """The same criteria with the MLIP criterion replaced."""
        return RunSelector(**{**self.as_dict(), "mlip": tuple(mlip)})

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SelectedRun:
    """One run the selector matched, with its key and what it holds."""

    run_id: int
    mlip: str
    mlip_id: int
    x: float
    quench_rate_k_ps: float
    seed: int
    protocol: str
    protocol_id: int
    source: str
    status: str
    n_atoms: int | None
    n_frames: int = field(default=0)

    def label(self) -> str:
        """``run 12 (MP0, x=1, 5 K/ps, seed 1, study)``: how messages name a run."""
        return (
            f"run {self.run_id} ({self.mlip}, x={self.x:g}, {self.quench_rate_k_ps:g} K/ps, "
            f"seed {self.seed}, {self.protocol})"
        )


def _close(column: sa.ColumnElement[Any], values: Sequence[float]) -> sa.ColumnElement[bool]:
    return sa.or_(*(sa.func.abs(column - float(v)) <= _TOLERANCE for v in values))


def select_runs(
    engine: Engine, selector: RunSelector, *, mlip_field: str = "mlip"
) -> list[SelectedRun]:
    """The runs ``selector`` matches, in run id order, with their frame counts.

    Unknown MLIP or protocol names are bad input (``field`` ``mlip_field`` / ``protocol``): a
    typo would otherwise look like "no runs match". ``mlip_field`` is ``run_mlip`` where
    ``mlip`` names another MLIP (the one that computes, in ``compute``).
    """
    r = sa.table(
        "run",
        sa.column("id"),
        sa.column("mlip_id"),
        sa.column("composition_id"),
        sa.column("quench_rate_k_ps"),
        sa.column("seed"),
        sa.column("protocol_id"),
        sa.column("source"),
        sa.column("status"),
        sa.column("n_atoms"),
    )
    m = sa.table("mlip", sa.column("id"), sa.column("name"))
    c = sa.table("composition", sa.column("id"), sa.column("x"))
    pt = sa.table(
        "protocol", sa.column("id"), sa.column("name"), sa.column("kind"), sa.column("content_hash")
    )
    with engine.connect() as conn:
        if selector.mlip:
            known = set(
                conn.execute(sa.select(m.c.name).where(m.c.name.in_(selector.mlip))).scalars()
            )
            missing = [n for n in selector.mlip if n not in known]
            if missing:
                raise BadInput(
                    f"no MLIP named {missing[0]!r} (see `glassbench mlip list`)",
                    field=mlip_field,
                )
        protocol_ids: list[int] = []
        for wanted in selector.protocol:
            cond = pt.c.name == wanted
            kind, _, prefix = wanted.rpartition(" ")
            if len(prefix) >= 8 and all(ch in "0123456789abcdef" for ch in prefix):
                # a hash prefix, or the label the views show a nameless protocol by
                by_hash = pt.c.content_hash.startswith(prefix)
                cond = sa.or_(cond, by_hash if not kind else sa.and_(by_hash, pt.c.kind == kind))
            ids = list(conn.execute(sa.select(pt.c.id).where(cond)).scalars())
            if not ids:
                raise BadInput(
                    f"no protocol named {wanted!r} (nor a content hash starting so)",
                    field="protocol",
                )
            protocol_ids += [int(i) for i in ids]
        conds: list[sa.ColumnElement[bool]] = []
        if selector.mlip:
            conds.append(m.c.name.in_(selector.mlip))
        if selector.x:
            conds.append(_close(c.c.x, selector.x))
        if selector.quench_rate:
            conds.append(_close(r.c.quench_rate_k_ps, selector.quench_rate))
        if selector.seed:
            conds.append(r.c.seed.in_([int(s) for s in selector.seed]))
        if selector.protocol:
            conds.append(r.c.protocol_id.in_(protocol_ids))
        if selector.source:
            conds.append(r.c.source.in_(selector.source))
        if selector.status:
            conds.append(r.c.status.in_(selector.status))
        if selector.run_ids:
            conds.append(r.c.id.in_([int(i) for i in selector.run_ids]))
        frames = sa.text("(SELECT COUNT(*) FROM frame f WHERE f.run_id = run.id)")
        query = (
            sa.select(
                r.c.id,
                m.c.name,
                r.c.mlip_id,
                c.c.x,
                r.c.quench_rate_k_ps,
                r.c.seed,
                sa.literal_column(PROTOCOL_LABEL),
                r.c.protocol_id,
                r.c.source,
                r.c.status,
                r.c.n_atoms,
                frames,
            )
            .select_from(
                r.join(m, m.c.id == r.c.mlip_id)
                .join(c, c.c.id == r.c.composition_id)
                .join(pt.alias("pt"), sa.literal_column("pt.id") == r.c.protocol_id)
            )
            .where(*conds)
            .order_by(r.c.id)
        )
        return [
            SelectedRun(
                run_id=int(row[0]),
                mlip=str(row[1]),
                mlip_id=int(row[2]),
                x=float(row[3]),
                quench_rate_k_ps=float(row[4]),
                seed=int(row[5]),
                protocol=str(row[6]),
                protocol_id=int(row[7]),
                source=str(row[8]),
                status=str(row[9]),
                n_atoms=None if row[10] is None else int(row[10]),
                n_frames=int(row[11]),
            )
            for row in conn.execute(query)
        ]
