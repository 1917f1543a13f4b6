"""Database administration as functions: what ``glassbench db`` runs.

Migrations (upgrade, a guarded downgrade, the current revision) and the schema-and-integrity
check, with glassbench's errors: a bad revision is ``BadInput`` on the field ``revision``, an
unreachable database a ``Failure`` naming it (password masked).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from glassbench.errors import BadInput, Failure, first_line

RESULT_TABLES = ("mlip", "run", "thermo", "frame", "experiment", "crystal_volume")


class PopulatedDatabase(BadInput):
    """A downgrade of a database that holds results, without ``force``."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        super().__init__(
            f"the database holds {rows} rows of results; a downgrade may drop them "
            "(back it up, then pass force=True)",
            field="revision",
        )


@dataclass
class DatabaseCheck:
    """``problems`` is empty when the schema matches the models and the data are consistent."""

    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@contextlib.contextmanager
def _errors(engine: Engine) -> Iterator[None]:
    from alembic.util import CommandError

    from glassbench.service.db import describe

    try:
        yield
    except CommandError as exc:
        raise BadInput(str(exc), field="revision") from None
    except OperationalError as exc:
        raise Failure(f"database error on {describe(engine)}: {first_line(exc)}") from None


def upgrade_schema(engine: Engine, revision: str = "head") -> str | None:
    """Migrate the database up to ``revision``; the revision it is at afterwards.

    A database written by a newer glassbench is refused (``Failure``: upgrade glassbench). At
    head, views that are missing or differ from this code's are re-created
    (:func:`upgrade_report` says which).
    """
    return upgrade_report(engine, revision)[0]


def upgrade_report(engine: Engine, revision: str = "head") -> tuple[str | None, list[str]]:
    """:func:`upgrade_schema`, and the names of the views it re-created."""
    from glassbench.service.db import describe
    from glassbench.service.migrations import (
        current_revision,
        head_revision,
        refuse_newer,
        restore_views,
        upgrade,
    )

    with _errors(engine):
        refuse_newer(engine, current_revision(engine))
        upgrade(engine, revision)
        now = current_revision(engine)
        try:
            restored = restore_views(engine) if now == head_revision(engine) else []
        except sa.exc.DBAPIError as exc:  # e.g. a view of the user's own depends on one
            raise Failure(
                f"cannot re-create the views of {describe(engine)}: {first_line(exc)}"
            ) from None
        return now, restored


def downgrade_schema(engine: Engine, revision: str, *, force: bool = False) -> str | None:
    """Migrate down to ``revision`` (``base`` removes everything); the revision afterwards.

    A database that holds results is refused (:class:`PopulatedDatabase`) unless ``force``:
    a downgrade can drop tables.
    """
    from glassbench.service.migrations import current_revision, downgrade, refuse_newer

    with _errors(engine):
        refuse_newer(engine, current_revision(engine))
    if not force:
        rows = result_rows(engine)
        if rows:
            raise PopulatedDatabase(rows)
    with _errors(engine):
        downgrade(engine, revision)
        return current_revision(engine)


def result_rows(engine: Engine) -> int:
    """Rows in the tables that hold results (0 when the schema does not exist yet)."""
    names = set(sa.inspect(engine).get_table_names())
    total = 0
    with engine.connect() as c:
        for table in RESULT_TABLES:
            if table in names:
                total += int(c.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
    return total


def schema_revisions(engine: Engine) -> tuple[str | None, str | None]:
    """(the database's revision, the code's head revision); None for an empty database."""
    from glassbench.service.migrations import current_revision, head_revision

    with _errors(engine):
        current = current_revision(engine)
    return current, head_revision(engine)


def schema_state(engine: Engine) -> str:
    """The database's revision in words: ``0003 (up to date)``, ``base (empty) (head is
    0003)``, ``0099 (newer than this glassbench, head 0003: upgrade glassbench)``."""
    from glassbench.service.migrations import is_newer

    current, head = schema_revisions(engine)
    if current == head:
        return f"{current} (up to date)"
    if is_newer(engine, current):
        return f"{current} (newer than this glassbench, head {head}: upgrade glassbench)"
    return f"{current or 'base (empty)'} (head is {head}: run `glassbench db upgrade`)"


def check_database(engine: Engine) -> DatabaseCheck:
    """The schema against the models (no drift) and the integrity checks of the data."""
    from glassbench.service.integrity import check_database as check_data
    from glassbench.service.migrations import require_schema, schema_drift, view_problems

    require_schema(engine)
    result = DatabaseCheck()
    drift = schema_drift(engine)
    if drift:
        result.problems.append(f"schema differs from the models: {drift[:5]}")
    result.problems += view_problems(engine)
    report = check_data(engine)
    result.problems += report.problems
    result.counts = report.counts
    return result
