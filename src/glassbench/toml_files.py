"""Reading the TOML files users hand glassbench (campaign specs, protocol files), bounded.

One reader for both: a missing, unreadable, oversized, non-UTF-8, malformed or pathologically
nested file is a `BadInput` naming the file, never an exception of the parser.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from glassbench.errors import BadInput

# Far above any real spec or protocol (a few kB); read no more than this from whatever is given.
MAX_TOML_BYTES = 1_000_000


def read_toml(path: Path, *, what: str, max_bytes: int = MAX_TOML_BYTES) -> dict[str, Any]:
    """The parsed file; ``what`` names it in messages ("spec file", "protocol file")."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise BadInput(f"{what} does not exist", source=str(path)) from None
    except OSError as exc:
        raise BadInput(f"cannot read {what}: {exc}", source=str(path)) from None
    if len(raw) > max_bytes:
        raise BadInput(f"{what} larger than {max_bytes // 1_000_000} MB", source=str(path))
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadInput(f"cannot read {what}: {exc}", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"TOML syntax error: {exc}", source=str(path)) from None
    except RecursionError:
        raise BadInput("TOML nested too deeply", source=str(path)) from None
