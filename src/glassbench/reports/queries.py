"""Database -> pandas: everything a report reads, and the fingerprint of it.

Only this module talks to the database (and :func:`glassbench.reports.pictures.load_examples`,
which it calls inside the same read transaction); :mod:`glassbench.reports.metrics` works on the
frames it returns. Columns a database's revision lacks (a quantity added by a later migration)
are read as missing, never as an error: the report says what it cannot show. Unit fractions come from the ``frame_fractions`` view (the one definition of a fraction),
but only for the frames a report needs: the view is a GROUP BY over every speciation row, and
filtering it by a literal list of frame ids lets PostgreSQL push the filter into the grouping
(on PostgreSQL 300 final frames out of 15,000 take ~10 ms instead of ~250 ms through
``run_detail``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from glassbench.reports.keys import ANION_UNITS, COMPARABLE, EDGE_PP_UNITS, P_UNITS, Key
from glassbench.schema.models import COORDINATION_COLUMNS, RUN_PROPERTIES, RunStatus

# Bound parameters per IN list: well under SQLite's variable limit on every version.
_CHUNK = 900

# Unit fractions the reports read from the frame_fractions view, and per-frame coordination
# and S-S chain quantities from the coordination table (column names as in run_detail).
FRACTION_KEYS: tuple[str, ...] = tuple(
    dict.fromkeys(str(k) for k in (*P_UNITS, Key.p1_incl_p1p, *EDGE_PP_UNITS, *ANION_UNITS))
)
COORDINATION_KEYS: tuple[str, ...] = tuple(
    str(k)
    for k in (
        Key.na_cn, Key.na_cn_s, Key.na_cn_o, Key.na_s_share, Key.na_s_peak, Key.na_o_peak,
        Key.ss_fraction, Key.ss_mean_length, Key.ss_long_share,
    )
)  # fmt: skip

RUN_COLUMNS: tuple[str, ...] = (
    Key.run_id, Key.mlip, "family", Key.x, "composition_id", Key.quench_rate, Key.seed,
    Key.protocol_id, Key.dispersion, "status", "n_atoms", "final_frame_id",
    *RUN_PROPERTIES, *(f"{p}_stderr" for p in RUN_PROPERTIES),
    *FRACTION_KEYS, *COORDINATION_KEYS,
)  # fmt: skip

EXPERIMENT_COLUMNS: tuple[str, ...] = (
    "composition_id", "family", Key.x, Key.prop, "value", "uncertainty", "source",
)  # fmt: skip

PROTOCOL_COLUMNS: tuple[str, ...] = (Key.protocol_id, "protocol", "kind", Key.dispersion)

TRACE_COLUMNS: tuple[str, ...] = (
    Key.run_id, Key.mlip, Key.x, Key.quench_rate, Key.seed, Key.stage, Key.step,
    Key.temperature, *FRACTION_KEYS, *COORDINATION_KEYS,
)  # fmt: skip


@dataclass(frozen=True)
class ReportData:
    """The query results a report is built from (its fingerprint covers exactly these)."""

    mlips: pd.DataFrame
    """Every registered MLIP: ``mlip``, ``arch`` (also those without runs)."""
    runs: pd.DataFrame
    """One row per run (any status): keys, properties, window-mean (else final-frame) fractions."""
    experiment: pd.DataFrame
    """Glass reference values, one row per (composition, property, source)."""
    crystal_experiment: pd.DataFrame
    """Crystal reference values: crystal, property, value, uncertainty, source."""
    crystals: pd.DataFrame
    """Relaxed crystal volumes per (MLIP, crystal) as recorded by the runner."""
    trace_candidates: pd.DataFrame
    """Done runs with analysed, temperature-labelled frames: ``run_id`` and ``n_frames``."""
    traces: pd.DataFrame
    """Per-frame fractions and coordination of the traced runs: run keys, ``stage``, ``step``,
    ``temperature_k``."""
    protocols: pd.DataFrame
    """Every protocol: ``protocol_id``, ``protocol`` (its name, else kind and hash), ``kind`` and
    the ``dispersion`` its record sets (empty: as the MLIP is registered)."""
    examples: pd.DataFrame
    """One real occurrence per unit kind found (:func:`glassbench.reports.pictures.load_examples`),
    one row per atom."""

    @property
    def is_empty(self) -> bool:
        return bool(self.runs.empty and self.experiment.empty and self.crystals.empty)


def _frame(conn: Connection, sql: str, params: dict[str, object] | None = None) -> pd.DataFrame:
    result = conn.execute(sa.text(sql), params or {})
    return _to_frame(result)


def _to_frame(result: sa.CursorResult[Any]) -> pd.DataFrame:
    # Plain tuples: pandas probes each SQLAlchemy Row for attributes, which costs more than
    # the query itself on a few thousand rows.
    return pd.DataFrame([tuple(r) for r in result.fetchall()], columns=list(result.keys()))


def _numeric(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    # PostgreSQL returns NULL-only columns as object dtype; make them float NaN so the metrics
    # see one dtype whatever the engine.
    for c in columns:
        if c in df.columns and df[c].dtype != np.float64:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def _by_ids(
    conn: Connection, sql: str, ids: Sequence[int], columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Run ``sql`` (with an expanding ``:ids`` parameter) over ``ids`` in chunks."""
    stmt = sa.text(sql).bindparams(sa.bindparam("ids", expanding=True))
    parts: list[pd.DataFrame] = []
    keys: list[str] = list(columns or [])
    for start in range(0, len(ids), _CHUNK):
        result = conn.execute(stmt, {"ids": [int(i) for i in ids[start : start + _CHUNK]]})
        keys = list(result.keys())
        parts.append(_to_frame(result))
    if not parts:
        return pd.DataFrame(columns=keys)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _columns(conn: Connection, relation: str) -> set[str]:
    """The columns a table or view has at the database's revision; no row is read.

    The report reads what the revision offers (a database not yet upgraded to the revision
    that added a quantity shows it as missing) instead of failing on an unknown column.
    """
    return set(conn.execute(sa.text(f"SELECT * FROM {relation} WHERE 1 = 0")).keys())


@dataclass(frozen=True)
class _Available:
    fractions: tuple[str, ...]
    """``frame_fractions`` columns among :data:`FRACTION_KEYS`."""
    coordination: dict[str, str]
    """Key of :data:`COORDINATION_KEYS` -> ``coordination`` column."""


def _available(conn: Connection) -> _Available:
    ff = _columns(conn, "frame_fractions")
    co = _columns(conn, "coordination")
    return _Available(
        fractions=tuple(k for k in FRACTION_KEYS if k in ff),
        coordination={
            k: COORDINATION_COLUMNS[k]
            for k in COORDINATION_KEYS
            if k in COORDINATION_COLUMNS and COORDINATION_COLUMNS[k] in co
        },
    )


def _runs_sql() -> str:
    props = ",\n".join(
        f"MAX(CASE WHEN name = '{n}' THEN value END) AS {n}, "
        f"MAX(CASE WHEN name = '{n}' THEN stderr END) AS {n}_stderr"
        for n in RUN_PROPERTIES
    )
    names = ", ".join(f"p.{n}, p.{n}_stderr" for n in RUN_PROPERTIES)
    return f"""
        SELECT r.id AS run_id, m.name AS mlip, c.family AS family, c.x AS x,
               r.composition_id AS composition_id, r.quench_rate_k_ps AS quench_rate_k_ps,
               r.seed AS seed, r.protocol_id AS protocol_id, m.dispersion AS mlip_dispersion,
               r.status AS status, r.n_atoms AS n_atoms, rf.frame_id AS final_frame_id, {names}
        FROM run r
        JOIN mlip m ON m.id = r.mlip_id
        JOIN composition c ON c.id = r.composition_id
        LEFT JOIN run_final_frame rf ON rf.run_id = r.id
        LEFT JOIN (SELECT run_id, {props} FROM property GROUP BY run_id) p ON p.run_id = r.id
        ORDER BY r.id
        """


# The reports show the default analysis (frame_fractions already is; as run_detail does).
# Module constants so that a test writing at a revision before analyses can blank them.
DEFAULT_COORDINATION = "AND co.analysis_id = 1"
DEFAULT_WINDOW = "AND analysis_id = 1"


def _frame_values(
    conn: Connection, frame_ids: Sequence[int], avail: _Available, *, id_name: str
) -> pd.DataFrame:
    """Fractions and coordination quantities of the given frames, one row per frame."""
    cols = [f"ff.{c}" for c in avail.fractions]
    cols += [f"co.{col} AS {k}" for k, col in avail.coordination.items()]
    # Speciation and coordination are written together (repos.add_analysis), so joining
    # coordination onto the fractions loses nothing.
    return _by_ids(
        conn,
        f"""
        SELECT ff.frame_id AS {id_name}{"".join(", " + c for c in cols)}
        FROM frame_fractions ff LEFT JOIN coordination co
          ON co.frame_id = ff.frame_id {DEFAULT_COORDINATION}
        WHERE ff.frame_id IN :ids
        """,
        frame_ids,
        [id_name, *avail.fractions, *avail.coordination],
    )


def _with_window_means(conn: Connection, runs: pd.DataFrame) -> pd.DataFrame:
    """Window means replace final-frame values for runs that have a window (as ``run_detail``
    does: a run's values all come from one estimator)."""
    if runs.empty:
        return runs
    ws = _by_ids(
        conn,
        f"SELECT run_id, quantity, mean FROM window_stat WHERE run_id IN :ids {DEFAULT_WINDOW}",
        [int(r) for r in runs[Key.run_id]],
        ["run_id", "quantity", "mean"],
    )
    if ws.empty:
        return runs
    wide = ws.pivot_table(index="run_id", columns="quantity", values="mean", aggfunc="first")
    out = runs.set_index(Key.run_id, drop=False)
    windowed = out.index.isin(wide.index)
    for col in (*FRACTION_KEYS, *COORDINATION_KEYS):
        if col in out.columns:
            vals = wide[col] if col in wide.columns else pd.Series(dtype=float)
            out.loc[windowed, col] = out.index[windowed].map(vals).astype(float)
    return out.reset_index(drop=True)


def load_protocols(conn: Connection) -> pd.DataFrame:
    """Every protocol with its label and the dispersion its record sets (None: the MLIP's)."""
    rows = conn.execute(sa.text("SELECT * FROM protocol ORDER BY id")).mappings().all()
    out = []
    for r in rows:
        try:
            params = json.loads(r["params_json"] or "{}")
        except ValueError:
            params = {}
        disp = params.get("dispersion") if isinstance(params, dict) else None
        # As the run_detail view labels a protocol (schema/views.py PROTOCOL_LABEL); the name
        # column exists from revision 0002 on.
        name = r.get("name")
        label = name if name else f"{r['kind']} {str(r['content_hash'])[:8]}"
        out.append((int(r["id"]), label, r["kind"], str(disp) if disp is not None else None))
    return pd.DataFrame(out, columns=list(PROTOCOL_COLUMNS))


def load_runs(
    conn: Connection,
    *,
    protocols: pd.DataFrame | None = None,
    quantities: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per run: the columns of ``run_detail`` that reports use (any status), and the
    run's ``dispersion``: its protocol's when the protocol sets one, else the MLIP's.

    ``quantities``: only these fractions and coordination quantities are read (the others are
    left out of the result); None reads them all. The view computes only the fractions asked
    for, which is most of what the MAE query costs.
    """
    avail = _available(conn)
    if quantities is not None:
        wanted = {str(q) for q in quantities}
        avail = _Available(
            fractions=tuple(c for c in avail.fractions if c in wanted),
            coordination={k: c for k, c in avail.coordination.items() if k in wanted},
        )
    columns = [
        c
        for c in RUN_COLUMNS
        if quantities is None or c not in (*FRACTION_KEYS, *COORDINATION_KEYS) or c in wanted
    ]
    runs = _frame(conn, _runs_sql())
    frame_ids = [int(f) for f in runs["final_frame_id"].dropna()]
    final = _frame_values(conn, frame_ids, avail, id_name="final_frame_id")
    runs = runs.merge(final, on="final_frame_id", how="left") if not final.empty else runs
    for c in columns:
        if c not in runs.columns:
            runs[c] = float("nan")
    runs = _with_window_means(conn, runs)
    if protocols is None:
        protocols = load_protocols(conn)
    by_protocol = protocols.set_index(Key.protocol_id)[Key.dispersion].dropna()
    if runs.empty:
        runs[Key.dispersion] = pd.Series(dtype=object)
    else:
        own = runs[Key.protocol_id].map(by_protocol)
        runs[Key.dispersion] = own.where(own.notna(), runs["mlip_dispersion"])
    runs = runs[columns]
    text = (Key.mlip, "family", "status", Key.run_id, Key.seed, Key.dispersion)
    runs = _numeric(runs, [c for c in columns if c not in text])
    return runs.sort_values(Key.run_id, kind="stable").reset_index(drop=True)


def load_experiment(conn: Connection) -> pd.DataFrame:
    df = _frame(
        conn,
        """
        SELECT e.composition_id AS composition_id, c.family AS family, c.x AS x,
               e.property AS property, e.value AS value, e.uncertainty AS uncertainty,
               e.source AS source
        FROM experiment e JOIN composition c ON c.id = e.composition_id
        WHERE e.composition_id IS NOT NULL
        ORDER BY c.family, c.x, e.property, e.source
        """,
    )
    return _numeric(df, ("x", "value", "uncertainty"))


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose queries all see one snapshot of the database.

    PostgreSQL's default READ COMMITTED gives every statement a new snapshot, so a run
    committed between two queries could appear in one table and not the other (and the
    fingerprint would describe data no query saw together); REPEATABLE READ prevents that.
    SQLite's transaction (begun by the engine's BEGIN hook) is already a snapshot.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        yield conn


def load_mae_inputs(engine: Engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and glass experiments: all the MAE table needs (one read transaction). The runs
    carry the quantities that can be compared with experiment (``keys.COMPARABLE``) only."""
    with _snapshot(engine) as conn:
        return load_runs(conn, quantities=[str(k) for k in COMPARABLE]), load_experiment(conn)


def _trace_candidates(conn: Connection) -> pd.DataFrame:
    # The thermo table is looked up only for frames without a nominal temperature (a join
    # scanned all of its millions of rows), and an analysed frame is found by its one
    # coordination row (written with its speciation rows, repos.add_analysis) instead of
    # among the twenty-odd speciation rows of every frame.
    return _frame(
        conn,
        """
        SELECT f.run_id AS run_id, COUNT(*) AS n_frames
        FROM frame f
        JOIN run r ON r.id = f.run_id
        WHERE r.status = :done AND f.stage <> 'strain'
          AND (
            f.temperature_k IS NOT NULL
            OR EXISTS (
              SELECT 1 FROM thermo t
              WHERE t.run_id = f.run_id AND t.step = f.step AND t.temperature_k IS NOT NULL
            )
          )
          AND EXISTS (SELECT 1 FROM coordination co WHERE co.frame_id = f.id)
        GROUP BY f.run_id
        ORDER BY f.run_id
        """,
        {"done": RunStatus.DONE.value},
    )


def _traces(conn: Connection, run_ids: Sequence[int]) -> pd.DataFrame:
    # Nominal temperature where the runner recorded one, else the thermo row of the same
    # step (file ingests know the instantaneous temperature only).
    frames = _by_ids(
        conn,
        """
        SELECT f.run_id AS run_id, f.id AS frame_id, f.stage AS stage, f.step AS step,
               COALESCE(f.temperature_k, t.temperature_k) AS temperature_k
        FROM frame f
        LEFT JOIN thermo t ON t.run_id = f.run_id AND t.step = f.step
        WHERE f.run_id IN :ids AND f.stage <> 'strain'
          AND COALESCE(f.temperature_k, t.temperature_k) IS NOT NULL
        ORDER BY f.run_id, f.step
        """,
        run_ids,
        ["run_id", "frame_id", "stage", "step", "temperature_k"],
    )
    values = _frame_values(
        conn, [int(i) for i in frames["frame_id"]], _available(conn), id_name="frame_id"
    )
    out = frames.merge(values, on="frame_id", how="inner").drop(columns="frame_id")
    out = _numeric(out, ("temperature_k", *FRACTION_KEYS, *COORDINATION_KEYS))
    return out.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)


def choose_trace_runs(
    candidates: pd.DataFrame, runs: pd.DataFrame, *, per_mlip: int = 1
) -> list[int]:
    """Default runs to trace: per MLIP, those with the most analysed frames.

    Ties go to the lowest x, quench rate, seed and run id, so the choice is stable.
    """
    if candidates.empty:
        return []
    keyed = candidates.merge(runs[[Key.run_id, Key.mlip, Key.x, Key.quench_rate, Key.seed]])
    keyed = keyed.assign(neg=-keyed["n_frames"]).sort_values(
        ["neg", Key.x, Key.quench_rate, Key.seed, Key.run_id]
    )
    chosen = keyed.groupby(Key.mlip, sort=True).head(per_mlip)
    return sorted(int(r) for r in chosen[Key.run_id])


def load_report_data(engine: Engine, *, trace_runs: Sequence[int] | None = None) -> ReportData:
    """Read everything a report needs in one transaction.

    ``trace_runs``: run ids whose frames are traced vs temperature; default one per MLIP
    (:func:`choose_trace_runs`). Unknown ids are ignored (the report lists what it traced).
    """
    from glassbench.reports.pictures import load_examples

    with _snapshot(engine) as conn:
        mlips = _frame(conn, "SELECT name AS mlip, arch FROM mlip ORDER BY name")
        protocols = load_protocols(conn)
        runs = load_runs(conn, protocols=protocols)
        experiment = load_experiment(conn)
        crystal_experiment = _numeric(
            _frame(
                conn,
                """
                SELECT crystal, property, value, uncertainty, source FROM experiment
                WHERE crystal IS NOT NULL ORDER BY crystal, property, source
                """,
            ),
            ("value", "uncertainty"),
        )
        crystals = _numeric(
            _frame(
                conn,
                """
                SELECT m.name AS mlip, cv.crystal AS crystal,
                       cv.volume_per_fu_a3 AS volume_per_fu_a3,
                       cv.exp_volume_per_fu_a3 AS exp_volume_per_fu_a3
                FROM crystal_volume cv JOIN mlip m ON m.id = cv.mlip_id
                ORDER BY m.name, cv.crystal
                """,
            ),
            ("volume_per_fu_a3", "exp_volume_per_fu_a3"),
        )
        candidates = _trace_candidates(conn)
        if trace_runs is None:
            chosen = choose_trace_runs(candidates, runs)
        else:
            known = set(candidates["run_id"].astype(int)) if not candidates.empty else set()
            chosen = sorted({int(r) for r in trace_runs} & known)
        traces = _traces(conn, chosen)
        examples = load_examples(conn, runs)
    if not traces.empty:
        traces = traces.merge(
            runs[[Key.run_id, Key.mlip, Key.x, Key.quench_rate, Key.seed]], on="run_id"
        )
    traces = traces.reindex(columns=list(TRACE_COLUMNS))
    return ReportData(
        mlips=mlips,
        runs=runs,
        experiment=experiment,
        crystal_experiment=crystal_experiment,
        crystals=crystals,
        trace_candidates=candidates,
        traces=traces,
        protocols=protocols,
        examples=examples,
    )


def fingerprint(data: ReportData, params: dict[str, object]) -> str:
    """sha256 of the query results and of the options that shape the report's content.

    Floats are written with ``repr`` precision, so any change of a stored value changes it.
    """
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for f in fields(data):
        df: pd.DataFrame = getattr(data, f.name)
        h.update(f"\n#{f.name}\n".encode())
        h.update(df.to_csv(index=False, lineterminator="\n", float_format=repr).encode())
    return h.hexdigest()
