"""Bad `run meltquench` options and campaign-spec values are refused before any row is written
(issue 17): exit 2, one line naming the flag (or the spec's file and key), every table's row
count unchanged, no Python exception name. The two paths share one validation
(MeltQuenchParams and the protocol), so each bad value is tried through both.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from glassbench.errors import BadInput
from glassbench.runners.meltquench import MAX_SEED, MeltQuenchParams
from glassbench.runners.protocol import MAX_FORMULA_UNITS
from tests.campaigns.conftest import spec_text
from tests.conftest import Cli
from tests.hardening.conftest import table_counts

# A registration that needs no model file: nothing here gets as far as loading a model.
MLIP = ("mlip", "add", "m", "--arch", "chgnet", "--model", "0.3.0")
BASE = ["--mlip", "m", "--x", "1", "--quench-rate", "50000", "--seed", "1",
        "--formula-units", "2", "--melt-ps", "0.02", "--anneal-ps", "0.04"]  # fmt: skip

# (extra options, the flag the message must start with, a word of the reason)
BAD_OPTIONS: list[tuple[list[str], str, str]] = [
    (["--density", "-2"], "--density", "[0.1, 20]"),
    (["--density", "0"], "--density", "[0.1, 20]"),
    (["--density", "nan"], "--density", "finite"),
    (["--density", "inf"], "--density", "finite"),
    (["--thermo-every", "0"], "--thermo-every", ">= 1"),
    (["--thermo-every", "-5"], "--thermo-every", ">= 1"),
    (["--frame-every", "0"], "--frame-every", ">= 1"),
    (["--block-frames", "0"], "--block-frames", ">= 1"),
    (["--x", "0.5", "--formula-units", "3"], "--x/--formula-units", "whole number"),
    (["--x", "9"], "--x", "outside"),
    (["--formula-units", str(MAX_FORMULA_UNITS + 1)], "--formula-units", "[1, 1000]"),
    (["--formula-units", "10000000"], "--formula-units", "[1, 1000]"),
    (["--formula-units", "0"], "--formula-units", "[1, 1000]"),
    (["--seed", "-1"], "--seed", f"[0, {MAX_SEED}]"),
    (["--seed", str(2**40)], "--seed", f"[0, {MAX_SEED}]"),
    (["--melt-ps", "1e300"], "--melt-ps", "[0, 1e+06)"),
    (["--t-melt", "1e9"], "--t-melt", "(0, 10000)"),
    (["--timestep-fs", "0"], "--timestep-fs", "(0, 10]"),
    (["--relax-steps", "1000000000"], "--relax-steps", "[0, 100000]"),
    (["--taut-fs", "0"], "--taut-fs", "> 0"),
    (["--flush-every", "7", "--thermo-every", "5"], "--flush-every", "multiple"),
    (["--flush-every", "0"], "--flush-every", "multiple"),
    # 10^9 steps with a thermo row each: 10^9 rows for one run.
    (["--thermo-every", "1", "--melt-ps", "999999"], "--thermo-every", "thermo rows"),
    # 5 * 10^6 frames of 26 atoms: more than 10^8 atoms in all.
    (
        ["--frame-every", "1", "--thermo-every", "100", "--melt-ps", "5000"],
        "--frame-every",
        "frames",
    ),
]


@pytest.fixture
def registered(gb: Cli) -> Cli:
    gb.ok(*MLIP)
    return gb


def _one_line_error(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output  # one line, no traceback
    assert "Traceback" not in output and "ZeroDivisionError" not in output
    return lines[0]


@pytest.mark.parametrize(("extra", "flag", "reason"), BAD_OPTIONS, ids=lambda v: str(v))
def test_bad_option_is_refused_before_any_row(
    registered: Cli, engine: Any, tmp_path: Path, extra: list[str], flag: str, reason: str
) -> None:
    before = table_counts(engine)
    res = registered(
        "run", "meltquench", *BASE, *extra, "--checkpoint-dir", str(tmp_path / "ck"), "--in-process"
    )
    assert res.exit_code == 2, res.output
    line = _one_line_error(res.output)
    assert line.startswith(f"Error: {flag}: "), line
    assert reason in line, line
    assert table_counts(engine) == before


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_checkpoint_dir_is_refused_before_any_row(
    registered: Cli, engine: Any, tmp_path: Path, where: str
) -> None:
    # A probe file decides, not permission bits (root passes every mode check): a folder
    # below a regular file, and one below /proc, can never hold a checkpoint.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    ck = blocker / "ck" if where == "under-a-file" else Path("/proc/glassbench-checkpoints")
    before = table_counts(engine)
    res = registered("run", "meltquench", *BASE, "--checkpoint-dir", str(ck), "--in-process")
    assert res.exit_code == 2, res.output
    line = _one_line_error(res.output)
    assert line.startswith("Error: --checkpoint-dir: cannot write checkpoints in "), line
    assert table_counts(engine) == before
    assert not (tmp_path / "ck").exists()


def test_a_good_checkpoint_dir_is_created_and_left_clean(tmp_path: Path) -> None:
    from glassbench.runners.checkpoints import check_checkpoint_dir

    ck = tmp_path / "new" / "deeper"
    check_checkpoint_dir(ck)
    assert ck.is_dir() and list(ck.iterdir()) == []  # the probe is gone


# --- the same values from a campaign spec --------------------------------------------------

# (a change to the tiny spec, the key the message must name)
BAD_SPEC_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"protocol": {"density_g_cm3": -2.0}}, "protocol.density_g_cm3"),
    ({"protocol": {"density_g_cm3": 0.0}}, "protocol.density_g_cm3"),
    ({"protocol": {"thermo_every": 0}}, "protocol.thermo_every"),
    ({"protocol": {"frame_every": 0}}, "protocol.frame_every"),
    ({"protocol": {"formula_units": MAX_FORMULA_UNITS + 1}}, "protocol.formula_units"),
    ({"protocol": {"relax_steps": 10**9}}, "protocol.relax_steps"),
    ({"protocol": {"formula_units": 3}, "x": [0.0, 0.5]}, "matrix.x[1]"),
    ({"x": [9.0]}, "matrix.x[0]"),
    ({"seeds": [1, -2]}, "matrix.seeds[1]"),
    ({"seeds": [2**31]}, "matrix.seeds[0]"),
    ({"rates": [50000.0, 1e-300]}, "matrix.quench_rates_k_ps[1]"),
    ({"protocol": {"thermo_every": 1, "melt_ps": 999999.0}}, "protocol.thermo_every"),
]


@pytest.mark.parametrize("command", ["run", "status"])
@pytest.mark.parametrize(("change", "key"), BAD_SPEC_VALUES, ids=lambda v: str(v))
def test_bad_spec_value_is_refused_at_load(
    registered: Cli, engine: Any, tmp_path: Path, command: str, change: dict[str, Any], key: str
) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(spec_text(mlips=["m"], **change))
    before = table_counts(engine)
    res = registered("campaign", command, str(spec))
    assert res.exit_code == 2, res.output
    line = _one_line_error(res.output)
    assert line.startswith(f"Error: {spec}:{key}: "), line
    assert table_counts(engine) == before


@pytest.mark.parametrize("how", ["option", "spec"])
def test_campaign_with_unwritable_checkpoint_dir_writes_nothing(
    registered: Cli, engine: Any, tmp_path: Path, how: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    extra = f'checkpoint_dir = "{blocker / "ck"}"\n' if how == "spec" else ""
    spec = tmp_path / "s.toml"
    spec.write_text(spec_text(mlips=["m"], extra=extra))
    option = ["--checkpoint-dir", str(blocker / "ck")] if how == "option" else []
    before = table_counts(engine)
    res = registered("campaign", "run", str(spec), *option)
    assert res.exit_code == 2, res.output
    line = _one_line_error(res.output)
    head = (
        "Error: --checkpoint-dir: "
        if how == "option"
        else f"Error: {spec}:resources.checkpoint_dir: "
    )
    assert line.startswith(head), line
    assert table_counts(engine) == before


# --- Python: the same checks, the same fields ------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"density_g_cm3": -2.0}, "density_g_cm3"),
        ({"density_g_cm3": math.nan}, "density_g_cm3"),
        ({"thermo_every": 0}, "thermo_every"),
        ({"thermo_every": 2.5}, "thermo_every"),
        ({"formula_units": 2.5}, "formula_units"),
        ({"formula_units": 3, "x": 0.5}, "x/formula_units"),
        ({"x": math.inf}, "x"),
        ({"melt_ps": math.inf}, "melt_ps"),
        ({"pressure_gpa": 1e6}, "pressure_gpa"),
        ({"flush_every": 2.5}, "flush_every"),
    ],
)
def test_params_refuse_with_the_field(kw: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"mlip": "m", "x": 1.0, "quench_rate_k_ps": 5.0, "seed": 1, **kw}
    with pytest.raises(BadInput) as exc:
        MeltQuenchParams(**args)
    assert exc.value.field == field
