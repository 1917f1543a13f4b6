"""Analysis versions and ``glassbench reanalyze``: a wider Na-S cutoff raises the Na
coordination of real LAMMPS frames by what a brute-force count gives, the default analysis
stays byte-identical, the window is recomputed under the new cutoffs, and bad input changes
nothing."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from glassbench.schema.models import DEFAULT_ANALYSIS_ID
from tests.conftest import Cli, table_counts
from tests.ingest.conftest import key_args, lammps_file
from tests.stored.conftest import ingest_lammps_run, scalar

NAME = "na-s-4.2"
WIDE = 4.2
DEFAULT_NA_S = 3.6
WINDOW_FROM = 3  # the window: frames from the 4th on (and the final one), blocks of 2


def na_s_counts(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, r: float) -> Any:
    """S neighbours within ``r`` of each Na, by brute force over the 27 nearest images."""
    na, s = positions[numbers == 11], positions[numbers == 16]
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=float) @ cell
    images = (s[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    d = np.linalg.norm(na[:, None, :] - images[None, :, :], axis=-1)
    return (d <= r).sum(axis=1)


def stored_frames(engine: Any, run_id: int) -> list[Any]:
    from glassbench.stored.frames import frame_index, read_frames

    with engine.connect() as conn:
        ids = [fid for fid, _, _ in frame_index(conn, run_id)]
        return list(read_frames(conn, ids))


def rows(engine: Any, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(sql), params)]


def default_rows(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the default analysis, and the default views, for byte comparisons."""
    a = DEFAULT_ANALYSIS_ID
    return {
        "speciation": rows(
            engine, "SELECT * FROM speciation WHERE analysis_id = :a ORDER BY frame_id, unit", a=a
        ),
        "coordination": rows(
            engine, "SELECT * FROM coordination WHERE analysis_id = :a ORDER BY frame_id", a=a
        ),
        "window_stat": rows(
            engine, "SELECT * FROM window_stat WHERE analysis_id = :a ORDER BY id", a=a
        ),
        "run_summary": rows(engine, "SELECT * FROM run_summary ORDER BY mlip, seed"),
        "run_detail": rows(engine, "SELECT * FROM run_detail ORDER BY run_id"),
    }


def add_default_window(engine: Any, run_id: int) -> int:
    """Window statistics under the default analysis, as a runner run has them; its first step."""
    from glassbench.ingest.window import store_window_stats
    from glassbench.service import unit_of_work

    steps = [f.step for f in stored_frames(engine, run_id)]
    with unit_of_work(engine) as s:
        store_window_stats(
            s, run_id, stages=("other",), block_frames=2, step_from=steps[WINDOW_FROM]
        )
    return steps[WINDOW_FROM]


@pytest.fixture
def run(gb: Cli, engine: Any) -> int:
    """The LAMMPS fixture run (x = 0, 52 atoms, 8 frames) of an MLIP that needs no model
    file, with default-analysis window statistics."""
    gb.ok("mlip", "add", "A", "--arch", "chgnet")
    run_id = ingest_lammps_run(gb, "A")
    add_default_window(engine, run_id)
    return run_id


def test_wider_na_s_cutoff_raises_na_cn_by_the_brute_force_count(
    gb: Cli, engine: Any, run: int
) -> None:
    frames = stored_frames(engine, run)
    assert len(frames) == 8
    narrow = [na_s_counts(f.numbers, f.positions, f.cell, DEFAULT_NA_S) for f in frames]
    wide = [na_s_counts(f.numbers, f.positions, f.cell, WIDE) for f in frames]
    increase = [float(w.mean() - n.mean()) for n, w in zip(narrow, wide, strict=True)]
    assert min(increase) > 0.5  # the cutoff matters on these frames: the test can fail
    before = default_rows(engine)

    out = gb.ok("analysis", "add", NAME, "--cutoff", f"Na-S={WIDE}").output
    assert f"registered analysis '{NAME}'" in out and f"Na-S={WIDE:g}" in out
    out = gb.ok("reanalyze", "--analysis", NAME).output
    assert "reanalysed 8 frames, window statistics" in out

    aid = scalar(engine, "SELECT id FROM analysis WHERE name = :n", n=NAME)
    assert aid != DEFAULT_ANALYSIS_ID
    by_frame = {
        int(fid): (cn, cn_s, cutoffs)
        for fid, cn, cn_s, cutoffs in rows(
            engine,
            "SELECT frame_id, na_cn_mean, na_cn_s_mean, cutoffs_json FROM coordination "
            "WHERE analysis_id = :a",
            a=aid,
        )
    }
    default_cn = {
        int(fid): cn
        for fid, cn in rows(
            engine, "SELECT frame_id, na_cn_mean FROM coordination WHERE analysis_id = 1"
        )
    }
    assert set(by_frame) == {f.frame_id for f in frames}
    for f, n, w, up in zip(frames, narrow, wide, increase, strict=True):
        cn, cn_s, cutoffs = by_frame[f.frame_id]
        assert cn == pytest.approx(w.mean()) and cn_s == pytest.approx(w.mean())
        assert default_cn[f.frame_id] == pytest.approx(n.mean())
        assert cn - default_cn[f.frame_id] == pytest.approx(up)
        assert f'"Na-S":{WIDE}' in cutoffs
    # every speciation row of the new analysis is there (a unit set per frame)
    n_units = scalar(engine, "SELECT COUNT(*) FROM speciation WHERE analysis_id = :a", a=aid)
    assert n_units == scalar(engine, "SELECT COUNT(*) FROM speciation WHERE analysis_id = 1")

    # the window, recomputed under the new analysis: same frames, same blocks
    window = [w for f, w in zip(frames, wide, strict=True) if f.step >= frames[WINDOW_FROM].step]
    new_ws = rows(
        engine,
        "SELECT mean, n_frames, block_frames, step_from, step_to FROM window_stat "
        "WHERE run_id = :r AND analysis_id = :a AND quantity = 'na_cn'",
        r=run,
        a=aid,
    )
    old_ws = rows(
        engine,
        "SELECT n_frames, block_frames, step_from, step_to FROM window_stat "
        "WHERE run_id = :r AND analysis_id = 1 AND quantity = 'na_cn'",
        r=run,
    )
    assert new_ws[0][0] == pytest.approx(np.mean([w.mean() for w in window]))
    assert new_ws[0][1:] == old_ws[0] == (len(window), 2, frames[WINDOW_FROM].step, frames[-1].step)

    # the default analysis and the default views are untouched, to the byte
    assert default_rows(engine) == before
    by_analysis = rows(
        engine,
        "SELECT analysis, na_cn FROM run_summary_by_analysis WHERE run_id = :r ORDER BY analysis",
        r=run,
    )
    assert [a for a, _ in by_analysis] == ["default", NAME]
    assert by_analysis[1][1] == pytest.approx(new_ws[0][0])

    # one command answers "how does Na CN move with the Na-S cutoff, for every MLIP?"
    out = gb.ok("analysis", "compare", "na_cn").output
    assert "default [Na-S=3.6]" in out and f"{NAME} [Na-S=4.2]" in out
    assert f"{by_analysis[1][1]:.4g} (n=1)" in out and f"{by_analysis[0][1]:.4g} (n=1)" in out
    listed = gb.ok("analysis", "list", "--format", "csv").output
    assert f"{NAME},P-S=2.6 P-O=2 P-P=2.5 S-S=2.5 Na-S=4.2 Na-O=3.1,8,1," in listed


def test_second_call_skips_force_redoes_and_an_unfinished_run_is_redone(
    gb: Cli, engine: Any, run: int
) -> None:
    other = ingest_lammps_run(gb, "A", seed=2)
    gb.ok("analysis", "add", NAME, "--cutoff", f"Na-S={WIDE}")
    assert "unchanged" in gb.ok("analysis", "add", NAME, "--cutoff", f"Na-S={WIDE}").output
    gb.ok("reanalyze", "--analysis", NAME)
    counts = table_counts(engine)
    snapshot = rows(engine, "SELECT * FROM coordination ORDER BY frame_id, analysis_id")

    out = gb.ok("reanalyze", "--analysis", NAME).output
    assert out.count(", skipped") == 2 and "nothing reanalysed" in out
    out = gb.ok("reanalyze", "--analysis", NAME, "--force", "--run", str(run)).output
    assert "reanalysed 8 frames" in out
    assert table_counts(engine) == counts
    assert rows(engine, "SELECT * FROM coordination ORDER BY frame_id, analysis_id") == snapshot

    # A run whose analysis is incomplete (new frames, or an interrupted write) is redone;
    # the finished one is skipped.
    aid = scalar(engine, "SELECT id FROM analysis WHERE name = :n", n=NAME)
    with engine.begin() as c:
        c.execute(
            sa.text(
                "DELETE FROM coordination WHERE analysis_id = :a AND frame_id = "
                "(SELECT MIN(id) FROM frame WHERE run_id = :r)"
            ),
            {"a": aid, "r": other},
        )
    out = gb.ok("reanalyze", "--analysis", NAME, "--dry-run").output
    assert f"run {other} " in out and "would reanalyse 1 run(s), 8 frames" in out
    out = gb.ok("reanalyze", "--analysis", NAME).output
    assert "reanalysed 1 run(s), 8 frames" in out and "skipped 1" in out
    assert table_counts(engine) == counts


def test_bad_input_changes_nothing(gb: Cli, engine: Any, run: int) -> None:
    gb.ok("analysis", "add", NAME, "--cutoff", f"Na-S={WIDE}")
    # a run without frames (a LAMMPS log alone), after one with frames
    gb.ok("ingest", "lammps", "--log", str(lammps_file("log.metal.lammps")), *key_args("A", seed=9))
    before = table_counts(engine)
    cases = [
        (["reanalyze", "--analysis", "nope"], "no analysis named 'nope'"),
        (["reanalyze", "--analysis", "default"], "name another cutoff set"),
        (["reanalyze", "--analysis", NAME], "has no stored frames"),
        (["analysis", "add", "x", "--cutoff", "Na-S=abc"], "--cutoff: bad cutoff 'Na-S=abc'"),
        (["analysis", "add", "x", "--cutoff", "Q-S=3"], "unknown pair"),
        (["analysis", "add", "x", "--cutoff", "Na-S=-1"], "positive"),
        (["analysis", "add", "x", "--cutoff", "Na-S=1000"], "above the maximum of 8 Å"),
        (["analysis", "add", NAME, "--cutoff", "Na-S=4.3"], "Na-S 4.2 -> 4.3"),
        (["analysis", "add", "bad name", "--cutoff", "Na-S=4"], "bad analysis name"),
        (["analysis", "add", "x" * 65], "bad analysis name"),
        (["analysis", "add", "default", "--cutoff", "Na-S=4"], "'default' is the analysis"),
        (["analysis", "compare", "nope"], "unknown quantity 'nope'"),
    ]
    for args, message in cases:
        res = gb(*args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert table_counts(engine) == before, args

    res = gb.ok("reanalyze", "--analysis", NAME, "--x", "3")
    assert res.output.strip() == "no runs match (x=3 status=done)"
    res = gb.ok("analysis", "compare", "--seed", "42")
    assert res.output.strip() == "no runs match (seed=42 status=done)"
    assert table_counts(engine) == before
