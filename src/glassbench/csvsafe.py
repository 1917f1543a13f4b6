"""CSV cells a spreadsheet cannot run: the one rule every CSV glassbench writes follows.

Spreadsheets (Excel, LibreOffice, Google Sheets) treat a cell that starts with ``=``, ``+``,
``-`` or ``@`` as a formula, and a leading tab or carriage return can hide one; a formula such
as ``=cmd|' /C calc'!A0`` or ``=HYPERLINK(...)`` runs or leaks data when the file is opened.
MLIP names, citations, notes and run errors are user input, so text cells that start with one
of those characters get a leading ``'`` (OWASP's advice), which a spreadsheet shows as text.
Numbers are never changed: a float ``-0.5`` or the text ``-0.5`` is a plain number in any
spreadsheet and stays exactly as it is. Machine-readable outputs (JSON) keep values as stored;
docs/reports.md ("Escaping") lists where each rule applies.
"""

from __future__ import annotations

import re
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula."""

# A plain decimal number (what a spreadsheet reads as a number, not a formula).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def is_number_text(text: str) -> bool:
    """True for text that is one plain decimal number (``-0.5``, ``+3``, ``1e-3``)."""
    return _NUMBER.fullmatch(text) is not None


def csv_text(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet runs as a formula."""
    if text.startswith(FORMULA_START) and not is_number_text(text):
        return "'" + text
    return text


def csv_cell(value: Any) -> Any:
    """``value`` safe for a CSV a spreadsheet opens: text that would start a formula gets a
    leading ``'``; numbers stay numbers, None an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str):
        return csv_text(value)
    return value
