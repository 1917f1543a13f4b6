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


def limit_threads(threads: int | None, *, override: bool = True) -> None:
    """Keep this process on ``threads`` threads (OpenMP, MKL, OpenBLAS and torch).

    Oversubscribed torch spin-waits (a tiny MACE step took 5x longer with 2 threads per run on
    2 busy cores). ``override=False`` keeps thread variables the user set explicitly.
    ``None`` or 0 leaves everything as it is.
    """
    if not threads:
        return
    for var in THREAD_VARIABLES:
        if override:
            os.environ[var] = str(threads)
        else:
            os.environ.setdefault(var, str(threads))
    torch = sys.modules.get("torch")
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
    *, threads: int | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a child interpreter: its own packages, this run's thread limit."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the child must use its own environment's packages
    if threads:
        for var in THREAD_VARIABLES:
            env[var] = str(threads)
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
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m glassbench...`` (``args`` follow ``-m``) in another environment.

    Secrets (a database URL with its password) travel through ``stdin`` or ``env``, never
    through ``args``, which ``ps`` shows to every user of the machine.
    """
    return subprocess.run(
        [python, "-m", *args],
        input=stdin,
        capture_output=capture,
        text=True,
        env=child_environment(threads=threads, extra=env),
        check=False,
    )
