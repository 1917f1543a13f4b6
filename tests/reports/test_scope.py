"""The report says what its runs can and cannot show: quench rates far above the study's and
small cells (the overview), and much three-coordinated P (the artefact section)."""

from __future__ import annotations

import pandas as pd

from glassbench.reports.document import _p3c_findings, _scope


def _done(rates: list[float], atoms: list[int], p3c: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "mlip": ["chgnet-pbe"] * (len(rates) - 1) + ["chgnet-r2scan"],
            "quench_rate_k_ps": rates,
            "n_atoms": atoms,
            "p3c": p3c,
        }
    )


def test_scope_states_rate_and_cell_size_of_fast_quenches() -> None:
    text = _scope(_done([10000.0, 10000.0, 10000.0], [52, 52, 52], [0.5, 0.75, 0.1]))
    assert "10000 K/ps, 2,000x the study's standard 5 K/ps" in text
    assert "cells of 52 atoms (one P is 12 % of all P in the smallest)" in text


def test_scope_is_silent_at_the_study_rates() -> None:
    assert _scope(_done([0.5, 5.0, 5.0], [1040, 1040, 1040], [0.0, 0.0, 0.0])) == ""


def test_p3c_finding_names_the_model_and_numbers() -> None:
    text = _p3c_findings(_done([1.0, 1.0, 1.0], [52] * 3, [0.5, 0.75, 0.1]))
    assert (
        "chgnet-pbe: 62% of P three-coordinated on average over 2 done run(s) (range 50%-75%)"
        in text
    )
    assert "chgnet-r2scan" not in text  # 10 %: below the threshold, the table shows it
    assert _p3c_findings(_done([1.0, 1.0], [52] * 2, [0.0, 0.05])) == ""
