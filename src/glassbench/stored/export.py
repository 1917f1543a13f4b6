"""Stored structures out to files: ``glassbench export frames`` and ``glassbench export run``.

What a user labels with DFT, fine-tunes on, or hands to a collaborator without the database.
Every frame carries its run key and provenance (``FRAME_INFO_KEYS``) in its extxyz ``info`` or
in the ``index.csv`` beside LAMMPS data files; docs/stored-data.md describes the files, and
:mod:`glassbench.stored.export_io` writes them (atomically: nothing is ever half-written).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from glassbench import __version__
from glassbench.csvsafe import csv_cell
from glassbench.errors import BadInput
from glassbench.progress import make_bar
from glassbench.schema.models import DEFAULT_ANALYSIS, FRAME_STAGES, SPECIATION_UNITS
from glassbench.service.selection import RunSelector, SelectedRun, select_runs
from glassbench.stored.analyses import get_analysis
from glassbench.stored.export_io import (
    FRAME_INFO_KEYS,
    LAMMPS_SPECORDER,
    MLIP_ENERGY_KEY,
    MLIP_FORCES_KEY,
    atomic_output,
    check_output,
    jsonable,
    run_provenance,
    stream_frames,
    write_extxyz,
    write_lammps_data,
    write_thermo_csv,
)
from glassbench.stored.frames import frame_index

__all__ = [
    "FORMATS", "FRAME_INFO_KEYS", "LAMMPS_SPECORDER", "MLIP_ENERGY_KEY", "MLIP_FORCES_KEY",
    "RUN_FILES", "FramesExport", "RunExport", "UnitFilter", "csv_cell", "export_frames",
    "export_run", "parse_where_unit", "resolve_run", "run_record",
]  # fmt: skip

FORMATS = ("extxyz", "lammps-data")
_OPS = {">": ">", ">=": ">=", "<": "<", "<=": "<=", "=": "=", "==": "=", "!=": "<>"}
_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|!=|==|=|>|<)\s*([+-]?\d+(?:\.\d*)?)\s*$")
_UNITS = {u.lower(): u for u in SPECIATION_UNITS}


@dataclass(frozen=True)
class UnitFilter:
    """``UNIT OP N`` on a frame's speciation count of ``unit`` (canonical name)."""

    unit: str
    op: str
    value: float

    def describe(self) -> str:
        return f"{self.unit}{self.op}{self.value:g}"


def parse_where_unit(expressions: Sequence[str]) -> tuple[UnitFilter, ...]:
    """The filters ``expressions`` (``P2ES>0``, ``NBO<=3``) name; bad ones are BadInput."""
    out = []
    for text in expressions:
        m = _EXPR.match(text)
        if m is None:
            raise BadInput(
                f"{text!r} is not UNIT OP N (OP one of > >= < <= = !=), e.g. P2ES>0",
                field="where_unit",
            )
        unit = _UNITS.get(m.group(1).lower())
        if unit is None:
            raise BadInput(
                f"unknown unit {m.group(1)!r} (one of: {', '.join(SPECIATION_UNITS)})",
                field="where_unit",
            )
        op = "=" if m.group(2) == "==" else m.group(2)
        out.append(UnitFilter(unit, op, float(m.group(3))))
    return tuple(out)


# ---------------------------------------------------------------- export frames


@dataclass(frozen=True)
class FramesExport:
    """What ``export_frames`` wrote (nothing when ``n_frames`` is 0)."""

    out: Path
    fmt: str
    criteria: str
    n_runs_matched: int
    n_frames: int
    runs: tuple[int, ...]
    files: tuple[Path, ...]
    runs_without_frames: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.n_runs_matched == 0:
            return f"no runs match ({self.criteria})"
        if self.n_frames == 0:
            return f"no frames match ({self.criteria}); nothing written"
        lines = [
            f"wrote {self.n_frames} frame{'s' if self.n_frames != 1 else ''} of "
            f"{len(self.runs)} run{'s' if len(self.runs) != 1 else ''} to {self.out} ({self.fmt}"
            + (f", {len(self.files)} files)" if self.fmt == "lammps-data" else ")")
        ]
        if self.runs_without_frames:
            lines.append("skipped (no stored frames): " + "; ".join(self.runs_without_frames))
        return "\n".join(lines)


_MATCH_SQL = """
SELECT s.frame_id FROM speciation s JOIN frame f ON f.id = s.frame_id
WHERE f.run_id = :run AND s.analysis_id = :analysis
GROUP BY s.frame_id
HAVING {having}
"""


def matching_frames(
    conn: Connection, run_id: int, filters: Sequence[UnitFilter], analysis_id: int
) -> set[int]:
    """Ids of the run's frames, analysed under ``analysis_id``, whose counts satisfy every
    filter (a unit without a row counts 0)."""
    params: dict[str, Any] = {"run": run_id, "analysis": analysis_id}
    having = []
    for i, f in enumerate(filters):
        having.append(
            f"COALESCE(SUM(CASE WHEN s.unit = :u{i} THEN s.count END), 0) {_OPS[f.op]} :n{i}"
        )
        params[f"u{i}"] = f.unit
        params[f"n{i}"] = int(f.value) if f.value.is_integer() else f.value
    stmt = sa.text(_MATCH_SQL.format(having=" AND ".join(having)))
    return {int(r[0]) for r in conn.execute(stmt, params)}


def _criteria(
    selector: RunSelector, stages: Sequence[str] | None, every: int,
    filters: Sequence[UnitFilter], analysis: str,
) -> str:  # fmt: skip
    parts = [selector.describe()]
    if stages:
        parts.append("stage=" + ",".join(stages))
    if every != 1:
        parts.append(f"every={every}")
    if filters:
        parts.append("where_unit=" + " AND ".join(f.describe() for f in filters))
        parts.append(f"analysis={analysis}")
    return " ".join(parts)


def export_frames(
    engine: Engine,
    selector: RunSelector | None,
    out: Path,
    *,
    stages: Sequence[str] | None = None,
    every: int = 1,
    fmt: str = "extxyz",
    where_unit: Sequence[str] = (),
    analysis: str = DEFAULT_ANALYSIS,
    overwrite: bool = False,
    progress: bool | None = None,
) -> FramesExport:
    """Write the selected runs' stored frames to ``out`` with their provenance.

    Per run, in step order: the frames of ``stages`` (all if None), every ``every``-th of
    those, then those whose speciation counts under ``analysis`` satisfy every ``where_unit``
    expression. ``extxyz``: ``out`` is one file; ``lammps-data``: ``out`` is a folder of
    ``run<id>_step<step>.data`` files and an ``index.csv``.
    """
    selector = RunSelector() if selector is None else selector
    if fmt not in FORMATS:
        raise BadInput(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})", field="format")
    if every < 1:
        raise BadInput(f"must be at least 1, got {every}", field="every")
    bad = [s for s in stages or () if s not in FRAME_STAGES]
    if bad:
        raise BadInput(
            f"unknown stage {bad[0]!r} (one of: {', '.join(FRAME_STAGES)})", field="stage"
        )
    filters = parse_where_unit(where_unit)
    directory = fmt == "lammps-data"
    check_output(out, directory=directory, overwrite=overwrite)
    criteria = _criteria(selector, stages, every, filters, analysis)
    runs = select_runs(engine, selector)
    a_id = get_analysis(engine, analysis).id
    with engine.connect() as conn:
        if not runs:
            return FramesExport(out, fmt, criteria, 0, 0, (), ())
        empty = tuple(r.label() for r in runs if r.n_frames == 0)
        if len(empty) == len(runs):
            raise BadInput(f"no stored frames in {'; '.join(empty)}")
        plan: list[tuple[int, list[int]]] = []
        for run in runs:
            index = frame_index(conn, run.run_id, stages=stages)[::every]
            if filters and index:
                keep = matching_frames(conn, run.run_id, filters, a_id)
                index = [row for row in index if row[0] in keep]
            if index:
                plan.append((run.run_id, [fid for fid, _, _ in index]))
        total = sum(len(fids) for _, fids in plan)
        if total == 0:
            return FramesExport(out, fmt, criteria, len(runs), 0, (), (), empty)
        provenance = run_provenance(conn, [run_id for run_id, _ in plan])
        with (
            atomic_output(out, directory=directory) as tmp,
            make_bar(total, unit="frame", desc="export", enabled=progress) as bar,
        ):
            frames = stream_frames(conn, plan, provenance, bar.update)
            if directory:
                n, names = write_lammps_data(tmp, frames)
                files = tuple(out / name for name in names)
            else:
                n = write_extxyz(tmp, frames)
                files = (out,)
    written = tuple(run_id for run_id, _ in plan)
    return FramesExport(out, fmt, criteria, len(runs), n, written, files, empty)


# ---------------------------------------------------------------- export run


@dataclass(frozen=True)
class RunExport:
    """What ``export_run`` wrote into ``out_dir``."""

    run: str
    out_dir: Path
    n_frames: int
    n_thermo: int
    files: tuple[Path, ...]

    def describe(self) -> str:
        return (
            f"wrote {self.run} to {self.out_dir}: {self.n_frames} frames "
            f"({self.files[0].name}), {self.n_thermo} thermo rows ({self.files[1].name}), "
            f"protocol and properties ({self.files[2].name})"
        )


RUN_FILES = ("frames.extxyz", "thermo.csv", "run.json")


def resolve_run(engine: Engine, key: str, *, protocol: str | None = None) -> SelectedRun:
    """The run ``key`` names: a run id (``42``) or ``MLIP/x/quench_rate/seed``
    (``MP0/1/5/1``); ``protocol`` picks one of several runs that share the rest of the key."""
    text = key.strip()
    protocols = (protocol,) if protocol else ()
    if text.isdigit():
        selector = RunSelector(run_ids=(int(text),), protocol=protocols, status=())
    else:
        parts = text.rsplit("/", 3)
        try:
            mlip, x, rate, seed = parts
            selector = RunSelector(
                mlip=(mlip,), x=(float(x),), quench_rate=(float(rate),), seed=(int(seed),),
                protocol=protocols, status=(),
            )  # fmt: skip
        except (ValueError, BadInput):
            raise BadInput(
                f"{key!r} is neither a run id nor MLIP/x/quench_rate/seed (e.g. MP0/1/5/1)",
                field="key",
            ) from None
    try:
        runs = select_runs(engine, selector)
    except BadInput as exc:
        if exc.field != "mlip":
            raise
        raise BadInput(f"{key!r}: {exc.detail}", field="key") from None
    if not runs:
        raise BadInput(
            f"no run {key!r}" + (f" with protocol {protocol!r}" if protocol else ""), field="key"
        )
    if len(runs) > 1:
        names = ", ".join(sorted({r.protocol for r in runs}))
        raise BadInput(
            f"{key!r} names {len(runs)} runs, of protocols {names}: choose one with --protocol",
            field="key",
        )
    return runs[0]


def _parsed(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _rows(conn: Connection, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [
        {k: jsonable(v) for k, v in row.items()}
        for row in conn.execute(sa.text(sql), params).mappings()
    ]


def run_record(conn: Connection, run: SelectedRun) -> dict[str, Any]:
    """What ``run.json`` holds: the run's key, protocol, MLIP, properties, window statistics
    and software, as a collaborator without the database needs them."""
    from glassbench.schema.models import MLIP, Protocol, Run

    def one(table: Any, row_id: int) -> dict[str, Any]:
        t: sa.Table = table.__table__
        row = conn.execute(sa.select(t).where(t.c.id == row_id)).mappings().one()
        return {k: jsonable(v) for k, v in row.items()}

    r = one(Run, run.run_id)
    m = one(MLIP, int(r["mlip_id"]))
    p = one(Protocol, int(r["protocol_id"]))
    (formula,) = conn.execute(
        sa.text("SELECT formula FROM composition WHERE id = :c"), {"c": r["composition_id"]}
    ).one()
    properties: dict[str, Any] = {}
    for row in _rows(
        conn,
        "SELECT name, value, stderr, method, details_json FROM property WHERE run_id = :r "
        "ORDER BY name",
        r=run.run_id,
    ):
        details = row.pop("details_json")
        properties[row.pop("name")] = {**row, "details": _parsed(details)}
    window: dict[str, dict[str, Any]] = {}
    for row in _rows(
        conn,
        "SELECT a.name AS analysis, w.quantity, w.mean, w.stderr, w.n_frames, w.n_blocks, "
        "w.block_frames, w.step_from, w.step_to FROM window_stat w "
        "JOIN analysis a ON a.id = w.analysis_id WHERE w.run_id = :r ORDER BY a.id, w.quantity",
        r=run.run_id,
    ):
        window.setdefault(row.pop("analysis"), {})[row.pop("quantity")] = row
    model = m["model_path"]
    return {
        "run": {
            "run_id": run.run_id, "mlip": run.mlip, "x": run.x, "formula": formula,
            "quench_rate_k_ps": run.quench_rate_k_ps, "seed": run.seed,
            "protocol": run.protocol, "status": r["status"], "source": r["source"],
            "content_hash": r["content_hash"], "n_atoms": r["n_atoms"],
            "created_at": r["created_at"], "started_at": r["started_at"],
            "finished_at": r["finished_at"], "wall_s": r["wall_s"], "host": r["host"],
        },
        "protocol": {
            "name": run.protocol, "kind": p["kind"], "content_hash": p["content_hash"],
            "record": _parsed(p["params_json"]),
        },
        "mlip": {
            "name": m["name"], "arch": m["arch"],
            "model": None if model is None else os.path.basename(str(model)),
            "model_sha256": m["model_sha256"], "functional": m["functional"],
            "dispersion": m["dispersion"], "training_data": m["training_data"],
        },
        "properties": properties,
        "window_stats": window,
        "software": _parsed(r["software_json"]),
        "glassbench_version": __version__,
        "exported_at": datetime.now(UTC).isoformat(),
    }  # fmt: skip


def export_run(
    engine: Engine,
    key: str,
    out_dir: Path,
    *,
    protocol: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> RunExport:
    """Write one run into ``out_dir``: ``frames.extxyz`` (every stored frame, as
    ``export_frames`` writes them), ``thermo.csv`` and ``run.json`` (:func:`run_record`)."""
    check_output(out_dir, directory=True, overwrite=overwrite)
    run = resolve_run(engine, key, protocol=protocol)
    with engine.connect() as conn:
        fids = [fid for fid, _, _ in frame_index(conn, run.run_id)]
        if not fids:
            raise BadInput(f"{run.label()} has no stored frames", field="key")
        provenance = run_provenance(conn, [run.run_id])
        record = run_record(conn, run)
        with (
            atomic_output(out_dir, directory=True) as tmp,
            make_bar(len(fids), unit="frame", desc="export", enabled=progress) as bar,
        ):
            n_frames = write_extxyz(
                tmp / RUN_FILES[0],
                stream_frames(conn, [(run.run_id, fids)], provenance, bar.update),
            )
            n_thermo = write_thermo_csv(conn, run.run_id, tmp / RUN_FILES[1])
            record["files"] = {
                "frames": RUN_FILES[0], "n_frames": n_frames,
                "thermo": RUN_FILES[1], "n_thermo_rows": n_thermo,
            }  # fmt: skip
            (tmp / RUN_FILES[2]).write_text(
                json.dumps(jsonable(record), indent=1, allow_nan=False) + "\n", encoding="utf-8"
            )
    files = tuple(out_dir / name for name in RUN_FILES)
    return RunExport(run.label(), out_dir, n_frames, n_thermo, files)
