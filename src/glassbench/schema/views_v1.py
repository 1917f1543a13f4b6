"""The views of schema revision 0001, frozen: migration 0001 creates them, 0002 drops them.

Self-contained on purpose: the constants and builders below are copies of those
``glassbench.schema.views`` had when version 1 was released, so a later change of the
vocabulary or of the current builders cannot alter what an old migration creates. Never edit
this module; ``VIEWS_V1`` must stay byte-identical (tests/foundation/test_migrations.py).
"""

from __future__ import annotations

_RUN_PROPERTIES = (
    "density_g_cm3",
    "bulk_modulus_gpa",
    "young_modulus_gpa",
    "shear_modulus_gpa",
    "poisson_ratio",
)
_FRACTION_PROPERTIES = (
    "p0", "p1", "p2", "p1p", "p1_incl_p1p", "p3c", "p2es", "bs", "nbs", "bo", "nbo",
)  # fmt: skip
_P_CLASSES = ("P0", "P1", "P2", "P3", "P4", "P1P", "P3c", "P_other")
_ANIONS = ("BS", "NBS", "BO", "NBO", "free_S", "free_O", "over_S", "over_O")
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
_RUN_SUMMARY_COLUMNS = (
    "mlip", "x", "quench_rate_k_ps", "seed", "status", "n_atoms", "density_g_cm3",
    "bulk_modulus_gpa", "young_modulus_gpa", "shear_modulus_gpa", "p0", "p1", "p2", "p1p",
    "p3c", "p2es", "bs", "nbs", "bo", "nbo", "na_cn",
)  # fmt: skip
_VALUE_COLUMNS = (*_RUN_PROPERTIES, *_FRACTION_PROPERTIES, "na_cn")


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
        for n in _RUN_PROPERTIES
    )
    prop_cols = ", ".join(f"pr.{n}, pr.{n}_stderr" for n in _RUN_PROPERTIES)
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


def _run_value_sql() -> str:
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
    return "SELECT " + ", ".join(_RUN_SUMMARY_COLUMNS) + " FROM run_detail"


VIEWS_V1: tuple[tuple[str, str], ...] = (
    ("run_final_frame", _RUN_FINAL_FRAME),
    ("frame_fractions", _frame_fractions_sql()),
    ("run_detail", _run_detail_sql()),
    ("run_summary", _summary_sql()),
    ("run_value", _run_value_sql()),
    ("mlip_mae", _MLIP_MAE),
)

# sha256 of ``repr(VIEWS_V1)`` at release, checked by the tests: an accidental edit fails loudly.
VIEWS_V1_SHA256 = "b157d3600d366acc221d940c1ab3fc429021208051ba46c2389b9a02660ca0e5"
