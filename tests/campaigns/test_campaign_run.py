"""Campaigns of real (tiny) MACE runs through the registry, with both executors on both
databases: every run done exactly once, reruns execute nothing, failures are retried and
reported, MLIPs with their own interpreter run in it."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.campaigns.conftest import assert_all_done_once, register, runs, write_spec
from tests.conftest import Cli, require


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_campaign_runs_every_run_exactly_once(
    gb: Cli, engine: Any, tiny_maces: tuple[Path, Path], tmp_path: Path, executor: str
) -> None:
    register(gb, tiny_maces)
    spec = write_spec(tmp_path / "tiny.toml", mlips=["tiny-a", "tiny-b"])
    res = gb("campaign", "run", str(spec), "--executor", executor, "--workers", "2")
    assert res.exit_code == 0, res.output
    assert "8 runs: 8 done (8 run now, 0 done before" in res.output
    first = assert_all_done_once(engine, 8)
    assert {(r["mlip"], r["x"], r["seed"]) for r in first.values()} == {
        (m, x, s) for m in ("tiny-a", "tiny-b") for x in (0.0, 1.0) for s in (1, 2)
    }
    # The two models differ: same structure and seed, different trajectories.
    doc = json.loads(gb.ok("campaign", "status", str(spec), "--format", "json").output)
    assert doc["counts"] == {"done": 8, "running": 0, "pending": 0, "failed": 0, "missing": 0}

    # Running the same command again executes nothing and changes nothing.
    again = gb("campaign", "run", str(spec), "--executor", executor, "--workers", "2")
    assert again.exit_code == 0, again.output
    assert "(0 run now, 8 done before" in again.output
    second = runs(engine)
    assert {i: (r["finished_at"], r["attempts"]) for i, r in second.items()} == {
        i: (r["finished_at"], r["attempts"]) for i, r in first.items()
    }


@pytest.mark.slow
def test_failed_runs_are_retried_then_reported(
    sqlite_gb: tuple[Cli, Any], tiny_maces: tuple[Path, Path], tmp_path: Path
) -> None:
    gb, engine = sqlite_gb
    register(gb, tiny_maces)
    # No 26-atom cell fits at 15 g/cm3 (an allowed value; 50 is refused when the spec is read):
    # every attempt fails right after its claim.
    spec = write_spec(
        tmp_path / "bad.toml",
        mlips=["tiny-a"],
        x=[0.0],
        seeds=[1],
        protocol={"density_g_cm3": 15.0},
    )
    res = gb("campaign", "run", str(spec), "--workers", "1", "--retries", "2")
    assert res.exit_code == 1, res.output
    assert "1 failed" in res.output and "could not place atom" in res.output
    (run,) = runs(engine).values()
    assert run["status"] == "failed" and run["attempts"] == 3, run
    status = gb.ok("campaign", "status", str(spec)).output
    assert "failed runs:" in status and "could not place atom" in status
    # A new invocation retries again (the budget is per invocation).
    res = gb("campaign", "run", str(spec), "--workers", "1", "--retries", "0", "--progress")
    assert res.exit_code == 1
    (run,) = runs(engine).values()
    assert run["attempts"] == 4
    # The overall bar (forced on: the test's stderr is not a terminal): runs / total, failures.
    assert "1/1 [" in res.output and "run" in res.output and "1 failed" in res.output


def _wrapper_python(directory: Path, marker: Path) -> Path:
    """An 'other environment': its own bin/python, which records each start and runs ours."""
    py = directory / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(f'#!/bin/sh\necho started >> "{marker}"\nexec "{sys.executable}" "$@"\n')
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    return py


@pytest.mark.slow
def test_mlip_with_its_own_interpreter_runs_in_it(
    sqlite_gb: tuple[Cli, Any], tiny_maces: tuple[Path, Path], tmp_path: Path
) -> None:
    gb, engine = sqlite_gb
    marker = tmp_path / "started"
    py = _wrapper_python(tmp_path / "otherenv", marker)
    gb.ok(
        "mlip",
        "add",
        "tiny-env",
        "--arch",
        "mace",
        "--model",
        str(tiny_maces[0]),
        "--python",
        str(py),
    )
    # `mlip add` may start the interpreter once to check it: count the campaign's starts.
    starts = marker.read_text().count("started") if marker.exists() else 0
    spec = write_spec(tmp_path / "env.toml", mlips=["tiny-env"], x=[1.0], seeds=[1])
    res = gb("campaign", "run", str(spec), "--workers", "1")
    assert res.exit_code == 0, res.output
    assert_all_done_once(engine, 1)
    assert marker.read_text().count("started") == starts + 1


@pytest.mark.slow
def test_dask_scheduler_routes_env_runs_to_env_workers(
    sqlite_gb: tuple[Cli, Any], tiny_maces: tuple[Path, Path], tmp_path: Path
) -> None:
    """--scheduler connects to a running cluster; --env-resources sends the MLIP's runs to
    the workers advertising its env resource (here: the only worker)."""
    from distributed import LocalCluster

    from glassbench.campaigns import env_resource_name

    gb, engine = sqlite_gb
    py = _wrapper_python(tmp_path / "otherenv", tmp_path / "started")
    gb.ok(
        "mlip",
        "add",
        "tiny-env",
        "--arch",
        "mace",
        "--model",
        str(tiny_maces[0]),
        "--python",
        str(py),
    )
    spec = write_spec(tmp_path / "env.toml", mlips=["tiny-env"], x=[0.0], seeds=[3])
    res_name = env_resource_name(str(py))
    assert res_name in gb.ok("campaign", "envs", str(spec)).output
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        resources={res_name: 1},
    ) as cluster:
        res = gb(
            "campaign",
            "run",
            str(spec),
            "--scheduler",
            cluster.scheduler_address,
            "--env-resources",
        )
    assert res.exit_code == 0, res.output
    assert_all_done_once(engine, 1)


@pytest.mark.slow
def test_deepmd_mlip_runs_in_the_deepmd_environment(
    sqlite_gb: tuple[Cli, Any],
    tiny_maces: tuple[Path, Path],
    deepmd_python: str,
    tiny_deepmd_graph: Path,
    tmp_path: Path,
) -> None:
    """A tiny MACE (this environment) and a tiny DeePMD (its own interpreter) in one campaign."""
    from glassbench.runners.interpreter import same_environment

    py = deepmd_python
    require(
        "DeePMD importable in this interpreter: no separate environment to run it in"
        if same_environment(py)
        else None
    )
    gb, engine = sqlite_gb
    graph = tiny_deepmd_graph
    gb.ok("mlip", "add", "tiny-a", "--arch", "mace", "--model", str(tiny_maces[0]))
    gb.ok("mlip", "add", "tiny-dp", "--arch", "deepmd", "--model", str(graph), "--python", py)
    spec = write_spec(tmp_path / "mix.toml", mlips=["tiny-a", "tiny-dp"], x=[1.0], seeds=[1])
    res = gb("campaign", "run", str(spec), "--workers", "2")
    assert res.exit_code == 0, res.output
    assert_all_done_once(engine, 2)
