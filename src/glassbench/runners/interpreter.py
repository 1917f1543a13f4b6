"""Threads and interpreters: one home for "how many threads may a simulation use" and "run this
in the MLIP's own Python environment".

Heavy ML stacks conflict (torch, TensorFlow and e3nn pins), so an MLIP may be registered with
an interpreter of its own (``glassbench mlip add --python``); the runner and the campaign
workers then execute its runs there, with the same database. Nothing here imports torch: it is
touched only when the process has already loaded it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
# Idle OpenMP threads sleep instead of spinning. With more threads than free cores, spinning
# threads steal the cores the working ones wait for (benchmarks/README.md, "Threads").
# libgomp and Intel's OpenMP read this once, when they load: it must be in the environment
# before torch is imported, so it is set for child processes and, here, only for later loads.
WAIT_POLICY = "PASSIVE"


def _read_cpu_max(folder: Path) -> int | None:
    try:
        fields = (folder / "cpu.max").read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return max(1, -(-quota // period)) if period > 0 else None


def cgroup_cpu_limit(
    root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> int | None:
    """Whole cores allowed by a cgroup v2 CPU quota (``cpu.max``) of this process's cgroup or
    any ancestor, rounded up; None when there is none (or no cgroup v2 to read).

    A container started with ``--cpus`` keeps every host core in its affinity mask, so the mask
    alone would give it one thread per host core.
    """
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:
        return None
    node = root / rel.strip().lstrip("/")
    limits: list[int] = []
    while True:
        cores = _read_cpu_max(node)
        if cores is not None:
            limits.append(cores)
        if node == root or root not in node.parents:
            break
        node = node.parent
    return min(limits) if limits else None


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity mask, capped by a cgroup CPU quota.

    The default thread count: ``taskset``, Slurm and container limits narrow it, where a count
    of the machine's cores would start threads that only wait for a core.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity masks
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    return max(1, min(cores, quota) if quota is not None else cores)


def default_threads() -> int:
    """Threads when nobody chose: ``OMP_NUM_THREADS`` if set (the user's), else `available_cores`."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return available_cores()


def prefer_passive_wait() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` in this process's environment unless the user set it.

    Effective for torch only when called before torch is imported (the start of a command);
    later calls still give it to child processes.
    """
    os.environ.setdefault(WAIT_POLICY_VARIABLE, WAIT_POLICY)


def limit_threads(threads: int | None, *, override: bool = True) -> None:
    """Keep this process on ``threads`` threads (OpenMP, MKL, OpenBLAS and torch).

    ``override=False`` keeps thread variables the user set explicitly. ``None`` or 0 means the
    default: `default_threads`, put in the environment (never over the user's variables) when
    torch is not loaded yet; a torch already loaded keeps the count it has, which its importer
    chose. Either way ``OMP_WAIT_POLICY`` becomes ``PASSIVE`` unless the user set it: it takes
    effect for torch if torch loads after this call, and for child processes.
    """
    prefer_passive_wait()
    torch = sys.modules.get("torch")
    if not threads:
        if torch is None:
            count = str(default_threads())
            for var in THREAD_VARIABLES:
                os.environ.setdefault(var, count)
        return
    for var in THREAD_VARIABLES:
        if override:
            os.environ[var] = str(threads)
        else:
            os.environ.setdefault(var, str(threads))
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def same_environment(python: str | None) -> bool:
    """True when ``python`` is (an interpreter of) the environment running this process.

    Not resolved through symlinks: every venv's python links to the same base interpreter,
    so the venv is identified by the path's ``bin/..``, which is ``sys.prefix`` inside it.
    """
    if not python:
        return True
    p = Path(python).absolute()
    return p == Path(sys.executable).absolute() or p.parent.parent == Path(sys.prefix).absolute()


def child_environment(
    *,
    threads: int | None = None,
    extra: Mapping[str, str] | None = None,
    override: bool = True,
) -> dict[str, str]:
    """The environment of a child interpreter: its own packages, this run's thread limit.

    ``threads`` sets the thread variables (``override=False``: only those not already set, as
    in `limit_threads`). Without it they are inherited as they are, and a child without them
    picks its default (`limit_threads`) from the cores it may use, an affinity it inherits.
    ``OMP_WAIT_POLICY`` is ``PASSIVE`` unless this process's environment sets it.
    """
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the child must use its own environment's packages
    if threads:
        for var in THREAD_VARIABLES:
            if override or var not in env:
                env[var] = str(threads)
    env.setdefault(WAIT_POLICY_VARIABLE, WAIT_POLICY)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def run_in_interpreter(
    python: str,
    args: Sequence[str],
    *,
    stdin: str | None = None,
    threads: int | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    override_threads: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m glassbench...`` (``args`` follow ``-m``) in another environment.

    Secrets (a database URL with its password) travel through ``stdin`` or ``env``, never
    through ``args``, which ``ps`` shows to every user of the machine. ``threads`` and
    ``override_threads`` are `child_environment`'s ``threads`` and ``override``.
    """
    return subprocess.run(
        [python, "-m", *args],
        input=stdin,
        capture_output=capture,
        text=True,
        env=child_environment(threads=threads, extra=env, override=override_threads),
        check=False,
    )
