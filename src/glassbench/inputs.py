"""Checks of user input that several layers share: one-line text, writable output folders.

Neither touches the database: the ingests (experiment CSV), the MLIP registry, the runner's
checkpoints, the report and the export each call them and word the error for their own field.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from pathlib import Path

_CONTROL_NAMES = {"\n": "newline", "\r": "carriage return", "\t": "tab", "\x1b": "escape"}


def control_character(text: str) -> tuple[int, str] | None:
    """The position (from 1) and description (``U+000A (newline)``) of the first control or
    format character of ``text``, or None: such characters break one-line messages, tables
    and terminals."""
    for i, ch in enumerate(text, start=1):
        if unicodedata.category(ch) in ("Cc", "Cf"):
            name = _CONTROL_NAMES.get(ch) or unicodedata.name(ch, "").lower()
            return i, f"U+{ord(ch):04X}{f' ({name})' if name else ''}"
    return None


def probe_writable(folder: Path, *, prefix: str = ".glassbench-probe.") -> None:
    """Create and remove a file in ``folder``; raises OSError when that cannot be done.

    A probe file, not the permission bits: as root every mode bit says yes, and a read-only
    mount, a full disk or a path under /proc only shows itself when a file is created.
    """
    fd, probe = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    os.close(fd)
    os.unlink(probe)
