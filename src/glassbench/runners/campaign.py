"""Campaigns: a TOML spec expanded into melt-quench runs, executed by a process pool or Dask.

The database is the coordinator. Every task claims its run with one atomic UPDATE
(`claim_run` with ``force=False``): a task that loses the claim does nothing, so running one
spec twice, or from two machines against one PostgreSQL, never runs or stores a run twice. The
campaign process only decides *what to submit*; it waits for runs held by other workers, and
resubmits a run when its worker is gone (dead process on this host, or no heartbeat for
``stale_after_s``) or when it failed and retries are left. The checkpoints of the melt-quench
runner make a resubmitted run resume where it stopped.

Executors: ``local`` (a spawn-context process pool) and ``dask`` (``distributed``: a running
scheduler, a `LocalCluster`, or a dask-jobqueue Slurm/PBS cluster built from the spec's
``[cluster]`` section). An MLIP registered with its own interpreter runs in that interpreter:
either as a subprocess of an ordinary worker (default; the child executes this module's task
entry point, so claiming stays the same) or, with ``env_resources``, on Dask workers started
from that environment that advertise the resource `env_resource_name` (see docs/campaigns.md).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import math
import multiprocessing
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from glassbench.errors import BadInput, Failure
from glassbench.runners.meltquench import MeltQuenchParams
from glassbench.schema import RunStatus
from glassbench.service import runs

log = logging.getLogger(__name__)

EXECUTORS = ("local", "dask")
CLUSTER_KINDS = ("slurm", "pbs")
DEFAULT_RETRIES = 1
DEFAULT_STALE_AFTER_S = 600.0
# Status vocabulary of `campaign status`: the run table's, plus runs not created yet.
# The run statuses in the order tables show them, and ``missing``: in the matrix, not created yet.
MISSING = "missing"
STATUSES = (
    RunStatus.DONE.value,
    RunStatus.RUNNING.value,
    RunStatus.PENDING.value,
    RunStatus.FAILED.value,
    MISSING,
)

# Spec keys derive from MeltQuenchParams, so a parameter added to the runner is accepted at
# once: [protocol] takes every field outside the run key except the elastic ones, which go
# in [properties] (`elastic` and the `elastic_*` options).
_KEY_FIELDS = ("mlip", "x", "quench_rate_k_ps", "seed")
_DEFAULTS = MeltQuenchParams(mlip="", x=0.0, quench_rate_k_ps=1.0, seed=0)
PROTOCOL_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(MeltQuenchParams)
    if f.name not in _KEY_FIELDS and not f.name.startswith("elastic")
)  # fmt: skip
PROPERTY_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(MeltQuenchParams) if f.name.startswith("elastic")
)


def _kind_of(name: str) -> str:
    """The spec type of a MeltQuenchParams field, from its default (None: optional number)."""
    default = getattr(_DEFAULTS, name)
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    return "number"


# Dask worker resources a task asks for (None: any worker).
WorkerResources = dict[str, float] | None


# --- the spec ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """Per-run resources (``[resources]``)."""

    threads_per_run: int = 1
    retries: int = DEFAULT_RETRIES
    memory: str | None = None
    walltime: str | None = None
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    checkpoint_dir: Path | None = None


@dataclass(frozen=True)
class ClusterSpec:
    """A dask-jobqueue batch cluster (``[cluster]``); ``kind`` None means none."""

    kind: str | None = None
    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    memory: str | None = None
    processes: int = 1
    jobs: int | None = None
    python: str | None = None
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    env_resources: bool = False


@dataclass(frozen=True)
class CampaignSpec:
    """A parsed spec. ``protocol`` holds the MeltQuenchParams overrides: the [protocol] keys
    and the ``elastic_*`` options of [properties]."""

    path: Path
    name: str
    mlips: tuple[str, ...]
    x: tuple[float, ...]
    quench_rates_k_ps: tuple[float, ...]
    seeds: tuple[int, ...]
    protocol: Mapping[str, Any] = field(default_factory=dict)
    elastic: bool = False
    crystal: tuple[Path, ...] = ()
    resources: Resources = field(default_factory=Resources)
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    ignored_keys: tuple[str, ...] = ()

    def params(self) -> list[MeltQuenchParams]:
        """The expanded matrix, in spec order (MLIP, x, quench rate, seed)."""
        return [
            make_params(self, m, x, q, s)
            for m in self.mlips
            for x in self.x
            for q in self.quench_rates_k_ps
            for s in self.seeds
        ]

    @property
    def size(self) -> int:
        return len(self.mlips) * len(self.x) * len(self.quench_rates_k_ps) * len(self.seeds)

    def checkpoint_dir(self) -> Path:
        d = self.resources.checkpoint_dir
        return d if d is not None else self.path.parent / ".glassbench" / "checkpoints"


def make_params(spec: CampaignSpec, mlip: str, x: float, q: float, seed: int) -> MeltQuenchParams:
    proto = dict(spec.protocol)
    thermo_every = int(proto.get("thermo_every", 10))
    # Same rule as `glassbench run meltquench`: a ~200-step flush interval on the thermo grid.
    proto.setdefault("flush_every", max(thermo_every, (200 // thermo_every) * thermo_every))
    return MeltQuenchParams(
        mlip=mlip,
        x=float(x),
        quench_rate_k_ps=float(q),
        seed=int(seed),
        elastic=spec.elastic,
        **proto,
    )


class _Reader:
    """Typed access to the parsed TOML; every error names the file and the key."""

    def __init__(self, path: Path, data: Mapping[str, Any]) -> None:
        self.path = path
        self.data = data
        self.used: set[str] = set()

    def error(self, key: str, msg: str) -> BadInput:
        return BadInput(msg, source=str(self.path), where=key)

    def section(self, name: str, *, required: bool) -> Mapping[str, Any]:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise self.error(f"[{name}]", "missing section")
            return {}
        sec = self.data[name]
        if not isinstance(sec, dict):
            raise self.error(f"[{name}]", f"must be a table, not {_tname(sec)}")
        return sec

    def value(
        self, sec: str, key: str, kind: str, *, required: bool = False, default: Any = None
    ) -> Any:
        where = f"{sec}.{key}"
        self.used.add(where)
        table = self.data.get(sec, {})
        if key not in table:
            if required:
                raise self.error(where, "missing key")
            return default
        return _check(self, where, table[key], kind)

    def items(self, sec: str, key: str, kind: str) -> tuple[Any, ...]:
        """A required, non-empty list without duplicates (duplicates would run twice)."""
        where = f"{sec}.{key}"
        self.used.add(where)
        table = self.data.get(sec, {})
        if key not in table:
            raise self.error(where, "missing key")
        raw = table[key]
        if not isinstance(raw, list):
            raise self.error(where, f"must be a list, not {_tname(raw)}")
        if not raw:
            raise self.error(where, "must not be empty")
        out = tuple(_check(self, f"{where}[{i}]", v, kind) for i, v in enumerate(raw))
        seen: set[Any] = set()
        for v in out:
            if v in seen:
                raise self.error(where, f"duplicate value {v!r}")
            seen.add(v)
        return out


def _tname(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(v), type(v).__name__)


def _check(r: _Reader, where: str, v: Any, kind: str) -> Any:
    # TOML booleans are Python ints: reject them explicitly where numbers are expected.
    if kind == "number":
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise r.error(where, f"must be a number, not {_tname(v)} {v!r}")
        return float(v)
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise r.error(where, f"must be an integer, not {_tname(v)} {v!r}")
        return int(v)
    if kind == "bool":
        if not isinstance(v, bool):
            raise r.error(where, f"must be true or false, not {_tname(v)} {v!r}")
        return v
    if kind == "str":
        if not isinstance(v, str) or not v.strip():
            raise r.error(where, f"must be a non-empty string, not {_tname(v)} {v!r}")
        return v
    if kind == "strlist":
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise r.error(where, f"must be a list of strings, not {_tname(v)}")
        return tuple(v)
    raise AssertionError(kind)


def load_spec(path: str | os.PathLike[str]) -> CampaignSpec:
    """Parse and validate a campaign spec; `BadInput` names the file and the key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput("spec file does not exist", source=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read spec file: {exc}", source=str(p)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"TOML syntax error: {exc}", source=str(p)) from None
    return parse_spec(data, p)


def parse_spec(data: Mapping[str, Any], path: Path) -> CampaignSpec:
    r = _Reader(path, data)
    r.section("campaign", required=True)
    name = r.value("campaign", "name", "str", required=True)
    r.section("matrix", required=True)
    mlips = r.items("matrix", "mlips", "str")
    xs = r.items("matrix", "x", "number")
    rates = r.items("matrix", "quench_rates_k_ps", "number")
    seeds = r.items("matrix", "seeds", "int")
    for i, q in enumerate(rates):
        if q <= 0:
            raise r.error(f"matrix.quench_rates_k_ps[{i}]", f"must be > 0, got {q:g}")

    # A required section: the protocol is part of every run's identity (its content hash), so
    # a spec that forgot it would silently create a different set of runs.
    r.section("protocol", required=True)
    proto: dict[str, Any] = {}
    for key in PROTOCOL_KEYS:
        v = r.value("protocol", key, _kind_of(key))
        if v is not None:
            proto[key] = v

    r.section("properties", required=False)
    for key in PROPERTY_KEYS:
        v = r.value("properties", key, _kind_of(key))
        if v is not None:
            proto[key] = v
    elastic = bool(proto.pop("elastic", False))
    crystal_raw = r.value("properties", "crystal", "strlist", default=())
    crystal: list[Path] = []
    for i, f in enumerate(crystal_raw):
        cp = Path(f) if Path(f).is_absolute() else path.parent / f
        if not cp.is_file():
            raise r.error(f"properties.crystal[{i}]", f"structure file {f!r} does not exist")
        crystal.append(cp.absolute())

    resources = _parse_resources(r, path)
    cluster = _parse_cluster(r)
    ignored = tuple(sorted(_unknown_keys(data, r.used)))
    spec = CampaignSpec(
        path=path,
        name=name,
        mlips=mlips,
        x=xs,
        quench_rates_k_ps=rates,
        seeds=seeds,
        protocol=proto,
        elastic=elastic,
        crystal=tuple(crystal),
        resources=resources,
        cluster=cluster,
        ignored_keys=ignored,
    )
    _check_matrix(spec, r)
    return spec


def _parse_resources(r: _Reader, path: Path) -> Resources:
    r.section("resources", required=False)
    threads = r.value("resources", "threads_per_run", "int", default=1)
    if threads < 1:
        raise r.error("resources.threads_per_run", "must be >= 1")
    retries = r.value("resources", "retries", "int", default=DEFAULT_RETRIES)
    if retries < 0:
        raise r.error("resources.retries", "must be >= 0")
    stale = r.value("resources", "stale_after_s", "number", default=DEFAULT_STALE_AFTER_S)
    if stale <= 0:
        raise r.error("resources.stale_after_s", "must be > 0")
    ck = r.value("resources", "checkpoint_dir", "str")
    ckp = None
    if ck is not None:
        ckp = Path(ck) if Path(ck).is_absolute() else (path.parent / ck)
        ckp = ckp.absolute()
    return Resources(
        threads_per_run=threads,
        retries=retries,
        memory=r.value("resources", "memory", "str"),
        walltime=r.value("resources", "walltime", "str"),
        stale_after_s=stale,
        checkpoint_dir=ckp,
    )


def _parse_cluster(r: _Reader) -> ClusterSpec:
    sec = r.section("cluster", required=False)
    if not sec:
        return ClusterSpec()
    kind = r.value("cluster", "kind", "str", required=True)
    if kind not in CLUSTER_KINDS:
        raise r.error("cluster.kind", f"must be one of {', '.join(CLUSTER_KINDS)}, not {kind!r}")
    processes = r.value("cluster", "processes", "int", default=1)
    if processes < 1:
        raise r.error("cluster.processes", "must be >= 1")
    jobs = r.value("cluster", "jobs", "int")
    if jobs is not None and jobs < 1:
        raise r.error("cluster.jobs", "must be >= 1")
    s = {
        k: r.value("cluster", k, "str")
        for k in (
            "queue",
            "account",
            "walltime",
            "memory",
            "python",
            "interface",
            "local_directory",
            "log_directory",
        )
    }
    return ClusterSpec(
        kind=kind,
        processes=processes,
        jobs=jobs,
        job_extra_directives=r.value("cluster", "job_extra_directives", "strlist", default=()),
        job_script_prologue=r.value("cluster", "job_script_prologue", "strlist", default=()),
        env_resources=r.value("cluster", "env_resources", "bool", default=False),
        **s,
    )


def _unknown_keys(data: Mapping[str, Any], used: set[str]) -> Iterable[str]:
    for sec, table in data.items():
        if sec not in used:
            yield f"[{sec}]"
            continue
        if isinstance(table, dict):
            for key in table:
                if f"{sec}.{key}" not in used:
                    yield f"{sec}.{key}"


def _check_matrix(spec: CampaignSpec, r: _Reader) -> None:
    """Refuse before anything is written: every (x, protocol) must make a valid run."""
    from glassbench.chemistry import counts_for

    p = {k: spec.protocol.get(k, getattr(_DEFAULTS, k)) for k in PROTOCOL_KEYS}
    checks: list[tuple[bool, str, str]] = [
        (p["formula_units"] >= 1, "formula_units", "must be >= 1"),
        (p["t_final_k"] > 0, "t_final_k", "must be > 0"),
        (p["t_melt_k"] > p["t_final_k"], "t_melt_k", "must be above t_final_k"),
        (p["melt_ps"] >= 0, "melt_ps", "must be >= 0"),
        (p["anneal_ps"] >= 0, "anneal_ps", "must be >= 0"),
        (0 < p["timestep_fs"] <= 10, "timestep_fs", "must be in (0, 10]"),
        (p["thermo_every"] >= 1, "thermo_every", "must be >= 1"),
        (p["frame_every"] >= 1, "frame_every", "must be >= 1"),
        (p["relax_steps"] >= 0, "relax_steps", "must be >= 0"),
        (p["density_g_cm3"] is None or p["density_g_cm3"] > 0, "density_g_cm3", "must be > 0"),
    ]
    for ok, key, msg in checks:
        if not ok:
            raise r.error(f"protocol.{key}", f"{msg}, got {p[key]!r}")
    fu = int(p["formula_units"])
    for i, x in enumerate(spec.x):
        try:
            counts_for(x, fu)
        except ValueError as exc:
            raise r.error(f"matrix.x[{i}]", f"{exc} (protocol.formula_units = {fu})") from None
    try:
        make_params(spec, spec.mlips[0], spec.x[0], spec.quench_rates_k_ps[0], spec.seeds[0])
    except BadInput as exc:  # e.g. flush_every not a multiple of thermo_every
        raise r.error("[protocol]", exc.message) from None


def check_mlips(spec: CampaignSpec, engine: Engine) -> dict[str, Any]:
    """The spec's MLIP records by name; an unknown name is bad input naming the key."""
    from sqlmodel import Session, select

    from glassbench.schema import MLIP

    with Session(engine) as s:
        rows = {m.name: m for m in s.exec(select(MLIP).where(MLIP.name.in_(spec.mlips))).all()}  # type: ignore[attr-defined]
        for m in rows.values():
            s.expunge(m)
    for i, name in enumerate(spec.mlips):
        if name not in rows:
            raise BadInput(
                f"unknown MLIP {name!r} (register it with `glassbench mlip add`)",
                source=str(spec.path),
                where=f"matrix.mlips[{i}]",
            )
    return rows


# --- environments -----------------------------------------------------------------------


def env_resource_name(python: str) -> str:
    """The Dask worker resource that marks workers started from ``python``'s environment."""
    digest = hashlib.sha256(str(Path(python).absolute()).encode()).hexdigest()
    return f"env-{digest[:10]}"


def same_environment(python: str | None) -> bool:
    """True when ``python`` is (an interpreter of) the environment running this process.

    Not resolved through symlinks: every venv's python links to the same base interpreter,
    so the venv is identified by the path's ``bin/..``, which is ``sys.prefix`` inside it.
    """
    if not python:
        return True
    p = Path(python).absolute()
    return p == Path(sys.executable).absolute() or p.parent.parent == Path(sys.prefix).absolute()


# --- tasks (run inside workers) -----------------------------------------------------------


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
        d = asdict(self)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> RunTask:
        d = json.loads(text)
        d["params"] = MeltQuenchParams(**d["params"])
        return cls(**d)


@dataclass(frozen=True)
class CrystalTask:
    db_url: str
    mlip: str
    files: tuple[str, ...]
    threads: int = 1
    python: str | None = None


@dataclass(frozen=True)
class TaskResult:
    """What a task did: ``ran`` (now done), ``already-done``, ``busy`` (someone else holds
    the run), or ``failed``."""

    run_id: int
    outcome: str
    message: str = ""
    worker: str = ""
    wall_s: float = 0.0


_ENGINES: dict[str, Engine] = {}
_CALCULATORS: dict[tuple[str, str | None, str | None], Any] = {}


def _engine(url: str) -> Engine:
    # One engine (one pool) per worker process, reused by all the tasks it executes.
    eng = _ENGINES.get(url)
    if eng is None:
        from glassbench.service.db import make_engine

        eng = _ENGINES[url] = make_engine(url)
    return eng


def _limit_threads(n: int) -> None:
    """Keep each run on its share of cores: many runs per node must not oversubscribe."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _calculator(mlip: Any) -> Any:
    """The MLIP's calculator, built once per worker process (model loading is the slow part)."""
    key = (mlip.arch, mlip.model_path, mlip.model_sha256)
    calc = _CALCULATORS.get(key)
    if calc is None:
        from glassbench.runners.meltquench import build_calculator

        calc = _CALCULATORS[key] = build_calculator(mlip)
    return calc


def _worker_init(threads: int) -> None:
    _limit_threads(threads)


def execute_run(task: RunTask) -> TaskResult:
    """Claim and run one melt-quench run (the task function of both executors)."""
    from glassbench.runners.meltquench import run_meltquench

    t0 = time.perf_counter()
    _limit_threads(task.threads)
    if not task.in_process and not same_environment(task.python):
        assert task.python is not None
        return _delegate(task.python, "run", task.to_json(), task.run_id, task.threads)
    engine = _engine(task.db_url)
    try:
        # Cheap check first: a finished run must not cost a model load.
        if runs.status(engine, task.run_id) is RunStatus.DONE:
            return TaskResult(task.run_id, "already-done", worker=runs.worker_id())
        mlip = _mlip(engine, task.params.mlip)
        calc = _calculator(mlip)
        _limit_threads(task.threads)
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
        return TaskResult(task.run_id, "failed", _message(exc), runs.worker_id(), wall)
    if out.message == "already done":
        return TaskResult(task.run_id, "already-done", worker=runs.worker_id())
    if out.status == RunStatus.DONE and out.steps > 0:
        return TaskResult(task.run_id, "ran", worker=runs.worker_id(), wall_s=out.wall_s)
    return TaskResult(task.run_id, "busy", out.message, runs.worker_id())


def execute_crystals(task: CrystalTask) -> TaskResult:
    """Relax the spec's crystals with one MLIP (idempotent upserts; results per MLIP)."""
    from glassbench.runners.crystal_run import run_crystals

    _limit_threads(task.threads)
    if not same_environment(task.python):
        assert task.python is not None
        return _delegate(task.python, "crystal", json.dumps(asdict(task)), -1, task.threads)
    engine = _engine(task.db_url)
    t0 = time.perf_counter()
    try:
        calc = _calculator(_mlip(engine, task.mlip))
        _limit_threads(task.threads)
        run_crystals(engine, task.mlip, [Path(f) for f in task.files], calculator=calc)
    except Exception as exc:  # reported per MLIP, never fatal for the pool
        return TaskResult(-1, "failed", _message(exc), runs.worker_id(), time.perf_counter() - t0)
    return TaskResult(-1, "ran", worker=runs.worker_id(), wall_s=time.perf_counter() - t0)


def _delegate(python: str, kind: str, payload: str, run_id: int, threads: int) -> TaskResult:
    """Run the task in the MLIP's own interpreter; the child claims the run itself."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the child must use its own environment's packages
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The payload (with the database URL) goes through stdin, not argv, which `ps` shows.
    proc = subprocess.run(
        [python, "-m", "glassbench.runners.campaign", kind],
        input=payload,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return TaskResult(**json.loads(lines[-1]))
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return TaskResult(run_id, "failed", f"{python} exited with status {proc.returncode}: {tail}")


def _child_main(argv: Sequence[str]) -> int:
    """Entry point of a delegated task: JSON task on stdin, JSON result as the last line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    payload = sys.stdin.read()
    if argv and argv[0] == "crystal":
        d = json.loads(payload)
        d["files"] = tuple(d["files"])
        d["python"] = None
        res = execute_crystals(CrystalTask(**d))
    else:
        task = RunTask.from_json(payload)
        res = execute_run(RunTask(**{**_fields(task), "in_process": True}))
    print(json.dumps(asdict(res)), flush=True)
    return 0


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


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


# --- executors ------------------------------------------------------------------------------


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

    def submit(self, fn: Callable[[Any], TaskResult], task: Any, resources: WorkerResources) -> Any:
        try:
            return self.pool.submit(fn, task)
        except cf.process.BrokenProcessPool:
            # A worker died (killed, out of memory): its run is reaped by the campaign loop.
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return self.pool.submit(fn, task)

    def wait_any(self, futures: Iterable[Any], timeout: float | None) -> set[Any]:
        done, _ = cf.wait(list(futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return set(done)

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            # A pool worker survives Ctrl-C (the exception ends only its current call) and
            # would go on with the calls already queued to it: stop the workers. Their runs
            # stay 'running' under dead processes; the next invocation resumes them.
            procs = getattr(self.pool, "_processes", None) or {}
            for proc in list(procs.values()):
                proc.terminate()
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class DaskExecutor:
    """A ``distributed`` client: a given scheduler, a jobqueue cluster, or a LocalCluster."""

    name = "dask"

    def __init__(self, *, scheduler: str | None, workers: int, spec: CampaignSpec) -> None:
        from distributed import Client, LocalCluster

        if not log.isEnabledFor(logging.DEBUG):
            # distributed logs every scheduler event at INFO through the root handler.
            logging.getLogger("distributed").setLevel(logging.WARNING)
        self.cluster: Any = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="30s")
            except OSError as exc:
                raise Failure(f"cannot connect to the Dask scheduler {scheduler}: {exc}") from None
        else:
            if spec.cluster.kind is not None:
                self.cluster = jobqueue_cluster(spec)
                self.cluster.scale(jobs=spec.cluster.jobs or workers)
            else:
                self.cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    memory_limit=spec.resources.memory or "auto",
                )
            self.client = Client(self.cluster)
        self._warned: set[str] = set()

    def submit(self, fn: Callable[[Any], TaskResult], task: Any, resources: WorkerResources) -> Any:
        if resources:
            self._check_resources(resources)
        return self.client.submit(fn, task, pure=False, resources=resources)

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

    def wait_any(self, futures: Iterable[Any], timeout: float | None) -> set[Any]:
        from distributed import wait

        fs = list(futures)
        try:
            done, _ = wait(fs, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return set()
        return set(done)

    def close(self, *, cancel: bool = False) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def jobqueue_cluster(spec: CampaignSpec, **overrides: Any) -> Any:
    """A dask-jobqueue ``SLURMCluster`` / ``PBSCluster`` from ``[cluster]`` and ``[resources]``.

    Each batch job runs ``processes`` Dask workers with one task thread each; the job asks for
    ``threads_per_run`` cores per worker, which the run's torch/OpenMP threads use.
    """
    kw = jobqueue_kwargs(spec, **overrides)
    import dask_jobqueue

    cls = dask_jobqueue.SLURMCluster if spec.cluster.kind == "slurm" else dask_jobqueue.PBSCluster
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


# --- the campaign loop ----------------------------------------------------------------------


@dataclass
class RunState:
    params: MeltQuenchParams
    run_id: int
    python: str | None
    attempts0: int
    checkpoint_dir: str = ""
    tries: int = 0
    last_error: str = ""


@dataclass
class CampaignReport:
    name: str
    total: int
    done_before: int
    ran: int
    counts: dict[str, int]
    failures: list[dict[str, Any]]
    crystal_failures: list[str]
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.counts.get(RunStatus.DONE, 0) == self.total and not self.crystal_failures

    def summary(self) -> str:
        parts = [f"{self.counts.get(s, 0)} {s}" for s in STATUSES if self.counts.get(s, 0)]
        return (
            f"campaign {self.name!r}: {self.total} runs: {', '.join(parts)} "
            f"({self.ran} run now, {self.done_before} done before; {self.wall_s:.0f} s)"
        )


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
) -> CampaignReport:
    """Run every run of the spec that is not done yet; see the module docstring."""
    from glassbench.runners.meltquench import ensure_run

    t0 = time.perf_counter()
    if executor not in EXECUTORS:
        raise BadInput(f"unknown executor {executor!r}", field="executor")
    mlips = check_mlips(spec, engine)
    url = absolute_db_url(db_url)
    retries = spec.resources.retries if retries is None else retries
    use_env = spec.cluster.env_resources if env_resources is None else env_resources
    ckdir = (checkpoint_dir or spec.checkpoint_dir()).absolute()
    threads = spec.resources.threads_per_run
    if workers is None:
        workers = default_workers(threads)

    states: dict[int, RunState] = {}
    for p in spec.params():
        rid, _ = ensure_run(engine, p)
        states[rid] = RunState(p, rid, mlips[p.mlip].python, 0)
    runs.release_dead_local_workers(engine, list(states))
    rows = runs.rows(engine, list(states))
    for rid, row in rows.items():
        states[rid].attempts0 = row.attempts
        # Checkpoints are per run *row*: a database deleted and recreated under the same URL
        # reuses run ids, and a stale final-step checkpoint would "finish" a new run at once.
        ident = f"{rid}|{row.created_at}"
        states[rid].checkpoint_dir = str(ckdir / hashlib.sha256(ident.encode()).hexdigest()[:16])
    todo = [rid for rid in states if rows[rid].status is not RunStatus.DONE]
    done_before = len(states) - len(todo)

    crystal_work = {
        name: files
        for name, m in mlips.items()
        if spec.crystal and (files := _crystals_todo(engine, m, spec.crystal))
    }
    if not todo and not crystal_work:
        return _report(spec, engine, states, done_before, 0, [], time.perf_counter() - t0)

    bar = _bar(len(states), done_before, spec.name, progress)
    ex: LocalExecutor | DaskExecutor
    ex = (
        LocalExecutor(workers, threads)
        if executor == "local"
        else DaskExecutor(scheduler=scheduler, workers=workers, spec=spec)
    )
    inflight: dict[Any, int] = {}
    watch: set[int] = set()
    finished: set[int] = set()
    ran = 0
    crystal_failures: list[str] = []

    def submit(rid: int) -> None:
        st = states[rid]
        task = RunTask(
            db_url=url,
            run_id=rid,
            params=st.params,
            checkpoint_dir=st.checkpoint_dir,
            # Across concurrent campaigns too, a run is tried at most 1 + retries more times.
            max_attempts=st.attempts0 + 1 + retries,
            threads=threads,
            python=st.python,
            stale_after_s=spec.resources.stale_after_s,
        )
        res: WorkerResources = None
        if use_env and executor == "dask" and st.python and not same_environment(st.python):
            # Routed to workers of the MLIP's environment, where execute_run runs in-process.
            res = {env_resource_name(st.python): 1}
        inflight[ex.submit(execute_run, task, res)] = rid

    def retry_or_give_up(rid: int, error: str) -> None:
        st = states[rid]
        st.tries += 1
        st.last_error = error or st.last_error
        if st.tries <= retries:
            log.info("retrying run %s (%s/%s): %s", rid, st.tries, retries, error)
            submit(rid)
        else:
            finished.add(rid)
            bar.update_failed()

    try:
        for rid in todo:
            submit(rid)
        crystal_futs: dict[Any, str] = {}
        for name, files in crystal_work.items():
            ctask = CrystalTask(url, name, tuple(files), threads, mlips[name].python)
            crystal_futs[ex.submit(execute_crystals, ctask, None)] = name
        last_poll = time.monotonic()
        while inflight or watch or crystal_futs:
            pending = list(inflight) + list(crystal_futs)
            timeout = poll_s if watch else None
            done = ex.wait_any(pending, timeout) if pending else set()
            if not pending:
                time.sleep(poll_s)
            for fut in done:
                if fut in crystal_futs:
                    mname = crystal_futs.pop(fut)
                    cres = _result(fut, -1)
                    if cres.outcome == "failed":
                        crystal_failures.append(f"{mname}: {cres.message}")
                    continue
                rid = inflight.pop(fut)
                res = _result(fut, rid)
                if res.outcome == "ran":
                    ran += 1
                    finished.add(rid)
                    bar.update_done()
                elif res.outcome == "already-done":
                    finished.add(rid)
                    bar.update_done()
                elif res.outcome == "busy" or res.outcome == "lost":
                    states[rid].last_error = res.message
                    watch.add(rid)
                else:
                    retry_or_give_up(rid, res.message)
            if watch and time.monotonic() - last_poll >= poll_s:
                last_poll = time.monotonic()
                _poll_watched(
                    engine,
                    watch,
                    states,
                    spec.resources.stale_after_s,
                    submit,
                    retry_or_give_up,
                    finished,
                    bar,
                )
    except BaseException:
        bar.close()
        ex.close(cancel=True)
        raise
    bar.close()
    ex.close()
    wall = time.perf_counter() - t0
    return _report(spec, engine, states, done_before, ran, crystal_failures, wall)


def _poll_watched(
    engine: Engine,
    watch: set[int],
    states: dict[int, RunState],
    stale_after_s: float,
    submit: Callable[[int], None],
    retry_or_give_up: Callable[[int, str], None],
    finished: set[int],
    bar: _Bar,
) -> None:
    """Runs held by other workers: wait for them, or take them over when their worker is gone."""
    runs.release_dead_local_workers(engine, list(watch))
    runs.release_stale(engine, list(watch), stale_after_s)
    rows = runs.rows(engine, list(watch))
    for rid in list(watch):
        row = rows[rid]
        if row.status is RunStatus.DONE:
            watch.discard(rid)
            finished.add(rid)
            bar.update_done()
        elif row.status in (RunStatus.FAILED, RunStatus.PENDING):
            watch.discard(rid)
            retry_or_give_up(rid, row.error or states[rid].last_error)


def _result(fut: Any, rid: int) -> TaskResult:
    try:
        res = fut.result()
    except Exception as exc:  # the worker died or the task could not be shipped
        # "lost": the run may still be 'running' under a dead process; the poll loop reaps it.
        return TaskResult(rid, "lost", f"{type(exc).__name__}: {exc}")
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


class _Bar:
    """Overall progress: runs finished (done or given up) / total, with tqdm's ETA."""

    def __init__(self, total: int, initial: int, name: str, enabled: bool) -> None:
        self.bar: Any = None
        self.failed = 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="run",
                desc=name,
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def update_done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def update_failed(self) -> None:
        self.failed += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"{self.failed} failed")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _bar(total: int, initial: int, name: str, progress: bool | None) -> _Bar:
    return _Bar(total, initial, name, sys.stderr.isatty() if progress is None else progress)


def _report(
    spec: CampaignSpec,
    engine: Engine,
    states: dict[int, RunState],
    done_before: int,
    ran: int,
    crystal_failures: list[str],
    wall_s: float,
) -> CampaignReport:
    rows = runs.rows(engine, list(states))
    counts = {s: 0 for s in STATUSES}
    failures = []
    for rid, st in states.items():
        status = rows[rid].status.value
        counts[status] += 1
        if status != RunStatus.DONE:
            p = st.params
            failures.append(
                {
                    "mlip": p.mlip,
                    "x": p.x,
                    "quench_rate_k_ps": p.quench_rate_k_ps,
                    "seed": p.seed,
                    "status": status,
                    "attempts": rows[rid].attempts,
                    "error": rows[rid].error or st.last_error,
                }
            )
    return CampaignReport(
        spec.name, len(states), done_before, ran, counts, failures, crystal_failures, wall_s
    )


# --- status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    mlip: str
    x: float
    quench_rate_k_ps: float
    seed: int
    status: str
    attempts: int = 0
    error: str | None = None
    claimed_by: str | None = None


def _key(mlip: str, x: float, q: float, seed: int) -> tuple[str, float, float, int]:
    # x is stored rounded to 6 decimals; rates are compared to 9 significant digits.
    return (mlip, round(float(x), 6), float(f"{float(q):.9g}"), int(seed))


def campaign_runs(spec: CampaignSpec, engine: Engine) -> list[RunRecord]:
    """Every run of the matrix with its status (``missing`` when not created yet)."""
    from glassbench.service.repos import content_hash

    first = spec.params()[0]
    phash = content_hash({"kind": "meltquench", **first.protocol()})
    stmt = sa.text(
        "SELECT m.name, c.x, r.quench_rate_k_ps, r.seed, r.status, r.attempts, r.error, "
        "r.claimed_by FROM run r JOIN mlip m ON m.id = r.mlip_id "
        "JOIN composition c ON c.id = r.composition_id JOIN protocol p ON p.id = r.protocol_id "
        "WHERE p.content_hash = :h AND m.name IN :names"
    ).bindparams(sa.bindparam("names", expanding=True))
    found: dict[tuple[str, float, float, int], RunRecord] = {}
    with engine.connect() as c:
        for r in c.execute(stmt, {"h": phash, "names": list(spec.mlips)}):
            rec = RunRecord(
                r[0], float(r[1]), float(r[2]), int(r[3]), str(r[4]), int(r[5]), r[6], r[7]
            )
            found[_key(rec.mlip, rec.x, rec.quench_rate_k_ps, rec.seed)] = rec
    out = []
    for p in spec.params():
        k = _key(p.mlip, p.x, p.quench_rate_k_ps, p.seed)
        out.append(found.get(k) or RunRecord(p.mlip, p.x, p.quench_rate_k_ps, p.seed, "missing"))
    return out


def status_table(records: Sequence[RunRecord]) -> tuple[list[str], list[list[Any]]]:
    """Counts per (MLIP, x) in matrix order."""
    cols = ["mlip", "x", "total", *STATUSES]
    groups: dict[tuple[str, float], dict[str, int]] = {}
    for r in records:
        g = groups.setdefault((r.mlip, r.x), {s: 0 for s in STATUSES})
        g[r.status] = g.get(r.status, 0) + 1
    rows = [[m, x, sum(c.values()), *(c[s] for s in STATUSES)] for (m, x), c in groups.items()]
    return cols, rows


def _main() -> None:  # pragma: no cover - exercised through subprocesses
    sys.exit(_child_main(sys.argv[1:]))


if __name__ == "__main__":  # pragma: no cover
    _main()
