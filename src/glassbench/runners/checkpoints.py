"""Checkpoints of a melt-quench run: one file per (database, run), written atomically.

A checkpoint holds the atoms (positions, momenta, cell), the random generator's state and the
extended-system variables of the stage's integrator (Nose-Hoover chain, MTK barostat) at a
flushed step; it is written *after* the database flush, so a resumed run recomputes at most one
flush interval (docs/architecture.md, "One quench rate, end to end").
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine

from glassbench.errors import BadInput
from glassbench.inputs import probe_writable
from glassbench.service import repos

if TYPE_CHECKING:
    from ase import Atoms

log = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = 2


@dataclass(frozen=True)
class Checkpoint:
    """A restored checkpoint: the step, and the integrator state of stage ``stage_index``."""

    step: int
    stage_index: int = -1
    dynamics: dict[str, np.ndarray] = field(default_factory=dict)


def check_checkpoint_dir(
    directory: Path, *, source: str | None = None, where: str | None = None
) -> None:
    """Create ``directory`` if needed and prove that a file can be written in it.

    A probe file (:func:`glassbench.inputs.probe_writable`), not the permission bits.
    BadInput names the field ``checkpoint_dir`` (or ``source``/``where``: a spec's key).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe_writable(directory)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in a spec's path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise BadInput(
            f"cannot write checkpoints in {directory}: {reason}",
            field=None if where else "checkpoint_dir",
            source=source,
            where=where,
        ) from None


def checkpoint_path(directory: Path, engine: Engine, run_id: int) -> Path:
    """One file per (database, run): two databases used from one folder never collide."""
    ident = repos.content_hash(
        {"db": engine.url.render_as_string(hide_password=True), "run": run_id}
    )
    return directory / f"run-{run_id}-{ident[:12]}.npz"


def save_checkpoint(
    path: Path,
    *,
    step: int,
    atoms: Atoms,
    rng: np.random.Generator,
    stage_index: int = -1,
    dynamics: dict[str, np.ndarray] | None = None,
) -> None:
    """Atomic: write a temporary file, fsync, rename; a kill leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    arrays: dict[str, Any] = {
        "schema": np.array(CHECKPOINT_SCHEMA),
        "step": np.array(step),
        "numbers": atoms.get_atomic_numbers(),
        "positions": atoms.get_positions(),
        "momenta": atoms.get_momenta(),
        "cell": np.asarray(atoms.get_cell()),
        "rng_state": np.array(json.dumps(rng.bit_generator.state)),
        "stage_index": np.array(stage_index),
    }
    arrays.update({f"dyn:{k}": v for k, v in (dynamics or {}).items()})
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, atoms: Atoms, rng: np.random.Generator) -> Checkpoint | None:
    """Restore atoms and RNG in place; None if there is no usable file."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as d:
            if int(d["schema"]) != CHECKPOINT_SCHEMA:
                log.warning("ignoring checkpoint %s with schema %s", path, int(d["schema"]))
                return None
            if not np.array_equal(d["numbers"], atoms.get_atomic_numbers()):
                log.warning("ignoring checkpoint %s: atoms differ from this run", path)
                return None
            atoms.set_cell(d["cell"])
            # Constraints (FixCom) must not "correct" the restored state.
            atoms.set_positions(d["positions"], apply_constraint=False)
            atoms.set_momenta(d["momenta"], apply_constraint=False)
            rng.bit_generator.state = json.loads(str(d["rng_state"]))
            dynamics = {k[4:]: np.array(d[k]) for k in d.files if k.startswith("dyn:")}
            return Checkpoint(int(d["step"]), int(d["stage_index"]), dynamics)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
