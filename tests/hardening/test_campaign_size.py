"""A campaign says how big its matrix is before it writes anything, refuses one above
``campaign_max_runs`` unless ``--yes``, and registers its runs in bulk (issue 17)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from glassbench.campaigns import load_spec
from glassbench.campaigns.loop import register_runs
from glassbench.runners.meltquench import MeltQuenchParams, ensure_run
from glassbench.service import runs
from tests.campaigns.conftest import spec_text
from tests.conftest import Cli
from tests.hardening.conftest import gb_limited, table_counts

MLIP = ("mlip", "add", "m", "--arch", "chgnet", "--model", "0.3.0")


def _huge_spec(path: Path) -> Path:
    """10^6 runs in 3 kB: 15 compositions x 1000 quench rates x 67 seeds (and one MLIP)."""
    xs = [i / 2 for i in range(15)]  # x * 2 formula units is whole
    rates = [1000.0 + i for i in range(1000)]
    path.write_text(spec_text(mlips=["m"], x=xs, rates=rates, seeds=list(range(67))))
    return path


@pytest.mark.parametrize("command", ["run", "status"])
def test_huge_matrix_is_refused_at_once_without_a_row(
    engine: Any, db_url: str, tmp_path: Path, command: str
) -> None:
    spec = _huge_spec(tmp_path / "huge.toml")
    before = table_counts(engine)
    # Under a memory cap: a regression that expands the matrix first fails instead of swapping.
    res = gb_limited(db_url, "campaign", command, str(spec), timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith(f"Error: {spec}:[matrix]: campaign 'tiny': 1,005,000 runs ")
    assert "(1 MLIP x 15 compositions x 1000 quench rates x 67 seeds x 1 protocol)" in lines[0]
    assert (
        "10,000" in lines[0] and "--yes" in lines[0] and "GLASSBENCH_CAMPAIGN_MAX_RUNS" in lines[0]
    )
    assert res.stdout == ""
    assert table_counts(engine) == before


def test_limit_is_the_setting_and_yes_lifts_it(
    gb: Cli, engine: Any, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gb.ok(*MLIP)
    spec_path = tmp_path / "s.toml"
    spec_path.write_text(spec_text(mlips=["m"]))  # 2 x 2 seeds = 4 runs
    # The runs exist and are done, so that a started campaign has nothing to run.
    spec = load_spec(spec_path)
    mlips = {"m": _mlip(engine, "m")}
    ids = register_runs(engine, spec.params(), mlips)
    from glassbench.service import unit_of_work

    with unit_of_work(engine) as s:
        for rid in ids:
            runs.finish(s, rid)
    before = table_counts(engine)
    monkeypatch.setenv("GLASSBENCH_CAMPAIGN_MAX_RUNS", "3")
    refused = gb("campaign", "run", str(spec_path))
    assert refused.exit_code == 2, refused.output
    assert refused.output.strip().splitlines() == [
        f"Error: {spec_path}:[matrix]: campaign 'tiny': 4 runs (1 MLIP x 2 compositions x "
        "1 quench rate x 2 seeds x 1 protocol) is more than the 3 runs a campaign starts "
        "without --yes (setting campaign_max_runs, GLASSBENCH_CAMPAIGN_MAX_RUNS); check the "
        "matrix, or pass --yes"
    ]
    ok = gb("campaign", "run", str(spec_path), "--yes")
    assert ok.exit_code == 0, ok.output
    lines = ok.output.strip().splitlines()
    # The size first, then the summary: every run was done before.
    assert lines[0] == (
        "campaign 'tiny': 4 runs (1 MLIP x 2 compositions x 1 quench rate x 2 seeds x 1 protocol)"
    )
    assert "4 done" in lines[-1] and "0 run now, 4 done before" in lines[-1]
    assert table_counts(engine) == before


def _mlip(engine: Any, name: str) -> Any:
    from glassbench.runners.meltquench import mlip_record

    return mlip_record(engine, name)


def _run_rows(engine: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as c:
        return [
            tuple(r)
            for r in c.execute(
                sa.text(
                    "SELECT id, mlip_id, composition_id, quench_rate_k_ps, seed, protocol_id, "
                    "status, attempts, claimed_by FROM run ORDER BY id"
                )
            )
        ]


def test_bulk_registration_is_the_run_store_semantics(gb: Cli, engine: Any) -> None:
    """register_runs gives the ids ensure_run gives, creates each missing run once, pending,
    leaves existing runs as they are (a claimed one stays claimed) and is idempotent."""
    gb.ok(*MLIP)
    mlips = {"m": _mlip(engine, "m")}
    matrix = [
        MeltQuenchParams(mlip="m", x=x, quench_rate_k_ps=q, seed=s, melt_ps=5.0)
        for x in (0.0, 1.0)
        for q in (0.5, 5.0, 1 / 3)  # a rate without a short decimal form
        for s in range(400)
    ]
    # One of them exists already, made by hand (`run meltquench`), and is being run.
    by_hand, _ = ensure_run(engine, matrix[1])
    assert runs.claim(engine, by_hand, worker="elsewhere:1")
    before = _run_rows(engine)
    ids = register_runs(engine, matrix, mlips)
    assert len(ids) == len(set(ids)) == len(matrix) == 2400
    assert ids[1] == by_hand
    rows = _run_rows(engine)
    assert len(rows) == 2400
    assert [r for r in rows if r[0] == by_hand] == before  # untouched: running, its claim
    assert {r[6] for r in rows if r[0] != by_hand} == {"pending"}
    # Each id is the run of its parameters: the one-at-a-time path finds the same rows.
    for i in (0, 7, 1199, 2399):
        assert ensure_run(engine, matrix[i])[0] == ids[i]
    # Idempotent: a second registration (a re-run of the campaign) changes nothing.
    assert register_runs(engine, matrix, mlips) == ids
    assert _run_rows(engine) == rows


def test_bulk_registration_is_one_transaction(gb: Cli, engine: Any) -> None:
    """A registration that fails part-way (an MLIP deleted meanwhile: a foreign-key error on
    the last chunk) leaves no run, composition or protocol behind."""
    gb.ok(*MLIP)
    real = _mlip(engine, "m")
    matrix = [
        MeltQuenchParams(mlip=name, x=1.0, quench_rate_k_ps=5.0, seed=s, melt_ps=5.0)
        for name in ("m", "gone")
        for s in range(1500)
    ]
    before = table_counts(engine)
    with pytest.raises(sa.exc.IntegrityError):
        register_runs(engine, matrix, {"m": real, "gone": _Gone()})
    assert table_counts(engine) == before


class _Gone:
    """An MLIP record whose row no longer exists."""

    id = 999_999
    python = None


def test_seeds_bounded_in_spec_before_anything(tmp_path: Path) -> None:
    from glassbench.errors import BadInput

    path = tmp_path / "neg.toml"
    path.write_text(spec_text(mlips=["m"], seeds=[1, -1]))
    with pytest.raises(BadInput) as exc:
        load_spec(path)
    assert (exc.value.source, exc.value.where) == (str(path), "matrix.seeds[1]")


def test_describe_size_counts_every_axis(tmp_path: Path) -> None:
    mine = tmp_path / "p.toml"
    mine.write_text('preset = "study"\n')
    text = spec_text(mlips=["a", "b"], x=[0.0], seeds=[1, 2, 3]).replace(
        "seeds = [1, 2, 3]", 'seeds = [1, 2, 3]\nprotocols = ["default", "p.toml"]'
    )
    path = tmp_path / "s.toml"
    path.write_text(text)
    spec = load_spec(path)
    assert spec.describe_size() == (
        "campaign 'tiny': 12 runs (2 MLIPs x 1 composition x 1 quench rate x 3 seeds x 2 protocols)"
    )
    spec.check_size(12)
    with pytest.raises(Exception, match="12 runs"):
        spec.check_size(11)
    assert replace(spec, seeds=(1,)).size == 4
