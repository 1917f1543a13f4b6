"""Default threads: a passive OpenMP wait and one thread per core this process may use.

The counts that matter are torch's, read in fresh interpreters (OpenMP reads its variables
once, when torch loads it); the environment helpers are checked in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from glassbench.runners.interpreter import (
    THREAD_VARIABLES,
    WAIT_POLICY_VARIABLE,
    available_cores,
    cgroup_cpu_limit,
    child_environment,
    limit_threads,
)
from tests.conftest import MACE_HINT, require_module

SRC = str(Path(__file__).resolve().parents[2] / "src")
USER_VARIABLES = (*THREAD_VARIABLES, WAIT_POLICY_VARIABLE, "GLASSBENCH_THREADS")


@pytest.fixture
def clean_env() -> Iterator[None]:
    """No thread variables from the user; this process's environment restored afterwards."""
    saved = dict(os.environ)
    for var in USER_VARIABLES:
        os.environ.pop(var, None)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _expected_default() -> int:
    quota = cgroup_cpu_limit()
    cores = len(os.sched_getaffinity(0))
    return cores if quota is None else min(cores, quota)


# Child: the runner's order (limit_threads before torch loads), then what torch and the
# environment say.
_PROBE = """
import json, os, sys
from glassbench.runners.interpreter import limit_threads
from glassbench.settings import get_settings
limit_threads(get_settings().threads)
assert "torch" not in sys.modules
import torch
print(json.dumps({
    "torch": torch.get_num_threads(),
    "omp": os.environ.get("OMP_NUM_THREADS"),
    "wait": os.environ.get("OMP_WAIT_POLICY"),
    "affinity": len(os.sched_getaffinity(0)),
}))
"""


def _probe(env: dict[str, str], cpus: set[int] | None = None) -> dict[str, object]:
    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**env, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=pin,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _bare_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in USER_VARIABLES}


def test_child_environment_waits_passively_unless_the_user_chose(clean_env: None) -> None:
    assert child_environment()[WAIT_POLICY_VARIABLE] == "PASSIVE"
    assert child_environment(threads=2)[WAIT_POLICY_VARIABLE] == "PASSIVE"
    os.environ[WAIT_POLICY_VARIABLE] = "ACTIVE"
    assert child_environment()[WAIT_POLICY_VARIABLE] == "ACTIVE"
    assert child_environment(extra={WAIT_POLICY_VARIABLE: "x"})[WAIT_POLICY_VARIABLE] == "x"


def test_child_environment_keeps_the_users_thread_variables(clean_env: None) -> None:
    env = child_environment()
    assert not any(var in env for var in THREAD_VARIABLES)  # the child picks its default
    os.environ["OMP_NUM_THREADS"] = "3"
    os.environ["GLASSBENCH_THREADS"] = "5"
    env = child_environment()
    assert env["OMP_NUM_THREADS"] == "3" and env["GLASSBENCH_THREADS"] == "5"
    env = child_environment(threads=2, override=False)
    assert env["OMP_NUM_THREADS"] == "3"  # the user's
    assert env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "2"  # not set by the user
    # An explicit count for this run (GLASSBENCH_THREADS via the runner) wins by default.
    assert all(child_environment(threads=2)[var] == "2" for var in THREAD_VARIABLES)


def test_limit_threads_default_never_overrides_the_user(clean_env: None) -> None:
    limit_threads(None)
    assert os.environ[WAIT_POLICY_VARIABLE] == "PASSIVE"
    if "torch" not in sys.modules:  # a loaded torch keeps its count, so nothing is set
        assert os.environ["OMP_NUM_THREADS"] == str(available_cores())
    os.environ["OMP_NUM_THREADS"] = "7"
    os.environ[WAIT_POLICY_VARIABLE] = "ACTIVE"
    limit_threads(None)
    limit_threads(3, override=False)
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert os.environ[WAIT_POLICY_VARIABLE] == "ACTIVE"


def test_available_cores_is_the_affinity_mask_capped_by_the_cgroup_quota() -> None:
    assert available_cores() == _expected_default()


def test_cgroup_quota_is_read_up_the_hierarchy(tmp_path: Path) -> None:
    membership = tmp_path / "cgroup"
    leaf = tmp_path / "fs" / "a" / "b"
    leaf.mkdir(parents=True)
    membership.write_text("0::/a/b\n")
    root = tmp_path / "fs"
    assert cgroup_cpu_limit(root, membership) is None  # no cpu.max anywhere
    (leaf / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(root, membership) is None  # unlimited
    (leaf / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(root, membership) == 2  # 1.5 cores: two threads
    (leaf.parent / "cpu.max").write_text("50000 100000\n")
    assert cgroup_cpu_limit(root, membership) == 1  # the parent's quota binds
    membership.write_text("12:cpu,cpuacct:/a/b\n")  # cgroup v1: not read
    assert cgroup_cpu_limit(root, membership) is None
    assert cgroup_cpu_limit(root, tmp_path / "missing") is None


@pytest.fixture(scope="module")
def torch_here() -> None:
    require_module("torch", MACE_HINT)


@pytest.mark.usefixtures("torch_here")
def test_default_in_a_fresh_interpreter_is_passive_with_one_thread_per_usable_core() -> None:
    out = _probe(_bare_env())
    assert out["wait"] == "PASSIVE"
    assert out["torch"] == _expected_default()
    assert out["omp"] == str(_expected_default())


@pytest.mark.usefixtures("torch_here")
def test_default_follows_the_affinity_mask_not_the_machine() -> None:
    cpu = min(os.sched_getaffinity(0))
    out = _probe(_bare_env(), cpus={cpu})
    assert out["affinity"] == 1
    assert out["torch"] == 1


@pytest.mark.usefixtures("torch_here")
def test_the_users_settings_win_in_a_fresh_interpreter() -> None:
    # torch never starts more threads than usable cores, so the user's choices are below that.
    out = _probe({**_bare_env(), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "ACTIVE"})
    assert out["torch"] == 1 and out["omp"] == "1" and out["wait"] == "ACTIVE"
    # GLASSBENCH_THREADS (the runner's explicit count) wins over OMP_NUM_THREADS.
    out = _probe({**_bare_env(), "OMP_NUM_THREADS": "2", "GLASSBENCH_THREADS": "1"})
    assert out["torch"] == 1 and out["omp"] == "1"
