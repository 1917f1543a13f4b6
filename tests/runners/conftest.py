"""Fixtures for the runner building blocks: a test cell.

The tiny models (`tiny_mace`, `deepmd_python`, `tiny_deepmd_graph`) and the skip-or-fail
helpers (`require`, `require_module`) live in tests/conftest.py, shared with every directory.
"""

from __future__ import annotations

import pytest
from ase import Atoms

from glassbench.runners.structure import random_glass


@pytest.fixture
def glass_cell() -> Atoms:
    """52-atom Na4P2S6O cell (4 formula units), random placement."""
    return random_glass(1.0, 4, seed=3)
