"""Where campaign tasks execute: a local process pool or a Dask cluster, behind one protocol.

``local`` is a spawn-context process pool; ``dask`` is a ``distributed`` client of a running
scheduler, of a dask-jobqueue Slurm/PBS cluster built from the spec's ``[cluster]`` section, or
of a `LocalCluster`. Runs of an MLIP with its own interpreter may be routed to Dask workers
started from that environment, which advertise the resource `env_resource_name`.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import multiprocessing
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from glassbench.campaigns.spec import CLUSTER_KINDS, CampaignSpec
from glassbench.campaigns.tasks import TaskResult
from glassbench.errors import BadInput, Failure
from glassbench.runners.interpreter import limit_threads

log = logging.getLogger(__name__)

EXECUTORS = ("local", "dask")

# Dask worker resources a task asks for (None: any worker).
WorkerResources = dict[str, float] | None

T = TypeVar("T")


class TaskFuture(Protocol):
    """A submitted task: a `concurrent.futures.Future` or a `distributed.Future`."""

    def result(self, timeout: float | None = None) -> Any: ...


class Executor(Protocol):
    """Runs task functions somewhere; the campaign loop needs nothing else."""

    def submit(
        self, fn: Callable[[T], TaskResult], task: T, resources: WorkerResources
    ) -> TaskFuture:
        """Start ``fn(task)``; ``resources`` are the Dask worker resources it needs."""
        ...

    def wait(self, futures: Iterable[TaskFuture], timeout: float | None) -> set[TaskFuture]:
        """The futures done once at least one is, or after ``timeout`` (maybe none)."""
        ...

    def close(self, *, cancel: bool = False) -> None:
        """Release the workers; ``cancel`` also stops the tasks still running."""
        ...


def make_executor(
    name: str, *, spec: CampaignSpec, workers: int, scheduler: str | None = None
) -> Executor:
    """The executor called ``name`` (one of `EXECUTORS`) for ``spec``'s runs."""
    if name == "local":
        return LocalExecutor(workers, spec.resources.threads_per_run)
    if name == "dask":
        return DaskExecutor(scheduler=scheduler, workers=workers, spec=spec)
    raise BadInput(f"unknown executor {name!r}", field="executor")


def env_resource_name(python: str) -> str:
    """The Dask worker resource that marks workers started from ``python``'s environment."""
    digest = hashlib.sha256(str(Path(python).absolute()).encode()).hexdigest()
    return f"env-{digest[:10]}"


def _worker_init(threads: int) -> None:
    limit_threads(threads, override=False)


class LocalExecutor:
    """A process pool (spawn: no forked database connections or torch thread pools)."""

    name = "local"

    def __init__(self, workers: int, threads: int) -> None:
        self.workers = workers
        self.threads = threads
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(self.threads,),
        )

    def submit(
        self, fn: Callable[[T], TaskResult], task: T, resources: WorkerResources
    ) -> TaskFuture:
        try:
            return self.pool.submit(fn, task)
        except cf.process.BrokenProcessPool:
            # A worker died (killed, out of memory): its run is reaped by the campaign loop.
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return self.pool.submit(fn, task)

    def wait(self, futures: Iterable[TaskFuture], timeout: float | None) -> set[TaskFuture]:
        # The futures are this pool's own (submit made them), typed by the protocol as less.
        fs = cast("list[cf.Future[TaskResult]]", list(futures))
        done, _ = cf.wait(fs, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return set(done)

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            # A pool worker survives Ctrl-C (the exception ends only its current call) and
            # would go on with the calls already queued to it: stop the workers. Their runs
            # stay running under dead processes; the next invocation resumes them.
            procs = getattr(self.pool, "_processes", None) or {}
            for proc in list(procs.values()):
                proc.terminate()
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class DaskExecutor:
    """A ``distributed`` client: a given scheduler, a jobqueue cluster, or a LocalCluster.

    (distributed ships py.typed but leaves Client, LocalCluster, wait and close unannotated:
    the ``no-untyped-call`` ignores below are for those.)
    """

    name = "dask"

    def __init__(self, *, scheduler: str | None, workers: int, spec: CampaignSpec) -> None:
        from distributed import Client, LocalCluster

        if not log.isEnabledFor(logging.DEBUG):
            # distributed logs every scheduler event at INFO through the root handler.
            logging.getLogger("distributed").setLevel(logging.WARNING)
        self.cluster: Any = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="30s")  # type: ignore[no-untyped-call]
            except OSError as exc:
                raise Failure(f"cannot connect to the Dask scheduler {scheduler}: {exc}") from None
        else:
            if spec.cluster.kind is not None:
                self.cluster = jobqueue_cluster(spec)
                self.cluster.scale(jobs=spec.cluster.jobs or workers)
            else:
                self.cluster = LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    memory_limit=spec.resources.memory or "auto",
                )
            self.client = Client(self.cluster)  # type: ignore[no-untyped-call]
        self._warned: set[str] = set()

    def submit(
        self, fn: Callable[[T], TaskResult], task: T, resources: WorkerResources
    ) -> TaskFuture:
        if resources:
            self._check_resources(resources)
        fut: TaskFuture = self.client.submit(fn, task, pure=False, resources=resources)
        return fut

    def _check_resources(self, resources: dict[str, float]) -> None:
        # A task asking for a resource no worker has waits forever: say so once.
        have: set[str] = set()
        for w in self.client.scheduler_info().get("workers", {}).values():
            have |= set((w.get("resources") or {}).keys())
        for name in resources:
            if name not in have and name not in self._warned:
                self._warned.add(name)
                log.warning(
                    "no Dask worker advertises resource %s yet: its tasks wait until one "
                    'started with --resources "%s=1" joins (docs/campaigns.md)',
                    name,
                    name,
                )

    def wait(self, futures: Iterable[TaskFuture], timeout: float | None) -> set[TaskFuture]:
        from distributed import wait

        try:
            done, _ = wait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED")  # type: ignore[no-untyped-call]
        except TimeoutError:
            return set()
        return set(done)

    def close(self, *, cancel: bool = False) -> None:
        self.client.close()  # type: ignore[no-untyped-call]
        if self.cluster is not None:
            self.cluster.close()


# --- dask-jobqueue ----------------------------------------------------------------------------


def jobqueue_cluster(spec: CampaignSpec, **overrides: Any) -> Any:
    """A dask-jobqueue ``SLURMCluster`` / ``PBSCluster`` from ``[cluster]`` and ``[resources]``.

    Each batch job runs ``processes`` Dask workers with one task thread each; the job asks for
    ``threads_per_run`` cores per worker, which the run's torch/OpenMP threads use.
    """
    kw = jobqueue_kwargs(spec, **overrides)
    from dask_jobqueue.pbs import PBSCluster
    from dask_jobqueue.slurm import SLURMCluster

    cls = SLURMCluster if spec.cluster.kind == "slurm" else PBSCluster
    return cls(**kw)


def jobqueue_job(spec: CampaignSpec, *, scheduler: str, python: str | None = None) -> Any:
    """A single batch job of workers joining ``scheduler`` (no cluster object, no scheduler
    started): ``job.job_script()`` is what to ``sbatch``/``qsub``. With ``python`` the workers
    come from that environment and advertise its `env_resource_name`."""
    from dask_jobqueue.pbs import PBSJob
    from dask_jobqueue.slurm import SLURMJob

    kw = jobqueue_kwargs(spec, python=python)
    cls = SLURMJob if spec.cluster.kind == "slurm" else PBSJob
    return cls(scheduler=scheduler, name=f"glassbench-{spec.name}", **kw)


def jobqueue_kwargs(
    spec: CampaignSpec, *, python: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """The keyword arguments of a dask-jobqueue cluster or job for ``spec``."""
    c, res = spec.cluster, spec.resources
    if c.kind not in CLUSTER_KINDS:
        raise BadInput(
            'needs a [cluster] section with kind = "slurm" or "pbs"',
            source=str(spec.path),
            where="cluster.kind",
        )
    memory = c.memory or res.memory
    if not memory:
        raise BadInput(
            "a batch cluster needs the memory per job",
            source=str(spec.path),
            where="resources.memory",
        )
    cpus = res.threads_per_run * c.processes
    kw: dict[str, Any] = {
        # One task thread per worker: `cores` sets dask's --nthreads, the batch request
        # (job_cpu / ncpus) reserves the cores the run's own threads use.
        "cores": c.processes,
        "processes": c.processes,
        "memory": memory,
        "walltime": c.walltime or res.walltime,
        "queue": c.queue,
        "account": c.account,
        "python": python or c.python or sys.executable,
        "interface": c.interface,
        "local_directory": c.local_directory,
        "log_directory": c.log_directory,
        "job_extra_directives": list(c.job_extra_directives),
        "job_script_prologue": list(c.job_script_prologue),
        "job_name": f"glassbench-{spec.name}",
    }
    if c.kind == "slurm":
        kw["job_cpu"] = cpus
    else:
        kw["resource_spec"] = f"select=1:ncpus={cpus}:mem={memory}"
    if python is not None:
        kw["worker_extra_args"] = ["--resources", f"{env_resource_name(python)}=1"]
    kw.update(overrides)
    return {k: v for k, v in kw.items() if v is not None}
