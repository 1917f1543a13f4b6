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
import numbers
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from glassbench.chemistry import counts_for, per_formula_unit
from glassbench.errors import BadInput, Failure, first_line
from glassbench.runners.checkpoints import check_checkpoint_dir
from glassbench.runners.delegation import call_in_interpreter, interpreter_for
from glassbench.runners.protocol import (
    OVERRIDES,
    PROTOCOL_FIELDS,
    Protocol,
    Segment,
    protocol_from_mapping,
    schedule,
)
from glassbench.runners.protocol import resolve as resolve_protocol
from glassbench.schema import RunStatus
from glassbench.service import repos, runs, unit_of_work

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

    from glassbench.runners.elastic import ElasticSettings

log = logging.getLogger(__name__)

# Seeds go to numpy's generators (any int >= 0) and into run.seed, a 32-bit signed integer on
# PostgreSQL: the range both accept.
MAX_SEED = 2**31 - 1
# What one run may store: 10^7 thermo rows (~1 GB) and 10^8 atoms over all its frames
# (positions and forces: ~5 GB). A microsecond at 1 fs with thermo every step would be 10^9.
MAX_THERMO_ROWS = 10_000_000
MAX_FRAME_ATOMS = 100_000_000


@dataclass(frozen=True)
class MeltQuenchParams:
    """Everything that defines a melt-quench run; the first four fields and the protocol are
    its key.

    ``protocol`` is a preset name (``default``, ``study``), a TOML file or a
    :class:`~glassbench.runners.protocol.Protocol`; the fields from ``formula_units`` to
    ``dispersion`` are the run options that override it (None: as the protocol says; see
    ``runners/protocol.py``, ``OVERRIDES``). ``flush_every`` and the ``elastic*`` fields are
    not part of the protocol.
    """

    mlip: str
    x: float
    quench_rate_k_ps: float
    seed: int
    protocol: str | Protocol = "default"
    formula_units: int | None = None
    t_melt_k: float | None = None
    melt_ps: float | None = None
    t_final_k: float | None = None
    anneal_ps: float | None = None
    production_ps: float | None = None
    timestep_fs: float | None = None
    density_g_cm3: float | None = None
    friction_per_fs: float | None = None
    taut_fs: float | None = None
    taup_fs: float | None = None
    pressure_gpa: float | None = None
    compressibility_per_gpa: float | None = None
    relax_steps: int | None = None
    thermo_every: int | None = None
    frame_every: int | None = None
    block_frames: int | None = None
    dispersion: str | None = None
    flush_every: int | None = None
    elastic: bool = False
    elastic_strain: float = 0.005
    elastic_fmax: float = 0.01
    elastic_max_steps: int = 300
    elastic_relax_positions: bool = True
    elastic_relax_cell: bool = True
    elastic_temperature_k: float | None = None

    def __post_init__(self) -> None:
        # Every check a run can fail on its input is made here, before a row is written:
        # a run started from the CLI, a campaign spec or Python is refused the same way.
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise BadInput(f"must be an integer, got {self.seed!r}", field="seed")
        if not 0 <= self.seed <= MAX_SEED:
            raise BadInput(f"must be in [0, {MAX_SEED}], got {self.seed}", field="seed")
        if not (self.quench_rate_k_ps > 0 and math.isfinite(self.quench_rate_k_ps)):
            raise BadInput("must be > 0", field="quench_rate_k_ps")
        try:
            per_formula_unit(self.x)
        except (TypeError, ValueError) as exc:
            raise BadInput(str(exc), field="x") from None
        spec = resolve_protocol(self.protocol, self.overrides())
        try:
            n_atoms = sum(counts_for(self.x, spec.formula_units).values())
        except ValueError as exc:
            raise BadInput(str(exc), field="x/formula_units") from None
        # Derived once: the runner asks for the stage of a step every thermo chunk.
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_segments", schedule(spec, self.quench_rate_k_ps))
        flush = self.flush_every
        if flush is None:
            te = spec.thermo_every
            flush = max(te, (200 // te) * te)
            object.__setattr__(self, "flush_every", flush)
        if isinstance(flush, bool) or not isinstance(flush, int):
            raise BadInput(f"must be an integer, got {flush!r}", field="flush_every")
        if flush < 1 or flush % spec.thermo_every:
            raise BadInput(
                "flush interval must be a multiple of the thermo interval", field="flush_every"
            )
        _check_output_size(spec, self.total_steps, n_atoms)
        try:  # the recipe's own checks, now rather than at the end of the simulation
            self.elastic_settings(spec.stages[-1].pressure_gpa)
        except BadInput as exc:
            raise BadInput(exc.detail, field=f"elastic_{exc.field}") from None

    def overrides(self) -> dict[str, Any]:
        """The run options given (not None) that override the protocol."""
        names = (*OVERRIDES, *PROTOCOL_FIELDS)
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    @property
    def spec(self) -> Protocol:
        """The resolved protocol: preset or file with this run's options applied."""
        spec: Protocol = self.__dict__["_spec"]
        return spec

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The protocol's stages on this run's step axis (the quench's length from its rate)."""
        segments: tuple[Segment, ...] = self.__dict__["_segments"]
        return segments

    @property
    def total_steps(self) -> int:
        return self.segments[-1].end

    @property
    def flush_steps(self) -> int:
        assert self.flush_every is not None  # set in __post_init__
        return self.flush_every

    def protocol_record(self) -> dict[str, Any]:
        """The protocol record (content-hashed): the resolved protocol, not the run key."""
        return self.spec.record()

    def segment_at(self, step: int) -> Segment:
        """The stage that computes ``step`` (steps start+1 .. end belong to a segment)."""
        for seg in self.segments:
            if step <= seg.end and seg.steps > 0:
                return seg
        return self.segments[-1]

    def stage_at(self, step: int) -> str:
        return self.segment_at(step).stage.name

    def target_temperature(self, step: int) -> float:
        return self.segment_at(step).temperature_at(step)

    def elastic_settings(self, pressure_gpa: float) -> ElasticSettings:
        """The ``elastic_*`` options as the recipe the runner and ``compute elastic`` share,
        at ``pressure_gpa`` (the last stage's), seeded with the run's seed."""
        from glassbench.runners.elastic import ElasticSettings

        return ElasticSettings(
            strain=self.elastic_strain,
            fmax=self.elastic_fmax,
            max_steps=self.elastic_max_steps,
            relax_positions=self.elastic_relax_positions,
            relax_cell=self.elastic_relax_cell,
            pressure_gpa=pressure_gpa,
            temperature_k=self.elastic_temperature_k,
            seed=self.seed,
        )

    def to_request(self) -> dict[str, Any]:
        """JSON-ready parameters for another interpreter (the protocol resolved, as a mapping)."""
        d = asdict(self)
        d["protocol"] = self.spec.to_mapping()
        for k in (*OVERRIDES, *PROTOCOL_FIELDS):
            d[k] = None
        return d

    @classmethod
    def from_request(cls, d: Mapping[str, Any]) -> MeltQuenchParams:
        kw = dict(d)
        proto = kw.pop("protocol")
        if isinstance(proto, Mapping):
            proto = protocol_from_mapping(proto, name=str(proto.get("name", "protocol")))
        return cls(protocol=proto, **kw)


def _check_output_size(spec: Protocol, total_steps: int, n_atoms: int) -> None:
    """Refuse a run whose thermo rows or stored frames would fill the database's disk."""
    rows = total_steps // spec.thermo_every
    if rows > MAX_THERMO_ROWS:
        raise BadInput(
            f"{total_steps:,} steps with thermo every {spec.thermo_every} would store {rows:,} "
            f"thermo rows (at most {MAX_THERMO_ROWS:,}): raise the thermo interval",
            field="thermo_every",
        )
    frame_atoms = (total_steps // spec.frame_every) * n_atoms
    if frame_atoms > MAX_FRAME_ATOMS:
        raise BadInput(
            f"{total_steps:,} steps with a frame every {spec.frame_every} would store "
            f"{total_steps // spec.frame_every:,} frames of {n_atoms} atoms (at most "
            f"{MAX_FRAME_ATOMS:,} atoms in all frames of a run): raise the frame interval",
            field="frame_every",
        )


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
        pid = repos.protocol_id(s, params.protocol_record(), name=params.spec.name)
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
    False), with the same database; ``notify`` is told so in one line. Progress: a bar
    (``progress``; None: when stderr is a terminal); without one, ``notify`` gets one line per
    stage as it ends (``melt: 2000 steps, 10 ps, T=1803 K, 41 s``). ``threads`` limits
    OpenMP/MKL/torch threads (None: as they are). ``on_flush`` is called with the step after
    each database flush (tests use it to kill the run mid-way; not in another interpreter).
    """
    from glassbench.runners.interpreter import limit_threads
    from glassbench.runners.meltquench_md import simulate
    from glassbench.service.migrations import require_schema

    require_schema(engine)
    # Before any row: a run that cannot checkpoint must not fail after its first flush.
    check_checkpoint_dir(checkpoint_dir)
    python = None
    if calculator is None and delegate:
        python = interpreter_for(mlip_record(engine, params.mlip), notify)
    if python is not None:
        request = {
            "params": params.to_request(),
            "checkpoint_dir": str(checkpoint_dir.absolute()),
            "options": {
                "progress": progress,
                "force_claim": force_claim,
                "max_attempts": max_attempts,
                "stale_after_s": stale_after_s,
                "threads": threads,
            },
            # The child's stderr is forwarded to ours: its stage lines reach the user.
            "stage_lines": notify is not None,
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
            engine,
            params,
            run_id,
            mlip,
            checkpoint_dir,
            calculator,
            progress,
            on_flush,
            stage_lines=notify,
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
        MeltQuenchParams.from_request(request["params"]),
        checkpoint_dir=Path(request["checkpoint_dir"]),
        delegate=False,
        notify=_stderr_line if request.get("stage_lines") else None,
        **request["options"],
    )
    return asdict(outcome)


def _stderr_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_calculator(
    mlip: Any, *, device: str | None = None, dispersion: str | None = None
) -> Calculator:
    """The registered MLIP's calculator (model hash checked first) on ``device``, with the
    dispersion correction of ``dispersion`` (None: as the MLIP is registered).

    ``device`` defaults to the GLASSBENCH_DEVICE setting (``cpu``).
    """
    from glassbench.runners.calculators import make_calculator
    from glassbench.settings import get_settings

    return make_calculator(
        mlip.arch,
        mlip.model_path,
        expected_sha256=mlip.model_sha256,
        device=device or get_settings().device,
        dispersion=effective_dispersion(mlip, dispersion),
        functional=mlip.functional,
    )


def named_calculator(mlip: Any) -> Calculator:
    """`build_calculator` for the use cases on stored data, whose errors name the MLIP: bad
    registrations stay ``BadInput`` (field ``mlip``); an MLIP whose package is missing or
    fails to load deep inside is a ``Failure`` (exit status 1), not a traceback."""
    try:
        return build_calculator(mlip)
    except BadInput as exc:
        raise BadInput(f"MLIP {mlip.name!r}: {exc}", field="mlip") from None
    except Failure as exc:
        raise Failure(f"MLIP {mlip.name!r}: {exc}") from None
    except Exception as exc:
        raise Failure(
            f"cannot build the calculator of MLIP {mlip.name!r}: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc


def effective_dispersion(mlip: Any, dispersion: str | None) -> str:
    """The protocol's dispersion when it names one, else the MLIP's registration."""
    return dispersion if dispersion is not None else (mlip.dispersion or "none")
