"""Integrity checks behind ``glassbench db check``."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from glassbench.schema import RunStatus


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _done(sql: str) -> sa.TextClause:
    """``sql`` with its ``:done`` parameter bound to the status of a finished run."""
    return sa.text(sql).bindparams(done=RunStatus.DONE.value)


# (description, SQL returning offending rows: first column an id, second a detail)
_CHECKS: tuple[tuple[str, sa.TextClause], ...] = (
    (
        "run without MLIP/composition/protocol",
        sa.text(
            "SELECT r.id, 'dangling key' FROM run r LEFT JOIN mlip m ON m.id = r.mlip_id "
            "LEFT JOIN composition c ON c.id = r.composition_id "
            "LEFT JOIN protocol p ON p.id = r.protocol_id "
            "WHERE m.id IS NULL OR c.id IS NULL OR p.id IS NULL"
        ),
    ),
    (
        "frame without run",
        sa.text(
            "SELECT f.id, f.run_id FROM frame f LEFT JOIN run r ON r.id = f.run_id "
            "WHERE r.id IS NULL"
        ),
    ),
    (
        "thermo without run",
        sa.text(
            "SELECT t.run_id, t.step FROM thermo t LEFT JOIN run r ON r.id = t.run_id "
            "WHERE r.id IS NULL"
        ),
    ),
    (
        "speciation without frame",
        sa.text(
            "SELECT s.frame_id, s.unit FROM speciation s LEFT JOIN frame f ON f.id = s.frame_id "
            "WHERE f.id IS NULL"
        ),
    ),
    (
        "done run without a final frame",
        _done(
            "SELECT r.id, r.source FROM run r "
            "WHERE r.status = :done AND r.source = 'runner' AND NOT EXISTS "
            "(SELECT 1 FROM frame f WHERE f.run_id = r.id AND f.stage = 'final')"
        ),
    ),
    (
        # `ingest lammps --log` without --dump stores thermo only: a frameless LAMMPS run is valid
        "done run without any frame",
        _done(
            "SELECT r.id, r.source FROM run r WHERE r.status = :done AND r.source <> 'lammps' "
            "AND NOT EXISTS (SELECT 1 FROM frame f WHERE f.run_id = r.id)"
        ),
    ),
    (
        "done run without density",
        _done(
            "SELECT r.id, r.source FROM run r "
            "WHERE r.status = :done AND r.source = 'runner' AND NOT EXISTS "
            "(SELECT 1 FROM property p WHERE p.run_id = r.id AND p.name = 'density_g_cm3')"
        ),
    ),
    (
        "frame of a done run without speciation",
        _done(
            "SELECT f.id, f.run_id FROM frame f JOIN run r ON r.id = f.run_id "
            "WHERE r.status = :done AND f.stage <> 'strain' AND NOT EXISTS "
            "(SELECT 1 FROM speciation s WHERE s.frame_id = f.id)"
        ),
    ),
    (
        "thermo time not increasing with step",
        sa.text(
            "SELECT run_id, step FROM (SELECT run_id, step, time_ps, "
            "LAG(time_ps) OVER (PARTITION BY run_id ORDER BY step) AS prev FROM thermo) t "
            "WHERE prev IS NOT NULL AND time_ps IS NOT NULL AND time_ps < prev"
        ),
    ),
)


def check_database(engine: Engine, *, limit: int = 5) -> CheckReport:
    report = CheckReport()
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if bad:
                report.problems.append(f"foreign key violations: {len(bad)} (e.g. {bad[:limit]})")
            ok = conn.exec_driver_sql("PRAGMA quick_check").scalar()
            if ok != "ok":
                report.problems.append(f"sqlite quick_check: {ok}")
        for desc, sql in _CHECKS:
            rows = conn.execute(sql).fetchall()
            if rows:
                sample = ", ".join(str(tuple(r)) for r in rows[:limit])
                report.problems.append(f"{desc}: {len(rows)} (e.g. {sample})")
        for table in ("mlip", "run", "frame", "thermo", "speciation", "property", "experiment"):
            report.counts[table] = int(
                conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
            )
    return report
