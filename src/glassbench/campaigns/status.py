"""Where a campaign stands: every run of the matrix with its status, counts per (MLIP, x),
and the report of one `run_campaign`.

Read-only: runs are found by their natural key (MLIP, composition, quench rate, seed, protocol
hash), so runs made by hand with the same parameters count as the campaign's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from glassbench.campaigns.spec import CampaignSpec
from glassbench.errors import first_line
from glassbench.schema import RunStatus

# The run statuses in the order tables show them, and ``missing``: in the matrix, not created yet.
MISSING = "missing"
STATUSES = (
    RunStatus.DONE.value,
    RunStatus.RUNNING.value,
    RunStatus.PENDING.value,
    RunStatus.FAILED.value,
    MISSING,
)


@dataclass
class CampaignReport:
    """The outcome of `run_campaign`: counts per run status and every run not done."""

    name: str
    total: int
    done_before: int
    ran: int
    counts: dict[str, int]
    failures: list[dict[str, Any]]
    crystal_failures: list[str]
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.counts.get(RunStatus.DONE, 0) == self.total and not self.crystal_failures

    def summary(self) -> str:
        parts = [f"{self.counts.get(s, 0)} {s}" for s in STATUSES if self.counts.get(s, 0)]
        return (
            f"campaign {self.name!r}: {self.total} runs: {', '.join(parts)} "
            f"({self.ran} run now, {self.done_before} done before; {self.wall_s:.0f} s)"
        )

    def failure_report(self) -> str:
        """The summary, then one line per run not done and per MLIP whose crystals failed."""
        lines = [self.summary()]
        for f in self.failures:
            lines.append(
                f"  {f['mlip']} x={f['x']:g} q={f['quench_rate_k_ps']:g} seed={f['seed']}: "
                f"{f['status']} after {f['attempts']} attempt(s): {first_line(f['error']) or '-'}"
            )
        lines += [f"  crystal volumes {c}" for c in self.crystal_failures]
        return "\n".join(lines)


@dataclass(frozen=True)
class RunRecord:
    """One run of the matrix; ``status`` is a `RunStatus` value or `MISSING`."""

    mlip: str
    x: float
    quench_rate_k_ps: float
    seed: int
    status: str
    attempts: int = 0
    error: str | None = None
    claimed_by: str | None = None


def _key(
    mlip: str, x: float, q: float, seed: int, phash: str
) -> tuple[str, float, float, int, str]:
    # x is stored rounded to 6 decimals; rates are compared to 9 significant digits.
    return (mlip, round(float(x), 6), float(f"{float(q):.9g}"), int(seed), phash)


def campaign_runs(spec: CampaignSpec, engine: Engine) -> list[RunRecord]:
    """Every run of the matrix with its status (`MISSING` when not created yet)."""
    from glassbench.service.repos import content_hash

    matrix = spec.params()
    hashes = {id(p): content_hash({"kind": "meltquench", **p.protocol_record()}) for p in matrix}
    stmt = sa.text(
        "SELECT m.name, c.x, r.quench_rate_k_ps, r.seed, r.status, r.attempts, r.error, "
        "r.claimed_by, p.content_hash FROM run r JOIN mlip m ON m.id = r.mlip_id "
        "JOIN composition c ON c.id = r.composition_id JOIN protocol p ON p.id = r.protocol_id "
        "WHERE p.content_hash IN :h AND m.name IN :names"
    ).bindparams(sa.bindparam("names", expanding=True), sa.bindparam("h", expanding=True))
    found: dict[tuple[str, float, float, int, str], RunRecord] = {}
    with engine.connect() as c:
        for r in c.execute(stmt, {"h": sorted(set(hashes.values())), "names": list(spec.mlips)}):
            rec = RunRecord(
                r[0], float(r[1]), float(r[2]), int(r[3]), str(r[4]), int(r[5]), r[6], r[7]
            )
            found[_key(rec.mlip, rec.x, rec.quench_rate_k_ps, rec.seed, r[8])] = rec
    out = []
    for p in matrix:
        k = _key(p.mlip, p.x, p.quench_rate_k_ps, p.seed, hashes[id(p)])
        out.append(found.get(k) or RunRecord(p.mlip, p.x, p.quench_rate_k_ps, p.seed, MISSING))
    return out


def status_table(records: Sequence[RunRecord]) -> tuple[list[str], list[list[Any]]]:
    """Counts per (MLIP, x) in matrix order."""
    cols = ["mlip", "x", "total", *STATUSES]
    groups: dict[tuple[str, float], dict[str, int]] = {}
    for r in records:
        g = groups.setdefault((r.mlip, r.x), {s: 0 for s in STATUSES})
        g[r.status] = g.get(r.status, 0) + 1
    rows = [[m, x, sum(c.values()), *(c[s] for s in STATUSES)] for (m, x), c in groups.items()]
    return cols, rows


def status_counts(records: Sequence[RunRecord]) -> dict[str, int]:
    """How many runs have each status, every status of `STATUSES` included."""
    return {s: sum(1 for r in records if r.status == s) for s in STATUSES}


def failure_table(records: Sequence[RunRecord]) -> tuple[list[str], list[list[Any]]]:
    """The failed runs with their attempts and the first line of their last error."""
    cols = ["mlip", "x", "quench_rate_k_ps", "seed", "attempts", "error"]
    rows: list[list[Any]] = [
        [r.mlip, r.x, r.quench_rate_k_ps, r.seed, r.attempts, first_line(r.error) or "-"]
        for r in records
        if r.status == RunStatus.FAILED
    ]
    return cols, rows
