"""The README's quick start runs as written after the first set-up command.

The block is taken from README.md itself (the first ```bash block under "## Quick start") and
run line by line by bash in a fresh folder that holds what a clone holds (`tests/`, `examples/`,
`.venv` of this interpreter): a README edit that names a file the repository does not ship, or
an option a command does not have, fails here. Once on the default database (./glassbench.db,
SQLite) and once on PostgreSQL through GLASSBENCH_DATABASE_URL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import require_module

REPO = Path(__file__).resolve().parents[2]

require_module("chgnet", "the quick start runs CHGNet: pip install 'glassbench[chgnet]'")


def quick_start_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README.md: no ```bash block under ## Quick start"
    return match.group(1)


def test_quick_start_block_is_not_a_template() -> None:
    block = quick_start_block()
    # Placeholders such as <FILE> or my-measurements.csv would make "as written" impossible.
    assert "<" not in block and "my-" not in block, block
    for path in re.findall(r"(?:tests|examples)/[\w./-]+", block):
        assert (REPO / path).is_file(), f"README quick start names {path}, which is not shipped"


@pytest.mark.slow
@pytest.mark.parametrize("database", ["default", "postgres"])
def test_quick_start_runs_as_written(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    for name in ("tests", "examples"):
        (tmp_path / name).symlink_to(REPO / name)
    # `.venv` of the interpreter running the tests (the README's first command makes it).
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = dict(os.environ)
    env.pop("GLASSBENCH_DATABASE_URL", None)
    env["OMP_NUM_THREADS"] = "1"
    url = f"sqlite:///{tmp_path / 'glassbench.db'}"
    if database == "postgres":
        url = request.getfixturevalue("pg_url")
        env["GLASSBENCH_DATABASE_URL"] = url
    script = "set -euo pipefail\n" + quick_start_block()
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    if database == "default":
        assert (tmp_path / "glassbench.db").is_file()
    from glassbench.service.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as c:
            statuses = dict(
                c.execute(
                    sa.text("SELECT m.name, r.status FROM run r JOIN mlip m ON m.id = r.mlip_id")
                ).all()
            )
            experiments = c.execute(sa.text("SELECT COUNT(*) FROM experiment")).scalar_one()
    finally:
        engine.dispose()
    # Every run the quick start makes or ingests is done; its experiment rows are stored.
    assert statuses and set(statuses.values()) == {"done"}, statuses
    assert experiments > 0
    assert (tmp_path / "report" / "report.html").is_file()
    assert "mae" in proc.stdout
