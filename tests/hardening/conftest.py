"""Shared pieces of the hardening suite (issue 17): the CLI in a child process under a memory
limit, and row counts of every table for "nothing changed" checks.

Resource bounds are tested in a child process whose address space is capped with
``resource.setrlimit``: a regression that tries to allocate gigabytes fails with MemoryError
(exit 1) or is refused by its own check (exit 2) instead of swapping the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import table_counts

__all__ = ["MEM_LIMIT_MB", "gb_limited", "table_counts"]

# Address space of a child `glassbench`: enough for Python + numpy + SQLAlchemy + ASE (about
# 600 MB of mappings, most never touched) and well below what the unbounded inputs reached.
MEM_LIMIT_MB = 1500


def _limit(mb: int) -> Callable[[], None]:
    def apply() -> None:
        cap = mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return apply


def gb_limited(
    url: str | None,
    *args: str,
    mem_mb: int = MEM_LIMIT_MB,
    timeout: float = 120,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m glassbench [--db URL] ARGS`` in a child capped at ``mem_mb`` of address
    space and ``timeout`` seconds (a hang fails the test through TimeoutExpired)."""
    full_env = dict(os.environ)
    full_env.pop("GLASSBENCH_DATABASE_URL", None)
    # One thread each: OpenBLAS/OpenMP reserve address space per thread.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        full_env[var] = "1"
    full_env.update(env or {})
    db = ["--db", url] if url is not None else []
    return subprocess.run(
        [sys.executable, "-m", "glassbench", *db, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=full_env,
        input=input,
        preexec_fn=_limit(mem_mb),
    )
