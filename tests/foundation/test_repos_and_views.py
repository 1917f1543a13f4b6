"""Repositories (idempotent upserts, unit of work) and the SQL views' arithmetic."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from glassbench.schema import unpack_array
from glassbench.service import repos, runs, unit_of_work
from tests.conftest import table_counts


def _mlip(session: Any, name: str = "m1") -> int:
    return repos.add_mlip(session, {"name": name, "arch": "chgnet", "model_path": "0.3.0"})


def _run(session: Any, mlip: str, x: float, seed: int, rate: float = 5.0) -> int:
    mid = repos.get_mlip(session, mlip).id
    assert mid is not None
    return runs.ensure(
        session,
        mlip_id=mid,
        composition_id=repos.composition_id(session, x),
        quench_rate_k_ps=rate,
        seed=seed,
        protocol_id=repos.protocol_id(session, {"t_melt_k": 1800.0, "melt_ps": 1.0}),
    )


def test_upserts_are_idempotent(engine: Any) -> None:
    with unit_of_work(engine) as s:
        _mlip(s)
        a = _run(s, "m1", 1.0, 1)
        b = _run(s, "m1", 1.0, 1)
        c = _run(s, "m1", 1.0, 2)
    assert a == b != c
    with unit_of_work(engine) as s:
        assert _run(s, "m1", 1.0, 1) == a
        assert repos.protocol_id(s, {"melt_ps": 1.0, "t_melt_k": 1800.0}) == repos.protocol_id(
            s, {"t_melt_k": 1800.0, "melt_ps": 1.0}
        )
    counts = table_counts(engine)
    assert counts["run"] == 2 and counts["composition"] == 1 and counts["protocol"] == 1


def test_unit_of_work_rolls_back_everything(engine: Any) -> None:
    before = table_counts(engine)
    with pytest.raises(RuntimeError), unit_of_work(engine) as s:
        _mlip(s)
        rid = _run(s, "m1", 0.0, 1)
        repos.insert_thermo(s, rid, [{"step": i, "time_ps": i * 0.001} for i in range(100)])
        raise RuntimeError("simulated failure in the middle of an ingest")
    assert table_counts(engine) == before


def test_thermo_bulk_insert_skips_existing_steps(engine: Any) -> None:
    with unit_of_work(engine) as s:
        _mlip(s)
        rid = _run(s, "m1", 0.0, 1)
        repos.insert_thermo(s, rid, [{"step": i, "temperature_k": 300.0 + i} for i in range(50)])
    with unit_of_work(engine) as s:
        repos.insert_thermo(s, rid, [{"step": i, "temperature_k": -1.0} for i in range(40, 60)])
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT step, temperature_k FROM thermo ORDER BY step")).fetchall()
    assert [r[0] for r in rows] == list(range(60))
    assert rows[45][1] == 345.0  # the first write wins; a resumed writer does not duplicate


def test_thermo_copy_path(engine: Any) -> None:
    with unit_of_work(engine) as s:
        _mlip(s)
        rid = _run(s, "m1", 0.0, 1)
        n = repos.insert_thermo(
            s, rid, [{"step": i, "pressure_gpa": float("nan")} for i in range(1000)], copy=True
        )
    assert n == 1000
    with engine.connect() as c:
        assert (
            c.execute(sa.text("SELECT COUNT(*) FROM thermo WHERE pressure_gpa IS NULL")).scalar()
            == 1000
        )


def test_frame_arrays_round_trip(engine: Any) -> None:
    rng = np.random.default_rng(0)
    pos = rng.random((97, 3)) * 10
    nums = rng.integers(8, 17, size=97)
    with unit_of_work(engine) as s:
        _mlip(s)
        rid = _run(s, "m1", 0.0, 1)
        fid = repos.add_frame(
            s, rid, stage="final", step=10, numbers=nums, positions=pos, cell=np.eye(3) * 10
        )
        assert (
            repos.add_frame(
                s, rid, stage="final", step=10, numbers=nums, positions=pos, cell=np.eye(3) * 10
            )
            == fid
        )
    with engine.connect() as c:
        blob_pos, blob_num = c.execute(sa.text("SELECT positions, numbers FROM frame")).one()
    np.testing.assert_array_equal(unpack_array(bytes(blob_pos)), pos)
    np.testing.assert_array_equal(unpack_array(bytes(blob_num)), nums)
    assert table_counts(engine)["frame"] == 1


def test_constraints_are_enforced(engine: Any) -> None:
    with pytest.raises(sa.exc.IntegrityError), unit_of_work(engine) as s:
        s.execute(
            sa.text(
                "INSERT INTO mlip (name, arch, dispersion, created_at) VALUES ('a', 'nope', 'none', '2026-01-01')"
            )
        )
    with pytest.raises(sa.exc.IntegrityError), unit_of_work(engine) as s:
        _mlip(s)
        rid = _run(s, "m1", 0.0, 1)
        s.execute(sa.text(f"UPDATE run SET status = 'exploded' WHERE id = {rid}"))
    with pytest.raises(sa.exc.IntegrityError), unit_of_work(engine) as s:
        s.execute(sa.text("INSERT INTO thermo (run_id, step) VALUES (424242, 1)"))  # no such run


def test_concurrent_upserts_create_one_row(engine: Any) -> None:
    """Many writers racing on one natural key end with one row and one id."""
    with unit_of_work(engine) as s:
        _mlip(s)
    ids: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with unit_of_work(engine) as s:
                ids.append(_run(s, "m1", 2.0, 7))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1
    assert table_counts(engine)["run"] == 1


def _speciation(s: Any, fid: int, counts: dict[str, int]) -> None:
    s.execute(
        sa.text("INSERT INTO speciation (frame_id, unit, count) VALUES (:f, :u, :c)"),
        [{"f": fid, "u": u, "c": c} for u, c in counts.items()],
    )


def test_views_match_an_independent_computation(engine: Any) -> None:
    """run_summary fractions and mlip_mae against pandas on the same synthetic rows."""
    rng = np.random.default_rng(1)
    records = []
    with unit_of_work(engine) as s:
        for name in ("mA", "mB"):
            _mlip(s, name)
        for name in ("mA", "mB"):
            for x in (0.0, 1.0, 2.0):
                for seed in (1, 2):
                    rid = _run(s, name, x, seed)
                    dens = float(rng.normal(2.2, 0.05))
                    repos.set_property(s, rid, "density_g_cm3", dens, stderr=0.01)
                    # An earlier frame that must not be used, and the final one.
                    cell = np.eye(3) * 10
                    f0 = repos.add_frame(
                        s,
                        rid,
                        stage="quench",
                        step=5,
                        numbers=[15],
                        positions=[[0, 0, 0]],
                        cell=cell,
                    )
                    f1 = repos.add_frame(
                        s,
                        rid,
                        stage="final",
                        step=10,
                        numbers=[15],
                        positions=[[0, 0, 0]],
                        cell=cell,
                    )
                    p0, p1, p2, p1p = rng.integers(0, 10, size=4)
                    bs, nbs = rng.integers(1, 20, size=2)
                    _speciation(s, f0, {"P0": 99, "P1": 0, "BS": 1, "NBS": 0})
                    _speciation(
                        s,
                        f1,
                        {
                            "P0": int(p0),
                            "P1": int(p1),
                            "P2": int(p2),
                            "P1P": int(p1p),
                            "P3c": 1,
                            "BS": int(bs),
                            "NBS": int(nbs),
                            "free_S": 1,
                            "S_in_chains": 4,
                        },
                    )
                    s.execute(sa.text(f"UPDATE run SET status = 'done' WHERE id = {rid}"))
                    n_p = p0 + p1 + p2 + p1p + 1
                    records.append(
                        {
                            "mlip": name,
                            "x": x,
                            "seed": seed,
                            "density_g_cm3": dens,
                            "p0": p0 / n_p,
                            "p1": p1 / n_p,
                            "p1p": p1p / n_p,
                            "bs": bs / (bs + nbs + 1),
                        }
                    )
        # SYNTHETIC experimental values (tests only).
        for x, d, p0 in ((0.0, 2.15, 0.2), (1.0, 2.25, 0.3)):
            cid = repos.composition_id(s, x)
            for prop, val in (("density_g_cm3", d), ("p0", p0)):
                repos.set_experiment(
                    s,
                    {
                        "subject": repos.experiment_subject(x=x, crystal=None),
                        "composition_id": cid,
                        "crystal": None,
                        "property": prop,
                        "value": val,
                        "source": "SYNTHETIC",
                    },
                )
    df = pd.DataFrame(records)
    summary = pd.read_sql("SELECT * FROM run_summary", engine)
    merged = df.merge(summary, on=["mlip", "x", "seed"], suffixes=("", "_view"))
    assert len(merged) == 12
    for col in ("density_g_cm3", "p0", "p1", "p1p", "bs"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_view"], rtol=1e-12)

    exp = pd.DataFrame(
        {
            "x": [0.0, 1.0, 0.0, 1.0],
            "property": ["density_g_cm3"] * 2 + ["p0"] * 2,
            "exp": [2.15, 2.25, 0.2, 0.3],
        }
    )
    long = df.melt(
        id_vars=["mlip", "x", "seed"], value_vars=["density_g_cm3", "p0"], var_name="property"
    )
    seed_mean = long.groupby(["mlip", "x", "property"], as_index=False)["value"].mean()
    err = seed_mean.merge(exp, on=["x", "property"])
    err["e"] = err["value"] - err["exp"]
    expected = (
        err.groupby(["mlip", "property"])
        .agg(n=("e", "size"), mae=("e", lambda v: v.abs().mean()), mean_error=("e", "mean"))
        .reset_index()
    )
    view = pd.read_sql("SELECT * FROM mlip_mae ORDER BY mlip, property", engine)
    assert len(view) == 4
    got = view.merge(expected, on=["mlip", "property"], suffixes=("", "_pd"))
    assert (got["n"] == got["n_pd"]).all() and (got["n"] == 2).all()
    np.testing.assert_allclose(got["mae"], got["mae_pd"], rtol=1e-12)
    np.testing.assert_allclose(got["mean_error"], got["mean_error_pd"], rtol=1e-12)


def test_mae_by_rate_never_pools_quench_rates(engine: Any) -> None:
    """mlip_mae_by_rate: one row per MLIP, protocol, quench rate and property, equal to pandas;
    mlip_mae pools the rates (its first-release contract) and the two agree on the pooled
    numbers."""
    rng = np.random.default_rng(7)
    records = []
    with unit_of_work(engine) as s:
        _mlip(s, "mA")
        for rate in (0.5, 5.0):
            for x in (0.0, 1.0):
                for seed in (1, 2, 3):
                    rid = _run(s, "mA", x, seed, rate=rate)
                    dens = float(rng.normal(2.0 + 0.1 * rate, 0.05))
                    repos.set_property(s, rid, "density_g_cm3", dens)
                    s.execute(sa.text(f"UPDATE run SET status = 'done' WHERE id = {rid}"))
                    records.append({"rate": rate, "x": x, "value": dens})
        for x, d in ((0.0, 2.1), (1.0, 2.3)):  # SYNTHETIC reference values (tests only)
            repos.set_experiment(
                s,
                {
                    "subject": repos.experiment_subject(x=x, crystal=None),
                    "composition_id": repos.composition_id(s, x),
                    "crystal": None,
                    "property": "density_g_cm3",
                    "value": d,
                    "source": "SYNTHETIC",
                },
            )
    df = pd.DataFrame(records)
    point = df.groupby(["rate", "x"], as_index=False)["value"].mean()
    point["e"] = point["value"] - point["x"].map({0.0: 2.1, 1.0: 2.3})
    view = pd.read_sql(
        "SELECT * FROM mlip_mae_by_rate ORDER BY quench_rate_k_ps", engine
    ).reset_index(drop=True)
    assert list(view["quench_rate_k_ps"]) == [0.5, 5.0]
    assert (view["n"] == 2).all() and (view["protocol"].str.len() > 0).all()
    for i, rate in enumerate((0.5, 5.0)):
        e = point.loc[point["rate"] == rate, "e"]
        assert view.loc[i, "mae"] == pytest.approx(e.abs().mean(), rel=1e-12)
        assert view.loc[i, "mean_error"] == pytest.approx(e.mean(), rel=1e-12)
    pooled = pd.read_sql("SELECT * FROM mlip_mae", engine).iloc[0]
    assert pooled["n"] == 4
    assert pooled["mae"] == pytest.approx(point["e"].abs().mean(), rel=1e-12)
