"""What a campaign worker executes: one melt-quench run, or one MLIP's crystal volumes.

Tasks are plain data (the database URL, the run id, the parameters) so that they pickle for
a process pool or Dask and convert to JSON for a child interpreter. Every task claims its run
in the database itself (``force_claim=False``): a task that loses the claim does nothing.

An MLIP registered with its own interpreter runs there: the worker starts
``python -m glassbench.campaigns.tasks run|crystal`` in that environment with the task as JSON
on stdin, and reads the result as the last JSON line of its stdout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from glassbench.errors import BadInput, Failure
from glassbench.runners.interpreter import limit_threads, run_in_interpreter, same_environment
from glassbench.runners.meltquench import MeltQuenchParams
from glassbench.schema import RunStatus
from glassbench.service import runs
from glassbench.service.runs import DEFAULT_STALE_AFTER_S

CHILD_MODULE = "glassbench.campaigns.tasks"


class Outcome(StrEnum):
    """What a task did with its run."""

    RAN = "ran"  # ran now, and the run is done
    ALREADY_DONE = "already-done"
    BUSY = "busy"  # another worker holds the run
    FAILED = RunStatus.FAILED.value  # the run store marked the run failed, or the task broke
    LOST = "lost"  # no result: the worker died or the task could not be shipped


@dataclass(frozen=True)
class RunTask:
    """One melt-quench run for a worker; plain data so it pickles and converts to JSON."""

    db_url: str
    run_id: int
    params: MeltQuenchParams
    checkpoint_dir: str
    max_attempts: int | None
    threads: int = 1
    python: str | None = None
    in_process: bool = False
    stale_after_s: float = DEFAULT_STALE_AFTER_S

    def to_json(self) -> str:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["params"] = self.params.to_request()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> RunTask:
        d = json.loads(text)
        d["params"] = MeltQuenchParams.from_request(d["params"])
        return cls(**d)


@dataclass(frozen=True)
class CrystalTask:
    """Relax the spec's crystal files with one MLIP."""

    db_url: str
    mlip: str
    files: tuple[str, ...]
    threads: int = 1
    python: str | None = None


@dataclass(frozen=True)
class TaskResult:
    """The outcome of one task (``run_id`` -1 for a crystal task)."""

    run_id: int
    outcome: Outcome
    message: str = ""
    worker: str = ""
    wall_s: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskResult:
        return cls(**{**d, "outcome": Outcome(d["outcome"])})


# One engine (one pool) and one calculator per model in each worker process, reused by all the
# tasks it executes: loading a model is the slow part of a short run.
_ENGINES: dict[str, Engine] = {}
_CALCULATORS: dict[tuple[str, str | None, str | None], Any] = {}


def _engine(url: str) -> Engine:
    eng = _ENGINES.get(url)
    if eng is None:
        from glassbench.service.db import make_engine

        eng = _ENGINES[url] = make_engine(url)
    return eng


def _calculator(mlip: Any) -> Any:
    key = (mlip.arch, mlip.model_path, mlip.model_sha256)
    calc = _CALCULATORS.get(key)
    if calc is None:
        from glassbench.runners.meltquench import build_calculator

        # The bare model: the run adds its protocol's (or the MLIP's) dispersion on top.
        calc = _CALCULATORS[key] = build_calculator(mlip, dispersion="none")
    return calc


def execute_run(task: RunTask) -> TaskResult:
    """Claim and run one melt-quench run (the task function of both executors)."""
    from glassbench.runners.meltquench import run_meltquench

    t0 = time.perf_counter()
    # Many runs share a node: each keeps to its share of cores, but thread variables the user
    # set explicitly win.
    limit_threads(task.threads, override=False)
    if not task.in_process and not same_environment(task.python):
        assert task.python is not None
        return _delegate(task.python, "run", task.to_json(), task.run_id, task.threads)
    engine = _engine(task.db_url)
    me = runs.worker_id()
    try:
        # Cheap check first: a finished run must not cost a model load.
        if runs.status(engine, task.run_id) is RunStatus.DONE:
            return TaskResult(task.run_id, Outcome.ALREADY_DONE, worker=me)
        calc = _calculator(_mlip(engine, task.params.mlip))
        # Loading the model may have imported torch, whose thread pool starts at all cores.
        limit_threads(task.threads, override=False)
        out = run_meltquench(
            engine,
            task.params,
            checkpoint_dir=Path(task.checkpoint_dir),
            calculator=calc,
            progress=False,
            force_claim=False,
            max_attempts=task.max_attempts,
            stale_after_s=task.stale_after_s,
        )
    except Exception as exc:  # any failure of one run is reported, never fatal for the pool
        wall = time.perf_counter() - t0
        return TaskResult(task.run_id, Outcome.FAILED, _message(exc), me, wall)
    if out.message == "already done":
        return TaskResult(task.run_id, Outcome.ALREADY_DONE, worker=me)
    if out.status == RunStatus.DONE and out.steps > 0:
        return TaskResult(task.run_id, Outcome.RAN, worker=me, wall_s=out.wall_s)
    return TaskResult(task.run_id, Outcome.BUSY, out.message, me)


def execute_crystals(task: CrystalTask) -> TaskResult:
    """Relax the spec's crystals with one MLIP (idempotent upserts; results per MLIP)."""
    from glassbench.runners.crystal_run import run_crystals

    limit_threads(task.threads, override=False)
    if not same_environment(task.python):
        assert task.python is not None
        return _delegate(task.python, "crystal", json.dumps(asdict(task)), -1, task.threads)
    engine = _engine(task.db_url)
    t0 = time.perf_counter()
    try:
        calc = _calculator(_mlip(engine, task.mlip))
        limit_threads(task.threads, override=False)
        run_crystals(engine, task.mlip, [Path(f) for f in task.files], calculator=calc)
    except Exception as exc:  # reported per MLIP, never fatal for the pool
        wall = time.perf_counter() - t0
        return TaskResult(-1, Outcome.FAILED, _message(exc), runs.worker_id(), wall)
    return TaskResult(-1, Outcome.RAN, worker=runs.worker_id(), wall_s=time.perf_counter() - t0)


def _delegate(python: str, kind: str, payload: str, run_id: int, threads: int) -> TaskResult:
    """Run the task in the MLIP's own interpreter; the child claims the run itself."""
    # The payload (with the database URL) goes through stdin, not argv, which `ps` shows.
    # As in-process: thread variables the user set explicitly win over threads_per_run.
    proc = run_in_interpreter(
        python,
        [CHILD_MODULE, kind],
        stdin=payload,
        threads=threads,
        capture=True,
        override_threads=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return TaskResult.from_dict(json.loads(lines[-1]))
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    message = f"{python} exited with status {proc.returncode}: {tail}"
    return TaskResult(run_id, Outcome.FAILED, message)


def _child_main(argv: Sequence[str]) -> int:
    """Entry point of a delegated task: JSON task on stdin, JSON result as the last line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    payload = sys.stdin.read()
    if argv and argv[0] == "crystal":
        d = json.loads(payload)
        # This process is the MLIP's interpreter: run here, do not delegate again.
        res = execute_crystals(CrystalTask(**{**d, "files": tuple(d["files"]), "python": None}))
    else:
        task = RunTask.from_json(payload)
        res = execute_run(dataclasses.replace(task, in_process=True))
    print(json.dumps(asdict(res)), flush=True)
    return 0


def _mlip(engine: Engine, name: str) -> Any:
    from sqlmodel import Session

    from glassbench.service import repos

    with Session(engine) as s:
        m = repos.get_mlip(s, name)
        s.expunge(m)
        return m


def _message(exc: BaseException) -> str:
    if isinstance(exc, BadInput | Failure):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    sys.exit(_child_main(sys.argv[1:]))
