"""Runner overhead: full melt-quench runner (live ingest + analysis + checkpoints) vs bare ASE MD.

Both sides use the same tiny MACE calculator, the same atoms, the same relaxation and the same
number of MD steps with the same integrators; the bare side writes nothing. Runs alternate
(bare, runner, bare, runner, ...) so that machine noise hits both; medians are reported.

    .venv/bin/python benchmarks/runner.py [--repeats 3] [--formula-units 8] [--db URL]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def bare_md(params, calc) -> float:  # type: ignore[no-untyped-def]
    """The same stages with ASE's integrators (glassbench's stage_dynamics only builds them),
    ramped every thermo interval like the runner, writing nothing."""
    import numpy as np
    from ase.constraints import FixCom
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.optimize import FIRE

    from glassbench.runners.meltquench_md import set_target_temperature, stage_dynamics
    from glassbench.runners.structure import random_glass

    t0 = time.perf_counter()
    spec = params.spec
    rng = np.random.default_rng(params.seed)
    atoms = random_glass(params.x, spec.formula_units, params.seed)
    atoms.calc = calc
    atoms.set_constraint(FixCom())
    FIRE(atoms, logfile=None).run(fmax=0.5, steps=spec.relax_steps)
    MaxwellBoltzmannDistribution(atoms, temperature_K=spec.stages[0].t_start_k, rng=rng)
    Stationary(atoms)
    for seg in params.segments:
        dyn = stage_dynamics(atoms, seg, spec.timestep_fs, rng)
        step = seg.start
        while step < seg.end:
            nxt = min(step + spec.thermo_every, seg.end)
            if seg.stage.t_end_k is not None:
                set_target_temperature(dyn, seg.temperature_at(nxt))
            dyn.run(nxt - step)
            step = nxt
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formula-units", type=int, default=8)
    ap.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    ap.add_argument("--protocol", default="default", help="preset or file (study: NPT/MTK stages)")
    ap.add_argument("--d3", action="store_true", help="add D3(BJ, PBE) to the tiny MACE model")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from glassbench.runners.calculators import make_calculator
    from glassbench.runners.meltquench import MeltQuenchParams, run_meltquench
    from glassbench.service import unit_of_work
    from glassbench.service.db import describe, make_engine
    from glassbench.service.migrations import upgrade
    from glassbench.service.repos import add_mlip
    from glassbench.testing.tiny_models import build_tiny_mace

    tmp = Path(tempfile.mkdtemp(prefix="gb-bench-"))
    model = build_tiny_mace(tmp / "tiny.pt", seed=0)
    calc = make_calculator("mace", str(model))
    if args.d3:
        from glassbench.runners.dispersion import with_dispersion

        calc = with_dispersion(calc, "d3", "PBE")
    engine = make_engine(args.db or f"sqlite:///{tmp / 'bench.db'}")
    upgrade(engine)
    with unit_of_work(engine) as s:
        add_mlip(
            s, {"name": "bench-tiny-mace", "arch": "mace", "model_path": str(model)}, replace=True
        )
    bare: list[float] = []
    full: list[float] = []
    for i in range(args.repeats):
        params = MeltQuenchParams(
            mlip="bench-tiny-mace",
            x=1.0,
            quench_rate_k_ps=15000.0,
            seed=100 + i,
            protocol=args.protocol,
            formula_units=args.formula_units,
            melt_ps=0.1,
            anneal_ps=0.1,
            production_ps=0.1 if args.protocol == "study" else None,
            relax_steps=20,
            thermo_every=10,
            frame_every=100,
            flush_every=100,
        )
        bare.append(bare_md(params, calc))
        t0 = time.perf_counter()
        run_meltquench(engine, params, checkpoint_dir=tmp / "ck", calculator=calc, progress=False)
        full.append(time.perf_counter() - t0)
        print(f"repeat {i}: bare {bare[-1]:.2f} s, runner {full[-1]:.2f} s", file=sys.stderr)
    mb, mf = statistics.median(bare), statistics.median(full)
    n_atoms = len(
        __import__("glassbench.runners.structure", fromlist=["x"]).random_glass(
            1.0, args.formula_units, 0
        )
    )
    print(f"database: {describe(engine)}; protocol {args.protocol}; D3: {args.d3}")
    print(
        f"atoms: {n_atoms}, MD steps per run: {params.total_steps} (+{params.spec.relax_steps} relaxation)"
    )
    ratios = [f / b for f, b in zip(full, bare, strict=True)]
    print(
        f"bare ASE MD median: {mb:.2f} s   runner median: {mf:.2f} s   ratio of medians: {mf / mb:.3f}"
    )
    print(
        f"paired ratios (runner / bare, same seed): {', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}"
    )


if __name__ == "__main__":
    main()
