"""SQL views: the documented surface for ad hoc queries.

The SQL is portable between SQLite and PostgreSQL (window functions, CASE, CTEs only).
Each released set of views is frozen under a version name (``VIEWS_V1`` ...) because
migrations import it: a later change adds ``VIEWS_V2`` and a migration that swaps them.

- ``run_final_frame``: the frame that stands for a run's final structure (stage ``final``
  if present, otherwise the last non-strain frame).
- ``frame_fractions``: unit fractions per analysed frame (P units over all P, anion classes
  over all S+O).
- ``run_detail``: one row per run with keys, properties and final-frame structure.
- ``run_summary``: the contract subset of ``run_detail`` (docs/architecture.md, "Views").
- ``run_value``: long format (run, property, value) of every comparable quantity of done runs.
- ``mlip_mae``: one row per MLIP x property: n, MAE and mean signed error against experiment,
  seeds averaged first.
"""

from __future__ import annotations

from glassbench.schema.models import FRACTION_PROPERTIES, RUN_PROPERTIES

_P_CLASSES = ("P0", "P1", "P2", "P3", "P4", "P1P", "P3c", "P_other")
_ANIONS = ("BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O")

# fraction column -> (numerator units, denominator)
_FRACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "p0": (("P0",), "n_p"),
    "p1": (("P1",), "n_p"),
    "p2": (("P2",), "n_p"),
    "p3": (("P3",), "n_p"),
    "p4": (("P4",), "n_p"),
    "p1p": (("P1P",), "n_p"),
    "p1_incl_p1p": (("P1", "P1P"), "n_p"),
    "p3c": (("P3c",), "n_p"),
    "p_other": (("P_other",), "n_p"),
    "p2es": (("P2ES",), "n_p"),
    "ppchain": (("PPchain",), "n_p"),
    "bs": (("BS",), "n_anion"),
    "nbs": (("NBS",), "n_anion"),
    "bo": (("BO",), "n_anion"),
    "nbo": (("NBO",), "n_anion"),
    "free_s": (("free_S",), "n_anion"),
    "free_o": (("free_O",), "n_anion"),
    "over_s": (("over_S",), "n_anion"),
    "over_o": (("over_O",), "n_anion"),
}


def _count(units: tuple[str, ...]) -> str:
    names = ", ".join(f"'{u}'" for u in units)
    return f"SUM(CASE WHEN s.unit IN ({names}) THEN s.count ELSE 0 END)"


def _fraction_columns() -> list[str]:
    cols = [
        f"{_count(_P_CLASSES)} AS n_p",
        f"{_count(_ANIONS)} AS n_anion",
        f"{_count(('S_in_chains',))} AS s_in_chains",
    ]
    for name, (units, denom) in _FRACTIONS.items():
        total = _count(_P_CLASSES) if denom == "n_p" else _count(_ANIONS)
        cols.append(f"CAST({_count(units)} AS DOUBLE PRECISION) / NULLIF({total}, 0) AS {name}")
    return cols


def _frame_fractions_sql() -> str:
    cols = ["s.frame_id AS frame_id", *_fraction_columns()]
    return "SELECT " + ",\n  ".join(cols) + "\nFROM speciation s GROUP BY s.frame_id"


def _final_fractions_sql() -> str:
    # Aggregates only the final frame's rows: a join with frame_fractions would group the
    # speciation of every frame of every run before picking one per run.
    cols = ["rf.run_id AS run_id", *_fraction_columns()]
    return (
        "SELECT " + ",\n    ".join(cols) + "\n  FROM run_final_frame rf "
        "JOIN speciation s ON s.frame_id = rf.frame_id GROUP BY rf.run_id"
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


def _run_detail_sql() -> str:
    props = ",\n    ".join(
        f"MAX(CASE WHEN p.name = '{n}' THEN p.value END) AS {n}, "
        f"MAX(CASE WHEN p.name = '{n}' THEN p.stderr END) AS {n}_stderr"
        for n in RUN_PROPERTIES
    )
    prop_cols = ", ".join(f"pr.{n}, pr.{n}_stderr" for n in RUN_PROPERTIES)
    frac_cols = ", ".join(f"ff.{name}" for name in _FRACTIONS)
    return f"""
SELECT r.id AS run_id, m.name AS mlip, m.arch AS arch, c.family AS family, c.x AS x,
  r.quench_rate_k_ps AS quench_rate_k_ps, r.seed AS seed, r.protocol_id AS protocol_id,
  r.status AS status, r.source AS source, r.n_atoms AS n_atoms, r.mlip_id AS mlip_id,
  r.composition_id AS composition_id, rf.frame_id AS final_frame_id,
  {prop_cols},
  {frac_cols},
  co.na_cn_mean AS na_cn, co.na_cn_s_mean AS na_cn_s, co.na_cn_o_mean AS na_cn_o,
  co.ss_fraction AS ss_fraction, co.ss_mean_length AS ss_mean_length
FROM run r
JOIN mlip m ON m.id = r.mlip_id
JOIN composition c ON c.id = r.composition_id
LEFT JOIN (
  SELECT p.run_id AS run_id,
    {props}
  FROM property p GROUP BY p.run_id
) pr ON pr.run_id = r.id
LEFT JOIN run_final_frame rf ON rf.run_id = r.id
LEFT JOIN (
  {_final_fractions_sql()}
) ff ON ff.run_id = r.id
LEFT JOIN coordination co ON co.frame_id = rf.frame_id
"""


RUN_SUMMARY_COLUMNS = (
    "mlip", "x", "quench_rate_k_ps", "seed", "status", "n_atoms", "density_g_cm3",
    "bulk_modulus_gpa", "young_modulus_gpa", "shear_modulus_gpa", "p0", "p1", "p2", "p1p",
    "p3c", "p2es", "bs", "nbs", "bo", "nbo", "na_cn",
)  # fmt: skip

MLIP_MAE_COLUMNS = ("mlip", "property", "n", "mae", "mean_error")

# Quantities of a run that can be compared with experiment (fractions come from the final frame).
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


def _summary_sql() -> str:
    return "SELECT " + ", ".join(RUN_SUMMARY_COLUMNS) + " FROM run_detail"


# Frozen: migrations import this; never edit a released version, add VIEWS_V2 instead.
VIEWS_V1: tuple[tuple[str, str], ...] = (
    ("run_final_frame", _RUN_FINAL_FRAME),
    ("frame_fractions", _frame_fractions_sql()),
    ("run_detail", _run_detail_sql()),
    ("run_summary", _summary_sql()),
    ("run_value", _run_value_sql()),
    ("mlip_mae", _MLIP_MAE),
)

CURRENT_VIEWS = VIEWS_V1


def create_views_sql(views: tuple[tuple[str, str], ...] = CURRENT_VIEWS) -> list[str]:
    return [f"CREATE VIEW {name} AS {sql}" for name, sql in views]


def drop_views_sql(views: tuple[tuple[str, str], ...] = CURRENT_VIEWS) -> list[str]:
    return [f"DROP VIEW IF EXISTS {name}" for name, _ in reversed(views)]
