"""Experiment CSV reader.

Format (header row required)::

    x,property,value,uncertainty,source
    0.0,density_g_cm3,2.00,0.01,"Author et al., Journal 1, 1 (2020)"

Optional columns: ``family`` (default ``Na4P2S7-xOx``) and ``crystal`` (instead of ``x``, for
crystal reference data such as ``volume_per_formula_unit_a3``). Property names are those of the
``mlip_mae`` view; fractions are in [0, 1]; one row per (composition or crystal, property, source).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from glassbench.chemistry import FAMILY, per_formula_unit
from glassbench.errors import BadInput
from glassbench.schema.models import (
    COORDINATION_PROPERTIES,
    CRYSTAL_PROPERTIES,
    FRACTION_PROPERTIES,
    RUN_PROPERTIES,
)

REQUIRED = ("property", "value", "source")
COMPOSITION_PROPERTIES = RUN_PROPERTIES + FRACTION_PROPERTIES + COORDINATION_PROPERTIES


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


def read_experiment_csv(path: Path) -> list[ExperimentRow]:
    """Parse and validate the whole file before anything is written."""
    if not path.exists():
        raise BadInput("file does not exist", source=str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput("not a UTF-8 text file", source=str(path)) from None
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror}", source=str(path)) from None
    if "\x00" in text:
        raise BadInput("binary file, expected CSV text", source=str(path))
    try:
        reader = csv.reader(text.splitlines())
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
    rows: list[ExperimentRow] = []
    seen: dict[tuple[object, ...], int] = {}
    for lineno, raw in enumerate(reader, start=2):
        if not raw or all(not c.strip() for c in raw):
            continue
        if len(raw) != len(cols):
            raise BadInput(
                f"{len(raw)} fields, header has {len(cols)}",
                source=str(path),
                where=f"line {lineno}",
            )
        rec = {c: v.strip() for c, v in zip(cols, raw, strict=True)}
        where = f"line {lineno}"
        prop = rec["property"]
        family = rec.get("family") or FAMILY
        crystal = rec.get("crystal") or None
        xs = rec.get("x", "")
        if crystal and xs:
            raise BadInput("give either x or crystal, not both", source=str(path), where=where)
        if crystal is None and not xs:
            raise BadInput("x is empty (and no crystal given)", source=str(path), where=where)
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
        if prop in FRACTION_PROPERTIES and not 0.0 <= value <= 1.0:
            raise BadInput(
                f"{prop} is a fraction, {value} is outside [0, 1]", source=str(path), where=where
            )
        if prop not in FRACTION_PROPERTIES and prop != "poisson_ratio" and value <= 0:
            raise BadInput(f"{prop} must be positive, got {value}", source=str(path), where=where)
        unc = rec.get("uncertainty", "")
        uncertainty = _number(unc, path=path, line=lineno, field="uncertainty") if unc else None
        if uncertainty is not None and uncertainty < 0:
            raise BadInput("uncertainty must be >= 0", source=str(path), where=where)
        source = rec["source"]
        if not source:
            raise BadInput("source (citation) is empty", source=str(path), where=where)
        key = (family, x, crystal, prop, source)
        if key in seen:
            raise BadInput(
                f"duplicate of line {seen[key]} (same subject, property and source)",
                source=str(path),
                where=where,
            )
        seen[key] = lineno
        rows.append(ExperimentRow(lineno, family, x, crystal, prop, value, uncertainty, source))
    if not rows:
        raise BadInput("no data rows after the header", source=str(path))
    return rows
