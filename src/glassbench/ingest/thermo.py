"""Thermo rows into the database in bulk: binary COPY on PostgreSQL, executemany on SQLite.

Only a batch is ever held in memory, never the file; steps must grow strictly and time must not
run backwards (what ``glassbench db check`` would flag is refused here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlmodel import Session

from glassbench.ingest.slots import InvalidData
from glassbench.service.repos import BadRows, insert_thermo

THERMO_BATCH_ROWS = 20_000

ThermoRow = Mapping[str, float | int | None]


@dataclass
class ThermoWriter:
    """Buffers thermo rows and writes them in batches; ``close()`` flushes the rest.

    Rows are mappings with keys from ``repos.THERMO_COLUMNS`` (missing keys are NULL) and must
    arrive with strictly increasing ``step`` (PostgreSQL COPY does not skip duplicates).
    """

    session: Session
    run_id: int
    batch_rows: int = THERMO_BATCH_ROWS
    n_rows: int = 0
    first_step: int | None = None
    last_step: int | None = None
    _buffer: list[ThermoRow] = field(default_factory=list)
    _last_time: tuple[int, float] | None = None

    def add(self, row: ThermoRow) -> None:
        step = row["step"]
        assert step is not None
        step = int(step)
        if self.last_step is not None and step <= self.last_step:
            raise InvalidData(f"thermo step {step} does not follow step {self.last_step}")
        # `glassbench db check` requires time to grow with step; refuse what it would flag
        t = row.get("time_ps")
        if t is not None and math.isfinite(t):
            if self._last_time is not None and t < self._last_time[1]:
                raise InvalidData(
                    f"thermo time {t:g} ps at step {step} is before {self._last_time[1]:g} ps "
                    f"at step {self._last_time[0]}"
                )
            self._last_time = (step, float(t))
        if self.first_step is None:
            self.first_step = step
        self.last_step = step
        self._buffer.append(row)
        if len(self._buffer) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        try:
            # binary COPY on PostgreSQL (the steps are new: open_run cleared the run and
            # add() keeps them increasing), executemany on SQLite
            self.n_rows += insert_thermo(self.session, self.run_id, self._buffer, copy=True)
        except BadRows as exc:
            raise InvalidData(str(exc)) from None
        self._buffer = []

    def close(self) -> None:
        self.flush()


def store_thermo(
    session: Session,
    run_id: int,
    rows: Iterable[ThermoRow],
    *,
    batch_rows: int = THERMO_BATCH_ROWS,
) -> ThermoWriter:
    """Write a stream of thermo rows in bulk; returns the writer with its counts."""
    writer = ThermoWriter(session, run_id, batch_rows=batch_rows)
    for row in rows:
        writer.add(row)
    writer.close()
    return writer
