"""D3(BJ) cost per MD step against the MLIP's own, on Na4P2S6O glass cells.

One "step" is what the MD and relaxation loops ask of a calculator after the atoms move:
energy, forces and stress for new positions (atoms are displaced by 0.01 A before each).
Timed per cell size, single-threaded, taking turns (tiny MACE, CHGNet 0.3.0, dftd3 D3(BJ) as
glassbench configures it, and torch-dftd with the same parameters and cutoffs for the choice
of implementation), two untimed warm-up steps each, medians reported.

    .venv/bin/python benchmarks/dispersion.py [--repeats 5] [--sizes 8,77]
        [--torch-dftd-max-atoms 200] [--no-chgnet]

``--sizes``: formula units of Na4P2S6O (13 atoms each): 8 -> 104 atoms, 77 -> 1001 atoms.
torch-dftd is timed only up to ``--torch-dftd-max-atoms`` (about a minute a step at 1001).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")


def step_time(calc: Any, atoms: Any, rng: Any) -> float:
    atoms.positions += rng.normal(0.0, 0.01, atoms.positions.shape)
    t0 = time.perf_counter()
    atoms.get_forces()
    atoms.get_stress()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="8,77")
    ap.add_argument("--torch-dftd-max-atoms", type=int, default=200)
    ap.add_argument("--no-chgnet", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from importlib import metadata

    from ase.units import Bohr

    from glassbench.runners.calculators import make_calculator
    from glassbench.runners.dispersion import (
        CUTOFF_CN_BOHR,
        CUTOFF_DISP2_BOHR,
        dispersion_calculator,
    )
    from glassbench.runners.structure import random_glass
    from glassbench.testing.tiny_models import build_tiny_mace

    model = build_tiny_mace(Path(tempfile.mkdtemp(prefix="gb-bench-")) / "tiny.model", seed=0)

    def torch_dftd(dtype: Any) -> Callable[[], Any]:
        def make() -> Any:
            from torch_dftd.torch_dftd3_calculator import TorchDFTD3Calculator

            return TorchDFTD3Calculator(
                damping="bj",
                xc="pbe",
                cutoff=CUTOFF_DISP2_BOHR * Bohr,
                cnthr=CUTOFF_CN_BOHR * Bohr,
                abc=False,
                dtype=dtype,
            )

        return make

    print(
        f"dftd3 {metadata.version('dftd3')}, torch-dftd {metadata.version('torch-dftd')}, "
        f"mace-torch {metadata.version('mace-torch')}, torch {metadata.version('torch')}; "
        "1 thread; ms per step (energy + forces + stress), median"
    )
    for fu in (int(s) for s in args.sizes.split(",")):
        cell = random_glass(1.0, fu, seed=5)
        n = len(cell)
        makers: dict[str, Callable[[], Any]] = {
            "tiny MACE": lambda: make_calculator("mace", str(model)),
            "D3 (dftd3)": lambda: dispersion_calculator("PBE"),
        }
        if not args.no_chgnet:
            makers["CHGNet 0.3.0"] = lambda: make_calculator("chgnet", None)
        if n <= args.torch_dftd_max_atoms:
            makers["D3 (torch-dftd, float64)"] = torch_dftd(torch.float64)
            makers["D3 (torch-dftd, float32)"] = torch_dftd(torch.float32)
        atoms: dict[str, Any] = {}
        for name, make in makers.items():
            atoms[name] = cell.copy()
            atoms[name].calc = make()
        rngs = {name: np.random.default_rng(0) for name in makers}
        times: dict[str, list[float]] = {name: [] for name in makers}
        for _ in range(2):  # warm-up: the first calls build graphs, neighbour lists, caches
            for name in makers:
                step_time(atoms[name].calc, atoms[name], rngs[name])
        for _ in range(args.repeats):
            for name in makers:
                times[name].append(step_time(atoms[name].calc, atoms[name], rngs[name]))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        print(f"\n{n} atoms ({fu} x Na4P2S6O, {cell.cell.lengths()[0]:.2f} A cubic)")
        for name, m in med.items():
            runs = ", ".join(f"{t * 1e3:.0f}" for t in times[name])
            print(f"  {name:26s} {m * 1e3:9.1f} ms   ({runs})")
        d3 = med["D3 (dftd3)"]
        for mlip in ("tiny MACE", "CHGNet 0.3.0"):
            if mlip in med:
                print(f"  D3 / {mlip}: {d3 / med[mlip]:.2f}")


if __name__ == "__main__":
    main()
