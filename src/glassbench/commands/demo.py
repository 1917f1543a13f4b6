"""``glassbench demo``: the whole system on embedded defaults, in minutes, offline.

Two real pretrained universal MLIPs that ship inside the CHGNet wheel (``0.3.0``, trained on
PBE data, and ``r2scan``): the study's PBE vs r2SCAN comparison in miniature. A small melt-quench
campaign (x = 0 and 3.5), speciation, density and a quick elastic estimate, the c-Na3PS4 cell
volume against its experimental lattice, and the HTML report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from glassbench.cli import AppContext, pass_app

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
    relax_steps: int
    elastic_max_steps: int
    crystal_steps: int


# Sized for < 10 min on 2 cores: CHGNet takes ~0.17 s per force call on 52 atoms with one
# thread. The elastic estimate uses unrelaxed (affine) strains, the Born upper bound, as a
# relaxed estimate needs ~60 relaxation steps per strain on these fast-quenched cells.
FULL = DemoSize(formula_units=4, melt_ps=0.1, quench_rate_k_ps=10000.0, anneal_ps=0.15,
                relax_steps=30, elastic_max_steps=0, crystal_steps=100)  # fmt: skip
TINY = DemoSize(formula_units=2, melt_ps=0.03, quench_rate_k_ps=30000.0, anneal_ps=0.04,
                relax_steps=30, elastic_max_steps=0, crystal_steps=25)  # fmt: skip

EXAMPLE_QUERIES = (
    "SELECT mlip, x, density_g_cm3, p0, p1, p2, bs, nbs, na_cn FROM run_summary ORDER BY mlip, x",
    "SELECT mlip, property, n, mae, mean_error FROM mlip_mae ORDER BY mlip, property",
    "SELECT m.name AS mlip, f.temperature_k, s.unit, s.count FROM speciation s "
    "JOIN frame f ON f.id = s.frame_id JOIN run r ON r.id = f.run_id JOIN mlip m ON m.id = r.mlip_id "
    "WHERE f.stage = 'quench' AND s.unit IN ('P0','P1','P2') ORDER BY m.name, f.step LIMIT 20",
)


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("glassbench-demo"),
              show_default=True, help="Folder for the report, structures and checkpoints.")  # fmt: skip
@click.option("--tiny", is_flag=True, help="The CI-sized form: smaller cells, shorter runs.")
@pass_app
def cli(app: AppContext, out_dir: Path, tiny: bool) -> None:
    """Run the whole system on embedded defaults (SQLite, CHGNet shipped in its wheel)."""
    from glassbench.errors import Failure
    from glassbench.service import describe
    from glassbench.service.migrations import upgrade

    t0 = time.perf_counter()
    size = TINY if tiny else FULL
    # One thread unless told otherwise: with more threads than idle cores torch spin-waits (one
    # CHGNet step of a 26-atom cell: 4.4 s with 2 threads on a busy 2-core machine, 0.13 s with 1).
    from glassbench.commands.run import limit_threads

    limit_threads(app.settings.threads or 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = app.engine
    upgrade(engine)
    click.echo(f"database: {describe(engine)}")
    try:
        calcs = _register_and_load(engine)
    except ImportError as exc:
        raise Failure(
            f"the demo needs CHGNet ({exc}); install it with: pip install 'glassbench[chgnet]'"
        ) from None
    _campaign(engine, calcs, size, out_dir)
    _crystals(engine, calcs, size, out_dir)
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


def _register_and_load(engine: Any) -> dict[str, Any]:
    from glassbench.runners.calculators import make_calculator, package_versions
    from glassbench.service import repos, unit_of_work

    calcs: dict[str, Any] = {}
    with unit_of_work(engine) as s:
        for name, model, data, functional in DEMO_MLIPS:
            repos.add_mlip(
                s,
                {"name": name, "arch": "chgnet", "model_path": model, "training_data": data,
                 "functional": functional, "dispersion": "none",
                 "package_versions_json": repos.canonical_json(package_versions("chgnet"))},
                replace=True,
            )  # fmt: skip
    for name, model, _, _ in DEMO_MLIPS:
        click.echo(f"loading {name} (CHGNet {model}, weights shipped in the wheel)")
        calcs[name] = make_calculator("chgnet", model)
    return calcs


def _campaign(engine: Any, calcs: dict[str, Any], size: DemoSize, out_dir: Path) -> None:
    from glassbench.runners.meltquench import MeltQuenchParams, run_meltquench

    matrix = [(name, x) for name in calcs for x in (0.0, 3.5)]
    click.echo(f"melt-quench campaign: {len(matrix)} runs ({', '.join(calcs)} x x=0, 3.5; 1 seed)")
    for i, (name, x) in enumerate(matrix, start=1):
        params = MeltQuenchParams(
            mlip=name, x=x, quench_rate_k_ps=size.quench_rate_k_ps, seed=1,
            formula_units=size.formula_units, melt_ps=size.melt_ps, anneal_ps=size.anneal_ps,
            relax_steps=size.relax_steps, thermo_every=10, frame_every=20, flush_every=100,
            # max_steps 0: unrelaxed (affine) strains, the Born upper bound, for the tiny form.
            elastic=True, elastic_max_steps=max(size.elastic_max_steps, 1),
            elastic_relax_positions=size.elastic_max_steps > 0, elastic_fmax=0.05,
        )  # fmt: skip
        click.echo(
            f"[{i}/{len(matrix)}] {name} x={x:g}: {params.total_steps} MD steps + elastic estimate"
        )
        out = run_meltquench(
            engine, params, checkpoint_dir=out_dir / "checkpoints", calculator=calcs[name]
        )
        props = ", ".join(f"{k} {v:.3g}" for k, v in out.properties.items())
        click.echo(f"      {out.status} in {out.wall_s:.0f} s: {props or out.message}")


def _crystals(engine: Any, calcs: dict[str, Any], size: DemoSize, out_dir: Path) -> None:
    import ase.io

    from glassbench.runners.crystal_run import run_crystals
    from glassbench.runners.structure import build_c_na3ps4

    cif = out_dir / "c-Na3PS4.cif"
    ase.io.write(cif, build_c_na3ps4())
    for name, calc in calcs.items():
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
