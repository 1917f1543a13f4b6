"""window statistics, protocol names, the production stage; views v2

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00.000000

- ``window_stat``: per-run means and block-average errors over the production window.
- ``protocol.name``: a protocol's human name (nullable: older protocols have none).
- ``frame.stage`` accepts ``production``.
- Views v1 -> v2 (``run_detail`` shows window means, errors, final-frame values and the
  protocol; ``run_summary`` gains ``protocol`` after ``seed``).

The stage vocabularies and the quantity list are literals here, not imports: a migration
must keep creating what it created when it was released.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

from glassbench.schema.views import create_views_sql, drop_views_sql
from glassbench.schema.views_v1 import VIEWS_V1
from glassbench.schema.views_v2 import VIEWS_V2

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_STAGES_V1 = "stage IN ('initial', 'melt', 'quench', 'anneal', 'final', 'strain', 'other')"
_STAGES_V2 = (
    "stage IN ('initial', 'melt', 'quench', 'anneal', 'production', 'final', 'strain', 'other')"
)
_QUANTITIES = (
    "quantity IN ('p0', 'p1', 'p2', 'p3', 'p4', 'p1p', 'p1_incl_p1p', 'p3c', 'p_other', "
    "'p2es', 'ppchain', 'bs', 'nbs', 'bo', 'nbo', 'free_s', 'free_o', 'over_s', 'over_o', "
    "'na_cn', 'na_cn_s', 'na_cn_o', 'ss_fraction', 'ss_mean_length')"
)
_FRAME_COLUMNS = (
    "id, run_id, stage, step, time_ps, temperature_k, n_atoms, cell_json, pbc, numbers, positions"
)


def _recreate_frame_sqlite(stage_check: str) -> None:
    """Rebuild ``frame`` with another stage CHECK, keeping every row and id.

    SQLite cannot alter a CHECK, and Alembic's batch copy (copy, drop, rename) fails here:
    dropping ``frame`` orphans the speciation and coordination rows, and with foreign keys
    enforced (they are, and the pragma cannot be changed inside the migration's transaction)
    a rename never re-validates them. So: copy the rows aside, drop, create, and insert them
    back under deferred foreign keys; each insert re-validates its children, and the check
    at commit finds nothing orphaned.
    """
    op.execute("PRAGMA defer_foreign_keys = ON")
    op.execute(f"CREATE TABLE _frame_copy AS SELECT {_FRAME_COLUMNS} FROM frame")
    op.drop_table("frame")
    op.create_table(
        "frame",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("stage", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("time_ps", sa.Float(), nullable=True),
        sa.Column("temperature_k", sa.Float(), nullable=True),
        sa.Column("n_atoms", sa.Integer(), nullable=False),
        sa.Column("cell_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("pbc", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("numbers", sa.LargeBinary(), nullable=False),
        sa.Column("positions", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(stage_check, name=op.f("ck_frame_stage")),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_frame_run_id_run")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frame")),
        sa.UniqueConstraint("run_id", "step", name=op.f("uq_frame_run_id_step")),
    )
    op.execute(
        f"INSERT INTO frame ({_FRAME_COLUMNS}) SELECT {_FRAME_COLUMNS} FROM _frame_copy ORDER BY id"
    )
    op.drop_table("_frame_copy")
    op.create_index(op.f("ix_frame_run_id"), "frame", ["run_id"], unique=False)


def _set_stage_check(stage_check: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _recreate_frame_sqlite(stage_check)
        return
    op.drop_constraint(op.f("ck_frame_stage"), "frame", type_="check")
    op.create_check_constraint(op.f("ck_frame_stage"), "frame", stage_check)


def upgrade() -> None:
    for statement in drop_views_sql(VIEWS_V1):
        op.execute(statement)
    with op.batch_alter_table("protocol", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
    op.create_table(
        "window_stat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.Column("stderr", sa.Float(), nullable=True),
        sa.Column("n_frames", sa.Integer(), nullable=False),
        sa.Column("n_blocks", sa.Integer(), nullable=False),
        sa.Column("block_frames", sa.Integer(), nullable=False),
        sa.Column("step_from", sa.Integer(), nullable=False),
        sa.Column("step_to", sa.Integer(), nullable=False),
        sa.CheckConstraint(_QUANTITIES, name=op.f("ck_window_stat_quantity")),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_window_stat_run_id_run")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_window_stat")),
        sa.UniqueConstraint("run_id", "quantity", name=op.f("uq_window_stat_run_id_quantity")),
    )
    with op.batch_alter_table("window_stat", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_window_stat_run_id"), ["run_id"], unique=False)
    _set_stage_check(_STAGES_V2)
    for statement in create_views_sql(VIEWS_V2):
        op.execute(statement)


def downgrade() -> None:
    n = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM frame WHERE stage = 'production'"))
    if n.scalar_one():
        # Relabelling them would silently change what the frames say; refuse instead.
        raise RuntimeError(
            "frames with stage 'production' exist; revision 0001 does not allow that stage "
            "(delete those runs' data first)"
        )
    for statement in drop_views_sql(VIEWS_V2):
        op.execute(statement)
    _set_stage_check(_STAGES_V1)
    with op.batch_alter_table("window_stat", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_window_stat_run_id"))
    op.drop_table("window_stat")
    # A plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy of `protocol` would
    # orphan the runs that reference it, as for `frame` above.
    op.drop_column("protocol", "name")
    for statement in create_views_sql(VIEWS_V1):
        op.execute(statement)
