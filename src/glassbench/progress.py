"""The one progress bar of glassbench: tqdm on stderr, silent when stderr is not a terminal.

Long work (an ingest of a large log, a melt-quench run, a campaign, an analysis over frames)
shows one of these; scripts and CI logs, whose stderr is a file or a pipe, get no bar.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


def make_bar(
    total: float | None = None,
    *,
    unit: str = "it",
    desc: str | None = None,
    initial: float = 0,
    enabled: bool | None = None,
    leave: bool = True,
) -> tqdm[Any]:
    """A tqdm bar on stderr; ``enabled=None`` means "when stderr is a terminal".

    A disabled bar is still a bar (``update``/``set_postfix_str``/``close`` do nothing), so
    callers never branch on it; as a context manager (``with make_bar(...) as bar:``) it
    closes however the block ends. ``unit="B"`` counts bytes in KiB/MiB.
    """
    from tqdm import tqdm

    on = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(
        total=total,
        initial=initial,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        desc=desc,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not on,
        leave=leave,
    )
