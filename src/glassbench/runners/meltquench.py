"""Melt-quench MD with live ingest, checkpoints and resume: :func:`run_meltquench`.

Stages (docs/architecture.md, "One quench rate, end to end"): random initial structure at a
target density (short fixed-cell relaxation so pretrained models do not blow it apart), melt at
``t_melt_k`` (Langevin NVT), linear quench to ``t_final_k`` at ``quench_rate_k_ps``, anneal at
``t_final_k`` (Berendsen NPT at 0 GPa, so the density is a result), final frame. Thermo rows
are buffered and written in one transaction per flush together with any frames (each analysed)
and the run's heartbeat; the checkpoint is written
atomically *after* the database flush, so a resumed run recomputes at most one flush interval and
its re-inserted rows are skipped by the (run, step) key: the thermo table of a killed and resumed
run equals that of an uninterrupted one. The simulation itself is in ``meltquench_md.py``,
checkpoints in ``checkpoints.py``; an MLIP registered with another interpreter runs there
(``delegation.py``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from glassbench.chemistry import FAMILY
from glassbench.errors import BadInput, Failure, first_line
from glassbench.runners.delegation import call_in_interpreter, interpreter_for
from glassbench.schema import RunStatus
from glassbench.service import repos, runs, unit_of_work

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeltQuenchParams:
    """Everything that defines a melt-quench run; the first four fields are its key."""

    mlip: str
    x: float
    quench_rate_k_ps: float
    seed: int
    formula_units: int = 8
    t_melt_k: float = 1800.0
    melt_ps: float = 10.0
    t_final_k: float = 300.0
    anneal_ps: float = 10.0
    timestep_fs: float = 1.0
    density_g_cm3: float | None = None
    friction_per_fs: float = 0.01
    taut_fs: float = 100.0
    taup_fs: float = 1000.0
    pressure_gpa: float = 0.0
    compressibility_per_gpa: float = 0.05
    relax_steps: int = 100
    thermo_every: int = 10
    frame_every: int = 100
    flush_every: int = 200
    elastic: bool = False
    elastic_strain: float = 0.005
    elastic_fmax: float = 0.01
    elastic_max_steps: int = 300
    elastic_relax_positions: bool = True

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (
                self.quench_rate_k_ps > 0 and math.isfinite(self.quench_rate_k_ps),
                "quench_rate_k_ps",
                "must be > 0",
            ),
            (self.formula_units >= 1, "formula_units", "must be >= 1"),
            (self.t_melt_k > self.t_final_k > 0, "t_melt_k/t_final_k", "need t_melt > t_final > 0"),
            (self.melt_ps >= 0 and self.anneal_ps >= 0, "melt_ps/anneal_ps", "must be >= 0"),
            (0 < self.timestep_fs <= 10, "timestep_fs", "must be in (0, 10]"),
            (
                self.thermo_every >= 1 and self.frame_every >= 1,
                "thermo_every/frame_every",
                "must be >= 1",
            ),
        ]
        for ok, name, msg in checks:
            if not ok:
                raise BadInput(msg, field=name)
        if self.flush_every % self.thermo_every:
            raise BadInput(
                "flush interval must be a multiple of the thermo interval", field="flush_every"
            )

    # Steps of each stage; the quench covers (t_melt - t_final) at the given rate.
    @property
    def melt_steps(self) -> int:
        return round(self.melt_ps * 1000.0 / self.timestep_fs)

    @property
    def quench_steps(self) -> int:
        quench_ps = (self.t_melt_k - self.t_final_k) / self.quench_rate_k_ps
        return max(1, round(quench_ps * 1000.0 / self.timestep_fs))

    @property
    def anneal_steps(self) -> int:
        return round(self.anneal_ps * 1000.0 / self.timestep_fs)

    @property
    def total_steps(self) -> int:
        return self.melt_steps + self.quench_steps + self.anneal_steps

    def protocol(self) -> dict[str, Any]:
        """Parameters outside the run key: they define the protocol record (content-hashed)."""
        d = asdict(self)
        for k in ("mlip", "x", "quench_rate_k_ps", "seed", "flush_every"):
            d.pop(k)
        for k in (
            "elastic",
            "elastic_strain",
            "elastic_fmax",
            "elastic_max_steps",
            "elastic_relax_positions",
        ):
            d.pop(k)
        d["thermostat"] = "langevin"
        d["barostat"] = "berendsen"
        d["ensemble"] = "NVT melt/quench, NPT anneal"
        return d

    def stage_at(self, step: int) -> str:
        if step <= self.melt_steps:
            return "melt"
        if step <= self.melt_steps + self.quench_steps:
            return "quench"
        return "anneal"

    def target_temperature(self, step: int) -> float:
        if step <= self.melt_steps:
            return self.t_melt_k
        q = step - self.melt_steps
        if q <= self.quench_steps:
            return self.t_melt_k + (self.t_final_k - self.t_melt_k) * q / self.quench_steps
        return self.t_final_k


@dataclass
class RunOutcome:
    run_id: int
    status: str
    steps: int
    wall_s: float
    resumed_from: int | None = None
    properties: dict[str, float] = field(default_factory=dict)
    message: str = ""

    def describe(self) -> str:
        """The one line ``glassbench run meltquench`` prints."""
        props = ", ".join(f"{k}={v:.4g}" for k, v in self.properties.items())
        resumed = f" (resumed from step {self.resumed_from})" if self.resumed_from else ""
        return (
            f"run {self.run_id}: {self.status}{resumed}; {self.steps} steps in {self.wall_s:.1f} s "
            f"{props} {self.message}"
        ).rstrip()


# --- run records ----------------------------------------------------------------------------


def ensure_run(engine: Engine, params: MeltQuenchParams) -> tuple[int, Any]:
    """Create (or find) the run row for ``params``; returns (run id, MLIP record)."""
    with unit_of_work(engine) as s:
        try:
            mlip = repos.get_mlip(s, params.mlip)
        except repos.NotFound as exc:
            raise BadInput(str(exc), field="mlip") from None
        try:
            cid = repos.composition_id(s, params.x)
        except ValueError as exc:
            raise BadInput(str(exc), field="x") from None
        pid = repos.protocol_id(s, params.protocol())
        assert mlip.id is not None
        rid = runs.ensure(
            s,
            mlip_id=mlip.id,
            composition_id=cid,
            quench_rate_k_ps=params.quench_rate_k_ps,
            seed=params.seed,
            protocol_id=pid,
        )
        s.expunge(mlip)
    return rid, mlip


def run_meltquench(
    engine: Engine,
    params: MeltQuenchParams,
    *,
    checkpoint_dir: Path,
    calculator: Calculator | None = None,
    progress: bool | None = None,
    force_claim: bool = True,
    max_attempts: int | None = None,
    on_flush: Callable[[int], None] | None = None,
    stale_after_s: float = 600.0,
    threads: int | None = None,
    delegate: bool = True,
    notify: Callable[[str], object] | None = None,
) -> RunOutcome:
    """Run (or resume, or skip if done) one melt-quench simulation with live ingest.

    ``calculator`` overrides the registered MLIP's calculator (benchmarks, tests); otherwise it
    is built by the factory after the model file's sha256 has been checked, and an MLIP
    registered with an interpreter of another environment runs there (unless ``delegate`` is
    False), with the same database; ``notify`` is told so in one line. ``threads`` limits
    OpenMP/MKL/torch threads (None: as they are). ``on_flush`` is called with the step after
    each database flush (tests use it to kill the run mid-way; not in another interpreter).
    """
    from glassbench.runners.interpreter import limit_threads
    from glassbench.runners.meltquench_md import simulate
    from glassbench.service.migrations import require_schema

    require_schema(engine)
    python = None
    if calculator is None and delegate:
        python = interpreter_for(mlip_record(engine, params.mlip), notify)
    if python is not None:
        request = {
            "params": asdict(params),
            "checkpoint_dir": str(checkpoint_dir.absolute()),
            "options": {
                "progress": progress,
                "force_claim": force_claim,
                "max_attempts": max_attempts,
                "stale_after_s": stale_after_s,
                "threads": threads,
            },
        }
        target = f"{__name__}:serve_run"
        answer = call_in_interpreter(python, target, request, engine=engine, threads=threads)
        return RunOutcome(**answer)
    limit_threads(threads)
    t_start = time.perf_counter()
    run_id, mlip = ensure_run(engine, params)
    if runs.status(engine, run_id) is RunStatus.DONE:
        return RunOutcome(run_id, RunStatus.DONE, 0, 0.0, message="already done")
    if not runs.claim(
        engine,
        run_id,
        worker=runs.worker_id(),
        force=force_claim,
        max_attempts=max_attempts,
        stale_after_s=stale_after_s,
    ):
        return RunOutcome(
            run_id, runs.status(engine, run_id), 0, 0.0, message="claimed by another worker"
        )
    try:
        outcome = simulate(
            engine, params, run_id, mlip, checkpoint_dir, calculator, progress, on_flush
        )
    except BaseException as exc:
        msg = f"{type(exc).__name__}: {exc}".strip()
        try:
            runs.fail(engine, run_id, msg)
        except Exception:  # the database may be what failed; the original error matters more
            log.exception("could not record the failure of run %s", run_id)
        if isinstance(exc, BadInput | Failure | KeyboardInterrupt):
            raise
        raise Failure(f"run {run_id} failed: {first_line(msg)}") from exc
    outcome.wall_s = time.perf_counter() - t_start
    runs.add_wall_time(engine, run_id, outcome.wall_s)
    return outcome


def mlip_record(engine: Engine, name: str) -> Any:
    """The registered MLIP ``name`` (detached from its session); BadInput on field ``mlip``."""
    from sqlmodel import Session

    with Session(engine) as s:
        try:
            m = repos.get_mlip(s, name)
        except repos.NotFound as exc:
            raise BadInput(str(exc), field="mlip") from None
        s.expunge(m)
        return m


def serve_run(engine: Engine, request: dict[str, Any]) -> dict[str, Any]:
    """A delegated run, in the MLIP's interpreter (see ``runners/delegation.py``)."""
    outcome = run_meltquench(
        engine,
        MeltQuenchParams(**request["params"]),
        checkpoint_dir=Path(request["checkpoint_dir"]),
        delegate=False,
        **request["options"],
    )
    return asdict(outcome)


def build_calculator(mlip: Any, *, device: str | None = None) -> Calculator:
    """The registered MLIP's calculator (model hash checked first) on ``device``.

    ``device`` defaults to the GLASSBENCH_DEVICE setting (``cpu``).
    """
    from glassbench.runners.calculators import make_calculator
    from glassbench.settings import get_settings

    return make_calculator(
        mlip.arch,
        mlip.model_path,
        expected_sha256=mlip.model_sha256,
        device=device or get_settings().device,
    )


def describe_params(params: MeltQuenchParams) -> Mapping[str, Any]:
    return {"family": FAMILY, **asdict(params)}
