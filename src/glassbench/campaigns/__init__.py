"""Campaigns: a TOML spec expanded into melt-quench runs, executed by a process pool or Dask.

- `spec`: parsing and validation of the spec (`load_spec`, `CampaignSpec`);
- `tasks`: what a worker executes (`execute_run`), in-process or in the MLIP's interpreter;
- `executors`: the `Executor` protocol, `LocalExecutor`, `DaskExecutor`, dask-jobqueue helpers;
- `loop`: `run_campaign`, the scheduling loop;
- `status`: `campaign_runs`, the tables of `campaign status`, `CampaignReport`.

The names are imported on first use: ``python -m glassbench.campaigns.tasks`` (a delegated
task in another interpreter) imports this package first, and a package that had already
imported ``tasks`` would make runpy execute a second copy of it, with a RuntimeWarning.
See docs/campaigns.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from glassbench.campaigns.executors import EXECUTORS as EXECUTORS
    from glassbench.campaigns.executors import DaskExecutor as DaskExecutor
    from glassbench.campaigns.executors import Executor as Executor
    from glassbench.campaigns.executors import LocalExecutor as LocalExecutor
    from glassbench.campaigns.executors import TaskFuture as TaskFuture
    from glassbench.campaigns.executors import WorkerResources as WorkerResources
    from glassbench.campaigns.executors import env_resource_name as env_resource_name
    from glassbench.campaigns.executors import jobqueue_cluster as jobqueue_cluster
    from glassbench.campaigns.executors import jobqueue_job as jobqueue_job
    from glassbench.campaigns.executors import jobqueue_kwargs as jobqueue_kwargs
    from glassbench.campaigns.executors import make_executor as make_executor
    from glassbench.campaigns.loop import CampaignLoop as CampaignLoop
    from glassbench.campaigns.loop import RunState as RunState
    from glassbench.campaigns.loop import absolute_db_url as absolute_db_url
    from glassbench.campaigns.loop import default_workers as default_workers
    from glassbench.campaigns.loop import run_campaign as run_campaign
    from glassbench.campaigns.spec import CLUSTER_KINDS as CLUSTER_KINDS
    from glassbench.campaigns.spec import DEFAULT_RETRIES as DEFAULT_RETRIES
    from glassbench.campaigns.spec import PROPERTY_KEYS as PROPERTY_KEYS
    from glassbench.campaigns.spec import PROTOCOL_KEYS as PROTOCOL_KEYS
    from glassbench.campaigns.spec import CampaignSpec as CampaignSpec
    from glassbench.campaigns.spec import ClusterSpec as ClusterSpec
    from glassbench.campaigns.spec import Resources as Resources
    from glassbench.campaigns.spec import check_mlips as check_mlips
    from glassbench.campaigns.spec import load_spec as load_spec
    from glassbench.campaigns.spec import make_params as make_params
    from glassbench.campaigns.spec import parse_spec as parse_spec
    from glassbench.campaigns.status import MISSING as MISSING
    from glassbench.campaigns.status import STATUSES as STATUSES
    from glassbench.campaigns.status import CampaignReport as CampaignReport
    from glassbench.campaigns.status import RunRecord as RunRecord
    from glassbench.campaigns.status import campaign_runs as campaign_runs
    from glassbench.campaigns.status import failure_table as failure_table
    from glassbench.campaigns.status import status_counts as status_counts
    from glassbench.campaigns.status import status_table as status_table
    from glassbench.campaigns.tasks import CrystalTask as CrystalTask
    from glassbench.campaigns.tasks import Outcome as Outcome
    from glassbench.campaigns.tasks import RunTask as RunTask
    from glassbench.campaigns.tasks import TaskResult as TaskResult
    from glassbench.campaigns.tasks import execute_crystals as execute_crystals
    from glassbench.campaigns.tasks import execute_run as execute_run

# Public name -> the submodule that defines it (the TYPE_CHECKING imports above, for mypy).
_HOME: dict[str, str] = {
    **dict.fromkeys(
        (
            "EXECUTORS",
            "DaskExecutor",
            "Executor",
            "LocalExecutor",
            "TaskFuture",
            "WorkerResources",
            "env_resource_name",
            "jobqueue_cluster",
            "jobqueue_job",
            "jobqueue_kwargs",
            "make_executor",
        ),
        "executors",
    ),
    **dict.fromkeys(
        (
            "CampaignLoop",
            "RunState",
            "absolute_db_url",
            "default_workers",
            "run_campaign",
        ),
        "loop",
    ),
    **dict.fromkeys(
        (
            "CLUSTER_KINDS",
            "DEFAULT_RETRIES",
            "PROPERTY_KEYS",
            "PROTOCOL_KEYS",
            "CampaignSpec",
            "ClusterSpec",
            "Resources",
            "check_mlips",
            "load_spec",
            "make_params",
            "parse_spec",
        ),
        "spec",
    ),
    **dict.fromkeys(
        (
            "MISSING",
            "STATUSES",
            "CampaignReport",
            "RunRecord",
            "campaign_runs",
            "failure_table",
            "status_counts",
            "status_table",
        ),
        "status",
    ),
    **dict.fromkeys(
        (
            "CrystalTask",
            "Outcome",
            "RunTask",
            "TaskResult",
            "execute_crystals",
            "execute_run",
        ),
        "tasks",
    ),
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
