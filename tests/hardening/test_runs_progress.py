"""A melt-quench run whose stderr is not a terminal reports each stage as it ends (issue 17):
between the model banner and "done" it used to print nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MACE_HINT, Cli, require_module

require_module("mace", MACE_HINT)

# 20 melt + 30 quench (1500 K at 50000 K/ps) + 40 anneal steps of a 26-atom cell.
TINY = ["--x", "1.0", "--quench-rate", "50000", "--seed", "3", "--formula-units", "2",
        "--melt-ps", "0.02", "--anneal-ps", "0.04"]  # fmt: skip
STAGE = re.compile(
    r"^(melt|quench|anneal): (\d+) steps, ([\d.]+) ps, T=\d+ K(, density [\d.]+ g/cm3)?, "
    r"[\d.]+ s$"
)


@pytest.mark.slow
def test_stage_lines_when_stderr_is_a_pipe(
    engine: Any, db_url: str, tiny_mace: Path, tmp_path: Path
) -> None:
    Cli(db_url).ok("mlip", "add", "tiny", "--arch", "mace", "--model", str(tiny_mace))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GLASSBENCH_DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "glassbench", "--db", db_url, "run", "meltquench",
         "--mlip", "tiny", *TINY, "--checkpoint-dir", str(tmp_path / "ck")],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # (MACE prints a line of its own on stdout when it loads.)
    assert re.search(r"^run \d+: done; 90 steps", proc.stdout, re.MULTILINE), proc.stdout
    ours = [
        ln
        for ln in proc.stderr.splitlines()
        if ln.startswith(("run ", "relax:")) or STAGE.match(ln)
    ]
    assert ours[0].endswith(": 26 atoms, 90 steps (melt 20, quench 30, anneal 40)"), ours
    assert re.fullmatch(r"relax: \d+ FIRE steps, [\d.]+ s", ours[1]), ours
    stages = [STAGE.match(ln) for ln in ours[2:]]
    assert [(m[1], m[2], m[3]) for m in stages if m] == [
        ("melt", "20", "0.02"),
        ("quench", "30", "0.03"),
        ("anneal", "40", "0.04"),
    ], ours
    # The NPT anneal says where the density went; the NVT stages have nothing to say about it.
    assert [bool(m and m[4]) for m in stages] == [False, False, True]
    assert "\r" not in proc.stderr  # no progress bar in a log
    # And the overridden protocol is labelled as such in run_summary.
    out = Cli(db_url).ok("sql", "SELECT protocol FROM run_summary", "--format", "csv").output
    assert '"default (anneal_ps=0.04, formula_units=2, melt_ps=0.02)"' in out.splitlines()
