"""Thread defaults under load: MD steps per second of CHGNet on a 26-atom Na4P2S7 cell.

Three thread configurations, each measured in a fresh interpreter (OpenMP reads its wait
policy and thread count once, when torch loads it):

- ``old``: what glassbench did without GLASSBENCH_THREADS: no thread variables, so torch's own
  count (the machine's physical cores) and OpenMP's default wait (spin, then sleep);
- ``new``: today's default, ``limit_threads(None)`` before torch loads: OMP_WAIT_POLICY=PASSIVE
  and one thread per core this process may use (affinity mask, cgroup quota);
- ``one``: OMP_NUM_THREADS=1.

each on an idle machine and while another process keeps one core busy (a Python busy loop
started before, stopped after). The user's thread variables are removed from the children's
environment. Runs interleave (old, new, one, old, ...) so that noise from other processes hits
every configuration alike; medians of ``--repeats``. A child times ``--steps`` Langevin steps
after ``--warmup`` untimed ones, or stops early at ``--max-seconds`` (the rate counts the
steps it did).

    .venv/bin/python benchmarks/threads.py [--repeats 3] [--steps 200] [--warmup 5]
        [--max-seconds 12] [--formula-units 2] [--scenarios idle,busy]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = ("old", "new", "one")
SCENARIOS = ("idle", "busy")
STRIP = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY")


def child(config: str, steps: int, warmup: int, max_seconds: float, formula_units: int) -> None:
    if config == "new":
        from glassbench.runners.interpreter import limit_threads

        limit_threads(None)  # the runner's call, before anything imports torch
    import torch
    from ase import units
    from ase.md.langevin import Langevin

    from glassbench.runners.calculators import make_calculator
    from glassbench.runners.structure import random_glass

    atoms = random_glass(0.0, formula_units, seed=1)
    atoms.calc = make_calculator("chgnet", None)
    # Starts at rest: the thermostat heats the melt during the untimed warm-up.
    dyn = Langevin(
        atoms, 2.0 * units.fs, temperature_K=1000.0, friction=0.01 / units.fs, fixcm=False
    )
    dyn.run(warmup)
    done = 0
    t0 = time.perf_counter()
    while done < steps:
        dyn.run(1)
        done += 1
        if time.perf_counter() - t0 > max_seconds and done >= 3:
            break
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "config": config,
                "steps": done,
                "wall_s": wall,
                "steps_per_s": done / wall,
                "torch_threads": torch.get_num_threads(),
                "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
                "n_atoms": len(atoms),
            }
        ),
        flush=True,
    )


def run_child(config: str, args: argparse.Namespace) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in STRIP}
    if config == "one":
        env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    cmd = [sys.executable, __file__, "--child", config, "--steps", str(args.steps)]
    cmd += ["--warmup", str(args.warmup), "--max-seconds", str(args.max_seconds)]
    cmd += ["--formula-units", str(args.formula_units)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{config} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, object] = json.loads(lines[-1])
    return result


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=12.0)
    ap.add_argument("--formula-units", type=int, default=2, help="13 atoms each")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="idle,busy")
    ap.add_argument("--child", choices=CONFIGS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.steps, args.warmup, args.max_seconds, args.formula_units)
        return

    t_start = time.perf_counter()
    print(f"cores in affinity mask: {len(os.sched_getaffinity(0))}; load average {load()}")
    print(f"{13 * args.formula_units} atoms")
    rates: dict[tuple[str, str], list[float]] = {}
    info: dict[str, dict[str, object]] = {}
    scenarios = [s for s in args.scenarios.split(",") if s in SCENARIOS]
    for scenario in scenarios:
        busy = None
        if scenario == "busy":
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            for rep in range(args.repeats):
                for config in CONFIGS:
                    r = run_child(config, args)
                    rates.setdefault((scenario, config), []).append(float(r["steps_per_s"]))  # type: ignore[arg-type]
                    info[config] = r
                    print(
                        f"{scenario:4s} {config:3s} #{rep}: {r['steps_per_s']:.2f} steps/s "
                        f"({r['steps']} steps, {r['torch_threads']} threads, "
                        f"wait {r['wait_policy']}; load {load()})",
                        flush=True,
                    )
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()

    print("\n| configuration | threads | wait policy | idle steps/s | busy steps/s | busy / idle |")
    print("|---|---|---|---|---|---|")
    for config in CONFIGS:
        med = {s: statistics.median(rates[(s, config)]) for s in scenarios}
        idle, busy_rate = med.get("idle", math.nan), med.get("busy", math.nan)
        i = info[config]
        print(
            f"| {config} | {i['torch_threads']} | {i['wait_policy']} | {idle:.2f} | "
            f"{busy_rate:.2f} | {busy_rate / idle:.2f} |"
        )
    print("\nraw steps/s:", json.dumps({f"{s}/{c}": v for (s, c), v in rates.items()}))
    print(f"total {time.perf_counter() - t_start:.0f} s; load average {load()}")


if __name__ == "__main__":
    main()
