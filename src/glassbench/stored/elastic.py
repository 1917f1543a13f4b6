"""``glassbench compute elastic``: elastic moduli of stored structures with a registered MLIP.

The recipe is the runner's (:class:`glassbench.runners.elastic.ElasticSettings`, written by
:func:`glassbench.ingest.properties.store_elastic`): the moduli of an ingested LAMMPS glass
and of a runner's glass are computed, and stored, by the same code.

Which structures (docs/stored-data.md, "Elastic moduli of stored runs"):

- ``frames=1``: the run's final frame (``stored.frames.final_frame_id``);
- ``frames=N``: N frames evenly spaced over the run's production window, the final frame
  last. The window is the steps its default-analysis ``window_stat`` rows cover (the runner
  writes them) plus the final frame; a run without window statistics (an ingest) uses its
  last N stored frames. ``initial`` and ``strain`` frames never count. With fewer frames than
  N, all of them are used and the method says so.

Value and uncertainty over N frames: the value is the mean of the per-frame moduli; its
standard uncertainty combines in quadrature the standard error of that mean,
``std(values, ddof=1) / sqrt(N)``, with the mean per-frame method uncertainty divided by
``sqrt(N)`` (``u = sqrt(sem^2 + (mean(u_i) / sqrt(N))^2)``; both parts are in
``details.uncertainty_components`` as ``frames`` and ``method``). With one frame it is that
frame's method uncertainty, as the runner stores it.

Pressure: ``pressure_gpa`` None means the last stage's pressure of the run's protocol when it
is a melt-quench protocol, else 0 GPa (an ingested run's protocol is ``external``).

Idempotent and resumable: a run that has ``bulk_modulus_gpa`` and ``young_modulus_gpa`` is
skipped unless ``force``; each run's four properties are written in one transaction after
its computation, so an interrupted call loses at most the run in progress.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from glassbench.errors import BadInput, first_line
from glassbench.progress import make_bar
from glassbench.schema.models import DEFAULT_ANALYSIS_ID
from glassbench.service import unit_of_work
from glassbench.service.selection import RunSelector, SelectedRun, select_runs
from glassbench.stored.frames import final_frame_id, frame_index, read_frames

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

    from glassbench.runners.elastic import ElasticResult, ElasticSettings

# A run has moduli when it has these (the ones the views and MAEs use).
_DONE_WHEN = ("bulk_modulus_gpa", "young_modulus_gpa")
_SKIP_STAGES = ("initial", "strain")
_SHORT = {
    "bulk_modulus_gpa": "K",
    "shear_modulus_gpa": "G",
    "young_modulus_gpa": "E",
    "poisson_ratio": "nu",
}


@dataclass
class ElasticOutcome:
    """What happened to one run: ``computed``, ``skipped`` or ``failed`` (with ``reason``)."""

    run_id: int
    label: str
    status: str
    reason: str = ""
    moduli: dict[str, tuple[float, float]] = field(default_factory=dict)
    method: str = ""

    def describe(self) -> str:
        if self.status != "computed":
            return f"{self.label}: {self.status}: {self.reason}"
        values = ", ".join(
            f"{_SHORT.get(k, k)}={v:.4g}+/-{e:.2g}" for k, (v, e) in self.moduli.items()
        )
        return f"{self.label}: computed {values} ({self.reason})"


@dataclass
class ElasticReport:
    """One outcome per selected run, and what the caller should be warned about."""

    mlip: str
    selector: str
    outcomes: list[ElasticOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> int:
        return self.count("failed")

    def describe(self) -> str:
        """What ``glassbench compute elastic`` prints: a line per run and a summary."""
        if not self.outcomes:
            return f"no runs match ({self.selector})"
        lines = [o.describe() for o in self.outcomes]
        lines.append(
            f"elastic moduli with MLIP {self.mlip!r}: {self.count('computed')} computed, "
            f"{self.count('skipped')} skipped, {self.failed} failed"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElasticReport:
        outcomes = [
            ElasticOutcome(
                **{
                    **o,
                    "moduli": {k: (float(v[0]), float(v[1])) for k, v in o["moduli"].items()},
                }
            )
            for o in d["outcomes"]
        ]
        return cls(d["mlip"], d["selector"], outcomes, list(d["warnings"]))


@dataclass(frozen=True)
class FramePick:
    """The frames of one run that are computed: (frame id, step, stage), in step order."""

    frames: tuple[tuple[int, int, str], ...]
    asked: int
    source: str

    def describe(self) -> str:
        steps = [f[1] for f in self.frames]
        n = len(steps)
        if self.asked == 1:
            return f"final frame (step {steps[-1]})"
        short = f"; {self.asked} asked, only {n} stored" if n < self.asked else ""
        if n == 1:
            return f"final frame (step {steps[0]}{short})"
        return f"mean of {n} frames of the {self.source} (steps {steps[0]}..{steps[-1]}{short})"


def pick_frames(conn: Connection, run_id: int, frames: int) -> FramePick | None:
    """The frames ``compute elastic`` uses for ``run_id`` (module doc); None without frames."""
    final = final_frame_id(conn, run_id)
    if final is None:
        return None
    index = [f for f in frame_index(conn, run_id) if f[2] not in _SKIP_STAGES or f[0] == final]
    last = next(f for f in index if f[0] == final)
    if frames == 1:
        return FramePick((last,), 1, "final frame")
    lo, hi = conn.execute(
        sa.text(
            "SELECT MIN(step_from), MAX(step_to) FROM window_stat "
            "WHERE run_id = :run AND analysis_id = :analysis"
        ),
        {"run": run_id, "analysis": DEFAULT_ANALYSIS_ID},
    ).one()
    others = [f for f in index if f[0] != final and f[1] <= last[1]]
    if lo is not None:
        pool = [f for f in others if int(lo) <= f[1] <= int(hi)] + [last]
        if len(pool) > frames:
            # Evenly spaced over the window, the final frame last.
            at = np.round(np.linspace(0, len(pool) - 1, frames)).astype(int)
            pool = [pool[i] for i in at]
        return FramePick(tuple(pool), frames, "production window")
    pool = [*others, last][-frames:]
    return FramePick(tuple(pool), frames, "last stored frames")


def protocol_pressure(conn: Connection, protocol_id: int) -> float:
    """The last stage's pressure (GPa) of a melt-quench protocol record; 0 for any other."""
    row = conn.execute(
        sa.text("SELECT kind, params_json FROM protocol WHERE id = :id"), {"id": protocol_id}
    ).first()
    if row is None or row[0] != "meltquench":
        return 0.0
    params = json.loads(row[1])
    stages = params.get("stages") or []
    last = stages[-1] if stages else params
    return float(last.get("pressure_gpa", 0.0) or 0.0)


# value attribute -> (key of the uncertainty components, stderr attribute)
_FIELDS = {
    "bulk_modulus_gpa": ("bulk", "bulk_modulus_stderr_gpa"),
    "shear_modulus_gpa": ("shear", "shear_modulus_stderr_gpa"),
    "young_modulus_gpa": ("young", "young_modulus_stderr_gpa"),
    "poisson_ratio": ("poisson", "poisson_ratio_stderr"),
}


def average_results(results: Sequence[ElasticResult]) -> ElasticResult:
    """The mean of per-frame results, with the module doc's uncertainty rule."""
    n = len(results)
    if n == 1:
        return results[0]
    first = results[0]
    root_n = math.sqrt(n)
    sem: dict[str, float] = {}
    meth: dict[str, float] = {}
    combined: dict[str, Any] = {}
    for name, (key, err_name) in _FIELDS.items():
        values = [float(getattr(r, name)) for r in results]
        errors = [float(getattr(r, err_name)) for r in results]
        sem[key] = statistics.stdev(values) / root_n
        meth[key] = statistics.fmean(errors) / root_n
        combined[name] = statistics.fmean(values)
        combined[err_name] = math.hypot(sem[key], meth[key])

    def mean_of(attr: str) -> float:
        return statistics.fmean(float(getattr(r, attr)) for r in results)

    volumes = [r.reference_volume_a3 for r in results]
    return replace(
        first,
        c_gpa=np.mean([np.asarray(r.c_gpa) for r in results], axis=0),
        bulk_voigt_gpa=mean_of("bulk_voigt_gpa"),
        bulk_reuss_gpa=mean_of("bulk_reuss_gpa"),
        shear_voigt_gpa=mean_of("shear_voigt_gpa"),
        shear_reuss_gpa=mean_of("shear_reuss_gpa"),
        converged=all(r.converged for r in results),
        uncertainty_components={"frames": sem, "method": meth},
        reference_stress_gpa=tuple(
            np.mean([r.reference_stress_gpa for r in results], axis=0).tolist()
        ),
        reference_volume_a3=(
            None if any(v is None for v in volumes) else statistics.fmean(float(v) for v in volumes)  # type: ignore[arg-type]
        ),
        **combined,
    )


def select_elastic_runs(
    engine: Engine, mlip: str, selector: RunSelector | None = None
) -> tuple[RunSelector, list[SelectedRun]]:
    """The runs ``compute elastic --mlip mlip`` works on: the selector's, or, when it names no
    MLIP, the runs made by ``mlip`` (moduli are stored as the run's own property)."""
    from glassbench.runners.meltquench import mlip_record

    mlip_record(engine, mlip)  # BadInput on field mlip when unknown
    selector = selector or RunSelector()
    if not selector.mlip:
        selector = selector.with_mlip((mlip,))
    # the selector's MLIP is the runs' one, not the computing one
    return selector, select_runs(engine, selector, mlip_field="run_mlip")


def _with_moduli(engine: Engine, run_ids: Sequence[int]) -> set[int]:
    if not run_ids:
        return set()
    stmt = sa.text(
        "SELECT run_id FROM property WHERE name IN :names AND run_id IN :runs "
        "GROUP BY run_id HAVING COUNT(*) = :n"
    ).bindparams(sa.bindparam("names", expanding=True), sa.bindparam("runs", expanding=True))
    with engine.connect() as conn:
        rows = conn.execute(
            stmt, {"names": list(_DONE_WHEN), "runs": list(run_ids), "n": len(_DONE_WHEN)}
        )
        return {int(r[0]) for r in rows}


def _mlip_text(mlip: Any, run_mlip: str) -> str:
    sha = f"sha256 {mlip.model_sha256[:12]}" if mlip.model_sha256 else f"model {mlip.model_path}"
    text = f"computed with MLIP {mlip.name!r} ({sha}, dispersion {mlip.dispersion or 'none'})"
    if run_mlip != mlip.name:
        text += f"; the run was made with {run_mlip!r}"
    return text


def compute_elastic(
    engine: Engine,
    mlip: str,
    selector: RunSelector | None = None,
    *,
    frames: int = 1,
    strain: float = 0.005,
    fmax: float = 0.01,
    max_steps: int = 300,
    relax_positions: bool = True,
    relax_cell: bool = True,
    pressure_gpa: float | None = None,
    temperature_k: float | None = None,
    force: bool = False,
    progress: bool | None = None,
    threads: int | None = None,
    delegate: bool = True,
    calculator: Calculator | None = None,
    notify: Callable[[str], object] | None = None,
) -> ElasticReport:
    """Elastic moduli of the selected runs' stored structures with MLIP ``mlip`` (module doc).

    The defaults are the runner's (``MeltQuenchParams.elastic_*``). ``calculator`` replaces
    the MLIP's (tests, benchmarks); otherwise it is built once (model hash checked) and, for an
    MLIP registered with another interpreter, the whole call runs there unless ``delegate`` is
    False. ``notify`` is told warnings in one line each. Bad options, an unknown MLIP, or a
    selected run without frames are ``BadInput`` before anything is computed; an MLIP whose
    package cannot be imported is a ``Failure``. A run whose computation fails is reported
    ``failed`` and the others go on.
    """
    from glassbench.runners.delegation import call_in_interpreter, interpreter_for
    from glassbench.runners.elastic import ElasticSettings
    from glassbench.runners.interpreter import limit_threads
    from glassbench.runners.meltquench import mlip_record, named_calculator
    from glassbench.service.migrations import require_schema

    require_schema(engine)
    if frames < 1:
        raise BadInput(f"must be at least 1, not {frames}", field="frames")
    ElasticSettings(  # the options are checked before anything runs
        strain=strain,
        fmax=fmax,
        max_steps=max_steps,
        relax_positions=relax_positions,
        relax_cell=relax_cell,
        pressure_gpa=0.0 if pressure_gpa is None else pressure_gpa,
        temperature_k=temperature_k,
    )
    record = mlip_record(engine, mlip)
    say = notify or (lambda _: None)
    options = {
        "frames": frames,
        "strain": strain,
        "fmax": fmax,
        "max_steps": max_steps,
        "relax_positions": relax_positions,
        "relax_cell": relax_cell,
        "pressure_gpa": pressure_gpa,
        "temperature_k": temperature_k,
        "force": force,
        "progress": progress,
        "threads": threads,
    }
    python = interpreter_for(record, notify) if calculator is None and delegate else None
    if python is not None:
        request = {
            "mlip": mlip,
            "selector": None if selector is None else selector.as_dict(),
            "options": options,
        }
        target = f"{__name__}:serve_compute_elastic"
        answer = call_in_interpreter(python, target, request, engine=engine, threads=threads)
        report = ElasticReport.from_dict(answer)
        for warning in report.warnings:
            say(warning)
        return report
    limit_threads(threads)

    chosen, runs = select_elastic_runs(engine, mlip, selector)
    report = ElasticReport(mlip, chosen.describe())
    if not runs:
        return report
    done = set() if force else _with_moduli(engine, [r.run_id for r in runs])
    empty = [r for r in runs if r.run_id not in done and r.n_frames == 0]
    if empty:
        raise BadInput(f"{empty[0].label()} has no stored frames")
    others = sorted({r.mlip for r in runs if r.run_id not in done and r.mlip != mlip})
    if others:
        report.warnings.append(
            f"warning: MLIP {mlip!r} computes the moduli of runs made with "
            f"{', '.join(repr(o) for o in others)}; they are stored as those runs' properties"
        )
        say(report.warnings[-1])

    calc = calculator
    with make_bar(total=len(runs), unit="run", desc=f"elastic {mlip}", enabled=progress) as bar:
        for run in runs:
            if run.run_id in done:
                report.outcomes.append(
                    ElasticOutcome(
                        run.run_id,
                        run.label(),
                        "skipped",
                        "already has elastic moduli (force recomputes them)",
                    )
                )
            else:
                if calc is None:
                    calc = named_calculator(record)
                report.outcomes.append(
                    _compute_run(engine, run, record, calc, frames, pressure_gpa, options)
                )
            bar.update(1)
    return report


def _compute_run(
    engine: Engine,
    run: SelectedRun,
    mlip: Any,
    calc: Calculator,
    frames: int,
    pressure_gpa: float | None,
    options: dict[str, Any],
) -> ElasticOutcome:
    """Compute and store one run's moduli; a failed computation is an outcome, not an error
    (a database error while storing is an error)."""
    from glassbench.ingest.properties import elastic_method, store_elastic

    with engine.connect() as conn:
        pick = pick_frames(conn, run.run_id, frames)
        pressure = (
            protocol_pressure(conn, run.protocol_id) if pressure_gpa is None else pressure_gpa
        )
    if pick is None:  # its frames went away since it was selected
        return ElasticOutcome(run.run_id, run.label(), "failed", "no stored frames")
    settings = _settings(options, pressure, run.seed)
    results: list[ElasticResult] = []
    try:
        for frame_id, step, _ in pick.frames:
            # One frame read at a time, and no connection held while the MLIP works.
            with engine.connect() as conn:
                stored = next(read_frames(conn, [frame_id]), None)
            if stored is None:
                return ElasticOutcome(run.run_id, run.label(), "failed", f"frame {step} gone")
            result = settings.compute(stored.atoms(), calc)
            bad = [k for k, (v, e) in result.moduli().items() if not math.isfinite(v)]
            if bad:
                return ElasticOutcome(
                    run.run_id,
                    run.label(),
                    "failed",
                    f"{bad[0]} is not finite at step {step} (an unstable structure?)",
                )
            results.append(result)
    except Exception as exc:  # the MLIP or the optimiser: this run fails, the others go on
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        return ElasticOutcome(run.run_id, run.label(), "failed", reason)
    mean = average_results(results)
    prefix = f"{_mlip_text(mlip, run.mlip)}; {pick.describe()}"
    details = {
        **mean.to_dict(),
        "computed_by": {
            "mlip": mlip.name,
            "model_sha256": mlip.model_sha256,
            "dispersion": mlip.dispersion or "none",
            "run_mlip": run.mlip,
        },
        "frames": {
            "asked": pick.asked,
            "source": pick.source,
            "steps": [f[1] for f in pick.frames],
            "frame_ids": [f[0] for f in pick.frames],
        },
        "settings": settings.to_dict(),
        "full_method": f"{prefix}; {mean.method}",
        "per_frame": [r.to_dict() for r in results] if len(results) > 1 else [],
    }
    with unit_of_work(engine) as s:  # the run's four properties together, or none
        store_elastic(s, run.run_id, mean, method=prefix, details=details)
    return ElasticOutcome(
        run.run_id,
        run.label(),
        "computed",
        pick.describe(),
        mean.moduli(),
        elastic_method(mean, prefix),
    )


def _settings(options: dict[str, Any], pressure_gpa: float, seed: int) -> ElasticSettings:
    from glassbench.runners.elastic import ElasticSettings

    return ElasticSettings(
        strain=options["strain"],
        fmax=options["fmax"],
        max_steps=options["max_steps"],
        relax_positions=options["relax_positions"],
        relax_cell=options["relax_cell"],
        pressure_gpa=pressure_gpa,
        temperature_k=options["temperature_k"],
        seed=seed,
    )


def serve_compute_elastic(engine: Engine, request: dict[str, Any]) -> dict[str, Any]:
    """A delegated ``compute_elastic``, in the MLIP's interpreter (``runners/delegation.py``)."""
    sel = request.get("selector")
    report = compute_elastic(
        engine,
        request["mlip"],
        None if sel is None else RunSelector(**sel),
        delegate=False,
        **request["options"],
    )
    return report.to_dict()
