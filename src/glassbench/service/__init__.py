"""Service layer: engine/session factory, unit of work, repositories, migrations API."""

from glassbench.service.db import describe, is_sqlite, make_engine, unit_of_work

__all__ = ["describe", "is_sqlite", "make_engine", "unit_of_work"]
