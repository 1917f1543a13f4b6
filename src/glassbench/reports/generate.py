"""Build the report document from the database and write it, once per distinct data.

``generate_report`` reads everything (:func:`load_report_data`), fingerprints it, and when the
``report`` table already records a report of that fingerprint in the same folder whose files
are still there, it returns ``unchanged`` without drawing or writing anything (unless
``force``). Otherwise it computes the tables, draws the figures, writes the requested formats
and records the report.

Output names inside the folder are constants of this module (``report.html``, ``report.md``,
``figures/<name>.png``, ``tables/<name>.csv``): nothing from the database or the command line
becomes a path component.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from glassbench.errors import BadInput
from glassbench.inputs import probe_writable
from glassbench.reports.document import (
    FIGURE_NAMES,
    RETIRED_FIGURES,
    RETIRED_TABLES,
    TABLE_NAMES,
    build_document,
)
from glassbench.reports.queries import fingerprint, load_report_data
from glassbench.reports.render import (
    Document,
    Figure,
    Table,
    csv_text,
    to_html,
    to_markdown,
    write_atomic,
)

log = logging.getLogger(__name__)

FORMATS = ("html", "md", "csv")
KIND = "summary"
# Bump when the report's content changes for the same data, so old fingerprints stop matching.
# 2: MAE per protocol and quench rate with uncertainty, structure, extrapolation, dispersion x
# rate, pictures and traces of every unit (issue 15).
LAYOUT_VERSION = 2
HTML_FILE = "report.html"
MD_FILE = "report.md"
FIGURE_DIR = "figures"
TABLE_DIR = "tables"
_SAFE_NAME = re.compile(r"^[a-z0-9_]+$")


@dataclass(frozen=True)
class ReportResult:
    status: str
    """``written`` or ``unchanged``."""
    out_dir: Path
    fingerprint: str
    formats: tuple[str, ...]
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    previous_at: datetime | None = None


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"html,md"`` -> ``("html", "md")`` in canonical order; ValueError names a bad one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted = {i.strip().lower() for i in items if i.strip()}
    bad = sorted(wanted - set(FORMATS))
    if bad:
        raise ValueError(f"unknown format(s) {', '.join(bad)} (known: {', '.join(FORMATS)})")
    if not wanted:
        raise ValueError(f"no format given (known: {', '.join(FORMATS)})")
    return tuple(f for f in FORMATS if f in wanted)


def check_lab_rate(value: object) -> float:
    """The laboratory cooling rate in K/ps as a positive finite float, else BadInput."""
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadInput(f"not a number: {value!r}", field="lab_rate_k_ps") from None
    if not math.isfinite(rate) or rate <= 0:
        raise BadInput(
            f"must be a positive cooling rate in K/ps, got {value!r}", field="lab_rate_k_ps"
        )
    return rate


def prepare_out_dir(out_dir: Path, formats: Sequence[str] = FORMATS) -> Path:
    """Create the output folder and prove that a file can be written in it; the resolved path.

    Called before any query, so an unwritable ``--out`` fails at once instead of after the whole
    report was built. Writing is tried, not inferred from permission bits: as root they say
    nothing, and ``/proc``, read-only mounts and a path under a regular file refuse anyway.
    Raises :class:`BadInput` on the field ``out_dir``.
    """
    # `a/../chosen` names `chosen`: collapse `..` before creating anything, so no `a/` is made.
    out = Path(os.path.normpath(out_dir.expanduser().absolute()))

    def refuse(why: str) -> BadInput:
        return BadInput(f"{out}: {why}", field="out_dir")

    try:
        if out.exists() and not out.is_dir():
            raise refuse("exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise refuse(f"cannot create the folder ({exc.strerror or exc})") from None
    out = out.resolve()
    try:
        probe_writable(out)
    except OSError as exc:
        raise refuse(f"cannot write a file in the folder ({exc.strerror or exc})") from None
    # Everything the requested formats write must be a file, or a real folder for figures/tables.
    subdirs = [d for f, d in (("csv", TABLE_DIR), ("md", FIGURE_DIR)) if f in formats]
    for sub in subdirs:
        p = out / sub
        if p.is_symlink() or (p.exists() and not p.is_dir()):
            raise refuse(f"{sub} inside it is not a folder (a file or a symbolic link)")
    files = [n for f, n in (("md", MD_FILE), ("html", HTML_FILE)) if f in formats]
    for name in files:
        if (out / name).is_dir():
            raise refuse(f"{name} inside it is a folder")
    return out


def write_document(doc: Document, out_dir: Path, formats: Sequence[str]) -> list[str]:
    """Write the requested formats; returns the files written (relative to ``out_dir``)."""
    items: list[Table | Figure] = [*doc.tables(), *doc.figures()]
    for item in items:
        # Names are constants of this module; the check keeps it that way.
        if not _SAFE_NAME.match(item.name):
            raise ValueError(f"unsafe output name {item.name!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in (TABLE_DIR, FIGURE_DIR):  # never write through a link out of the folder
        if (out_dir / sub).is_symlink():
            raise NotADirectoryError(f"{out_dir / sub} is a symbolic link, not a folder")
    written: list[str] = []
    if "csv" in formats:
        tdir = out_dir / TABLE_DIR
        tdir.mkdir(exist_ok=True)
        for t in doc.tables():
            write_atomic(tdir / f"{t.name}.csv", csv_text(t.data))
            written.append(f"{TABLE_DIR}/{t.name}.csv")
        _remove_stale(tdir, (*TABLE_NAMES, *RETIRED_TABLES), {t.name for t in doc.tables()}, ".csv")
    if "md" in formats:
        fdir = out_dir / FIGURE_DIR
        fdir.mkdir(exist_ok=True)
        for f in doc.figures():
            write_atomic(fdir / f"{f.name}.png", f.png)
            written.append(f"{FIGURE_DIR}/{f.name}.png")
        _remove_stale(
            fdir, (*FIGURE_NAMES, *RETIRED_FIGURES), {f.name for f in doc.figures()}, ".png"
        )
        write_atomic(out_dir / MD_FILE, to_markdown(doc, figure_dir=FIGURE_DIR))
        written.append(MD_FILE)
    if "html" in formats:
        write_atomic(out_dir / HTML_FILE, to_html(doc))
        written.append(HTML_FILE)
    return written


def _remove_stale(folder: Path, known: Sequence[str], current: set[str], suffix: str) -> None:
    # Only files this module names are ever removed: the folder may hold the user's own files.
    for name in known:
        if name not in current:
            (folder / f"{name}{suffix}").unlink(missing_ok=True)


def _previous(engine: Engine, fp: str, out: str) -> tuple[datetime | None, set[str], list[str]]:
    from glassbench.schema import Report

    tbl = Report.__table__  # type: ignore[attr-defined]
    with engine.connect() as c:
        row = c.execute(
            sa.select(tbl.c.created_at, tbl.c.formats, tbl.c.params_json).where(
                tbl.c.kind == KIND, tbl.c.fingerprint == fp, tbl.c.out_dir == out
            )
        ).first()
    if row is None:
        return None, set(), []
    params = json.loads(row.params_json or "{}")
    return row.created_at, set(row.formats.split(",")), list(params.get("files", []))


def _record(
    engine: Engine, *, fp: str, out: str, formats: Sequence[str], params: dict[str, object]
) -> None:
    from glassbench.schema import Report
    from glassbench.schema.models import utcnow
    from glassbench.service.db import unit_of_work
    from glassbench.service.repos import canonical_json, upsert

    with unit_of_work(engine) as session:
        upsert(
            session,
            Report,
            {
                "kind": KIND,
                "fingerprint": fp,
                "out_dir": out,
                "formats": ",".join(formats),
                "params_json": canonical_json(params),
                "created_at": utcnow(),
            },
            key=("kind", "fingerprint", "out_dir"),
            update=("formats", "params_json", "created_at"),
        )


def generate_report(
    engine: Engine,
    *,
    out_dir: Path,
    formats: Sequence[str] = FORMATS,
    force: bool = False,
    trace_runs: Sequence[int] | None = None,
    lab_rate_k_ps: float | None = None,
) -> ReportResult:
    """Generate (or reuse) the report of the database's current data in ``out_dir``.

    ``lab_rate_k_ps``: the laboratory cooling rate the quench-rate extrapolation reaches for
    (default ``extrapolation.DEFAULT_LAB_RATE_K_PS``); part of the fingerprint.
    """
    from glassbench.reports.extrapolation import DEFAULT_LAB_RATE_K_PS
    from glassbench.service.db import describe

    t0 = time.perf_counter()
    lab_rate = check_lab_rate(DEFAULT_LAB_RATE_K_PS if lab_rate_k_ps is None else lab_rate_k_ps)
    formats = parse_formats(formats)
    out = prepare_out_dir(out_dir, formats)
    data = load_report_data(engine, trace_runs=trace_runs)
    params: dict[str, object] = {
        "layout": LAYOUT_VERSION,
        "trace_runs": sorted(int(r) for r in trace_runs) if trace_runs is not None else None,
        "lab_rate_k_ps": lab_rate,
    }
    fp = fingerprint(data, params)
    prev_at, prev_formats, prev_files = _previous(engine, fp, str(out))
    if (
        not force
        and prev_at is not None
        and set(formats) <= prev_formats
        and prev_files
        and all((out / f).is_file() for f in _files_for(prev_files, formats))
    ):
        return ReportResult(
            "unchanged",
            out,
            fp,
            formats,
            _files_for(prev_files, formats),
            time.perf_counter() - t0,
            prev_at,
        )
    doc = build_document(
        data, fingerprint_hex=fp, database=describe(engine), lab_rate_k_ps=lab_rate
    )
    files = write_document(doc, out, formats)
    # A reused record keeps the files of formats written earlier for the same data.
    kept = [f for f in prev_files if f not in files and (out / f).is_file()] if prev_at else []
    all_formats = tuple(f for f in FORMATS if f in set(formats) | (prev_formats if kept else set()))
    _record(
        engine, fp=fp, out=str(out), formats=all_formats, params={**params, "files": files + kept}
    )
    return ReportResult("written", out, fp, formats, files, time.perf_counter() - t0, prev_at)


def _files_for(files: Sequence[str], formats: Sequence[str]) -> list[str]:
    def fmt_of(f: str) -> str:
        if f == HTML_FILE:
            return "html"
        if f == MD_FILE or f.startswith(f"{FIGURE_DIR}/"):
            return "md"
        return "csv"

    return [f for f in files if fmt_of(f) in formats]
