"""Run properties computed from the stored data: the one density estimator of glassbench,
and the one writer of elastic moduli.

Used by the ingests and by the live runner alike: a block mean of the thermo density over a
window at the end of the run, aggregated in SQL. :func:`store_elastic` writes the moduli of
the runner (``--elastic``) and of ``glassbench compute elastic`` alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlmodel import Session

from glassbench.schema import Thermo
from glassbench.service.repos import THERMO_COLUMNS, set_property

if TYPE_CHECKING:
    from glassbench.runners.elastic import ElasticResult

DENSITY_TAIL_FRACTION = 0.2
DENSITY_BLOCKS = 5


@dataclass(frozen=True)
class TailMean:
    value: float
    stderr: float | None
    n_rows: int
    n_blocks: int
    step_from: int
    step_to: int


def thermo_tail_mean(
    session: Session,
    run_id: int,
    column: str = "density_g_cm3",
    *,
    tail_fraction: float = DENSITY_TAIL_FRACTION,
    n_blocks: int = DENSITY_BLOCKS,
    step_from: int | None = None,
) -> TailMean | None:
    """Mean of a thermo column over a window at the end of its series.

    The window starts at ``step_from`` when given (the runner knows where its anneal starts),
    else it is the last ``tail_fraction`` of the step range (an ingested log's protocol is
    unknown). The stderr comes from the spread of ``n_blocks`` consecutive block means
    (consecutive MD samples are correlated, so the naive std/sqrt(n) would understate it).
    Aggregated in SQL: only ``n_blocks`` rows come back, however long the series.
    """
    if column not in THERMO_COLUMNS or column in ("step", "time_ps"):
        raise ValueError(f"not a thermo quantity: {column!r}")
    thermo: sa.Table = Thermo.__table__  # type: ignore[attr-defined]
    col = thermo.c[column]
    has = sa.and_(thermo.c.run_id == run_id, col.is_not(None))
    lo, hi = session.execute(
        sa.select(sa.func.min(thermo.c.step), sa.func.max(thermo.c.step)).where(has)
    ).one()
    if lo is None:
        return None
    lo, hi = int(lo), int(hi)
    if step_from is None:
        start = hi - math.floor((hi - lo) * tail_fraction)
    else:
        start = max(int(step_from), lo)
    if start > hi:
        return None
    span = hi - start + 1
    # Integer block index in [0, n_blocks): the same arithmetic on SQLite and PostgreSQL.
    # `//` renders integer floor division on both (`/` is true division in SQLAlchemy 2 and
    # PostgreSQL's CAST would then round where SQLite truncates).
    block = ((thermo.c.step - start) * n_blocks // span).label("b")
    rows = session.execute(
        sa.select(block, sa.func.avg(col), sa.func.count())
        .where(has, thermo.c.step >= start)
        .group_by(block)
        .order_by(block)
    ).all()
    means = np.array([float(r[1]) for r in rows])
    counts = np.array([int(r[2]) for r in rows])
    n = int(counts.sum())
    value = float((means * counts).sum() / n)
    stderr = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) >= 2 else None
    return TailMean(value, stderr, n, len(means), start, hi)


def store_density(
    session: Session,
    run_id: int,
    *,
    tail_fraction: float = DENSITY_TAIL_FRACTION,
    step_from: int | None = None,
    window: str | None = None,
) -> TailMean | None:
    """Set property ``density_g_cm3`` from the thermo series, if it has densities.

    The one density estimator of glassbench (runner and ingests alike): a block mean of the
    thermo density over a window at the end of the run (see :func:`thermo_tail_mean`); the
    window is written into the property's ``method`` and ``details``.
    """
    est = thermo_tail_mean(
        session, run_id, "density_g_cm3", tail_fraction=tail_fraction, step_from=step_from
    )
    if est is None:
        return None
    if window is None:
        window = f"the last {tail_fraction:.0%} of steps"
    set_property(
        session,
        run_id,
        "density_g_cm3",
        est.value,
        stderr=est.stderr,
        method=(
            f"mean of thermo density over {window} "
            f"({est.step_from}-{est.step_to}, {est.n_rows} rows); "
            f"stderr from {est.n_blocks} block means"
        ),
        details={
            "source": "thermo.density_g_cm3",
            "window": window,
            "tail_fraction": None if step_from is not None else tail_fraction,
            "step_from": est.step_from,
            "step_to": est.step_to,
            "n_rows": est.n_rows,
            "n_blocks": est.n_blocks,
        },
    )
    return est


def density_from(counts: Mapping[str, int] | None, volume_a3: float | None) -> float | None:
    """Density in g/cm3 of ``counts`` atoms in ``volume_a3``; None when it cannot be known."""
    from glassbench.chemistry import MASSES_AMU, density_g_cm3

    if counts is None or volume_a3 is None or volume_a3 <= 0:
        return None
    if any(c and el not in MASSES_AMU for el, c in counts.items()):
        return None
    return density_g_cm3({el: c for el, c in counts.items() if c}, volume_a3)


ELASTIC_PROPERTIES = ("bulk_modulus_gpa", "shear_modulus_gpa", "young_modulus_gpa", "poisson_ratio")
NOT_CONVERGED = " (relaxation NOT converged)"


def elastic_method(result: ElasticResult, prefix: str | None = None) -> str:
    """The ``property.method`` of elastic moduli: ``prefix`` (who computed them on what), the
    result's method, and NOT converged when any relaxation was not."""
    text = f"{prefix}; {result.method}" if prefix else result.method
    return text if result.converged else text + NOT_CONVERGED


def store_elastic(
    session: Session,
    run_id: int,
    result: ElasticResult,
    *,
    method: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Set the four elastic properties of a run (``ELASTIC_PROPERTIES``) from ``result``, each
    with its standard uncertainty; their values by name.

    ``method`` says who computed them on which structure (see :func:`elastic_method`);
    ``details`` (default: ``result.to_dict()``) is stored beside each. The caller owns the
    transaction: the four are written together or not at all.
    """
    text = elastic_method(result, method)
    info = result.to_dict() if details is None else dict(details)
    out: dict[str, float] = {}
    for name, (value, err) in result.moduli().items():
        set_property(session, run_id, name, value, stderr=err, method=text, details=info)
        out[name] = value
    return out
