"""examples/campaign.toml says its [protocol] keys are `run meltquench` options: each of them,
commented out or not, must be one (issue 17), and the file must state its size."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from glassbench.campaigns import PROTOCOL_KEYS, load_spec
from glassbench.cli import FLAG_OF_FIELD, cli

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "campaign.toml"
# Keys of [protocol] that are the spec's own, documented in docs/campaigns.md: `preset` and
# `file` are what --protocol takes on the command line, `name` and [[protocol.stage]] define
# an inline protocol.
SPEC_ONLY = {"preset", "file", "name", "stage"}


def _protocol_section_keys(text: str) -> list[str]:
    """Every key of the [protocol] section, including the commented-out examples."""
    section = text.split("\n[protocol]", 1)[1].split("\n[", 1)[0]
    return re.findall(r"^#?\s*([a-z_0-9]+)\s*=", section, re.MULTILINE)


def _meltquench_flags() -> set[str]:
    res = CliRunner().invoke(cli, ["run", "meltquench", "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    return set(re.findall(r"--[a-z][a-z-]*", res.output))


def test_every_example_protocol_key_is_a_run_meltquench_option() -> None:
    keys = _protocol_section_keys(EXAMPLE.read_text())
    # The example shows the common keys, active and commented out.
    assert {"formula_units", "t_melt_k", "melt_ps", "thermo_every", "flush_every",
            "relax_steps", "density_g_cm3", "preset", "file"} <= set(keys)  # fmt: skip
    flags = _meltquench_flags()
    for key in keys:
        if key in SPEC_ONLY:
            continue
        assert key in FLAG_OF_FIELD, f"[protocol] {key} has no command-line flag"
        assert FLAG_OF_FIELD[key] in flags, f"{key}: {FLAG_OF_FIELD[key]} is not an option"


def test_every_spec_protocol_key_is_a_run_meltquench_option() -> None:
    """Not only the example's: every key [protocol] accepts (derived from MeltQuenchParams)."""
    flags = _meltquench_flags()
    missing = [k for k in PROTOCOL_KEYS if FLAG_OF_FIELD.get(k) not in flags]
    assert missing == []


def test_spec_only_keys_are_documented() -> None:
    doc = (ROOT / "docs" / "campaigns.md").read_text()
    for key in ("preset", "file", "[[protocol.stage]]"):
        assert f"`{key}`" in doc


def test_example_states_its_size_and_time() -> None:
    text = EXAMPLE.read_text()
    spec = load_spec(EXAMPLE)
    steps = spec.params()[0].total_steps
    assert f"{spec.size} runs" in text
    assert f"{steps:,} MD steps" in text
    assert "hours per run" in text and "estimate" in text
