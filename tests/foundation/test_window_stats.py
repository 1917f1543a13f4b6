"""Window-averaged observables: ``store_window_stats``, ``window_stat`` and the v2 views.

Every expected value is computed here independently of glassbench's Python: means with SQL
over ``frame_fractions`` and ``coordination`` (the views' own per-frame definitions), standard
errors with numpy block averages over the same per-frame series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from glassbench.analysis import FrameAnalysis, analyze_frame
from glassbench.ingest.window import block_stderr, store_window_stats
from glassbench.schema.models import COORDINATION_COLUMNS, WINDOW_QUANTITIES
from glassbench.schema.views import RUN_SUMMARY_COLUMNS
from glassbench.service import repos, runs, unit_of_work
from glassbench.service.migrations import downgrade, upgrade

PARAMS = {"t_melt_k": 1500.0, "melt_ps": 1.0, "stages": "melt,quench,anneal,production"}
N_PRODUCTION = 12
BLOCK = 3  # 12 production frames + the final one: 4 full blocks, the final frame left over
WINDOW = ("production", "final")


@dataclass(frozen=True)
class Snapshot:
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    analysis: FrameAnalysis


@pytest.fixture(scope="module")
def snapshots() -> list[Snapshot]:
    """One quench frame, 12 production frames and a final one: the same dimer glass shaken
    by noise of growing amplitude, so that bonds break and every fraction varies."""
    from glassbench.testing.synthetic import dimer_glass

    base = dimer_glass(1.0, 20, seed=0)
    rng = np.random.default_rng(42)
    out = []
    for k in range(N_PRODUCTION + 2):
        pos = base.positions + rng.normal(scale=0.1 + 0.03 * k, size=base.positions.shape)
        out.append(
            Snapshot(
                base.numbers, pos, base.cell, analyze_frame(base.numbers, pos, base.cell, True)
            )
        )
    return out


def _mlip(s: Any) -> int:
    return repos.add_mlip(s, {"name": "mA", "arch": "chgnet", "model_path": "0.3.0"})


def _run(s: Any, seed: int, *, name: str | None = "study", x: float = 1.0) -> int:
    return runs.ensure(
        s,
        mlip_id=_mlip(s),
        composition_id=repos.composition_id(s, x),
        quench_rate_k_ps=5.0,
        seed=seed,
        protocol_id=repos.protocol_id(s, PARAMS, name=name),
    )


def _store_frames(
    s: Any, rid: int, snaps: list[Snapshot], *, last_stage: str = "production"
) -> None:
    """quench at step 0, ``last_stage`` at steps 100..1200, final at 1300."""
    stages = ["quench", *[last_stage] * N_PRODUCTION, "final"]
    for k, (stage, snap) in enumerate(zip(stages, snaps, strict=True)):
        repos.add_frame(
            s,
            rid,
            stage=stage,
            step=100 * k,
            numbers=snap.numbers,
            positions=snap.positions,
            cell=snap.cell,
            analysis=snap.analysis,
        )


def _finished_run(engine: Any, snaps: list[Snapshot], seed: int = 1, **kw: Any) -> int:
    with unit_of_work(engine) as s:
        rid = _run(s, seed, **kw)
        _store_frames(s, rid, snaps)
        repos.set_property(s, rid, "density_g_cm3", 2.0, stderr=0.01)
        runs.finish(s, rid)
    return rid


def _per_frame_sql(quantities: tuple[str, ...]) -> str:
    """Each window frame's quantities, straight from the views' per-frame definitions."""
    cols = ", ".join(
        f"co.{COORDINATION_COLUMNS[q]} AS {q}" if q in COORDINATION_COLUMNS else f"ff.{q} AS {q}"
        for q in quantities
    )
    return (
        f"SELECT f.step, {cols} FROM frame f "
        "JOIN frame_fractions ff ON ff.frame_id = f.id "
        "JOIN coordination co ON co.frame_id = f.id "
        "WHERE f.run_id = :run AND f.stage IN ('production', 'final') ORDER BY f.step"
    )


def _window_means_sql(quantities: tuple[str, ...]) -> str:
    cols = ", ".join(
        f"AVG(co.{COORDINATION_COLUMNS[q]}) AS {q}"
        if q in COORDINATION_COLUMNS
        else f"AVG(ff.{q}) AS {q}"
        for q in quantities
    )
    return (
        f"SELECT {cols} FROM frame f "
        "JOIN frame_fractions ff ON ff.frame_id = f.id "
        "JOIN coordination co ON co.frame_id = f.id "
        "WHERE f.run_id = :run AND f.stage IN ('production', 'final')"
    )


def _one(engine: Any, sql: str, **params: Any) -> dict[str, Any]:
    with engine.connect() as c:
        return dict(c.execute(sa.text(sql), params).mappings().one())


def _close(got: Any, want: Any) -> None:
    if want is None:
        assert got is None
    else:
        assert got is not None
        np.testing.assert_allclose(float(got), float(want), rtol=1e-12, atol=1e-15)


def test_window_means_and_block_errors_match_an_independent_computation(
    engine: Any, snapshots: list[Snapshot]
) -> None:
    rid = _finished_run(engine, snapshots)
    with unit_of_work(engine) as s:
        result = store_window_stats(s, rid, stages=("production",), block_frames=BLOCK)
    series = _frames_series(engine, rid)
    # A quantity undefined in every window frame has no window: here the Na-O g(r) peak
    # (20 O atoms give fewer Na-O contacts than a peak needs).
    assert (
        set(result) == {q for q, v in series.items() if v} == set(WINDOW_QUANTITIES) - {"na_o_peak"}
    )

    # The fractions really vary over the window, or the test would prove little.
    for q in ("p0", "p1", "p3c", "bs", "nbs", "na_cn", "ss_fraction", "na_s_share", "na_s_peak"):
        assert len({round(v, 12) for v in series[q]}) > 3, q

    means = _one(engine, _window_means_sql(WINDOW_QUANTITIES), run=rid)
    summary = _one(engine, "SELECT * FROM run_summary")
    detail = _one(engine, "SELECT * FROM run_detail WHERE run_id = :run", run=rid)
    for q in RUN_SUMMARY_COLUMNS:
        if q in WINDOW_QUANTITIES:
            _close(summary[q], means[q])
    assert summary["protocol"] == "study"
    assert detail["protocol"] == "study"
    assert detail["window_frames"] == N_PRODUCTION + 1
    assert summary["density_g_cm3"] == 2.0

    assert detail["na_o_peak"] is None and detail["na_o_peak_stderr"] is None
    for q in result:
        _close(detail[q], means[q])
        values = np.array(series[q], dtype=float)
        assert len(values) == N_PRODUCTION + 1
        n_blocks = len(values) // BLOCK
        block_means = values[: n_blocks * BLOCK].reshape(n_blocks, BLOCK).mean(axis=1)
        want = block_means.std(ddof=1) / np.sqrt(n_blocks)
        np.testing.assert_allclose(detail[f"{q}_stderr"], want, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(result[q][1], want, rtol=1e-9, atol=1e-15)
        _close(result[q][0], means[q])

    final = _final_values(engine, rid)
    for q in WINDOW_QUANTITIES:
        _close(detail[f"{q}_final"], final[q])
    # Window and final frame differ, so the columns above prove which is which.
    assert detail["p1"] != detail["p1_final"]

    with engine.connect() as c:
        rows = c.execute(
            sa.text(
                "SELECT quantity, n_frames, n_blocks, block_frames, step_from, step_to "
                "FROM window_stat WHERE run_id = :run AND quantity = 'p0'"
            ),
            {"run": rid},
        ).one()
    assert tuple(rows) == ("p0", N_PRODUCTION + 1, 4, BLOCK, 100, 100 * (N_PRODUCTION + 1))


def _frames_series(engine: Any, rid: int) -> dict[str, list[float]]:
    """Each quantity's values over the window frames where it is defined (not NULL)."""
    with engine.connect() as c:
        rows = c.execute(sa.text(_per_frame_sql(WINDOW_QUANTITIES)), {"run": rid}).mappings().all()
    return {q: [float(r[q]) for r in rows if r[q] is not None] for q in WINDOW_QUANTITIES}


def _final_values(engine: Any, rid: int) -> dict[str, Any]:
    sql = _per_frame_sql(WINDOW_QUANTITIES).replace(
        "f.stage IN ('production', 'final')", "f.stage = 'final'"
    )
    return _one(engine, sql, run=rid)


def test_a_run_without_a_window_shows_its_final_frame(
    engine: Any, snapshots: list[Snapshot]
) -> None:
    windowed = _finished_run(engine, snapshots, seed=1)
    plain = _finished_run(engine, snapshots, seed=2, name=None)
    with unit_of_work(engine) as s:
        store_window_stats(s, windowed, stages=("production",), block_frames=BLOCK)
    final = _final_values(engine, plain)
    detail = _one(engine, "SELECT * FROM run_detail WHERE run_id = :run", run=plain)
    assert detail["window_frames"] is None
    for q in WINDOW_QUANTITIES:
        _close(detail[q], final[q])
        _close(detail[f"{q}_final"], final[q])
        assert detail[f"{q}_stderr"] is None
    with engine.connect() as c:
        protocol, p0 = c.execute(
            sa.text("SELECT protocol, p0 FROM run_summary WHERE seed = 2")
        ).one()
        content_hash = c.execute(sa.text("SELECT content_hash FROM protocol")).scalar_one()
    _close(p0, final["p0"])
    # One protocol: the unnamed run's parameters are the named run's; the first name stays.
    assert protocol == "study"
    with unit_of_work(engine) as s:
        other = repos.protocol_id(s, {"t_melt_k": 900.0})
    with engine.connect() as c:
        shown = c.execute(
            sa.text("SELECT kind, content_hash FROM protocol WHERE id = :i"), {"i": other}
        ).one()
    assert content_hash != shown[1]
    with unit_of_work(engine) as s:
        rid = runs.ensure(
            s,
            mlip_id=_mlip(s),
            composition_id=repos.composition_id(s, 1.0),
            quench_rate_k_ps=5.0,
            seed=3,
            protocol_id=other,
        )
    # An unnamed protocol is shown by kind and the start of its content hash.
    assert _one(engine, "SELECT protocol FROM run_detail WHERE run_id = :r", r=rid)["protocol"] == (
        f"meltquench {shown[1][:8]}"
    )


def test_protocol_names_are_labels_not_identity(engine: Any) -> None:
    with unit_of_work(engine) as s:
        unnamed = repos.protocol_id(s, PARAMS)
        named = repos.protocol_id(s, PARAMS, name="study")
        renamed = repos.protocol_id(s, PARAMS, name="my-file")
        again = repos.protocol_id(s, PARAMS)
    assert unnamed == named == renamed == again
    with pytest.raises(ValueError, match="64"), unit_of_work(engine) as s:
        repos.protocol_id(s, {"t_melt_k": 1.0}, name="x" * 65)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT name FROM protocol")).scalars().all() == ["study"]


def test_store_window_stats_is_idempotent_and_selects_its_window(
    engine: Any, snapshots: list[Snapshot]
) -> None:
    rid = _finished_run(engine, snapshots)

    def stored() -> list[tuple[Any, ...]]:
        with engine.connect() as c:
            return [
                tuple(r)
                for r in c.execute(
                    sa.text(
                        "SELECT quantity, mean, stderr, n_frames, n_blocks, step_from, step_to "
                        "FROM window_stat ORDER BY quantity"
                    )
                )
            ]

    with unit_of_work(engine) as s:
        first = store_window_stats(s, rid, stages=("production",), block_frames=BLOCK)
    rows = stored()
    with unit_of_work(engine) as s:
        assert store_window_stats(s, rid, stages=("production",), block_frames=BLOCK) == first
    assert stored() == rows
    assert len(rows) == len(first) == len(WINDOW_QUANTITIES) - 1  # no Na-O peak: see above

    # Without the final frame, from step 700: production frames 700..1200, two blocks of 3.
    with unit_of_work(engine) as s:
        store_window_stats(
            s, rid, stages=("production",), block_frames=BLOCK, include_final=False, step_from=700
        )
    means = _one(
        engine,
        _window_means_sql(("p1", "na_cn")).replace(
            "f.stage IN ('production', 'final')", "f.stage = 'production' AND f.step >= 700"
        ),
        run=rid,
    )
    detail = _one(engine, "SELECT * FROM run_detail WHERE run_id = :run", run=rid)
    assert detail["window_frames"] == 6
    _close(detail["p1"], means["p1"])
    _close(detail["na_cn"], means["na_cn"])
    assert detail["p1_stderr"] is not None

    # One block: a mean, no error.
    with unit_of_work(engine) as s:
        out = store_window_stats(s, rid, stages=("production",), block_frames=N_PRODUCTION + 1)
    assert all(err is None for _, err in out.values())
    assert _one(engine, "SELECT p0_stderr FROM run_detail")["p0_stderr"] is None

    # clear_run_data takes the window with everything else.
    with unit_of_work(engine) as s:
        repos.clear_run_data(s, rid)
    assert stored() == []


def test_window_arguments_are_checked(engine: Any) -> None:
    with unit_of_work(engine) as s:
        rid = _run(s, 1)
        with pytest.raises(ValueError, match="stage"):
            store_window_stats(s, rid, stages=("production", "warmup"), block_frames=2)
        with pytest.raises(ValueError, match="block_frames"):
            store_window_stats(s, rid, stages=("production",), block_frames=0)
        assert store_window_stats(s, rid, stages=("production",), block_frames=2) == {}


def test_block_stderr() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    err, n = block_stderr(values, 2)  # blocks (1,2) (3,4) (5,6); 7 left over
    assert n == 3
    assert err == pytest.approx(np.std([1.5, 3.5, 5.5], ddof=1) / np.sqrt(3))
    assert block_stderr(values, 4) == (None, 1)
    assert block_stderr([], 1) == (None, 0)


def test_mlip_mae_uses_window_means(engine: Any, snapshots: list[Snapshot]) -> None:
    rid = _finished_run(engine, snapshots)
    with unit_of_work(engine) as s:
        store_window_stats(s, rid, stages=("production",), block_frames=BLOCK)
        cid = repos.composition_id(s, 1.0)
        for prop, value in (("p1", 0.5), ("na_cn", 4.0), ("density_g_cm3", 2.1)):
            repos.set_experiment(
                s,
                {
                    "subject": repos.experiment_subject(x=1.0, crystal=None),
                    "composition_id": cid,
                    "crystal": None,
                    "property": prop,
                    "value": value,
                    "source": "SYNTHETIC",
                },
            )
    means = _one(engine, _window_means_sql(("p1", "na_cn")), run=rid)
    with engine.connect() as c:
        mae = dict(
            c.execute(sa.text("SELECT property, mean_error FROM mlip_mae WHERE mlip = 'mA'")).all()
        )
        value = dict(c.execute(sa.text("SELECT property, value FROM run_value")).all())
    np.testing.assert_allclose(mae["p1"], means["p1"] - 0.5, rtol=1e-12)
    np.testing.assert_allclose(mae["na_cn"], means["na_cn"] - 4.0, rtol=1e-12)
    np.testing.assert_allclose(mae["density_g_cm3"], 2.0 - 2.1, rtol=1e-12)
    _close(value["p1"], means["p1"])


def test_migration_round_trip_keeps_rows(
    db_url: str, snapshots: list[Snapshot], monkeypatch: pytest.MonkeyPatch
) -> None:
    """0002 down to 0001 and up again on a populated database: frames (rebuilt on SQLite for
    their stage CHECK) keep their ids and children; the window and the names go and come."""
    from glassbench.service.db import make_engine
    from tests.foundation.old_writers import write_as_0003

    engine = make_engine(db_url)
    try:
        upgrade(engine)
        # Data that revision 0003 can hold (test_migration_0004 covers what 0004 adds).
        with monkeypatch.context() as m, unit_of_work(engine) as s:
            write_as_0003(m)
            rid = _run(s, 1)
            _store_frames(s, rid, snapshots, last_stage="anneal")
            store_window_stats(s, rid, stages=("anneal",), block_frames=BLOCK)

        def frames() -> list[tuple[Any, ...]]:
            with engine.connect() as c:
                return [
                    (r[0], r[1], r[2], bytes(r[3]), r[4], r[5])
                    for r in c.execute(
                        sa.text(
                            "SELECT f.id, f.stage, f.step, f.positions, "
                            "(SELECT COUNT(*) FROM speciation s WHERE s.frame_id = f.id), "
                            "(SELECT co.na_cn_mean FROM coordination co WHERE co.frame_id = f.id) "
                            "FROM frame f ORDER BY f.id"
                        )
                    )
                ]

        before = frames()
        assert len(before) == N_PRODUCTION + 2
        downgrade(engine, "0001")
        assert frames() == before
        insp = sa.inspect(engine)
        assert "window_stat" not in insp.get_table_names()
        assert "name" not in {c["name"] for c in insp.get_columns("protocol")}
        with engine.connect() as c:
            columns = list(c.execute(sa.text("SELECT * FROM run_summary")).keys())
        assert "protocol" not in columns
        upgrade(engine)
        assert frames() == before
        with unit_of_work(engine) as s:
            repos.add_frame(
                s,
                rid,
                stage="production",
                step=99_999,
                numbers=snapshots[0].numbers,
                positions=snapshots[0].positions,
                cell=snapshots[0].cell,
            )
        # 0001 has no 'production' stage: refusing beats relabelling frames.
        with pytest.raises(RuntimeError, match="production"):
            downgrade(engine, "0001")
        assert len(frames()) == N_PRODUCTION + 3
    finally:
        engine.dispose()
