"""Revision 0004: P-P chain ends (``PPend``), the Na-S share and first g(r) peaks, the share of
long S-S chains.

A database written at revision 0003 (by that revision's writers: chain ends counted as P1P,
no new coordination columns, no new window quantities) keeps every row and every column the
views had through the upgrade; the new quantities are NULL for its frames. Frames analysed
after it carry them: every stored value and window mean is compared with a numpy computation
over the frames' own ``analyze_frame`` results. The downgrade refuses while any new datum
exists, and otherwise restores revision 0003.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from glassbench.analysis import FrameAnalysis, analyze_frame
from glassbench.schema import TABLES
from glassbench.schema.views_v3 import VIEWS_V3
from glassbench.service import repos, runs, unit_of_work
from glassbench.service.db import make_engine
from glassbench.service.migrations import current_revision, upgrade
from tests.conftest import Cli, table_counts
from tests.foundation.old_writers import COORDINATION_0004 as NEW_COLUMNS
from tests.foundation.old_writers import write_as_0003
from tests.ingest.conftest import lammps_file

P_CLASSES = ("P0", "P1", "P2", "P3", "P4", "P1P", "PPend", "P3c", "P_other")


def _ppend(a: FrameAnalysis) -> float | None:
    n_p = sum(getattr(a.p, u) for u in P_CLASSES)
    return a.p.PPend / n_p if n_p else None


# The window quantities of revision 0004 and each one's value in a frame's analysis.
NEW_QUANTITIES: dict[str, Callable[[FrameAnalysis], float | None]] = {
    "ppend": _ppend,
    "na_s_share": lambda a: a.na.s_share,
    "na_s_peak": lambda a: a.na.peak_S,
    "na_o_peak": lambda a: a.na.peak_O,
    "ss_long_share": lambda a: a.ss.long_share,
}
N_PRODUCTION = 8
BLOCK = 3  # 8 production frames and the final one: 3 full blocks
# Rows of each view in a stable order (the first columns name the row).
VIEW_ORDER = {
    "run_final_frame": "run_id",
    "frame_fractions": "frame_id",
    "run_detail": "run_id",
    "run_summary": "mlip, x, quench_rate_k_ps, seed",
    "run_value": "run_id, property",
    "mlip_mae": "mlip, property",
    "run_summary_by_analysis": "run_id, analysis_id",
    "cross_eval": "eval_id",
}


# --- a glass with P-P chain ends and S-S chains -----------------------------------------

_V = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float) / np.sqrt(3)
_B_PP, _B_PS, _B_SS = 2.2, 2.05, 2.05


def _p3_chain() -> tuple[list[int], np.ndarray]:
    """S3P-PS2-PS3: two chain ends (PPend) around a middle P, tetrahedral angles."""
    pa, pc = _B_PP * _V[0], _B_PP * _V[1]
    pos = [np.zeros(3), pa, pc, _B_PS * _V[2], _B_PS * _V[3]]
    pos += [pa - _B_PS * _V[k] for k in (1, 2, 3)]
    pos += [pc - _B_PS * _V[k] for k in (0, 2, 3)]
    return [15, 15, 15] + [16] * 8, np.array(pos)


def _s_chain(n: int) -> tuple[list[int], np.ndarray]:
    half = np.radians(105.0) / 2
    sx, sy = _B_SS * np.sin(half), _B_SS * np.cos(half)
    return [16] * n, np.array([[k * sx, (k % 2) * sy, 0.0] for k in range(n)])


def _chain_glass() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dimer glass (x = 2: enough Na-S and Na-O contacts for both g(r) peaks) beside a gap
    holding two P3 chains, an S3 and an S2 chain."""
    from glassbench.testing.synthetic import dimer_glass

    glass = dimer_glass(2.0, 24, seed=0)
    length = float(glass.cell[0, 0])
    gap = 16.0
    numbers, positions = list(glass.numbers), [glass.positions]
    x = length + gap / 2
    sites = [(x, length / 4, length / 4), (x, 3 * length / 4, length / 4),
             (x, length / 4, 3 * length / 4), (x, 3 * length / 4, 3 * length / 4)]  # fmt: skip
    for site, (z, p) in zip(
        sites, (_p3_chain(), _p3_chain(), _s_chain(3), _s_chain(2)), strict=True
    ):
        numbers += z
        positions.append(p - p.mean(axis=0) + np.array(site))
    return np.array(numbers), np.vstack(positions), np.diag([length + gap, length, length])


@dataclass(frozen=True)
class Snapshot:
    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    analysis: FrameAnalysis


@pytest.fixture(scope="module")
def snapshots() -> list[Snapshot]:
    """A quench frame, the production frames and the final one: the chain glass shaken by
    noise of growing amplitude, so that chain ends, S-S chains and Na contacts change."""
    numbers, base, cell = _chain_glass()
    rng = np.random.default_rng(7)
    out = []
    for k in range(N_PRODUCTION + 2):
        pos = base + rng.normal(scale=0.05 + 0.025 * k, size=base.shape)
        out.append(Snapshot(numbers, pos, cell, analyze_frame(numbers, pos, cell, True)))
    return out


def _store_run(engine: Any, snaps: list[Snapshot], seed: int, *, window: bool) -> int:
    """A done run: quench at step 0, production at 100.., final last; a window if asked."""
    from glassbench.ingest.window import store_window_stats

    stages = ["quench", *["production"] * N_PRODUCTION, "final"]
    with unit_of_work(engine) as s:
        rid = runs.ensure(
            s,
            mlip_id=repos.add_mlip(s, {"name": "mA", "arch": "chgnet", "model_path": "0.3.0"}),
            composition_id=repos.composition_id(s, 2.0),
            quench_rate_k_ps=5.0,
            seed=seed,
            protocol_id=repos.protocol_id(s, {"t_melt_k": 1500.0}, name="study"),
        )
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
        repos.set_property(s, rid, "density_g_cm3", 2.0 + seed / 100, stderr=0.01)
        if window:
            store_window_stats(s, rid, stages=("production",), block_frames=BLOCK)
        runs.finish(s, rid)
    return rid


@pytest.fixture
def at_0003(
    db_url: str, snapshots: list[Snapshot], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, list[int]]]:
    """A database at revision 0003 holding a windowed run, a run without a window (its final
    frame stands for it), an experiment and a second analysis of one final frame."""
    engine = make_engine(db_url)
    upgrade(engine, "0003")
    with monkeypatch.context() as m:
        write_as_0003(m)
        ids = [_store_run(engine, snapshots, 1, window=True)]
        ids.append(_store_run(engine, snapshots, 2, window=False))
        with unit_of_work(engine) as s:
            repos.set_experiment(
                s,
                {
                    "subject": repos.experiment_subject(x=2.0, crystal=None),
                    "composition_id": repos.composition_id(s, 2.0),
                    "crystal": None,
                    "property": "p1",
                    "value": 0.5,
                    "uncertainty": 0.05,
                    "source": "SYNTHETIC test source",
                },
            )
            aid = s.execute(
                sa.text(
                    "INSERT INTO analysis (name, cutoffs_json, created_at) "
                    "VALUES ('wide', '{}', CURRENT_TIMESTAMP) RETURNING id"
                )
            ).scalar_one()
            final = s.execute(
                sa.text("SELECT frame_id FROM run_final_frame WHERE run_id = :r"), {"r": ids[1]}
            ).scalar_one()
            repos.add_analysis(s, int(final), snapshots[-1].analysis, analysis_id=int(aid))
    assert current_revision(engine) == "0003"
    yield engine, ids
    engine.dispose()


def _table_rows(engine: Any, columns: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with engine.connect() as c:
        for t in TABLES:
            tbl = t.__table__  # type: ignore[attr-defined]
            if tbl.name not in columns:
                continue
            key = [k for k in tbl.primary_key.columns if k.name in columns[tbl.name]]
            rows = c.execute(sa.select(*[tbl.c[n] for n in columns[tbl.name]]).order_by(*key))
            out[tbl.name] = [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows
            ]
    return out


def _columns(engine: Any) -> dict[str, list[str]]:
    insp = sa.inspect(engine)
    present = set(insp.get_table_names())
    return {
        t.__tablename__: [c["name"] for c in insp.get_columns(t.__tablename__)]  # type: ignore[attr-defined]
        for t in TABLES
        if t.__tablename__ in present  # type: ignore[attr-defined]
    }


def _views(engine: Any) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as c:
        return {
            name: [
                dict(r)
                for r in c.execute(
                    sa.text(f"SELECT * FROM {name} ORDER BY {VIEW_ORDER[name]}")
                ).mappings()
            ]
            for name, _ in VIEWS_V3
        }


def _same_v3_columns(
    before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]
) -> set[str]:
    """Assert that every v3 column of every view row is unchanged, in the same order; the
    columns the views gained."""
    gained: set[str] = set()
    for name, rows in before.items():
        assert len(after[name]) == len(rows), name
        for old, new in zip(rows, after[name], strict=True):
            assert [k for k in new if k in old] == list(old), name
            assert {k: new[k] for k in old} == old, name
            gained |= set(new) - set(old)
    return gained


def test_upgrade_keeps_every_row_and_every_v3_column(at_0003: tuple[Any, list[int]]) -> None:
    engine, _ = at_0003
    columns = _columns(engine)
    rows, views = _table_rows(engine, columns), _views(engine)
    assert len(views["run_detail"]) == 2 and len(views["run_summary_by_analysis"]) == 3
    assert views["mlip_mae"] and views["run_value"]
    upgrade(engine)
    assert current_revision(engine) == "0004"
    assert _table_rows(engine, columns) == rows
    after = _views(engine)
    gained = _same_v3_columns(views, after)
    suffixed = {f"{q}{s}" for q in NEW_QUANTITIES for s in ("", "_stderr", "_final")}
    assert gained == suffixed
    assert {k for r in after["frame_fractions"] for k in r} - set(views["frame_fractions"][0]) == {
        "ppend"
    }
    # Frames analysed before 0004 have no chain-end count: NULL, not 0, everywhere.
    for name in ("frame_fractions", "run_detail", "run_summary_by_analysis"):
        for row in after[name]:
            assert all(row[k] is None for k in gained if k in row), name
    with engine.connect() as c:
        filled = c.execute(
            sa.text(
                "SELECT COUNT(*) FROM coordination WHERE "
                + " OR ".join(f"{col} IS NOT NULL" for col in NEW_COLUMNS)
            )
        ).scalar_one()
    assert filled == 0


def _stored(engine: Any, rid: int) -> dict[str, Any]:
    with engine.connect() as c:
        frames = c.execute(
            sa.text("SELECT id FROM frame WHERE run_id = :r ORDER BY step"), {"r": rid}
        ).scalars()
        frame_ids = [int(f) for f in frames]
        coord = {
            int(r[0]): tuple(r[1:])
            for r in c.execute(
                sa.text(
                    f"SELECT frame_id, {', '.join(NEW_COLUMNS)} FROM coordination "
                    "WHERE analysis_id = 1 AND frame_id IN "
                    "(SELECT id FROM frame WHERE run_id = :r)"
                ),
                {"r": rid},
            )
        }
        ends = dict(
            c.execute(
                sa.text(
                    "SELECT s.frame_id, s.count FROM speciation s JOIN frame f "
                    "ON f.id = s.frame_id WHERE f.run_id = :r AND s.unit = 'PPend' "
                    "AND s.analysis_id = 1"
                ),
                {"r": rid},
            ).all()
        )
        ppend = dict(
            c.execute(
                sa.text(
                    "SELECT ff.frame_id, ff.ppend FROM frame_fractions ff JOIN frame f "
                    "ON f.id = ff.frame_id WHERE f.run_id = :r"
                ),
                {"r": rid},
            ).all()
        )
        window = {
            r[0]: (r[1], r[2], r[3], r[4])
            for r in c.execute(
                sa.text(
                    "SELECT quantity, mean, stderr, n_frames, n_blocks FROM window_stat "
                    "WHERE run_id = :r"
                ),
                {"r": rid},
            )
        }
        detail = dict(
            c.execute(sa.text("SELECT * FROM run_detail WHERE run_id = :r"), {"r": rid})
            .mappings()
            .one()
        )
    return {
        "frames": frame_ids,
        "coord": coord,
        "ends": ends,
        "ppend": ppend,
        "window": window,
        "detail": detail,
    }


def _close(got: Any, want: Any) -> None:
    if want is None:
        assert got is None
    else:
        assert got is not None
        np.testing.assert_allclose(float(got), float(want), rtol=1e-12, atol=1e-15)


def _check_new_run(engine: Any, rid: int, snaps: list[Snapshot]) -> None:
    """Every new stored value of the run against numpy over the snapshots' analyses."""
    got = _stored(engine, rid)
    analyses = [s.analysis for s in snaps]
    for fid, a in zip(got["frames"], analyses, strict=True):
        want = (a.na.s_share, a.na.peak_S, a.na.peak_O, a.ss.long_share)
        for g, w in zip(got["coord"][fid], want, strict=True):
            _close(g, w)
        assert got["ends"][fid] == a.p.PPend
        _close(got["ppend"][fid], _ppend(a))
    window = analyses[1:]  # the production frames and the final one
    for q, value in NEW_QUANTITIES.items():
        series = np.array([v for a in window if (v := value(a)) is not None], dtype=float)
        # The data vary, or the comparison would prove little (a g(r) peak may be undefined
        # in a frame with too few contacts: that frame counts for nothing, as in the views).
        assert len(series) >= 2 * BLOCK and len(set(series.round(12))) > 2, q
        n_blocks = len(series) // BLOCK
        blocks = series[: n_blocks * BLOCK].reshape(n_blocks, BLOCK).mean(axis=1)
        stderr = blocks.std(ddof=1) / np.sqrt(n_blocks)
        mean, err, n_frames, n_stored_blocks = got["window"][q]
        _close(mean, series.mean())
        _close(err, stderr)
        assert (n_frames, n_stored_blocks) == (len(series), n_blocks)
        _close(got["detail"][q], series.mean())
        _close(got["detail"][f"{q}_stderr"], stderr)
        _close(got["detail"][f"{q}_final"], value(analyses[-1]))


def test_new_frames_store_the_new_quantities_and_their_window_means(
    engine: Any, snapshots: list[Snapshot]
) -> None:
    rid = _store_run(engine, snapshots, 1, window=True)
    _check_new_run(engine, rid, snapshots)
    # Without a window run_detail shows the final frame's values.
    plain = _store_run(engine, snapshots, 2, window=False)
    detail = _stored(engine, plain)["detail"]
    for q, value in NEW_QUANTITIES.items():
        _close(detail[q], value(snapshots[-1].analysis))
        assert detail[f"{q}_stderr"] is None


def test_ingest_lammps_stores_the_new_quantities(gb: Cli, engine: Any) -> None:
    from glassbench.stored.frames import read_frames

    gb.ok("mlip", "add", "MP0", "--arch", "chgnet")
    gb.ok(
        "ingest", "lammps", "--log", str(lammps_file("log.metal.lammps")),
        "--dump", str(lammps_file("dump.metal.lammpstrj")),
        "--mlip", "MP0", "--x", "0", "--quench-rate", "1", "--seed", "1",
    )  # fmt: skip
    with engine.connect() as c:
        rows = c.execute(
            sa.text(
                f"SELECT frame_id, cutoffs_json, {', '.join(NEW_COLUMNS)} FROM coordination "
                "ORDER BY frame_id"
            )
        ).all()
        ends = dict(
            c.execute(sa.text("SELECT frame_id, count FROM speciation WHERE unit = 'PPend'")).all()
        )
        frames = {f.frame_id: f for f in read_frames(c, [int(r[0]) for r in rows])}
    assert len(rows) > 1 and set(ends) == set(frames)
    for fid, cutoffs, *stored in rows:
        f = frames[fid]
        a = analyze_frame(f.numbers, f.positions, f.cell, f.pbc, cutoffs=json.loads(cutoffs))
        want = (a.na.s_share, a.na.peak_S, a.na.peak_O, a.ss.long_share)
        for g, w in zip(stored, want, strict=True):
            _close(g, w)
        assert ends[fid] == a.p.PPend


def _downgrade(gb: Cli) -> Any:
    return gb("db", "downgrade", "0003", "--yes")


def test_downgrade_refuses_while_new_data_exist_then_restores_0003(
    at_0003: tuple[Any, list[int]], db_url: str, snapshots: list[Snapshot]
) -> None:
    engine, old = at_0003
    before = _views(engine)
    upgrade(engine)
    new = _store_run(engine, snapshots, 3, window=True)
    _check_new_run(engine, new, snapshots)
    gb = Cli(db_url)
    in_new = "(SELECT id FROM frame WHERE run_id = :r)"
    steps = [
        ("speciation rows of PPend", "DELETE FROM speciation WHERE unit = 'PPend'"),
        (
            "window statistics of ppend",
            "DELETE FROM window_stat WHERE quantity IN "
            "('ppend', 'na_s_share', 'na_s_peak', 'na_o_peak', 'ss_long_share')",
        ),
        (
            "coordination rows with na_s_share",
            "UPDATE coordination SET "
            + ", ".join(f"{c} = NULL" for c in NEW_COLUMNS)
            + f" WHERE frame_id IN {in_new}",
        ),
    ]
    for what, remove in steps:
        counts = table_counts(engine)
        res = _downgrade(gb)
        assert res.exit_code == 2, res.output
        assert what in res.output and "revision 0003 cannot hold them" in res.output
        assert len(res.output.strip().splitlines()) == 1
        # Nothing changed: the revision, the rows, the v4 views.
        assert current_revision(engine) == "0004"
        assert table_counts(engine) == counts
        with engine.connect() as c:
            assert "ppend" in list(c.execute(sa.text("SELECT * FROM run_detail")).keys())
        with engine.begin() as c:
            c.execute(sa.text(remove), {"r": new})
    gb.ok("db", "downgrade", "0003", "--yes")
    assert current_revision(engine) == "0003"
    coordination = {c["name"] for c in sa.inspect(engine).get_columns("coordination")}
    assert not coordination & set(NEW_COLUMNS)
    after = _views(engine)
    # The old runs are what revision 0003 showed, and no view has a v4 column.
    for name, rows in before.items():
        keys = list(rows[0]) if rows else None
        for row in after[name]:
            assert keys is None or list(row) == keys, name
    assert [r for r in after["run_detail"] if r["run_id"] in old] == before["run_detail"]
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as c:
        c.execute(
            sa.text("INSERT INTO speciation (frame_id, unit, count) VALUES (:f, 'PPend', 0)"),
            {"f": before["run_final_frame"][0]["frame_id"]},
        )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO window_stat (run_id, quantity, mean, n_frames, n_blocks, "
                "block_frames, step_from, step_to) VALUES (:r, 'ppend', 0, 1, 0, 1, 0, 0)"
            ),
            {"r": old[0]},
        )
    gb.ok("db", "upgrade")
    assert current_revision(engine) == "0004"
