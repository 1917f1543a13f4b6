"""Experiment CSV: the reader (:func:`read_experiment_csv`) and the ingest
(:func:`ingest_experiment`, what ``glassbench ingest experiment`` runs).

Format (header row required)::

    x,property,value,uncertainty,source
    0.0,density_g_cm3,2.00,0.01,"Author et al., Journal 1, 1 (2020)"

Optional columns: ``family`` (default ``Na4P2S7-xOx``) and ``crystal`` (instead of ``x``, for
crystal reference data such as ``volume_per_formula_unit_a3``). Property names are those of the
``mlip_mae`` view; each has a physical range (:data:`RANGES`, docs/user-guide.md); one row per
(composition or crystal, property, source).

A stored value is never replaced silently: re-ingesting the same row changes nothing
("unchanged"), a different value or uncertainty for a stored (subject, property, source) is
refused unless ``replace=True`` ("updated").
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from glassbench.chemistry import FAMILY, per_formula_unit
from glassbench.errors import BadInput
from glassbench.inputs import control_character
from glassbench.schema.models import (
    COORDINATION_PROPERTIES,
    CRYSTAL_PROPERTIES,
    EXPERIMENT_PROPERTIES,
    FRACTION_PROPERTIES,
    RUN_PROPERTIES,
    Experiment,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlmodel import Session

T = TypeVar("T")
REQUIRED = ("property", "value", "source")
COMPOSITION_PROPERTIES = RUN_PROPERTIES + FRACTION_PROPERTIES + COORDINATION_PROPERTIES
# A reference table of a few thousand rows is well under a megabyte; the cap keeps a wrong
# file (a dump, a log) from being read whole into memory.
MAX_FILE_BYTES = 32 * 1024 * 1024
_SOURCE_LENGTH: int = Experiment.__table__.c.source.type.length  # type: ignore[attr-defined]
_CRYSTAL_LENGTH: int = Experiment.__table__.c.crystal.type.length  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Range:
    """The values a property can physically take; ``low_open`` excludes ``low`` itself."""

    low: float
    high: float
    low_open: bool
    unit: str

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]{unit}"


_FRACTION = Range(0.0, 1.0, False, "")
_MODULUS = Range(0.0, 1500.0, True, "GPa")
# Bounds are generous on purpose: they catch a wrong unit or a typo (1e300, a percentage for a
# fraction, MPa for GPa), not an unusual glass. Densest element: osmium, 22.6 g/cm^3; stiffest
# solid: diamond, Young's modulus about 1200 GPa; Poisson's ratio of an isotropic solid lies in
# [-1, 0.5]; Na has at most 12 neighbours in a close packing.
RANGES: dict[str, Range] = {
    "density_g_cm3": Range(0.0, 25.0, True, "g/cm^3"),
    "bulk_modulus_gpa": _MODULUS,
    "young_modulus_gpa": _MODULUS,
    "shear_modulus_gpa": _MODULUS,
    "poisson_ratio": Range(-1.0, 0.5, False, ""),
    **{p: _FRACTION for p in FRACTION_PROPERTIES},
    "na_cn": Range(0.0, 12.0, False, ""),
    "volume_per_formula_unit_a3": Range(0.0, 1e5, True, "A^3"),
}
assert set(RANGES) == set(EXPERIMENT_PROPERTIES), "every property needs a documented range"


@dataclass(frozen=True)
class ExperimentRow:
    line: int
    family: str
    x: float | None
    crystal: str | None
    property: str
    value: float
    uncertainty: float | None
    source: str

    def subject(self) -> str:
        """The natural-key part naming what was measured (as stored in ``experiment.subject``)."""
        if self.crystal is not None:
            return f"crystal:{self.crystal}"
        assert self.x is not None
        return f"{self.family}:x={round(float(self.x), 6):g}"

    def label(self) -> str:
        """The subject as a message names it: ``x=1``, ``x=1 of FAMILY``, ``crystal c-Na3PS4``."""
        if self.crystal is not None:
            return f"crystal {self.crystal}"
        assert self.x is not None
        family = "" if self.family == FAMILY else f" of {self.family}"
        return f"x={round(float(self.x), 6):g}{family}"


def _number(text: str, *, path: Path, line: int, field: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise BadInput(
            f"{field} {text!r} is not a number", source=str(path), where=f"line {line}"
        ) from None
    if not math.isfinite(v):
        raise BadInput(f"{field} {text!r} is not finite", source=str(path), where=f"line {line}")
    return v


def _check_text(value: str, column: str, limit: int, *, path: Path, where: str) -> None:
    bad = control_character(value)
    if bad is not None:
        raise BadInput(
            f"{column} contains the control character {bad[1]} at character {bad[0]}",
            source=str(path),
            where=where,
        )
    if len(value) > limit:
        raise BadInput(
            f"{column} is {len(value)} characters long, at most {limit} are stored",
            source=str(path),
            where=where,
        )


def _read_text(path: Path) -> str:
    if not path.exists():
        raise BadInput("file does not exist", source=str(path))
    if not path.is_file():
        # A FIFO or a device (/dev/zero) would be read forever.
        raise BadInput("not a regular file", source=str(path))
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror}", source=str(path)) from None
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(
            f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: not an experiment table",
            source=str(path),
        )
    if b"\x00" in data:
        raise BadInput("binary file, expected CSV text", source=str(path))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput("not a UTF-8 text file", source=str(path)) from None


def read_experiment_csv(path: Path) -> list[ExperimentRow]:
    """Parse and validate the whole file before anything is written."""
    text = _read_text(path)
    # newline="": a quoted field keeps its line breaks (refused below, with its line) instead
    # of having its lines silently joined.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise BadInput(f"malformed CSV: {exc}", source=str(path), where="line 1") from None
    if header is None:
        raise BadInput("empty file (expected a header row)", source=str(path))
    cols = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise BadInput(
            f"header lacks column(s) {', '.join(missing)}", source=str(path), where="line 1"
        )
    if "x" not in cols and "crystal" not in cols:
        raise BadInput(
            "header needs an 'x' or a 'crystal' column", source=str(path), where="line 1"
        )
    known = {"x", "crystal", "family", "uncertainty", *REQUIRED}
    unknown = [c for c in cols if c not in known]
    if unknown:
        raise BadInput(f"unknown column(s) {', '.join(unknown)}", source=str(path), where="line 1")
    repeated = sorted({c for c in cols if cols.count(c) > 1})
    if repeated:
        raise BadInput(
            f"repeated column(s) {', '.join(repeated)}", source=str(path), where="line 1"
        )
    rows: list[ExperimentRow] = []
    seen: dict[tuple[str, str, str], int] = {}
    while True:
        start = reader.line_num + 1  # a record with quoted line breaks spans several lines
        try:
            raw = next(reader, None)
        except csv.Error as exc:
            raise BadInput(
                f"malformed CSV: {exc}", source=str(path), where=f"line {start}"
            ) from None
        if raw is None:
            break
        row = _row(raw, cols, path, start)
        if row is None:
            continue
        key = (row.subject(), row.property, row.source)
        if key in seen:
            raise BadInput(
                f"duplicate of line {seen[key]} (same subject, property and source)",
                source=str(path),
                where=f"line {row.line}",
            )
        seen[key] = row.line
        rows.append(row)
    if not rows:
        raise BadInput("no data rows after the header", source=str(path))
    return rows


def _row(raw: list[str], cols: list[str], path: Path, lineno: int) -> ExperimentRow | None:
    """One validated data row, or None for a blank line."""
    if not raw or all(not c.strip() for c in raw):
        return None
    where = f"line {lineno}"
    if len(raw) != len(cols):
        raise BadInput(f"{len(raw)} fields, header has {len(cols)}", source=str(path), where=where)
    rec = {c: v.strip() for c, v in zip(cols, raw, strict=True)}
    prop = rec["property"]
    family = rec.get("family") or FAMILY
    crystal = rec.get("crystal") or None
    xs = rec.get("x", "")
    if crystal and xs:
        raise BadInput("give either x or crystal, not both", source=str(path), where=where)
    if crystal is None and not xs:
        raise BadInput("x is empty (and no crystal given)", source=str(path), where=where)
    if crystal is not None:
        _check_text(crystal, "crystal", _CRYSTAL_LENGTH, path=path, where=where)
    allowed = CRYSTAL_PROPERTIES if crystal else COMPOSITION_PROPERTIES
    if prop not in allowed:
        kind = "crystal" if crystal else "glass"
        raise BadInput(
            f"unknown {kind} property {prop!r} (known: {', '.join(allowed)})",
            source=str(path),
            where=where,
        )
    x = None
    if not crystal:
        x = _number(xs, path=path, line=lineno, field="x")
        try:
            per_formula_unit(x, family)
        except ValueError as exc:
            raise BadInput(str(exc), source=str(path), where=where) from None
    value = _number(rec["value"], path=path, line=lineno, field="value")
    allowed_range = RANGES[prop]
    if value not in allowed_range:
        hint = " (a fraction: convert percentages)" if prop in FRACTION_PROPERTIES else ""
        raise BadInput(
            f"{prop} {value:g} is outside its physical range {allowed_range}{hint}",
            source=str(path),
            where=where,
            field="value",
        )
    unc = rec.get("uncertainty", "")
    uncertainty = _number(unc, path=path, line=lineno, field="uncertainty") if unc else None
    if uncertainty is not None and not 0 <= uncertainty <= allowed_range.width:
        raise BadInput(
            f"{uncertainty:g} is outside [0, {allowed_range.width:g}] (it must be >= 0 and "
            f"at most the width of {prop}'s range {allowed_range})",
            source=str(path),
            where=where,
            field="uncertainty",
        )
    source = rec["source"]
    if not source:
        raise BadInput("source (citation) is empty", source=str(path), where=where)
    _check_text(source, "source", _SOURCE_LENGTH, path=path, where=where)
    return ExperimentRow(lineno, family, x, crystal, prop, value, uncertainty, source)


# --- ingest -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentResult:
    """What one CSV file did: rows stored new, rows already stored as they are, rows updated."""

    path: str
    n_ingested: int
    n_unchanged: int
    n_updated: int
    n_subjects: int

    @property
    def n_values(self) -> int:
        """Rows of the file (every one is now stored as the file says)."""
        return self.n_ingested + self.n_unchanged + self.n_updated

    @property
    def action(self) -> str:
        """``unchanged`` when the file changed nothing, else ``ingested``."""
        return "unchanged" if self.n_unchanged == self.n_values else "ingested"

    def describe(self) -> str:
        """The one line ``glassbench ingest experiment`` prints."""
        values = "value" if self.n_values == 1 else "values"
        subjects = "subject" if self.n_subjects == 1 else "subjects"
        return (
            f"{self.path}: {self.n_ingested} ingested, {self.n_unchanged} unchanged, "
            f"{self.n_updated} updated ({self.n_values} experimental {values} for "
            f"{self.n_subjects} {subjects})"
        )


class ExperimentConflict(BadInput):
    """A row differs from the value stored for its (subject, property, source).

    ``summary`` is the message without the remedy, which each interface words its own way.
    """

    def __init__(self, summary: str, *, source: str, where: str, field: str) -> None:
        self.summary = summary
        super().__init__(f"{summary}; use replace=True", source=source, where=where, field=field)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    # Both engines store doubles exactly; the tolerance only absorbs a driver's rounding.
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def _shown(v: float | None) -> str:
    return "none" if v is None else f"{v:.12g}"


Stored = tuple[int, float, float | None]  # id, value, uncertainty
Key = tuple[str, str, str]  # subject, property, source
# Rows per statement: far below SQLite's 32766 bound parameters and PostgreSQL's 65535.
_CHUNK = 500


def _conflict(path: Path, row: ExperimentRow, stored: Stored, others: int) -> ExperimentConflict:
    _, old_value, old_unc = stored
    field = "value" if not _same(row.value, old_value) else "uncertainty"
    new, old = (row.value, old_value) if field == "value" else (row.uncertainty, old_unc)
    cited = row.source if len(row.source) <= 60 else row.source[:57] + "..."
    more = f" (and {others} more row{'s' if others != 1 else ''} differ)" if others else ""
    return ExperimentConflict(
        f"{_shown(new)} differs from the stored {_shown(old)} for {row.label()} {row.property} "
        f"(source {cited!r}){more}",
        source=str(path),
        where=f"line {row.line}",
        field=field,
    )


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _insert(session: Session) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    table = Experiment.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _stored_rows(session: Session, subjects: Sequence[str]) -> dict[Key, Stored]:
    """The stored rows of these subjects, locked until the transaction ends (PostgreSQL)."""
    import sqlalchemy as sa

    t = Experiment.__table__  # type: ignore[attr-defined]
    out: dict[Key, Stored] = {}
    for chunk in _chunks(subjects):
        stmt = (
            sa.select(t.c.subject, t.c.property, t.c.source, t.c.id, t.c.value, t.c.uncertainty)
            .where(t.c.subject.in_(chunk))
            .with_for_update()
        )
        for subject, prop, source, id_, value, unc in session.execute(stmt):
            out[(subject, prop, source)] = (int(id_), float(value), unc)
    return out


def _composition_ids(
    session: Session, rows: Sequence[ExperimentRow]
) -> dict[tuple[str, float], int]:
    """Ids of the rows' compositions, stored first where new (in bulk: a table of reference
    values can name thousands)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql, sqlite

    from glassbench.chemistry import formula
    from glassbench.schema.models import Composition

    t = Composition.__table__  # type: ignore[attr-defined]
    wanted = sorted({(r.family, round(float(r.x), 6)) for r in rows if r.x is not None})

    def known() -> dict[tuple[str, float], int]:
        stmt = sa.select(t.c.family, t.c.x, t.c.id).where(
            t.c.family.in_(sorted({f for f, _ in wanted}))
        )
        return {(f, round(float(x), 6)): int(i) for f, x, i in session.execute(stmt)}

    ids = known()
    missing = [k for k in wanted if k not in ids]
    if missing:
        dialect = session.get_bind().dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t)
        for batch in _chunks(missing):
            session.execute(
                insert.on_conflict_do_nothing(index_elements=["family", "x"]),
                [{"family": f, "x": x, "formula": formula(x, f)} for f, x in batch],
            )
        ids = known()
    return {k: ids[k] for k in wanted}


def ingest_experiment(
    engine: Engine, csv_path: str | Path, *, replace: bool = False
) -> ExperimentResult:
    """Store experimental reference values (columns x,property,value,uncertainty,source).

    The whole file is validated before anything is written, and written in one transaction.
    A row already stored with the same value and uncertainty is left alone ("unchanged"); a
    row whose value or uncertainty differs from the stored one for its (subject, property,
    source) refuses the whole file (`ExperimentConflict`, exit status 2, nothing written)
    unless ``replace``, which updates it ("updated").
    """
    import sqlalchemy as sa

    from glassbench.service import unit_of_work
    from glassbench.service.migrations import require_schema

    path = Path(csv_path)
    rows = read_experiment_csv(path)
    require_schema(engine)
    by_key = {(r.subject(), r.property, r.source): r for r in rows}
    subjects = sorted({r.subject() for r in rows})
    t = Experiment.__table__  # type: ignore[attr-defined]
    with unit_of_work(engine) as session:
        compositions = _composition_ids(session, rows)
        stored = _stored_rows(session, subjects)
        new = [k for k in by_key if k not in stored]
        n_new = 0
        for chunk in _chunks(new):
            params = []
            for key in chunk:
                r = by_key[key]
                cid = compositions[(r.family, round(float(r.x), 6))] if r.x is not None else None
                params.append({
                    "subject": key[0], "composition_id": cid, "crystal": r.crystal,
                    "property": r.property, "value": r.value, "uncertainty": r.uncertainty,
                    "source": r.source,
                })  # fmt: skip
            # DO NOTHING: a row another ingest committed since the look-up is compared below,
            # never overwritten.
            stmt = (
                _insert(session)
                .on_conflict_do_nothing(index_elements=["subject", "property", "source"])
                .returning(t.c.id)
            )
            n_new += len(session.execute(stmt, params).all())
        after = _stored_rows(session, subjects)
        differing = sorted(
            ((by_key[k], after[k]) for k in by_key if not _same_row(by_key[k], after[k])),
            key=lambda pair: pair[0].line,
        )
        if differing and not replace:
            # Raised inside the transaction: the rows inserted above are rolled back.
            raise _conflict(path, *differing[0], others=len(differing) - 1)
        for batch in _chunks(differing):
            session.execute(
                sa.update(t).where(t.c.id == sa.bindparam("row_id")),
                [
                    {"row_id": st[0], "value": r.value, "uncertainty": r.uncertainty}
                    for r, st in batch
                ],
            )
    n_updated = len(differing)
    n_unchanged = len(rows) - n_new - n_updated
    return ExperimentResult(str(csv_path), n_new, n_unchanged, n_updated, len(subjects))


def _same_row(row: ExperimentRow, stored: Stored) -> bool:
    return _same(row.value, stored[1]) and _same(row.uncertainty, stored[2])
