"""The pipeline's reusable writers (also used by the live runner), on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import math
import sys
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from glassbench.analysis import analyze_frame
from glassbench.ingest.frames import FrameData, add_frames, store_frames
from glassbench.ingest.pipeline import progress_bar
from glassbench.ingest.properties import thermo_tail_mean
from glassbench.ingest.slots import InvalidData, RunExists, RunKey, RunSlot, finish_run, open_run
from glassbench.ingest.thermo import ThermoWriter, store_thermo
from glassbench.service.db import unit_of_work
from glassbench.service.repos import THERMO_COLUMNS, add_frame, add_mlip
from tests.ingest.conftest import ase_images


def _slot(engine: Any, seed: int, content: str = "h") -> RunSlot:
    with unit_of_work(engine) as s:
        add_mlip(s, {"name": "MP0", "arch": "chgnet", "model_path": "0.3.0"})
        return open_run(
            s,
            RunKey("MP0", 0.0, 1.0, seed, {"source": "test"}),
            source="synthetic",
            content_hash=content,
        )


def _frame(step: int, image: int = 0) -> FrameData:
    atoms = ase_images()[image]
    return FrameData(
        step=step,
        numbers=atoms.numbers,
        positions=atoms.positions,
        cell=atoms.cell.array,
        time_ps=step * 1e-3,
        temperature_k=300.0,
    )


def _dump(engine: Any, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(sql), params)]


def test_ingest_add_frames_matches_repos_add_frame(engine: Any) -> None:
    """The batched writer stores exactly what ``repos.add_frame`` stores, also on replace."""
    a, b = _slot(engine, 1).run_id, _slot(engine, 2).run_id
    frames = [_frame(100, 0), _frame(200, 1)]
    with unit_of_work(engine) as s:
        for f in frames:
            res = analyze_frame(f.numbers, f.positions, f.cell, f.pbc)
            add_frame(
                s,
                a,
                stage="quench",
                step=f.step,
                numbers=f.numbers,
                positions=f.positions,
                cell=f.cell,
                pbc=f.pbc,
                time_ps=f.time_ps,
                temperature_k=f.temperature_k,
                analysis=res,
            )
        # b: first a different frame at step 200, then the batch replaces it
        add_frames(s, b, [(_frame(200, 5), "other", None)])
        add_frames(
            s,
            b,
            [(f, "quench", analyze_frame(f.numbers, f.positions, f.cell, f.pbc)) for f in frames],
        )
    cols = "stage, step, time_ps, temperature_k, n_atoms, cell_json, pbc, numbers, positions"
    q = f"SELECT {cols} FROM frame WHERE run_id = :r ORDER BY step"
    assert _dump(engine, q, r=a) == _dump(engine, q, r=b)
    spec = (
        "SELECT f.step, s.unit, s.count FROM speciation s JOIN frame f ON f.id = s.frame_id "
        "WHERE f.run_id = :r ORDER BY f.step, s.unit"
    )
    assert _dump(engine, spec, r=a) == _dump(engine, spec, r=b)
    coord = (
        "SELECT f.step, c.na_n, c.na_cn_mean, c.na_cn_s_mean, c.na_cn_o_mean, "
        "c.na_cn_histogram_json, c.ss_fraction, c.ss_mean_length, c.ss_chains_json, "
        "c.cutoffs_json FROM coordination c JOIN frame f ON f.id = c.frame_id "
        "WHERE f.run_id = :r ORDER BY f.step"
    )
    assert _dump(engine, coord, r=a) == _dump(engine, coord, r=b)
    assert len(_dump(engine, spec, r=b)) > 0


def test_ingest_store_frames_stages_batches_and_order(engine: Any) -> None:
    rid = _slot(engine, 3).run_id
    frames = [_frame(10 * (i + 1), i % 8) for i in range(7)]
    with unit_of_work(engine) as s:
        summary = store_frames(s, rid, frames, x=0.0, default_stage="melt", batch_frames=3)
    assert (summary.n_frames, summary.n_atoms, summary.formula_units) == (7, 52, 4)
    rows = _dump(engine, "SELECT step, stage FROM frame WHERE run_id = :r ORDER BY step", r=rid)
    assert rows == [(10 * (i + 1), "melt") for i in range(6)] + [(70, "final")]
    other = _slot(engine, 4).run_id
    bad = [_frame(10), _frame(30), _frame(20)]
    with pytest.raises(InvalidData, match="step 20 does not follow"), unit_of_work(engine) as s:
        store_frames(s, other, bad)
    assert _dump(engine, "SELECT step FROM frame WHERE run_id = :r", r=other) == []


def test_ingest_thermo_copy_null_patterns_round_trip(engine: Any) -> None:
    """Rows with different missing columns in one batch (binary COPY groups them on PG)."""
    rid = _slot(engine, 5).run_id
    rng = np.random.default_rng(0)
    rows: list[dict[str, float | int | None]] = []
    for i in range(50):
        row: dict[str, float | int | None] = {"step": 7 * i}
        for c in THERMO_COLUMNS[1:]:
            row[c] = None if rng.random() < 0.3 else float(rng.normal())
        if row["time_ps"] is not None:  # time grows with step (ThermoWriter refuses otherwise)
            row["time_ps"] = 0.007 * i
        rows.append(row)
    rows[3]["volume_a3"] = math.inf  # non-finite is stored as NULL, as by repos.insert_thermo
    with unit_of_work(engine) as s:
        w = store_thermo(s, rid, rows, batch_rows=16)
    assert (w.n_rows, w.first_step, w.last_step) == (50, 0, 343)
    got = _dump(
        engine,
        f"SELECT {', '.join(THERMO_COLUMNS)} FROM thermo WHERE run_id = :r ORDER BY step",
        r=rid,
    )
    want = [
        tuple(
            None if isinstance(v, float) and not math.isfinite(v) else v
            for v in (r[c] for c in THERMO_COLUMNS)
        )
        for r in rows
    ]
    assert got == want


def test_ingest_thermo_writer_refuses_unordered_steps(engine: Any) -> None:
    rid = _slot(engine, 6).run_id
    with unit_of_work(engine) as s:
        w = ThermoWriter(s, rid)
        w.add({"step": 5})
        with pytest.raises(InvalidData, match="step 5 does not follow step 5"):
            w.add({"step": 5})


def test_ingest_tail_mean_blocks(engine: Any) -> None:
    rid = _slot(engine, 7).run_id
    dens = 2.0 + 0.01 * np.sin(np.arange(101))
    with unit_of_work(engine) as s:
        store_thermo(
            s, rid, [{"step": 10 * i, "density_g_cm3": float(d)} for i, d in enumerate(dens)]
        )
        est = thermo_tail_mean(s, rid, tail_fraction=0.2, n_blocks=5)
    assert est is not None
    tail = dens[80:]  # steps 800..1000
    assert (est.step_from, est.step_to, est.n_rows) == (800, 1000, 21)
    assert est.value == pytest.approx(tail.mean())
    blocks = [tail[(np.arange(21) * 10 * 5) // 201 == b].mean() for b in range(5)]
    assert est.stderr == pytest.approx(np.std(blocks, ddof=1) / math.sqrt(5))


def test_ingest_open_run_idempotency(engine: Any) -> None:
    key = RunKey("MP0", 0.0, 1.0, 8, {"source": "test"})
    first = _slot(engine, 8, "aaa")
    assert first.action == "new"
    with unit_of_work(engine) as s:
        store_thermo(s, first.run_id, [{"step": 0, "density_g_cm3": 2.0}])
        finish_run(s, first.run_id, source="synthetic", content_hash="aaa", n_atoms=52)
    with unit_of_work(engine) as s:
        assert open_run(s, key, source="synthetic", content_hash="aaa").action == "unchanged"
        with pytest.raises(RunExists):
            open_run(s, key, source="synthetic", content_hash="bbb")
    with unit_of_work(engine) as s:
        slot = open_run(s, key, source="synthetic", content_hash="bbb", replace=True)
        assert (slot.action, slot.run_id) == ("replace", first.run_id)
        assert _count(s, first.run_id) == 0  # cleared, inside this transaction
        raise_after = True
        if raise_after:
            s.rollback()  # a failed replacement leaves the old data
    with unit_of_work(engine) as s:
        assert _count(s, first.run_id) == 1


def _count(session: Any, run_id: int) -> int:
    q = sa.text("SELECT COUNT(*) FROM thermo WHERE run_id = :r")
    return int(session.execute(q, {"r": run_id}).scalar_one())


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_ingest_progress_bar_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with progress_bar(1 << 20, unit="B", desc="ingest") as update:
        update(1 << 19)
    assert capsys.readouterr().err == ""  # stderr is not a TTY under pytest
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    with progress_bar(None, unit="frame", desc="ingest") as update:
        update(3)
    assert "ingest: 0frame" in tty.getvalue()  # drawn with its unit (tqdm throttles redraws)
