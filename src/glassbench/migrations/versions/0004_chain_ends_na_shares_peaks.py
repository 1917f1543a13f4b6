"""P-P chain ends, Na-S share and g(r) peaks, long S-S chains; views v4

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09 10:00:00.000000

- ``speciation.unit`` accepts ``PPend`` (a P with one P-P bond in a P-P cluster of three or
  more P: a chain end, which P1P counted before; docs/speciation.md).
- ``coordination`` gains ``na_s_share``, ``na_s_peak_a``, ``na_o_peak_a`` and
  ``ss_long_share`` (nullable: rows analysed before this revision have none).
- ``window_stat.quantity`` accepts ``ppend``, ``na_s_share``, ``na_s_peak``, ``na_o_peak`` and
  ``ss_long_share``.
- Views v3 -> v4 (``VIEWS_V4``: ``frame_fractions``, ``run_detail`` and
  ``run_summary_by_analysis`` gain ``ppend`` and the four coordination quantities, with their
  ``_stderr`` and ``_final`` companions in ``run_detail``; ``ppend`` is NULL, not 0, for a
  frame analysed before this revision). ``run_summary`` is unchanged.

Stored counts are not recomputed: frames analysed before this revision keep them (their P1P
still includes chain ends) until ``glassbench reanalyze`` computes them under a new analysis.

Literals, not imports, for what this revision creates (see 0002).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from glassbench.errors import BadInput
from glassbench.schema.views import VIEWS_V4, create_views_sql, drop_views_sql
from glassbench.schema.views_v3 import VIEWS_V3

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_UNITS_V3 = (
    "unit IN ('P0', 'P1', 'P2', 'P3', 'P4', 'P1P', 'P3c', 'P_other', 'P2ES', 'PPchain', 'BS', "
    "'NBS', 'BO', 'NBO', 'free_S', 'free_O', 'over_S', 'over_O', 'S_in_chains', 'n_P', 'n_S', "
    "'n_O', 'n_Na')"
)
_UNITS_V4 = (
    "unit IN ('P0', 'P1', 'P2', 'P3', 'P4', 'P1P', 'PPend', 'P3c', 'P_other', 'P2ES', "
    "'PPchain', 'BS', 'NBS', 'BO', 'NBO', 'free_S', 'free_O', 'over_S', 'over_O', "
    "'S_in_chains', 'n_P', 'n_S', 'n_O', 'n_Na')"
)
_QUANTITIES_V3 = (
    "quantity IN ('p0', 'p1', 'p2', 'p3', 'p4', 'p1p', 'p1_incl_p1p', 'p3c', 'p_other', "
    "'p2es', 'ppchain', 'bs', 'nbs', 'bo', 'nbo', 'free_s', 'free_o', 'over_s', 'over_o', "
    "'na_cn', 'na_cn_s', 'na_cn_o', 'ss_fraction', 'ss_mean_length')"
)
_QUANTITIES_V4 = (
    "quantity IN ('p0', 'p1', 'p2', 'p3', 'p4', 'p1p', 'ppend', 'p1_incl_p1p', 'p3c', "
    "'p_other', 'p2es', 'ppchain', 'bs', 'nbs', 'bo', 'nbo', 'free_s', 'free_o', 'over_s', "
    "'over_o', 'na_cn', 'na_cn_s', 'na_cn_o', 'ss_fraction', 'ss_mean_length', 'na_s_share', "
    "'na_s_peak', 'na_o_peak', 'ss_long_share')"
)
_COORDINATION_COLUMNS = ("na_s_share", "na_s_peak_a", "na_o_peak_a", "ss_long_share")
_NEW_QUANTITIES = "'ppend', 'na_s_share', 'na_s_peak', 'na_o_peak', 'ss_long_share'"


def _check(table: str, name: str, condition: str) -> None:
    # `speciation` and `window_stat` are leaves (no foreign key points at them): SQLite's batch
    # copy is safe for them, and on PostgreSQL batch mode is a plain ALTER.
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f(f"ck_{table}_{name}"), type_="check")
        batch_op.create_check_constraint(batch_op.f(f"ck_{table}_{name}"), condition)


def upgrade() -> None:
    for statement in drop_views_sql(VIEWS_V3):
        op.execute(statement)
    # Plain ADD COLUMN: nullable, so no copy of the table on either engine.
    for column in _COORDINATION_COLUMNS:
        op.add_column("coordination", sa.Column(column, sa.Float(), nullable=True))
    _check("speciation", "unit", _UNITS_V4)
    _check("window_stat", "quantity", _QUANTITIES_V4)
    for statement in create_views_sql(VIEWS_V4):
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    filled = " OR ".join(f"{c} IS NOT NULL" for c in _COORDINATION_COLUMNS)
    kept = {
        "speciation rows of PPend": "SELECT COUNT(*) FROM speciation WHERE unit = 'PPend'",
        "window statistics of ppend, na_s_share, na_s_peak, na_o_peak or ss_long_share": (
            f"SELECT COUNT(*) FROM window_stat WHERE quantity IN ({_NEW_QUANTITIES})"
        ),
        "coordination rows with na_s_share, na_s_peak_a, na_o_peak_a or ss_long_share": (
            f"SELECT COUNT(*) FROM coordination WHERE {filled}"
        ),
    }
    for what, sql in kept.items():
        if bind.execute(sa.text(sql)).scalar_one():
            # Revision 0003 has no place for them; dropping results silently is worse. A
            # refusal of the revision asked for (exit 2), raised before anything changed.
            raise BadInput(
                f"{what} exist; revision 0003 cannot hold them (delete them first)",
                field="revision",
            )
    for statement in drop_views_sql(VIEWS_V4):
        op.execute(statement)
    _check("window_stat", "quantity", _QUANTITIES_V3)
    _check("speciation", "unit", _UNITS_V3)
    for column in reversed(_COORDINATION_COLUMNS):
        op.drop_column("coordination", column)
    for statement in create_views_sql(VIEWS_V3):
        op.execute(statement)
