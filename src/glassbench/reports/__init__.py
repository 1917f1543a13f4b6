"""Reports: queries -> pandas -> metrics -> figures -> HTML / Markdown / CSV.

Importing this package loads pandas but neither matplotlib nor any ML framework; figures are
drawn only when a report is generated.
"""

from typing import TYPE_CHECKING

from glassbench.reports.keys import Key
from glassbench.reports.metrics import (
    artefact_table,
    completed,
    coverage_table,
    crystal_points,
    crystal_table,
    experiment_means,
    mae_points,
    mae_table,
    point_table,
    quench_sensitivity,
    seed_stats,
    trace_table,
    trend_table,
)
from glassbench.reports.queries import (
    ReportData,
    fingerprint,
    load_experiment,
    load_mae_inputs,
    load_report_data,
)

if TYPE_CHECKING:
    from glassbench.reports.generate import ReportResult, generate_report

__all__ = [
    "Key",
    "ReportData",
    "ReportResult",
    "artefact_table",
    "completed",
    "coverage_table",
    "crystal_points",
    "crystal_table",
    "experiment_means",
    "fingerprint",
    "generate_report",
    "load_experiment",
    "load_mae_inputs",
    "load_report_data",
    "mae_points",
    "mae_table",
    "point_table",
    "quench_sensitivity",
    "seed_stats",
    "trace_table",
    "trend_table",
]


def __getattr__(name: str) -> object:
    # generate_report draws figures: load matplotlib only when it is asked for.
    if name in ("generate_report", "ReportResult"):
        from glassbench.reports import generate

        return getattr(generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
