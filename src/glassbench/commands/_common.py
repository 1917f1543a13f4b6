"""Helpers shared by the sub-commands: database access with clear errors, output formatting."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import click
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from glassbench.csvsafe import csv_cell
from glassbench.errors import BadInput, Failure, first_line


def require_schema(engine: Engine) -> None:
    """Fail with a helpful message when the database has not been migrated to head."""
    from glassbench.service.migrations import require_schema as require

    require(engine)


@contextlib.contextmanager
def replace_option() -> Iterator[None]:
    """An ingest's run conflict says ``replace=True``; on the command line it is --replace."""
    from glassbench.ingest.pipeline import RunConflict

    try:
        yield
    except RunConflict as exc:
        raise BadInput(f"{exc.summary}; use --replace to replace it", source=exc.source) from None


def db_error(exc: OperationalError | ProgrammingError, engine: Engine) -> Failure:
    from glassbench.service import describe

    return Failure(f"database error on {describe(engine)}: {first_line(exc)}")


# C0 and C1 control characters other than space: shown escaped in a text table, so a stored
# value can neither move the terminal's cursor (ESC sequences) nor break the table's rows.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.6g}"
    if isinstance(v, bytes | memoryview):
        return f"<{len(bytes(v))} bytes>"
    return _visible(str(v))


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes | memoryview):
        return f"<{len(bytes(v))} bytes>"
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, int | float | str | bool) or v is None:
        return v
    try:
        return float(v)  # Decimal from PostgreSQL numerics
    except (TypeError, ValueError):
        return str(v)


class _Echo:
    """A file whose ``write`` returns its argument: ``csv.writer.writerow`` then returns the
    line it wrote, with no buffer to reset per row."""

    def write(self, text: str) -> str:
        return text


def _csv_value(v: Any) -> Any:
    # Values as JSON has them (bytes summarised, non-finite floats empty), then made safe.
    if isinstance(v, str):
        return csv_cell(v)
    return csv_cell(_jsonable(v))


def csv_lines(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """CSV, one line (with its newline) at a time: the header, then each row.

    Text cells that a spreadsheet would run as a formula get a leading ``'``
    (:mod:`glassbench.csvsafe`); numbers are written as numbers. JSON keeps values as stored.
    """
    w = csv.writer(_Echo(), lineterminator="\n")
    yield w.writerow([csv_cell(c) for c in columns])
    for r in rows:
        yield w.writerow([_csv_value(v) for v in r])


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """Render rows as an aligned text table, CSV or JSON (a list of objects).

    CSV cells never start a spreadsheet formula (see :func:`csv_lines`); a text table shows
    control characters escaped; JSON holds the values as stored.
    """
    if fmt == "json":
        return json.dumps(
            [{c: _jsonable(v) for c, v in zip(columns, r, strict=True)} for r in rows], indent=1
        )
    if fmt == "csv":
        return "".join(csv_lines(columns, rows)).rstrip("\n")
    columns = [_visible(str(c)) for c in columns]
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [len(c) for c in columns]
    for r in cells:
        widths = [max(w, len(v)) for w, v in zip(widths, r, strict=True)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)


_F = TypeVar("_F", bound=Callable[..., Any])


class OptionsDecorator(Protocol):
    """Adds click options to a command function (typed, so commands stay typed)."""

    def __call__(self, f: _F, /) -> _F: ...


def _compose(*decorators: Callable[[Any], Any]) -> OptionsDecorator:
    def apply(f: _F) -> _F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


# Options shared by the ingest commands (the run key, analysis cutoffs, stage, replace).
RUN_KEY_OPTIONS = _compose(
    click.option("--mlip", required=True, help="Registered MLIP name."),
    click.option("--x", "x", required=True, type=float, help="Composition x of Na4P2S7-xOx."),
    click.option("--quench-rate", "quench_rate", required=True, type=float, help="In K/ps."),
    click.option("--seed", required=True, type=int),
)


def stage_option(choices: Sequence[str]) -> OptionsDecorator:
    return click.option(
        "--stage",
        type=click.Choice(list(choices)),
        default=None,
        help="Stage of every frame but the last, which is 'final'  [default: other]",
    )


INGEST_ANALYSIS_OPTIONS = _compose(
    click.option(
        "--cutoff",
        "cutoffs",
        multiple=True,
        metavar="PAIR=A",
        help="Bond cutoff for the analysis, e.g. P-S=2.5 (repeatable).",
    ),
    click.option(
        "--replace", is_flag=True, help="Replace a run of the same key that holds other data."
    ),
)
