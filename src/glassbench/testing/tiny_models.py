"""Tiny MLIPs built offline, for tests, benchmarks and CI.

No foundation model can be downloaded on the project's machines, so tests exercise the real
loading code on small models made from scratch: an untrained MACE (pair repulsion keeps MD
stable), a DeePMD model trained for a few steps on synthetic frames, an untrained GRACE-FS.
These are stand-ins with no physical meaning; never benchmark them.

DeePMD and GRACE live in their own environments (see docs/environments.md), so they are built
by running their interpreter in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from glassbench.errors import BadInput, Failure

TINY_ELEMENTS = ("O", "Na", "P", "S")
# Rough isolated-atom energies (eV); only the order of magnitude matters for a stand-in.
_TINY_ATOMIC_ENERGIES = {"O": -4.9, "Na": -1.3, "P": -5.4, "S": -4.1}
_ATOMIC_NUMBERS = {"O": 8, "Na": 11, "P": 15, "S": 16}

DEEPMD_ENV_VAR = "GLASSBENCH_DEEPMD_PYTHON"
GRACE_ENV_VAR = "GLASSBENCH_GRACE_PYTHON"


def tiny_mace_hyperparameters() -> dict[str, Any]:
    """Constructor arguments of the tiny MACE as plain values (portable format)."""
    return {
        "class": "ScaleShiftMACE",
        "kwargs": {
            "r_max": 5.0,
            "num_bessel": 8,
            "num_polynomial_cutoff": 5,
            "max_ell": 2,
            "interaction_cls": "RealAgnosticResidualInteractionBlock",
            "interaction_cls_first": "RealAgnosticResidualInteractionBlock",
            "num_interactions": 2,
            "num_elements": len(TINY_ELEMENTS),
            "hidden_irreps": "16x0e+16x1o",
            "MLP_irreps": "16x0e",
            "atomic_energies": [_TINY_ATOMIC_ENERGIES[el] for el in TINY_ELEMENTS],
            "avg_num_neighbors": 20.0,
            "atomic_numbers": [_ATOMIC_NUMBERS[el] for el in TINY_ELEMENTS],
            "correlation": 3,
            "gate": "silu",
            # An untrained model without the ZBL-like pair term lets atoms overlap in MD.
            "pair_repulsion": True,
            "atomic_inter_scale": 1.0,
            "atomic_inter_shift": 0.0,
        },
    }


def build_tiny_mace(path: str | os.PathLike[str], seed: int = 0, *, portable: bool = False) -> Path:
    """Build an untrained ScaleShiftMACE for O, Na, P, S (float64) and save it to ``path``.

    ``portable=False`` pickles the whole model (``torch.save(model)``, what MACE's own tools
    write); ``portable=True`` saves {hyperparameters + state_dict}, which loads without
    unpickling code and across e3nn versions. The weights depend only on ``seed``.
    Needs torch and mace-torch in this interpreter.
    """
    from glassbench.runners.calculators import (
        _import_mace,
        _mace_kwargs,
        save_mace_portable,
    )

    _, mace_models = _import_mace()
    import torch

    hyper = tiny_mace_hyperparameters()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = torch.get_default_dtype()
    # Weight initialisation draws from torch's global generator; fork it so building a
    # model does not shift the random stream of the caller.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_default_dtype(torch.float64)
        try:
            model = getattr(mace_models, hyper["class"])(**_mace_kwargs(hyper))
        finally:
            torch.set_default_dtype(previous)
    if portable:
        save_mace_portable(model, hyper, out)
    else:
        torch.save(model, out)
    return out


def _find_env_python(env_var: str, venv_name: str, module: str) -> str | None:
    """Interpreter of the environment that holds ``module``.

    Order: the environment variable (an explicit choice: an invalid value is an error, not a
    silent fallback); this interpreter if it can import ``module``; ``<venv_name>/bin/python``
    beside this interpreter's venv (``.venv`` and ``.venv-deepmd`` are siblings in a checkout
    and in CI); then in the ancestors of this source file and of the working directory.
    """
    explicit = os.environ.get(env_var)
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise BadInput("not an executable interpreter", source=explicit, where=env_var)
        return explicit
    if find_spec(module) is not None:
        return sys.executable
    bases: list[Path] = [Path(sys.prefix).absolute().parent]
    bases += list(Path(__file__).absolute().parents)
    cwd = Path.cwd()
    bases += [cwd, *cwd.parents]
    seen: set[Path] = set()
    for base in bases:
        if base in seen:
            continue
        seen.add(base)
        cand = base / venv_name / "bin" / "python"
        if cand.is_file() and os.access(cand, os.X_OK):
            # Not resolved: a venv's python is a symlink and only finds its site-packages
            # when started through the venv path.
            return str(cand)
    return None


def find_deepmd_python() -> str | None:
    """Interpreter with deepmd-kit (TensorFlow backend), or None if there is none.

    ``$GLASSBENCH_DEEPMD_PYTHON`` wins; else this interpreter if it imports deepmd; else
    ``.venv-deepmd/bin/python`` next to this interpreter's venv, or in an ancestor of the
    package source or of the working directory (as ``scripts/make-envs.sh`` creates it).
    """
    return _find_env_python(DEEPMD_ENV_VAR, ".venv-deepmd", "deepmd")


def find_grace_python() -> str | None:
    """Interpreter with tensorpotential (GRACE), found like `find_deepmd_python`
    (``$GLASSBENCH_GRACE_PYTHON``, ``.venv-grace``)."""
    return _find_env_python(GRACE_ENV_VAR, ".venv-grace", "tensorpotential")


def _quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The child must not inherit this venv's site-packages through PYTHONPATH.
    env.pop("PYTHONPATH", None)
    return env


def _run_logged(cmd: list[str], cwd: Path, log: Path, what: str, timeout: float) -> None:
    with open(log, "ab") as fh:
        fh.write(("\n$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        try:
            proc = subprocess.run(
                cmd,
                cwd=cwd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=_quiet_env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise Failure(f"{what} timed out after {timeout:g} s (log: {log})") from err
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise Failure(
            f"{what} failed with exit status {proc.returncode} (log: {log}):\n" + "\n".join(tail)
        )


def _lj_frames(n_frames: int, x: float, formula_units: int, seed: int) -> list[Any]:
    """Random glass frames labelled by a soft Lennard-Jones potential (cheap, smooth)."""
    from ase.calculators.lj import LennardJones

    from glassbench.runners.structure import random_glass

    frames = []
    for i in range(n_frames):
        atoms = random_glass(x, formula_units, seed=seed + i)
        # sigma 1.5 A keeps the closest allowed pairs (P-O >= 1.3 A) at modest forces.
        atoms.calc = LennardJones(sigma=1.5, epsilon=0.05, rc=4.5, smooth=True)
        atoms.get_potential_energy()
        frames.append(atoms)
    return frames


def write_deepmd_npy(frames: list[Any], directory: Path, type_map: tuple[str, ...]) -> Path:
    """Write frames with the same atoms (same order) as one deepmd/npy system."""
    directory.mkdir(parents=True, exist_ok=True)
    first = frames[0].get_chemical_symbols()
    types = [type_map.index(s) for s in first]
    (directory / "type.raw").write_text("\n".join(map(str, types)) + "\n")
    (directory / "type_map.raw").write_text("\n".join(type_map) + "\n")
    sets = directory / "set.000"
    sets.mkdir(exist_ok=True)
    n = len(frames)
    np.save(sets / "coord.npy", np.array([a.get_positions().ravel() for a in frames]))
    np.save(sets / "box.npy", np.array([a.cell.array.ravel() for a in frames]))
    np.save(sets / "energy.npy", np.array([a.get_potential_energy() for a in frames]))
    np.save(sets / "force.npy", np.array([a.get_forces().ravel() for a in frames]).reshape(n, -1))
    return directory


def tiny_deepmd_input(steps: int = 40, seed: int = 1) -> dict[str, Any]:
    """DeePMD training input for the tiny se_e2_a model (type map Na, P, S, O)."""
    return {
        "model": {
            "type_map": ["Na", "P", "S", "O"],
            "descriptor": {
                "type": "se_e2_a",
                "rcut": 5.0,
                "rcut_smth": 0.5,
                # Generous neighbour budgets: MD on a stand-in model can compress the cell.
                "sel": [40, 20, 60, 40],
                "neuron": [8, 16],
                "axis_neuron": 4,
                "seed": seed,
            },
            "fitting_net": {"neuron": [16, 16], "seed": seed},
        },
        "learning_rate": {
            "type": "exp",
            "start_lr": 1e-3,
            "stop_lr": 1e-4,
            "decay_steps": 20,
        },
        "loss": {
            "type": "ener",
            "start_pref_e": 0.02,
            "limit_pref_e": 1,
            "start_pref_f": 1000,
            "limit_pref_f": 1,
        },
        "training": {
            "training_data": {"systems": ["data"], "batch_size": 1},
            "numb_steps": steps,
            "seed": seed,
            "disp_freq": steps,
            "save_freq": steps,
            "disp_file": "lcurve.out",
            "save_ckpt": "model.ckpt",
        },
    }


def train_tiny_deepmd(
    workdir: str | os.PathLike[str],
    python: str | None = None,
    *,
    steps: int = 40,
    n_frames: int = 6,
    seed: int = 0,
    timeout: float = 300.0,
) -> Path:
    """Train and freeze a tiny DeePMD (TensorFlow) model; returns ``workdir/graph.pb``.

    Frames (52 atoms, Na4P2S6O, random placement) are labelled here with a Lennard-Jones
    potential, written as deepmd/npy, then ``dp train`` and ``dp freeze`` run with
    ``python`` (default: `find_deepmd_python`). Raises `Failure` if there is no DeePMD
    interpreter or a step fails (with the tail of ``workdir/dp.log``).
    """
    py = python or find_deepmd_python()
    if py is None:
        raise Failure(
            "no DeePMD environment found: create one with scripts/make-envs.sh "
            f"(.venv-deepmd) or set {DEEPMD_ENV_VAR} (see docs/environments.md)"
        )
    work = Path(workdir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    type_map = ("Na", "P", "S", "O")
    write_deepmd_npy(_lj_frames(n_frames, 1.0, 4, seed), work / "data", type_map)
    (work / "input.json").write_text(json.dumps(tiny_deepmd_input(steps, seed + 1), indent=1))
    log = work / "dp.log"
    # Train and freeze in one interpreter: importing TensorFlow is the slowest part of a tiny
    # training. --tf: the frozen graph.pb is a TensorFlow model. The neighbour statistics
    # only check `sel` (set generously above); skipping them saves a few seconds.
    script = (
        "from deepmd.main import main\n"
        "main(['--tf', 'train', '--skip-neighbor-stat', 'input.json'])\n"
        "main(['--tf', 'freeze', '-o', 'graph.pb'])\n"
    )
    _run_logged([py, "-c", script], work, log, "dp train + dp freeze", timeout)
    graph = work / "graph.pb"
    if not graph.is_file():
        raise Failure(f"dp freeze wrote no {graph} (log: {log})")
    return graph


_GRACE_BUILD = textwrap.dedent(
    """
    import sys
    import tensorpotential  # before tensorflow: sets TF_USE_LEGACY_KERAS
    import tensorflow as tf
    from tensorpotential.potentials.presets import FS
    from tensorpotential.tpmodel import TPModel

    tf.random.set_seed(int(sys.argv[2]))
    ins = FS(element_map={"O": 0, "Na": 1, "P": 2, "S": 3}, rcut=5.0, avg_n_neigh=20.0,
             lmax=(2, 2, 1, 1), n_rad_max=(6, 4, 3, 2), embedding_size=8, n_rad_base=6)
    # The instruction dict, not the InstructionManager: save_model iterates over it.
    model = TPModel(ins.instruction_dict)
    model.build(tf.float64)
    model.save_model(sys.argv[1])
    """
)


def build_tiny_grace(
    directory: str | os.PathLike[str],
    python: str | None = None,
    *,
    seed: int = 0,
    timeout: float = 300.0,
) -> Path:
    """Build an untrained GRACE-FS saved model (O, Na, P, S) in ``directory``.

    Runs in the GRACE environment's interpreter (default: `find_grace_python`); raises
    `Failure` when there is none or the build fails.
    """
    py = python or find_grace_python()
    if py is None:
        raise Failure(
            "no GRACE environment found: create one with scripts/make-envs.sh --grace "
            f"(.venv-grace) or set {GRACE_ENV_VAR} (see docs/environments.md)"
        )
    out = Path(directory).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.log"
    _run_logged(
        [py, "-c", _GRACE_BUILD, str(out), str(seed)], out.parent, log, "GRACE build", timeout
    )
    if not (out / "saved_model.pb").is_file():
        raise Failure(f"GRACE build wrote no saved model in {out} (log: {log})")
    return out
