"""analysis versions, frame evaluations, frames' forces and energies; views v3

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 15:00:00.000000

- ``analysis``: named cutoff sets; row 1 is ``default``, the analysis made when the frames
  were stored (what every speciation, coordination and window row was until now).
- ``speciation``, ``coordination`` and ``window_stat`` gain ``analysis_id`` (existing rows:
  1, also the column default); it joins the primary key of the first two and the unique key
  of the third.
- ``frame.forces`` and ``frame.energy_ev``: the making MLIP's forces and energy, where known.
- ``frame_eval``: a frame evaluated by another MLIP (``glassbench compute energy``).
- ``property.method`` loses its 256-character limit: the method of elastic moduli computed
  from a pressure-relaxed cell is longer, and PostgreSQL refused it (``run meltquench
  --elastic`` failed there at revision 0002).
- Views v2 -> v3 (``VIEWS_V3``: the v2 views restricted to the default analysis, plus
  ``run_summary_by_analysis`` and ``cross_eval``).

Literals, not imports, for what this revision creates (see 0002).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

from glassbench.schema.views import create_views_sql, drop_views_sql
from glassbench.schema.views_v2 import VIEWS_V2
from glassbench.schema.views_v3 import VIEWS_V3

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_DEFAULT_CUTOFFS = '{"Na-O":3.1,"Na-S":3.6,"P-O":2.0,"P-P":2.5,"P-S":2.6,"S-S":2.5}'
_DEFAULT_DESCRIPTION = (
    "the analysis made when the frames were stored: the built-in cutoffs unless the ingest "
    "named others (each frame's coordination.cutoffs_json says which)"
)
_UNITS = (
    "unit IN ('P0', 'P1', 'P2', 'P3', 'P4', 'P1P', 'P3c', 'P_other', 'P2ES', 'PPchain', 'BS', "
    "'NBS', 'BO', 'NBO', 'free_S', 'free_O', 'over_S', 'over_O', 'S_in_chains', 'n_P', 'n_S', "
    "'n_O', 'n_Na')"
)
_SPECIATION = "frame_id, unit, count"
_COORDINATION = (
    "frame_id, na_n, na_cn_mean, na_cn_s_mean, na_cn_o_mean, na_cn_histogram_json, "
    "ss_fraction, ss_mean_length, ss_chains_json, cutoffs_json"
)


def _analysis_column() -> sa.Column[int]:
    return sa.Column("analysis_id", sa.Integer(), server_default=sa.text("1"), nullable=False)


def _speciation_table(name: str, with_analysis: bool) -> None:
    cols: list[sa.schema.SchemaItem] = [
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("unit", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.CheckConstraint(_UNITS, name=op.f("ck_speciation_unit")),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frame.id"], name=op.f("fk_speciation_frame_id_frame")
        ),
    ]
    key = ["frame_id", "unit"]
    if with_analysis:
        cols += [
            _analysis_column(),
            sa.ForeignKeyConstraint(
                ["analysis_id"], ["analysis.id"], name=op.f("fk_speciation_analysis_id_analysis")
            ),
        ]
        key.append("analysis_id")
    op.create_table(name, *cols, sa.PrimaryKeyConstraint(*key, name=op.f("pk_speciation")))


def _coordination_table(name: str, with_analysis: bool) -> None:
    cols: list[sa.schema.SchemaItem] = [
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("na_n", sa.Integer(), nullable=False),
        sa.Column("na_cn_mean", sa.Float(), nullable=True),
        sa.Column("na_cn_s_mean", sa.Float(), nullable=True),
        sa.Column("na_cn_o_mean", sa.Float(), nullable=True),
        sa.Column("na_cn_histogram_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("ss_fraction", sa.Float(), nullable=True),
        sa.Column("ss_mean_length", sa.Float(), nullable=True),
        sa.Column("ss_chains_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("cutoffs_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frame.id"], name=op.f("fk_coordination_frame_id_frame")
        ),
    ]
    key = ["frame_id"]
    if with_analysis:
        cols += [
            _analysis_column(),
            sa.ForeignKeyConstraint(
                ["analysis_id"],
                ["analysis.id"],
                name=op.f("fk_coordination_analysis_id_analysis"),
            ),
        ]
        key.append("analysis_id")
    op.create_table(name, *cols, sa.PrimaryKeyConstraint(*key, name=op.f("pk_coordination")))


def _rebuild_sqlite(table: str, columns: str, with_analysis: bool) -> None:
    """SQLite cannot change a primary key: copy the (leaf) table aside, recreate, copy back."""
    op.execute(f"CREATE TABLE _{table}_copy AS SELECT {columns} FROM {table}")
    op.drop_table(table)
    if table == "speciation":
        _speciation_table(table, with_analysis)
    else:
        _coordination_table(table, with_analysis)
    op.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _{table}_copy")
    op.drop_table(f"_{table}_copy")


def _key_with_analysis(table: str, key: list[str]) -> None:
    """PostgreSQL: add analysis_id (existing rows: 1) and put it into the primary key."""
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.add_column(_analysis_column())
        batch_op.create_foreign_key(
            batch_op.f(f"fk_{table}_analysis_id_analysis"), "analysis", ["analysis_id"], ["id"]
        )
    op.drop_constraint(op.f(f"pk_{table}"), table, type_="primary")
    op.create_primary_key(op.f(f"pk_{table}"), table, [*key, "analysis_id"])


def upgrade() -> None:
    for statement in drop_views_sql(VIEWS_V2):
        op.execute(statement)
    analysis = op.create_table(
        "analysis",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("cutoffs_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis")),
        sa.UniqueConstraint("name", name=op.f("uq_analysis_name")),
    )
    op.execute(
        analysis.insert().values(
            id=1,
            name="default",
            cutoffs_json=_DEFAULT_CUTOFFS,
            description=_DEFAULT_DESCRIPTION,
            created_at=sa.func.current_timestamp(),
        )
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # The row above took id 1 explicitly; the next analysis must not get it again.
        op.execute("SELECT setval(pg_get_serial_sequence('analysis', 'id'), 1)")
        _key_with_analysis("speciation", ["frame_id", "unit"])
        _key_with_analysis("coordination", ["frame_id"])
    else:
        _rebuild_sqlite("speciation", _SPECIATION, True)
        _rebuild_sqlite("coordination", _COORDINATION, True)
    with op.batch_alter_table("window_stat", schema=None) as batch_op:
        batch_op.add_column(_analysis_column())
        batch_op.create_foreign_key(
            batch_op.f("fk_window_stat_analysis_id_analysis"), "analysis", ["analysis_id"], ["id"]
        )
        batch_op.drop_constraint(batch_op.f("uq_window_stat_run_id_quantity"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_window_stat_run_id_analysis_id_quantity"),
            ["run_id", "analysis_id", "quantity"],
        )
    # `property` is a leaf: a batch copy (SQLite) is safe.
    with op.batch_alter_table("property", schema=None) as batch_op:
        batch_op.alter_column(
            "method",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=256),
            type_=sqlmodel.sql.sqltypes.AutoString(),
            existing_nullable=True,
        )
    # Plain ADD COLUMN (a batch copy of `frame` would orphan its children; see 0002).
    op.add_column("frame", sa.Column("forces", sa.LargeBinary(), nullable=True))
    op.add_column("frame", sa.Column("energy_ev", sa.Float(), nullable=True))
    op.create_table(
        "frame_eval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("mlip_id", sa.Integer(), nullable=False),
        sa.Column("n_atoms", sa.Integer(), nullable=False),
        sa.Column("energy_ev", sa.Float(), nullable=False),
        sa.Column("energy_per_atom_ev", sa.Float(), nullable=False),
        sa.Column("forces", sa.LargeBinary(), nullable=False),
        sa.Column("stress_gpa_json", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("dispersion", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("ref_energy_per_atom_ev", sa.Float(), nullable=True),
        sa.Column("energy_diff_per_atom_ev", sa.Float(), nullable=True),
        sa.Column("force_rmse_ev_a", sa.Float(), nullable=True),
        sa.Column("force_max_ev_a", sa.Float(), nullable=True),
        sa.Column("ref_source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frame.id"], name=op.f("fk_frame_eval_frame_id_frame")
        ),
        sa.ForeignKeyConstraint(["mlip_id"], ["mlip.id"], name=op.f("fk_frame_eval_mlip_id_mlip")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frame_eval")),
        sa.UniqueConstraint("frame_id", "mlip_id", name=op.f("uq_frame_eval_frame_id_mlip_id")),
    )
    with op.batch_alter_table("frame_eval", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_frame_eval_frame_id"), ["frame_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_frame_eval_mlip_id"), ["mlip_id"], unique=False)
    for statement in create_views_sql(VIEWS_V3):
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    kept = {
        "frame evaluations": "SELECT COUNT(*) FROM frame_eval",
        "analyses other than 'default'": "SELECT COUNT(*) FROM analysis WHERE id <> 1",
        "property methods over 256 characters": (
            "SELECT COUNT(*) FROM property WHERE LENGTH(method) > 256"
        ),
    }
    for what, sql in kept.items():
        if bind.execute(sa.text(sql)).scalar_one():
            # Revision 0002 has no place for them; dropping results silently is worse.
            raise RuntimeError(f"{what} exist; revision 0002 cannot hold them (delete them first)")
    for statement in drop_views_sql(VIEWS_V3):
        op.execute(statement)
    with op.batch_alter_table("frame_eval", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_frame_eval_mlip_id"))
        batch_op.drop_index(batch_op.f("ix_frame_eval_frame_id"))
    op.drop_table("frame_eval")
    op.drop_column("frame", "energy_ev")
    op.drop_column("frame", "forces")
    with op.batch_alter_table("property", schema=None) as batch_op:
        batch_op.alter_column(
            "method",
            existing_type=sqlmodel.sql.sqltypes.AutoString(),
            type_=sqlmodel.sql.sqltypes.AutoString(length=256),
            existing_nullable=True,
        )
    with op.batch_alter_table("window_stat", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("uq_window_stat_run_id_analysis_id_quantity"), type_="unique"
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_window_stat_run_id_quantity"), ["run_id", "quantity"]
        )
        batch_op.drop_constraint(batch_op.f("fk_window_stat_analysis_id_analysis"), "foreignkey")
        batch_op.drop_column("analysis_id")
    if bind.dialect.name == "postgresql":
        for table, key in (("speciation", ["frame_id", "unit"]), ("coordination", ["frame_id"])):
            op.drop_constraint(op.f(f"pk_{table}"), table, type_="primary")
            op.drop_constraint(op.f(f"fk_{table}_analysis_id_analysis"), table, "foreignkey")
            op.drop_column(table, "analysis_id")
            op.create_primary_key(op.f(f"pk_{table}"), table, key)
    else:
        _rebuild_sqlite("speciation", _SPECIATION, False)
        _rebuild_sqlite("coordination", _COORDINATION, False)
    op.drop_table("analysis")
    for statement in create_views_sql(VIEWS_V2):
        op.execute(statement)
