"""SQL views: the documented surface for ad hoc queries.

The SQL is portable between SQLite and PostgreSQL (window functions, CASE, CTEs only).
Each released set of views is frozen under a version name because migrations import it:
``VIEWS_V1``, ``VIEWS_V2`` and ``VIEWS_V3`` live, self-contained, in
:mod:`glassbench.schema.views_v1`, :mod:`glassbench.schema.views_v2` and
:mod:`glassbench.schema.views_v3`; ``VIEWS_V4`` is built here from the current vocabulary and
is frozen in turn once a ``VIEWS_V5`` appears.

Every view but ``run_summary_by_analysis`` and ``cross_eval`` shows the ``default`` analysis
(``analysis_id = 1``: the cutoffs the frames were stored with); other analyses
(``glassbench reanalyze``) appear only in ``run_summary_by_analysis``.

- ``run_final_frame``: the frame that stands for a run's final structure (stage ``final``
  if present, otherwise the last non-strain frame).
- ``frame_fractions``: unit fractions per analysed frame (P units over all P, anion classes
  over all S+O). A fraction over a unit of ``LATER_UNITS`` (``ppend``) is NULL for a frame
  analysed before that unit existed (no row for it), not 0.
- ``run_detail``: one row per run with keys, the protocol's name, properties and structure.
  A run with window statistics (``window_stat``, written at the end of a run by
  :func:`glassbench.ingest.window.store_window_stats`) shows the window means under the
  quantity's column (``p0``, ..., ``na_cn``, ``ss_mean_length``, ``na_s_share``, ...), their
  block-average standard errors as ``<q>_stderr`` and the number of window frames as
  ``window_frames``; a run without any (ingested, or finished before windows existed) shows
  its final-frame values there, with NULL errors. ``<q>_final`` is always the final frame's
  value.
- ``run_summary``: the contract subset of ``run_detail`` (docs/architecture.md, "Views").
- ``run_value``: long format (run, property, value) of every comparable quantity of done runs.
- ``mlip_mae``: one row per MLIP x property: n, MAE and mean signed error against experiment,
  seeds averaged first.
- ``run_summary_by_analysis``: one row per run and analysis under which its final frame was
  analysed: the run's key, the analysis's name and cutoffs, and each windowed quantity (the
  window mean of that analysis where the run has one, else the final frame's value).
- ``cross_eval``: one row per frame evaluated by an MLIP (``frame_eval``): the run that made
  the frame, the evaluating MLIP, energy per atom and its difference from the making MLIP's,
  force RMSE and maximum difference.
"""

from __future__ import annotations

from glassbench.schema.models import (
    ANION_CLASSES,
    COORDINATION_COLUMNS,
    FRACTION_PROPERTIES,
    LATER_UNITS,
    P_CLASSES,
    RUN_PROPERTIES,
    SPECIATION_FRACTIONS,
    WINDOW_QUANTITIES,
)
from glassbench.schema.views_v1 import VIEWS_V1
from glassbench.schema.views_v2 import VIEWS_V2
from glassbench.schema.views_v3 import VIEWS_V3

__all__ = [
    "CURRENT_VIEWS",
    "MLIP_MAE_COLUMNS",
    "RUN_SUMMARY_COLUMNS",
    "VIEWS_V1",
    "VIEWS_V2",
    "VIEWS_V3",
    "VIEWS_V4",
    "create_views_sql",
    "drop_views_sql",
]

_FRACTIONS = SPECIATION_FRACTIONS
# The default analysis (schema.models.DEFAULT_ANALYSIS_ID), a literal in the SQL below.
_DEFAULT = 1


def _count(units: tuple[str, ...]) -> str:
    names = ", ".join(f"'{u}'" for u in units)
    if all(u in LATER_UNITS for u in units):
        # No ELSE: the sum is NULL for a frame with no row of these units (analysed before
        # they existed), as ingest/window.py's fractions are.
        return f"SUM(CASE WHEN s.unit IN ({names}) THEN s.count END)"
    return f"SUM(CASE WHEN s.unit IN ({names}) THEN s.count ELSE 0 END)"


def _fraction_columns() -> list[str]:
    cols = [
        f"{_count(P_CLASSES)} AS n_p",
        f"{_count(ANION_CLASSES)} AS n_anion",
        f"{_count(('S_in_chains',))} AS s_in_chains",
    ]
    for name, (units, denom) in _FRACTIONS.items():
        total = _count(P_CLASSES) if denom == "n_p" else _count(ANION_CLASSES)
        cols.append(f"CAST({_count(units)} AS DOUBLE PRECISION) / NULLIF({total}, 0) AS {name}")
    return cols


def _frame_fractions_sql() -> str:
    cols = ["s.frame_id AS frame_id", *_fraction_columns()]
    return (
        "SELECT " + ",\n  ".join(cols) + "\nFROM speciation s "
        f"WHERE s.analysis_id = {_DEFAULT} GROUP BY s.frame_id"
    )


def _final_fractions_sql(by_analysis: bool = False) -> str:
    # Aggregates only the final frame's rows: a join with frame_fractions would group the
    # speciation of every frame of every run before picking one per run.
    if by_analysis:
        cols = ["rf.run_id AS run_id", "s.analysis_id AS analysis_id", *_fraction_columns()]
        return (
            "SELECT " + ",\n    ".join(cols) + "\n  FROM run_final_frame rf "
            "JOIN speciation s ON s.frame_id = rf.frame_id GROUP BY rf.run_id, s.analysis_id"
        )
    cols = ["rf.run_id AS run_id", *_fraction_columns()]
    return (
        "SELECT " + ",\n    ".join(cols) + "\n  FROM run_final_frame rf "
        f"JOIN speciation s ON s.frame_id = rf.frame_id AND s.analysis_id = {_DEFAULT} "
        "GROUP BY rf.run_id"
    )


_RUN_FINAL_FRAME = """
SELECT run_id, frame_id FROM (
  SELECT f.run_id AS run_id, f.id AS frame_id,
         ROW_NUMBER() OVER (
           PARTITION BY f.run_id
           ORDER BY CASE WHEN f.stage = 'final' THEN 0 ELSE 1 END, f.step DESC
         ) AS rn
  FROM frame f
  WHERE f.stage <> 'strain'
) ranked
WHERE rn = 1
"""

# The final frame's value of each windowed quantity, as an expression of run_detail's joins.
_FINAL_VALUE = {
    **{q: f"ff.{q}" for q in _FRACTIONS},
    **{q: f"co.{col}" for q, col in COORDINATION_COLUMNS.items()},
}
# A protocol stored without a name is shown by its kind and the start of its content hash:
# stable across databases (an id is not) and distinct for distinct parameters.
PROTOCOL_LABEL = "COALESCE(pt.name, pt.kind || ' ' || SUBSTR(pt.content_hash, 1, 8))"


def _window_sql(by_analysis: bool = False) -> str:
    cols = ",\n    ".join(
        f"MAX(CASE WHEN w.quantity = '{q}' THEN w.mean END) AS {q}, "
        f"MAX(CASE WHEN w.quantity = '{q}' THEN w.stderr END) AS {q}_stderr"
        for q in WINDOW_QUANTITIES
    )
    if by_analysis:
        return f"""SELECT w.run_id AS run_id, w.analysis_id AS analysis_id,
    MAX(w.n_frames) AS window_frames,
    {cols}
  FROM window_stat w GROUP BY w.run_id, w.analysis_id"""
    return f"""SELECT w.run_id AS run_id, MAX(w.n_frames) AS window_frames,
    {cols}
  FROM window_stat w WHERE w.analysis_id = {_DEFAULT} GROUP BY w.run_id"""


def _run_detail_sql() -> str:
    props = ",\n    ".join(
        f"MAX(CASE WHEN p.name = '{n}' THEN p.value END) AS {n}, "
        f"MAX(CASE WHEN p.name = '{n}' THEN p.stderr END) AS {n}_stderr"
        for n in RUN_PROPERTIES
    )
    prop_cols = ", ".join(f"pr.{n}, pr.{n}_stderr" for n in RUN_PROPERTIES)
    # Keyed on whether the run has a window at all, not per quantity (no COALESCE): one row
    # never mixes window means with final-frame values, and a quantity undefined over the
    # whole window stays NULL instead of silently taking the final frame's value.
    value_cols = ",\n  ".join(
        f"CASE WHEN ws.run_id IS NULL THEN {final} ELSE ws.{q} END AS {q}"
        for q, final in _FINAL_VALUE.items()
    )
    stderr_cols = ", ".join(f"ws.{q}_stderr AS {q}_stderr" for q in WINDOW_QUANTITIES)
    final_cols = ", ".join(f"{final} AS {q}_final" for q, final in _FINAL_VALUE.items())
    return f"""
SELECT r.id AS run_id, m.name AS mlip, m.arch AS arch, c.family AS family, c.x AS x,
  r.quench_rate_k_ps AS quench_rate_k_ps, r.seed AS seed, r.protocol_id AS protocol_id,
  {PROTOCOL_LABEL} AS protocol,
  r.status AS status, r.source AS source, r.n_atoms AS n_atoms, r.mlip_id AS mlip_id,
  r.composition_id AS composition_id, rf.frame_id AS final_frame_id,
  {prop_cols},
  {value_cols},
  ws.window_frames AS window_frames,
  {stderr_cols},
  {final_cols}
FROM run r
JOIN mlip m ON m.id = r.mlip_id
JOIN composition c ON c.id = r.composition_id
JOIN protocol pt ON pt.id = r.protocol_id
LEFT JOIN (
  SELECT p.run_id AS run_id,
    {props}
  FROM property p GROUP BY p.run_id
) pr ON pr.run_id = r.id
LEFT JOIN run_final_frame rf ON rf.run_id = r.id
LEFT JOIN (
  {_final_fractions_sql()}
) ff ON ff.run_id = r.id
LEFT JOIN coordination co ON co.frame_id = rf.frame_id AND co.analysis_id = {_DEFAULT}
LEFT JOIN (
  {_window_sql()}
) ws ON ws.run_id = r.id
"""


def _by_analysis_sql() -> str:
    value_cols = ",\n  ".join(
        f"CASE WHEN ws.run_id IS NULL THEN {final} ELSE ws.{q} END AS {q}"
        for q, final in _FINAL_VALUE.items()
    )
    return f"""
SELECT a.name AS analysis, r.id AS run_id, m.name AS mlip, c.x AS x,
  r.quench_rate_k_ps AS quench_rate_k_ps, r.seed AS seed, {PROTOCOL_LABEL} AS protocol,
  r.status AS status, r.source AS source, a.id AS analysis_id, a.cutoffs_json AS cutoffs,
  {value_cols},
  ws.window_frames AS window_frames
FROM run r
JOIN mlip m ON m.id = r.mlip_id
JOIN composition c ON c.id = r.composition_id
JOIN protocol pt ON pt.id = r.protocol_id
JOIN run_final_frame rf ON rf.run_id = r.id
JOIN coordination co ON co.frame_id = rf.frame_id
JOIN analysis a ON a.id = co.analysis_id
LEFT JOIN (
  {_final_fractions_sql(by_analysis=True)}
) ff ON ff.run_id = r.id AND ff.analysis_id = a.id
LEFT JOIN (
  {_window_sql(by_analysis=True)}
) ws ON ws.run_id = r.id AND ws.analysis_id = a.id
"""


_CROSS_EVAL = f"""
SELECT fe.id AS eval_id, r.id AS run_id, m.name AS mlip, e.name AS evaluator, c.x AS x,
  r.quench_rate_k_ps AS quench_rate_k_ps, r.seed AS seed, {PROTOCOL_LABEL} AS protocol,
  f.id AS frame_id, f.stage AS stage, f.step AS step, fe.n_atoms AS n_atoms,
  fe.energy_per_atom_ev AS energy_per_atom_ev,
  fe.ref_energy_per_atom_ev AS ref_energy_per_atom_ev,
  fe.energy_diff_per_atom_ev AS energy_diff_per_atom_ev,
  fe.force_rmse_ev_a AS force_rmse_ev_a, fe.force_max_ev_a AS force_max_ev_a,
  fe.ref_source AS ref_source, fe.dispersion AS dispersion
FROM frame_eval fe
JOIN frame f ON f.id = fe.frame_id
JOIN run r ON r.id = f.run_id
JOIN mlip m ON m.id = r.mlip_id
JOIN mlip e ON e.id = fe.mlip_id
JOIN composition c ON c.id = r.composition_id
JOIN protocol pt ON pt.id = r.protocol_id
"""


RUN_SUMMARY_COLUMNS = (
    "mlip", "x", "quench_rate_k_ps", "seed", "protocol", "status", "n_atoms", "density_g_cm3",
    "bulk_modulus_gpa", "young_modulus_gpa", "shear_modulus_gpa", "p0", "p1", "p2", "p1p",
    "p3c", "p2es", "bs", "nbs", "bo", "nbo", "na_cn",
)  # fmt: skip

MLIP_MAE_COLUMNS = ("mlip", "property", "n", "mae", "mean_error")

# Quantities of a run that can be compared with experiment: run_detail's values, so window
# means where the run has a window, final-frame values otherwise.
_VALUE_COLUMNS = (*RUN_PROPERTIES, *FRACTION_PROPERTIES, "na_cn")


def _run_value_sql() -> str:
    # One pass over run_detail crossed with the property names (a UNION ALL per property
    # would evaluate run_detail once per property).
    names = " UNION ALL ".join(f"SELECT '{c}' AS property" for c in _VALUE_COLUMNS)
    cases = " ".join(f"WHEN '{c}' THEN d.{c}" for c in _VALUE_COLUMNS)
    return f"""
SELECT * FROM (
  SELECT d.run_id AS run_id, d.mlip AS mlip, d.composition_id AS composition_id, d.x AS x,
    d.quench_rate_k_ps AS quench_rate_k_ps, d.seed AS seed, d.protocol_id AS protocol_id,
    n.property AS property, CASE n.property {cases} END AS value
  FROM run_detail d CROSS JOIN ({names}) n
  WHERE d.status = 'done'
) v
WHERE value IS NOT NULL
"""


_MLIP_MAE = """
WITH sim AS (
  SELECT mlip, composition_id, quench_rate_k_ps, protocol_id, property, AVG(value) AS value
  FROM run_value
  GROUP BY mlip, composition_id, quench_rate_k_ps, protocol_id, property
),
exp AS (
  SELECT composition_id, property, AVG(value) AS value
  FROM experiment
  WHERE composition_id IS NOT NULL
  GROUP BY composition_id, property
),
crystal_sim AS (
  SELECT m.name AS mlip, cv.crystal AS crystal, cv.volume_per_fu_a3 AS value
  FROM crystal_volume cv JOIN mlip m ON m.id = cv.mlip_id
),
crystal_exp AS (
  SELECT crystal, AVG(value) AS value
  FROM experiment
  WHERE crystal IS NOT NULL AND property = 'volume_per_formula_unit_a3'
  GROUP BY crystal
),
errors AS (
  SELECT sim.mlip AS mlip, sim.property AS property, sim.value - exp.value AS err
  FROM sim JOIN exp ON exp.composition_id = sim.composition_id AND exp.property = sim.property
  UNION ALL
  SELECT cs.mlip, 'volume_per_formula_unit_a3', cs.value - ce.value
  FROM crystal_sim cs JOIN crystal_exp ce ON ce.crystal = cs.crystal
)
SELECT mlip, property, COUNT(*) AS n, AVG(ABS(err)) AS mae, AVG(err) AS mean_error
FROM errors
GROUP BY mlip, property
"""

# The same errors per protocol and quench rate (issue 15): a glass quenched at 0.5 K/ps and one
# at 5 K/ps are different measurements, so this view never pools them. `mlip_mae` keeps the
# pooled contract of the first release (crystal volumes included); the report computes these
# numbers, with their bootstrap intervals, in pandas (reports/uncertainty.py).
_MLIP_MAE_BY_RATE = f"""
WITH sim AS (
  SELECT mlip, protocol_id, composition_id, quench_rate_k_ps, property, AVG(value) AS value
  FROM run_value
  GROUP BY mlip, protocol_id, composition_id, quench_rate_k_ps, property
),
exp AS (
  SELECT composition_id, property, AVG(value) AS value
  FROM experiment
  WHERE composition_id IS NOT NULL
  GROUP BY composition_id, property
)
SELECT sim.mlip AS mlip, sim.protocol_id AS protocol_id, {PROTOCOL_LABEL} AS protocol,
       sim.quench_rate_k_ps AS quench_rate_k_ps, sim.property AS property, COUNT(*) AS n,
       AVG(ABS(sim.value - exp.value)) AS mae, AVG(sim.value - exp.value) AS mean_error
FROM sim
JOIN exp ON exp.composition_id = sim.composition_id AND exp.property = sim.property
JOIN protocol pt ON pt.id = sim.protocol_id
GROUP BY sim.mlip, sim.protocol_id, pt.name, pt.kind, pt.content_hash, sim.quench_rate_k_ps,
         sim.property
"""


def _summary_sql() -> str:
    return "SELECT " + ", ".join(RUN_SUMMARY_COLUMNS) + " FROM run_detail"


# Frozen once a later version exists: migration 0004 imports it.
VIEWS_V4: tuple[tuple[str, str], ...] = (
    ("run_final_frame", _RUN_FINAL_FRAME),
    ("frame_fractions", _frame_fractions_sql()),
    ("run_detail", _run_detail_sql()),
    ("run_summary", _summary_sql()),
    ("run_value", _run_value_sql()),
    ("mlip_mae", _MLIP_MAE),
    ("run_summary_by_analysis", _by_analysis_sql()),
    ("cross_eval", _CROSS_EVAL),
    ("mlip_mae_by_rate", _MLIP_MAE_BY_RATE),
)

CURRENT_VIEWS = VIEWS_V4


def create_views_sql(views: tuple[tuple[str, str], ...] = CURRENT_VIEWS) -> list[str]:
    return [f"CREATE VIEW {name} AS {sql}" for name, sql in views]


def drop_views_sql(views: tuple[tuple[str, str], ...] = CURRENT_VIEWS) -> list[str]:
    return [f"DROP VIEW IF EXISTS {name}" for name, _ in reversed(views)]
