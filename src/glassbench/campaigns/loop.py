"""The campaign loop: decide what to submit, collect results, watch runs other workers hold.

The database is the coordinator. Every task claims its run with one atomic UPDATE in the run
store: a task that loses the claim does nothing, so running one spec twice, or from two machines
against one PostgreSQL, never runs or stores a run twice. The loop only decides *what to
submit*: it waits for runs held by other workers, and resubmits a run when its worker is gone
(dead process on this host, or no heartbeat for ``stale_after_s``) or when it failed and retries
are left. The checkpoints of the melt-quench runner make a resubmitted run resume where it
stopped. See docs/campaigns.md, "What `campaign run` does".
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from glassbench.campaigns.executors import (
    EXECUTORS,
    Executor,
    TaskFuture,
    WorkerResources,
    env_resource_name,
    make_executor,
)
from glassbench.campaigns.spec import CampaignSpec, check_mlips
from glassbench.campaigns.status import STATUSES, CampaignReport
from glassbench.campaigns.tasks import (
    CrystalTask,
    Outcome,
    RunTask,
    TaskResult,
    execute_crystals,
    execute_run,
)
from glassbench.errors import BadInput
from glassbench.progress import make_bar
from glassbench.runners.checkpoints import check_checkpoint_dir
from glassbench.runners.interpreter import same_environment
from glassbench.runners.meltquench import MeltQuenchParams
from glassbench.schema import RunStatus
from glassbench.service import runs

if TYPE_CHECKING:
    from tqdm import tqdm

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What this invocation knows of one run of the matrix."""

    params: MeltQuenchParams
    run_id: int
    python: str | None
    attempts0: int
    checkpoint_dir: str = ""
    tries: int = 0
    last_error: str = ""


def default_workers(threads_per_run: int) -> int:
    """One worker per ``threads_per_run`` of the cores this process may run on (a cgroup or
    taskset can allow fewer than the host has)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // threads_per_run)


def absolute_db_url(url: str) -> str:
    """Workers may run elsewhere (another cwd): a relative SQLite path must not move."""
    from glassbench.settings import normalize_database_url

    url = normalize_database_url(url)
    u = sa.engine.make_url(url)
    if (
        u.get_backend_name() == "sqlite"
        and u.database
        and u.database != ":memory:"
        and not (u.database.startswith("file:") or os.path.isabs(u.database))
    ):
        u = u.set(database=str(Path(u.database).absolute()))
        return u.render_as_string(hide_password=False)
    return url


def run_campaign(
    spec: CampaignSpec,
    engine: Engine,
    db_url: str,
    *,
    executor: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    retries: int | None = None,
    env_resources: bool | None = None,
    checkpoint_dir: Path | None = None,
    progress: bool | None = None,
    poll_s: float = 2.0,
    max_runs: int | None = None,
    announce: Callable[[str], object] | None = None,
) -> CampaignReport:
    """Run every run of the spec that is not done yet; see the module docstring.

    A matrix of more than ``max_runs`` runs is refused before anything is written (None: the
    setting ``campaign_max_runs``; `campaign run --yes` passes ``sys.maxsize``). ``announce``
    is told the matrix size (:meth:`CampaignSpec.describe_size`) once every check passed,
    before the first row is written.
    """
    return CampaignLoop(
        spec,
        engine,
        db_url,
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        retries=retries,
        env_resources=env_resources,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        poll_s=poll_s,
        max_runs=max_runs,
        announce=announce,
    ).run()


class CampaignLoop:
    """One invocation of `run_campaign`: its settings, and the state of every run it handles.

    A run is in at most one of ``inflight`` (a task submitted, keyed by its future),
    ``watch`` (held by another worker: polled in the database) and ``finished`` (done, or
    failed with no retry left).
    """

    bar: tqdm[Any]
    executor: Executor

    def __init__(
        self,
        spec: CampaignSpec,
        engine: Engine,
        db_url: str,
        *,
        executor: str = "local",
        workers: int | None = None,
        scheduler: str | None = None,
        retries: int | None = None,
        env_resources: bool | None = None,
        checkpoint_dir: Path | None = None,
        progress: bool | None = None,
        poll_s: float = 2.0,
        max_runs: int | None = None,
        announce: Callable[[str], object] | None = None,
    ) -> None:
        self.t0 = time.perf_counter()
        if executor not in EXECUTORS:
            raise BadInput(f"unknown executor {executor!r}", field="executor")
        if max_runs is None:
            from glassbench.settings import get_settings

            max_runs = get_settings().campaign_max_runs
        # Before the matrix is expanded: 10^6 parameter sets are seconds and memory already.
        spec.check_size(max_runs)
        self.spec = spec
        self.engine = engine
        self.executor_name = executor
        self.mlips = check_mlips(spec, engine)
        self.url = absolute_db_url(db_url)
        self.retries = spec.resources.retries if retries is None else retries
        use_env = spec.cluster.env_resources if env_resources is None else env_resources
        # Worker resources are Dask's: with a process pool every such run is a subprocess.
        self.env_resources = bool(use_env) and executor == "dask"
        self.checkpoint_root = (checkpoint_dir or spec.checkpoint_dir()).absolute()
        # Every run would fail on its first checkpoint: refuse now, before any row exists.
        # A folder the caller passed is named by its field; one from the spec by the spec's key.
        where = None
        if checkpoint_dir is None:
            named = spec.resources.checkpoint_dir is not None
            where = "resources.checkpoint_dir" if named else "default checkpoint folder"
        check_checkpoint_dir(
            self.checkpoint_root, source=str(spec.path) if where else None, where=where
        )
        self.threads = spec.resources.threads_per_run
        self.workers = default_workers(self.threads) if workers is None else workers
        self.scheduler = scheduler
        self.progress = progress
        self.poll_s = poll_s
        self.announce = announce

        self.states: dict[int, RunState] = {}
        self.done_before = 0
        self.inflight: dict[TaskFuture, int] = {}
        self.crystal_futures: dict[TaskFuture, str] = {}
        self.watch: set[int] = set()
        self.finished: set[int] = set()
        self.ran = 0
        self.failed = 0
        self.crystal_failures: list[str] = []

    def run(self) -> CampaignReport:
        if self.announce is not None:
            self.announce(self.spec.describe_size())
        todo = self._ensure_runs()
        crystal_work = {
            name: files
            for name, m in self.mlips.items()
            if self.spec.crystal and (files := _crystals_todo(self.engine, m, self.spec.crystal))
        }
        if not todo and not crystal_work:
            return self._report()
        self.bar = make_bar(
            len(self.states),
            unit="run",
            desc=self.spec.name,
            initial=self.done_before,
            enabled=self.progress,
        )
        self.executor = make_executor(
            self.executor_name, spec=self.spec, workers=self.workers, scheduler=self.scheduler
        )
        try:
            for rid in todo:
                self._submit(rid)
            for name, files in crystal_work.items():
                task = CrystalTask(
                    self.url, name, tuple(files), self.threads, self.mlips[name].python
                )
                self.crystal_futures[self.executor.submit(execute_crystals, task, None)] = name
            self._drive()
        except BaseException:
            self.bar.close()
            self.executor.close(cancel=True)
            raise
        self.bar.close()
        self.executor.close()
        return self._report()

    def _ensure_runs(self) -> list[int]:
        """Create the matrix's missing runs; the ids of the runs not done yet."""
        matrix = self.spec.params()
        for p, rid in zip(matrix, register_runs(self.engine, matrix, self.mlips), strict=True):
            self.states[rid] = RunState(p, rid, self.mlips[p.mlip].python, 0)
        ids = list(self.states)
        runs.release_dead_local_workers(self.engine, ids)
        rows = runs.rows(self.engine, ids)
        for rid, row in rows.items():
            st = self.states[rid]
            st.attempts0 = row.attempts
            # Checkpoints are per run *row*: a database deleted and recreated under the same
            # URL reuses run ids, and a stale final-step checkpoint would "finish" a new run.
            ident = f"{rid}|{row.created_at}"
            st.checkpoint_dir = str(
                self.checkpoint_root / hashlib.sha256(ident.encode()).hexdigest()[:16]
            )
        todo = [rid for rid in ids if rows[rid].status is not RunStatus.DONE]
        self.done_before = len(ids) - len(todo)
        return todo

    def _submit(self, rid: int) -> None:
        st = self.states[rid]
        task = RunTask(
            db_url=self.url,
            run_id=rid,
            params=st.params,
            checkpoint_dir=st.checkpoint_dir,
            # Across concurrent campaigns too, a run is tried at most 1 + retries more times.
            max_attempts=st.attempts0 + 1 + self.retries,
            threads=self.threads,
            python=st.python,
            stale_after_s=self.spec.resources.stale_after_s,
        )
        res: WorkerResources = None
        if self.env_resources and st.python and not same_environment(st.python):
            # Routed to workers of the MLIP's environment, where execute_run runs in-process.
            res = {env_resource_name(st.python): 1}
        self.inflight[self.executor.submit(execute_run, task, res)] = rid

    def _drive(self) -> None:
        """Until every submitted task is collected and every watched run settled."""
        last_poll = time.monotonic()
        while self.inflight or self.watch or self.crystal_futures:
            pending = [*self.inflight, *self.crystal_futures]
            if pending:
                # Without watched runs only a task can change anything: block until one ends.
                done = self.executor.wait(pending, self.poll_s if self.watch else None)
            else:
                done = set()
                time.sleep(self.poll_s)
            for fut in done:
                self._collect(fut)
            if self.watch and time.monotonic() - last_poll >= self.poll_s:
                last_poll = time.monotonic()
                self._poll_watched()

    def _collect(self, fut: TaskFuture) -> None:
        if fut in self.crystal_futures:
            name = self.crystal_futures.pop(fut)
            cres = _result(fut, -1)
            if cres.outcome == Outcome.FAILED:
                self.crystal_failures.append(f"{name}: {cres.message}")
            return
        rid = self.inflight.pop(fut)
        res = _result(fut, rid)
        if res.outcome in (Outcome.RAN, Outcome.ALREADY_DONE):
            if res.outcome == Outcome.RAN:
                self.ran += 1
            self._finish(rid)
        elif res.outcome in (Outcome.BUSY, Outcome.LOST):
            self.states[rid].last_error = res.message
            self.watch.add(rid)
        else:
            self._retry_or_give_up(rid, res.message)

    def _poll_watched(self) -> None:
        """Runs held by other workers: wait for them, or take them over when their worker is
        gone (released runs are failed or pending, so a normal claim can take them)."""
        ids = list(self.watch)
        runs.release_dead_local_workers(self.engine, ids)
        runs.release_stale(self.engine, ids, self.spec.resources.stale_after_s)
        rows = runs.rows(self.engine, ids)
        for rid in ids:
            row = rows[rid]
            if row.status is RunStatus.DONE:
                self.watch.discard(rid)
                self._finish(rid)
            elif row.status in (RunStatus.FAILED, RunStatus.PENDING):
                self.watch.discard(rid)
                self._retry_or_give_up(rid, row.error or self.states[rid].last_error)

    def _retry_or_give_up(self, rid: int, error: str) -> None:
        st = self.states[rid]
        st.tries += 1
        st.last_error = error or st.last_error
        if st.tries <= self.retries:
            log.info("retrying run %s (%s/%s): %s", rid, st.tries, self.retries, error)
            self._submit(rid)
            return
        self.finished.add(rid)
        self.failed += 1
        self.bar.update(1)
        self.bar.set_postfix_str(f"{self.failed} failed")

    def _finish(self, rid: int) -> None:
        self.finished.add(rid)
        self.bar.update(1)

    def _report(self) -> CampaignReport:
        rows = runs.rows(self.engine, list(self.states))
        counts = {s: 0 for s in STATUSES}
        failures = []
        for rid, st in self.states.items():
            row = rows[rid]
            counts[row.status.value] += 1
            if row.status is not RunStatus.DONE:
                p = st.params
                failures.append(
                    {
                        "mlip": p.mlip,
                        "x": p.x,
                        "quench_rate_k_ps": p.quench_rate_k_ps,
                        "seed": p.seed,
                        "status": row.status.value,
                        "attempts": row.attempts,
                        "error": row.error or st.last_error,
                    }
                )
        wall = time.perf_counter() - self.t0
        return CampaignReport(
            self.spec.name,
            len(self.states),
            self.done_before,
            self.ran,
            counts,
            failures,
            self.crystal_failures,
            wall,
        )


def register_runs(
    engine: Engine, matrix: Sequence[MeltQuenchParams], mlips: Mapping[str, Any]
) -> list[int]:
    """The run ids of ``matrix`` (``mlips``: its MLIP records by name), missing runs created
    ``pending``: one transaction, compositions and protocols stored once each, the runs in
    bulk (`runs.ensure_many`)."""
    from glassbench.service import repos, unit_of_work

    with unit_of_work(engine) as s:
        compositions = {x: repos.composition_id(s, x) for x in {p.x for p in matrix}}
        protocols: dict[Any, int] = {}
        keys = []
        for p in matrix:
            # The same protocol record and name as `meltquench.ensure_run`, once per protocol.
            pid = protocols.get(p.spec)
            if pid is None:
                pid = protocols[p.spec] = repos.protocol_id(
                    s, p.protocol_record(), name=p.spec.name
                )
            keys.append(
                runs.RunKey(mlips[p.mlip].id, compositions[p.x], p.quench_rate_k_ps, p.seed, pid)
            )
        return runs.ensure_many(s, keys)


def _result(fut: TaskFuture, rid: int) -> TaskResult:
    try:
        res = fut.result()
    except Exception as exc:  # the worker died or the task could not be shipped
        # The run may still be held by a dead process; the poll loop reaps it.
        return TaskResult(rid, Outcome.LOST, f"{type(exc).__name__}: {exc}")
    assert isinstance(res, TaskResult)
    return res


def _crystals_todo(engine: Engine, mlip: Any, files: Sequence[Path]) -> list[str]:
    """Crystal files without a stored volume for this MLIP and this exact structure."""
    from glassbench.hashing import sha256_file

    with engine.connect() as c:
        have = {
            (r[0], r[1])
            for r in c.execute(
                sa.text("SELECT crystal, structure_sha256 FROM crystal_volume WHERE mlip_id = :m"),
                {"m": mlip.id},
            )
        }
    return [str(f) for f in files if (f.stem, sha256_file(f)) not in have]
