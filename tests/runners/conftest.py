"""Fixtures for the runner building blocks: tiny models built from scratch, test cells.

Optional stacks (MACE/CHGNet in this interpreter, the DeePMD and GRACE environments) are
skipped with the reason when absent, except under ``CI=true``, where the ones CI installs
(MACE, CHGNet, DeePMD) must be there: a missing stack is then a failure, not a skip.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

import pytest
from ase import Atoms

from glassbench.runners.structure import random_glass


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require_module(module: str, hint: str) -> None:
    """Skip (or, under CI=true, fail) when ``module`` is not importable here."""
    if find_spec(module) is not None:
        return
    reason = f"{module} not importable in this interpreter ({hint})"
    if in_ci():
        pytest.fail(f"CI=true requires {module}: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_mace_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained tiny MACE, pickled whole (the format MACE's own tools write)."""
    require_module("mace", "pip install torch==2.13.0 && pip install mace-torch")
    from glassbench.runners.tiny_models import build_tiny_mace

    return build_tiny_mace(tmp_path_factory.mktemp("mace") / "tiny.model", seed=0)


@pytest.fixture(scope="session")
def deepmd_python() -> str:
    """Interpreter of the DeePMD environment (skip without one, unless CI=true)."""
    from glassbench.errors import BadInput
    from glassbench.runners.tiny_models import find_deepmd_python

    reason = (
        "no DeePMD environment (.venv-deepmd or $GLASSBENCH_DEEPMD_PYTHON): "
        "run scripts/make-envs.sh"
    )
    try:
        py = find_deepmd_python()
    except BadInput as exc:  # the variable names a missing interpreter
        py, reason = None, f"{reason} ({exc.message})"
    if py is None:
        if in_ci():
            pytest.fail(f"CI=true requires the DeePMD environment: {reason}")
        pytest.skip(reason)
    return py


@pytest.fixture(scope="session")
def tiny_deepmd_graph(tmp_path_factory: pytest.TempPathFactory, deepmd_python: str) -> Path:
    from glassbench.runners.tiny_models import train_tiny_deepmd

    return train_tiny_deepmd(tmp_path_factory.mktemp("deepmd"), python=deepmd_python)


@pytest.fixture
def glass_cell() -> Atoms:
    """52-atom Na4P2S6O cell (4 formula units), random placement."""
    return random_glass(1.0, 4, seed=3)
