"""``glassbench demo``: the whole system on embedded defaults, in minutes, offline.

Two real pretrained universal MLIPs that ship inside the CHGNet wheel (``0.3.0``, trained on
PBE data, and ``r2scan``): the study's PBE vs r2SCAN comparison in miniature. A small melt-quench
campaign (x = 0 and 3.5), speciation, density and a quick elastic estimate, the c-Na3PS4 cell
volume against its experimental lattice, and the HTML report.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from glassbench.cli import AppContext, pass_app

if TYPE_CHECKING:
    from glassbench.campaigns import CampaignReport
    from glassbench.runners.protocol import Protocol

DEMO_MLIPS = (
    ("chgnet-pbe", "0.3.0", "MPtrj (PBE/PBE+U)", "PBE"),
    ("chgnet-r2scan", "r2scan", "MP r2SCAN", "r2SCAN"),
)


@dataclass(frozen=True)
class DemoSize:
    formula_units: int
    melt_ps: float
    quench_rate_k_ps: float
    anneal_ps: float
    production_ps: float
    timestep_fs: float
    frame_every: int
    relax_steps: int
    elastic_max_steps: int
    crystal_steps: int


# Sized for < 10 min on 2 cores: CHGNet takes ~0.17 s per force call on 52 atoms with one
# thread, and the four runs share the cores as a real campaign (one single-threaded worker per
# core). The `study` protocol (NVT melt; NPT quench, anneal and production window), shortened:
# a 2 fs step buys twice the simulated time per force call, spent on a longer melt, a slower
# quench and a production window whose frames are averaged (docs/protocol.md). The elastic
# estimate uses unrelaxed (affine) strains of the MD cell, the Born upper bound, as a relaxed
# estimate needs ~60 relaxation steps per strain on these fast-quenched cells.
FULL = DemoSize(
    formula_units=4,
    melt_ps=0.4,
    quench_rate_k_ps=5000.0,
    anneal_ps=0.06,
    production_ps=0.3,
    timestep_fs=2.0,
    frame_every=10,
    relax_steps=30,
    elastic_max_steps=0,
    crystal_steps=100,
)
TINY = DemoSize(
    formula_units=2,
    melt_ps=0.04,
    quench_rate_k_ps=30000.0,
    anneal_ps=0.02,
    production_ps=0.04,
    timestep_fs=2.0,
    frame_every=5,
    relax_steps=30,
    elastic_max_steps=0,
    crystal_steps=25,
)
# The MTK barostat's time constant of the `study` preset (1000 fs) is longer than the demo's
# NPT stages: a shorter one lets the cell respond within them.
DEMO_TAUP_FS = 200.0
STUDY_RATE_K_PS = 5.0  # the study's standard quench rate (0.5-5 K/ps; ../shared/DESIGN.md)


EXAMPLE_QUERIES = (
    "SELECT mlip, x, density_g_cm3, p0, p1, p2, bs, nbs, na_cn FROM run_summary ORDER BY mlip, x",
    "SELECT mlip, property, n, mae, mean_error FROM mlip_mae ORDER BY mlip, property",
    "SELECT m.name AS mlip, f.temperature_k, s.unit, s.count FROM speciation s "
    "JOIN frame f ON f.id = s.frame_id JOIN run r ON r.id = f.run_id JOIN mlip m ON m.id = r.mlip_id "
    "WHERE f.stage = 'quench' AND s.unit IN ('P0','P1','P2') ORDER BY m.name, f.step LIMIT 20",
)


@click.command("demo")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("glassbench-demo"),
    show_default=True,
    help="Folder for the report, structures and checkpoints.",
)
@click.option("--tiny", is_flag=True, help="The CI-sized form: smaller cells, shorter runs.")
@pass_app
def cli(app: AppContext, out_dir: Path, tiny: bool) -> None:
    """Run the whole system on embedded defaults (SQLite, CHGNet shipped in its wheel)."""
    from glassbench.errors import BadInput, Failure
    from glassbench.service import describe
    from glassbench.service.admin import upgrade_schema as upgrade

    t0 = time.perf_counter()
    size = TINY if tiny else FULL
    # One thread unless told otherwise: with more threads than idle cores torch spin-waits (one
    # CHGNet step of a 26-atom cell: 4.4 s with 2 threads on a busy 2-core machine, 0.13 s with 1).
    from glassbench.runners.interpreter import limit_threads

    threads = app.settings.threads or 1
    limit_threads(threads)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir} exists and is not a folder", source="--out")
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = app.engine_for(create=True)  # the demo makes its database
    upgrade(engine)
    click.echo(f"database: {describe(engine)}")
    if importlib.util.find_spec("chgnet") is None:
        raise Failure("the demo needs CHGNet; install it with: pip install 'glassbench[chgnet]'")
    _register(engine)
    campaign = _campaign(app, size, out_dir, threads)
    _crystals(engine, size, out_dir)
    report_path = _report(app, out_dir)
    elapsed = time.perf_counter() - t0
    click.echo("")
    click.echo(f"demo finished in {elapsed / 60:.1f} min")
    click.echo(f"  report:   {report_path}")
    click.echo(f"  database: {describe(engine)}")
    click.echo("  no experimental glass data has been ingested: add yours with")
    click.echo(
        "    glassbench ingest experiment my-measurements.csv   (columns x,property,value,uncertainty,source)"
    )
    click.echo("try next:")
    for q in EXAMPLE_QUERIES:
        click.echo(f'  glassbench sql "{q}"')
    if not campaign.ok:
        raise Failure(f"{campaign.summary()}; see `glassbench campaign status` or the report")


def _register(engine: Any) -> None:
    from glassbench.runners.calculators import package_versions
    from glassbench.service import repos, unit_of_work

    with unit_of_work(engine) as s:
        for name, model, data, functional in DEMO_MLIPS:
            repos.add_mlip(
                s,
                {
                    "name": name,
                    "arch": "chgnet",
                    "model_path": model,
                    "training_data": data,
                    "functional": functional,
                    "dispersion": "none",
                    "package_versions_json": repos.canonical_json(package_versions("chgnet")),
                },
                replace=True,
            )


def _campaign(app: AppContext, size: DemoSize, out_dir: Path, threads: int) -> CampaignReport:
    """The matrix through the campaign machinery: a local process pool, one run per core."""
    from glassbench.campaigns import CampaignSpec, Resources, default_workers, run_campaign
    from glassbench.runners.protocol import apply_overrides

    spec = CampaignSpec(
        path=out_dir / "demo-campaign.toml",
        name="demo",
        mlips=tuple(name for name, *_ in DEMO_MLIPS),
        x=(0.0, 3.5),
        quench_rates_k_ps=(size.quench_rate_k_ps,),
        seeds=(1,),
        elastic=True,
        # The size options are applied to the protocol itself, which keeps its name ("demo");
        # as spec overrides they would rename it (a changed protocol gets a changed name).
        protocols=(
            apply_overrides(
                demo_protocol(),
                {
                    "formula_units": size.formula_units,
                    "melt_ps": size.melt_ps,
                    "anneal_ps": size.anneal_ps,
                    "production_ps": size.production_ps,
                    "timestep_fs": size.timestep_fs,
                    "taup_fs": DEMO_TAUP_FS,
                    "relax_steps": size.relax_steps,
                    "thermo_every": 5,
                    "frame_every": size.frame_every,
                    "block_frames": 2,
                },
            ),
        ),
        protocol={
            "flush_every": 50,
            # max_steps 0: unrelaxed (affine) strains of the MD cell, the Born upper bound.
            "elastic_max_steps": max(size.elastic_max_steps, 1),
            "elastic_relax_positions": size.elastic_max_steps > 0,
            "elastic_relax_cell": size.elastic_max_steps > 0,
            "elastic_fmax": 0.05,
        },
        resources=Resources(threads_per_run=threads, checkpoint_dir=out_dir / "checkpoints"),
    )
    workers = min(spec.size, default_workers(threads))
    first = spec.params()[0]
    click.echo(
        f"melt-quench campaign: {spec.size} runs ({', '.join(spec.mlips)} x x=0, 3.5; 1 seed), "
        f"{first.total_steps} MD steps + elastic estimate each, {workers} at a time"
    )
    click.echo(_scope(first))
    report = run_campaign(spec, app.engine, app.settings.database_url, workers=workers)
    click.echo(report.summary())
    for f in report.failures:
        click.echo(
            f"  {f['mlip']} x={f['x']:g}: {f['status']} after {f['attempts']} attempts: {f['error']}"
        )
    _print_runs(app.engine)
    return report


def demo_protocol() -> Protocol:
    """The `study` preset with the volume fixed during the quench.

    At 1,000x the study's quench rate the volume cannot follow the temperature: an NPT quench
    froze in the hot liquid's volume (CHGNet, 52 atoms: window densities 1.38-1.61 g/cm3,
    against 1.70-2.00 with the volume fixed until 300 K; docs/protocol.md). So the cell is
    fixed until the glass exists and free from the 300 K anneal on.
    """
    from dataclasses import replace

    from glassbench.runners.protocol import preset

    study = preset("study")
    stages = tuple(
        replace(s, ensemble="nvt", barostat=None) if s.name == "quench" else s for s in study.stages
    )
    return replace(
        study,
        name="demo",
        stages=stages,
        notes="the study preset with the volume fixed during the quench",
    )


def _scope(params: Any) -> str:
    """What the demo is and is not, in numbers, before anyone reads its results."""
    spec = params.spec
    n_atoms = 13 * spec.formula_units
    stages = ", ".join(
        f"{seg.stage.name} {seg.steps * spec.timestep_fs / 1000:g} ps" for seg in params.segments
    )
    return (
        f"  about these numbers: protocol {spec.name} ({spec.notes}), shortened to {stages} "
        f"({spec.timestep_fs:g} fs steps); the quench runs at {params.quench_rate_k_ps:g} K/ps, "
        f"{params.quench_rate_k_ps / STUDY_RATE_K_PS:,.0f}x the study's standard "
        f"{STUDY_RATE_K_PS:g} K/ps, in cells of {n_atoms} atoms ({spec.formula_units} formula "
        f"units; one P is {100 / (2 * spec.formula_units):.1f} % of all P). They show what "
        "the pipeline measures, not what CHGNet predicts for the study's glasses."
    )


def _print_runs(engine: Any) -> None:
    import sqlalchemy as sa

    cols = (
        "density_g_cm3", "bulk_modulus_gpa", "shear_modulus_gpa", "young_modulus_gpa", "p3c",
    )  # fmt: skip
    with engine.connect() as c:
        rows = c.execute(
            sa.text(f"SELECT mlip, x, status, {', '.join(cols)} FROM run_summary ORDER BY mlip, x")
        ).all()
    click.echo(
        "  per run: density (g/cm3) and P3c (fraction of P three-coordinated) are means over "
        "the production window; moduli (GPa) are the affine (Born) estimate of the final cell"
    )
    for r in rows:
        vals = ", ".join(f"{k} {v:.3g}" for k, v in zip(cols, r[3:], strict=True) if v is not None)
        click.echo(f"  {r[0]} x={r[1]:g}: {r[2]}{': ' + vals if vals else ''}")


def _crystals(engine: Any, size: DemoSize, out_dir: Path) -> None:
    import ase.io

    from glassbench.runners.calculators import make_calculator
    from glassbench.runners.crystal_run import run_crystals
    from glassbench.runners.structure import build_c_na3ps4

    cif = out_dir / "c-Na3PS4.cif"
    ase.io.write(cif, build_c_na3ps4())
    for name, model, *_ in DEMO_MLIPS:
        calc = make_calculator("chgnet", model)
        for o in run_crystals(engine, name, [cif], calculator=calc, steps=size.crystal_steps):
            click.echo(
                f"crystal {o.crystal} with {name}: {o.volume_per_fu_a3:.1f} A^3/f.u. vs experiment "
                f"{o.exp_volume_per_fu_a3:.1f} ({o.deviation_pct:+.1f} %)"
            )


def _report(app: AppContext, out_dir: Path) -> Path:
    from glassbench.reports.generate import HTML_FILE, generate_report

    report_dir = out_dir / "report"
    result = generate_report(app.engine, out_dir=report_dir, formats=("html", "md", "csv"))
    click.echo(f"report {result.status}: {len(result.files)} files in {result.out_dir}")
    return result.out_dir / HTML_FILE
