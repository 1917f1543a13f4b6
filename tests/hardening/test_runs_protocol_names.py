"""A protocol changed by run options is stored under a name of its own (issue 17): `run_summary`
must not show two runs of different protocols as the same "default"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from glassbench.campaigns import campaign_runs, load_spec
from glassbench.campaigns.loop import register_runs
from glassbench.runners.meltquench import MeltQuenchParams, ensure_run, mlip_record
from glassbench.runners.protocol import MAX_NAME, resolve
from glassbench.service.repos import content_hash
from tests.conftest import Cli

MLIP = ("mlip", "add", "m", "--arch", "chgnet", "--model", "0.3.0")


def _params(**kw: Any) -> MeltQuenchParams:
    return MeltQuenchParams(mlip="m", x=1.0, quench_rate_k_ps=5.0, seed=1, **kw)


def test_preset_and_overridden_runs_show_distinct_protocols(gb: Cli, engine: Any) -> None:
    gb.ok(*MLIP)
    preset_run, _ = ensure_run(engine, _params())
    changed_run, _ = ensure_run(engine, _params(melt_ps=5.0))
    # An option that leaves the record as it is (the default melt is 10 ps) changes nothing.
    same_run, _ = ensure_run(engine, _params(melt_ps=10.0))
    assert same_run == preset_run
    out = gb.ok(
        "sql",
        "SELECT mlip, x, quench_rate_k_ps, seed, protocol FROM run_summary ORDER BY protocol",
        "--format",
        "csv",
    ).output
    lines = out.strip().splitlines()
    # (On PostgreSQL a superuser warning may come first, on stderr.)
    header = lines.index("mlip,x,quench_rate_k_ps,seed,protocol")
    assert lines[header + 1 :] == [
        "m,1.0,5.0,1,default",
        "m,1.0,5.0,1,default (melt_ps=5)",
    ]
    # The selector finds each by its name; `default` no longer matches the changed one.
    for wanted, run_id in (("default", preset_run), ("default (melt_ps=5)", changed_run)):
        listed = gb.ok(
            "analysis", "compare", "--dry-run", "--status", "pending", "--protocol", wanted
        ).output
        assert f"\n{run_id} " in listed and listed.count(" m ") == 1, listed


def test_campaign_overrides_name_the_same_protocol_as_the_options(
    gb: Cli, engine: Any, tmp_path: Path
) -> None:
    """[protocol] melt_ps = 5 in a spec is `run meltquench --melt-ps 5`: one protocol row, one
    name, and the campaign counts the run made by hand."""
    gb.ok(*MLIP)
    by_hand, _ = ensure_run(engine, _params(melt_ps=5.0, formula_units=2))
    spec_path = tmp_path / "s.toml"
    spec_path.write_text(
        '[campaign]\nname = "c"\n[matrix]\nmlips = ["m"]\nx = [1.0]\n'
        "quench_rates_k_ps = [5.0]\nseeds = [1]\n[protocol]\nmelt_ps = 5.0\nformula_units = 2\n"
    )
    spec = load_spec(spec_path)
    assert [p.spec.name for p in spec.params()] == ["default (formula_units=2, melt_ps=5)"]
    assert register_runs(engine, spec.params(), {"m": mlip_record(engine, "m")}) == [by_hand]
    assert [r.status for r in campaign_runs(spec, engine)] == ["pending"]
    with engine.connect() as c:
        names = c.execute(sa.text("SELECT name FROM protocol")).scalars().all()
    assert names == ["default (formula_units=2, melt_ps=5)"]


def test_long_overrides_fall_back_to_the_record_hash(gb: Cli, engine: Any) -> None:
    gb.ok(*MLIP)
    p = _params(
        melt_ps=0.02, anneal_ps=0.04, formula_units=2, thermo_every=5, frame_every=20, taut_fs=50.0
    )
    name = p.spec.name
    digest = content_hash({"kind": "meltquench", **p.protocol_record()})
    assert len(name) <= MAX_NAME and name.startswith(f"default+{digest[:8]} (")
    run_id, _ = ensure_run(engine, p)
    # The --protocol selector takes the hash prefix the name shows.
    listed = gb.ok(
        "analysis", "compare", "--dry-run", "--status", "pending", "--protocol", digest[:8]
    ).output
    assert f"\n{run_id} " in listed and name in listed


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"melt_ps": 0.1}, {"melt_ps": 0.1 + 1e-12}),  # values written exactly
        ({"t_final_k": 400.0}, {"t_final_k": 400.0, "pressure_gpa": 0.5}),
        ({"dispersion": "d3"}, {"dispersion": "none"}),
    ],
)
def test_different_records_never_share_a_name(a: dict[str, Any], b: dict[str, Any]) -> None:
    pa, pb = resolve("default", a), resolve("default", b)
    assert pa.record() != pb.record()
    assert pa.name != pb.name


def test_the_name_travels_to_another_interpreter() -> None:
    """A delegated run rebuilds its parameters from JSON: same record, same name."""
    p = _params(melt_ps=5.0, protocol="study")
    back = MeltQuenchParams.from_request(p.to_request())
    assert back.spec.name == p.spec.name == "study (melt_ps=5)"
    assert back.protocol_record() == p.protocol_record()


def test_protocol_show_keeps_preset_names() -> None:
    assert resolve("study").name == "study"
    assert resolve("default", {}).name == "default"
