"""The writers of revision 0003, for tests that write a database at an older revision.

Today's writers store what revision 0004 added (a ``PPend`` row per frame, four coordination
columns, five window quantities); a database at 0003 or before has no place for them, and its
frames were analysed by code that counted a P-P chain end as P1P. :func:`write_as_0003` makes
the writers do what that code did.
"""

from __future__ import annotations

from typing import Any

import pytest

# What revision 0004 added.
COORDINATION_0004 = ("na_s_share", "na_s_peak_a", "na_o_peak_a", "ss_long_share")
QUANTITIES_0003 = (
    "p0", "p1", "p2", "p3", "p4", "p1p", "p1_incl_p1p", "p3c", "p_other", "p2es", "ppchain",
    "bs", "nbs", "bo", "nbo", "free_s", "free_o", "over_s", "over_o",
    "na_cn", "na_cn_s", "na_cn_o", "ss_fraction", "ss_mean_length",
)  # fmt: skip
COORDINATION_0003 = {
    "na_cn": "na_cn_mean",
    "na_cn_s": "na_cn_s_mean",
    "na_cn_o": "na_cn_o_mean",
    "ss_fraction": "ss_fraction",
    "ss_mean_length": "ss_mean_length",
}


def write_as_0003(monkeypatch: pytest.MonkeyPatch) -> None:
    """Speciation rows without PPend (its count added to P1P), coordination rows without the
    columns of 0004, window statistics of the quantities of 0003 only."""
    import glassbench.ingest.window as window
    from glassbench.service import repos

    speciation_rows, coordination_row = repos.speciation_rows, repos.coordination_row

    def old_speciation(*args: Any, **kw: Any) -> list[dict[str, Any]]:
        rows = speciation_rows(*args, **kw)
        ends = sum(r["count"] for r in rows if r["unit"] == "PPend")
        return [
            {**r, "count": r["count"] + ends} if r["unit"] == "P1P" else r
            for r in rows
            if r["unit"] != "PPend"
        ]

    def old_coordination(*args: Any, **kw: Any) -> dict[str, Any]:
        row = coordination_row(*args, **kw)
        return {k: v for k, v in row.items() if k not in COORDINATION_0004}

    monkeypatch.setattr(repos, "speciation_rows", old_speciation)
    monkeypatch.setattr(repos, "coordination_row", old_coordination)
    monkeypatch.setattr(window, "COORDINATION_COLUMNS", COORDINATION_0003)
    monkeypatch.setattr(window, "WINDOW_QUANTITIES", QUANTITIES_0003)
