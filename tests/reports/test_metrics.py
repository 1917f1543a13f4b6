"""Pure metric functions on small hand-written SYNTHETIC frames: the NaN policy in detail."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from glassbench.reports import Key
from glassbench.reports.metrics import (
    artefact_table,
    crystal_table,
    mae_points,
    mae_table,
    point_table,
    seed_stats,
)
from glassbench.reports.render import Document, Section, Table, column_header, format_cell, to_html

NAN = float("nan")


def _runs(rows: list[tuple[str, float, int, float]]) -> pd.DataFrame:
    """SYNTHETIC runs: (mlip, x, seed, density)."""
    return pd.DataFrame(
        {
            "run_id": range(1, len(rows) + 1),
            "mlip": [r[0] for r in rows],
            "x": [r[1] for r in rows],
            "composition_id": [int(r[1] * 10) for r in rows],
            "quench_rate_k_ps": 1.0,
            "protocol_id": 1,
            "seed": [r[2] for r in rows],
            "status": "done",
            "density_g_cm3": [r[3] for r in rows],
        }
    )


def _exp(rows: list[tuple[float, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "composition_id": [int(r[0] * 10) for r in rows],
            "family": "Na4P2S7-xOx",
            "x": [r[0] for r in rows],
            "property": [r[1] for r in rows],
            "value": [r[2] for r in rows],
            "uncertainty": NAN,
            "source": [f"SYNTHETIC {i}" for i in range(len(rows))],
        }
    )


def test_missing_values_are_omitted_never_imputed() -> None:
    runs = _runs(
        [
            ("A", 0.0, 1, 2.0),
            ("A", 0.0, 2, 2.2),
            ("A", 0.0, 3, NAN),
            ("A", 1.0, 1, NAN),
            ("A", 2.0, 1, 2.5),
        ]
    )
    exp = _exp([(0.0, "density_g_cm3", 2.0), (1.0, "density_g_cm3", 2.3)])
    points = mae_points(runs, exp)
    # x=1 has no simulated value: no point. x=2 has no experiment: point kept, error missing.
    assert list(points["x"]) == [0.0, 2.0]
    p0 = points.iloc[0]
    assert p0["n_seeds"] == 2 and p0["sim_mean"] == pytest.approx(2.1)
    assert p0["sim_std"] == pytest.approx(np.std([2.0, 2.2], ddof=1))
    p2 = points.iloc[1]
    assert p2["n_seeds"] == 1 and math.isnan(p2["sim_std"]) and math.isnan(p2["error"])
    table = mae_table(points)
    assert table.iloc[0]["n"] == 1
    assert table.iloc[0]["mae"] == pytest.approx(0.1)
    assert table.iloc[0]["mean_error"] == pytest.approx(0.1)


def test_nan_policy_raise() -> None:
    runs = _runs([("A", 0.0, 1, NAN)])
    with pytest.raises(ValueError, match="missing"):
        seed_stats(runs, keys=["density_g_cm3"], nan_policy="raise")
    points = mae_points(_runs([("A", 2.0, 1, 2.5)]), _exp([(0.0, "density_g_cm3", 2.0)]))
    with pytest.raises(ValueError, match="missing experiment"):
        mae_table(points, nan_policy="raise")
    with pytest.raises(ValueError, match="nan_policy"):
        seed_stats(runs, keys=["density_g_cm3"], nan_policy="zero")  # type: ignore[arg-type]


def test_signed_error_shows_direction_and_sources_average() -> None:
    runs = _runs([("A", 0.0, 1, 2.4), ("B", 0.0, 1, 1.8)])
    exp = _exp([(0.0, "density_g_cm3", 2.0), (0.0, "density_g_cm3", 2.2)])  # mean 2.1
    t = mae_table(mae_points(runs, exp)).set_index("mlip")
    assert t.loc["A", "mean_error"] == pytest.approx(0.3)
    assert t.loc["B", "mean_error"] == pytest.approx(-0.3)
    assert t.loc["A", "mae"] == pytest.approx(0.3) and t.loc["B", "mae"] == pytest.approx(0.3)


def test_empty_inputs() -> None:
    empty = _runs([]).iloc[0:0]
    assert mae_points(empty, _exp([])).empty
    assert mae_table(mae_points(empty, _exp([]))).empty
    assert artefact_table(empty).empty
    crystals = pd.DataFrame(
        {
            "mlip": ["A"],
            "crystal": ["X"],
            "volume_per_fu_a3": [101.0],
            "exp_volume_per_fu_a3": [NAN],
        }
    )
    ref = pd.DataFrame(columns=["crystal", "property", "value", "uncertainty", "source"])
    assert math.isnan(crystal_table(crystals, ref)["deviation_pct"].iloc[0])


def test_key_labels_units_and_rendering() -> None:
    assert str(Key.density) == "density_g_cm3" and Key.density.unit == "g/cm³"
    assert Key.density.header == "Density (g/cm³)"
    assert column_header("p3c_std") == "P3: (three-coordinated P) fraction seed std"
    assert format_cell(NAN) == "—" and format_cell(None) == "—" and format_cell(np.int64(3)) == "3"
    df = pd.DataFrame({"mlip": ["<script>alert(1)</script>"], "mae": [NAN]})
    html = to_html(Document("t", [], [Section("s", "S", [Table("mae", "T", df)])]))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert 'class="m"' in html  # the missing MAE cell


def test_point_table_lists_only_points_that_exist() -> None:
    """Two MLIPs at different x and rates: no row for combinations nobody ran."""
    runs = _runs([("A", 0.0, 1, 2.0), ("A", 0.0, 2, 2.4), ("B", 1.0, 1, 3.0)])
    runs.loc[runs["mlip"] == "B", "quench_rate_k_ps"] = 5.0
    table = point_table(runs, keys=["density_g_cm3"])
    assert list(zip(table["mlip"], table["x"], table["quench_rate_k_ps"], strict=True)) == [
        ("A", 0.0, 1.0),
        ("B", 1.0, 5.0),
    ]
    assert list(table["n_seeds"]) == [2, 1]
    assert table["density_g_cm3"].tolist() == pytest.approx([2.2, 3.0])
    assert table["density_g_cm3_std"].iloc[0] == pytest.approx(np.std([2.0, 2.4], ddof=1))
    assert math.isnan(table["density_g_cm3_std"].iloc[1])


def test_three_coordinated_p_is_labelled_as_the_study_does() -> None:
    assert Key.p3c.label == "P3: (three-coordinated P) fraction"
    assert Key.p3.label == "P3 fraction" and Key.p3.label != Key.p3c.label
    assert Key.ppend.label == "P-P chain end fraction"
    assert Key.na_s_peak.header == "Na-S first g(r) peak (Å)"
    assert Key.ss_mean_length.header == "Mean S-S chain length (S atoms)"
    assert str(Key.mae_lo) == "mae_ci_lo" and Key.overlap.label == "Indistinguishable from"


def test_overlap_pairs_and_sentences() -> None:
    from glassbench.reports.document import overlap_pairs, overlap_sentences

    table = pd.DataFrame(
        {
            "mlip": ["A", "B", "C", "A"],
            "protocol_id": [1, 1, 1, 1],
            "quench_rate_k_ps": [1.0, 1.0, 1.0, 5.0],
            "property": ["density_g_cm3"] * 4,
            "mae_ci_lo": [0.1, 0.3, 0.5, 0.1],
            "mae_ci_hi": [0.3, 0.4, 0.6, 0.2],
        }
    )
    # A [0.1, 0.3] touches B [0.3, 0.4]; C overlaps nobody; A alone at 5 K/ps.
    assert overlap_pairs(table) == {(1, 1.0, "density_g_cm3"): [("A", "B")]}
    assert overlap_sentences(table) == [
        "Density, protocol 1 at 1 K/ps: the 95 % MAE intervals overlap for A and B. These "
        "data do not tell those MLIPs apart on this property."
    ]
