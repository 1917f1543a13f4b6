"""The run selector shared by compute, reanalyze and export: each criterion, combinations,
float tolerance, protocol labels, and the names it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from glassbench.errors import BadInput
from glassbench.service.selection import RunSelector, select_runs
from tests.conftest import Cli
from tests.stored.conftest import ingest_lammps_run


@pytest.fixture
def runs(gb: Cli) -> dict[str, int]:
    """Four ingested runs of two MLIPs (no model needed to store and select them)."""
    gb.ok("mlip", "add", "A", "--arch", "chgnet")
    gb.ok("mlip", "add", "B", "--arch", "chgnet", "--model", "r2scan")
    return {
        "A1": ingest_lammps_run(gb, "A", seed=1),
        "A2": ingest_lammps_run(gb, "A", seed=2),
        "B1": ingest_lammps_run(gb, "B", seed=1),
        "B1x": ingest_lammps_run(gb, "B", seed=3, name="triclinic", x=0.5),
    }


def _ids(engine: Any, **criteria: Any) -> list[int]:
    return [r.run_id for r in select_runs(engine, RunSelector(**criteria))]


def test_each_criterion_and_their_combination(engine: Any, runs: dict[str, int]) -> None:
    assert _ids(engine) == sorted(runs.values())
    assert _ids(engine, mlip=("A",)) == [runs["A1"], runs["A2"]]
    assert _ids(engine, mlip=("A", "B"), seed=(1,)) == [runs["A1"], runs["B1"]]
    # x and rates are stored floats: 0.5 matches 0.5000000001 and nothing else
    assert _ids(engine, x=(0.5000000001,)) == [runs["B1x"]]
    assert _ids(engine, x=(0.0,), mlip=("B",)) == [runs["B1"]]
    assert _ids(engine, quench_rate=(1.0,)) == sorted(runs.values())
    assert _ids(engine, quench_rate=(5.0,)) == []
    assert _ids(engine, source=("lammps",), run_ids=(runs["A2"], runs["B1"])) == [
        runs["A2"],
        runs["B1"],
    ]
    assert _ids(engine, status=("failed",)) == []
    selected = select_runs(engine, RunSelector(run_ids=(runs["A1"],)))[0]
    assert selected.n_frames == 8 and selected.n_atoms == 52 and selected.source == "lammps"
    assert selected.label().startswith(f"run {runs['A1']} (A, x=0, 1 K/ps, seed 1, external ")


def test_protocol_by_name_hash_prefix_and_view_label(engine: Any, runs: dict[str, int]) -> None:
    label = select_runs(engine, RunSelector(run_ids=(runs["A1"],)))[0].protocol
    kind, prefix = label.split(" ")
    assert kind == "external" and len(prefix) == 8
    # every ingest of these files shares the one external protocol record
    assert _ids(engine, protocol=(label,)) == sorted(runs.values())
    assert _ids(engine, protocol=(prefix,)) == sorted(runs.values())
    with pytest.raises(BadInput, match="no protocol named 'study'") as exc:
        _ids(engine, protocol=("study",))
    assert exc.value.field == "protocol"


def test_refused_names_and_values(engine: Any, runs: dict[str, int]) -> None:
    with pytest.raises(BadInput, match="no MLIP named 'C'") as exc:
        _ids(engine, mlip=("A", "C"))
    assert exc.value.field == "mlip"
    with pytest.raises(BadInput, match="unknown status 'finished'"):
        RunSelector(status=("finished",))
    with pytest.raises(BadInput, match="unknown source"):
        RunSelector(source=("gromacs",))
    with pytest.raises(BadInput, match="finite"):
        RunSelector(x=(float("nan"),))
    assert RunSelector(mlip="A", seed=1).describe() == "mlip=A seed=1 status=done"
