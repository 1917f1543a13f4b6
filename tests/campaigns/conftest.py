"""Fixtures for campaign tests: two different tiny MACE models (tests/conftest.py builds them),
spec files.

The runs are real melt-quench runs through the MLIP registry, shrunk to seconds: 26-atom cells
(2 formula units), 0.02 ps melt and anneal, a 50000 K/ps quench, 5 relaxation steps.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_MACE_SEED, Cli

TINY_PROTOCOL = {
    "formula_units": 2,
    "t_melt_k": 1800,
    "melt_ps": 0.02,
    "t_final_k": 300,
    "anneal_ps": 0.02,
    "timestep_fs": 1.0,
    "thermo_every": 5,
    "frame_every": 20,
    "flush_every": 20,
    "relax_steps": 5,
}
# Thermo rows of one tiny run: step 0 plus one per thermo interval up to the last step
# (melt 20 + quench 1500 K / 50000 K/ps = 30 + anneal 20 steps).
TINY_TOTAL_STEPS = 70
TINY_THERMO_ROWS = TINY_TOTAL_STEPS // 5 + 1


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(i) for i in v) + "]"
    return repr(v)


def spec_text(
    *,
    name: str = "tiny",
    mlips: Sequence[str],
    x: Sequence[float] = (0.0, 1.0),
    rates: Sequence[float] = (50000.0,),
    seeds: Sequence[int] = (1, 2),
    protocol: dict[str, Any] | None = None,
    extra: str = "",
) -> str:
    proto = {**TINY_PROTOCOL, **(protocol or {})}
    lines = [
        "[campaign]",
        f'name = "{name}"',
        "[matrix]",
        f"mlips = {_toml_value(list(mlips))}",
        f"x = {_toml_value(list(x))}",
        f"quench_rates_k_ps = {_toml_value(list(rates))}",
        f"seeds = {_toml_value(list(seeds))}",
        "[protocol]",
        *(f"{k} = {_toml_value(v)}" for k, v in proto.items()),
        "[properties]",
        "elastic = false",
        "crystal = []",
        "[resources]",
        "threads_per_run = 1",
    ]
    return "\n".join(lines) + "\n" + textwrap.dedent(extra)


def write_spec(path: Path, **kw: Any) -> Path:
    path.write_text(spec_text(**kw))
    return path


@pytest.fixture(scope="session")
def tiny_maces(tiny_mace: Path, tiny_mace_factory: Callable[[int], Path]) -> tuple[Path, Path]:
    """Two untrained tiny MACE models that differ only by their initialisation seed: the
    suite's shared one and a second one."""
    return tiny_mace, tiny_mace_factory(TINY_MACE_SEED + 1)


def register(
    gb: Cli, models: tuple[Path, Path], names: tuple[str, str] = ("tiny-a", "tiny-b")
) -> None:
    for name, path in zip(names, models, strict=True):
        gb.ok("mlip", "add", name, "--arch", "mace", "--model", str(path))


def runs(engine: Any) -> dict[int, dict[str, Any]]:
    import sqlalchemy as sa

    with engine.connect() as c:
        rows = c.execute(
            sa.text(
                "SELECT r.id, m.name AS mlip, c.x, r.seed, r.status, r.attempts, r.finished_at, "
                "r.error, (SELECT COUNT(*) FROM thermo t WHERE t.run_id = r.id) AS n_thermo, "
                "(SELECT COUNT(DISTINCT t.step) FROM thermo t WHERE t.run_id = r.id) AS n_steps "
                "FROM run r JOIN mlip m ON m.id = r.mlip_id JOIN composition c ON c.id = r.composition_id"
            )
        ).mappings()
        return {int(r["id"]): dict(r) for r in rows}


def assert_all_done_once(engine: Any, expected: int) -> dict[int, dict[str, Any]]:
    rs = runs(engine)
    assert len(rs) == expected
    for r in rs.values():
        assert r["status"] == "done", r
        assert r["attempts"] == 1, r
        # One row per thermo step, none missing, none twice.
        assert r["n_thermo"] == r["n_steps"] == TINY_THERMO_ROWS, r
    return rs


@pytest.fixture
def sqlite_gb(sqlite_url: str) -> Iterator[tuple[Cli, Any]]:
    """(CLI, engine) on a migrated SQLite database: for tests whose point is not the engine."""
    from glassbench.service.db import make_engine
    from glassbench.service.migrations import upgrade

    eng = make_engine(sqlite_url)
    upgrade(eng)
    yield Cli(sqlite_url), eng
    eng.dispose()
