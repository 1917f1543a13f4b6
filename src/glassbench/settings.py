"""Configuration from the environment (prefix ``GLASSBENCH_``), built on demand, never at import."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_FILE = "glassbench.db"


def normalize_database_url(url: str) -> str:
    """Normalise user spellings of database URLs to the drivers glassbench uses.

    ``postgres://`` and ``postgresql://`` select psycopg 3; a bare file path becomes SQLite.
    """
    url = url.strip()
    if not url:
        raise ValueError("empty database URL")
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://") :]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    elif "://" not in url:
        url = "sqlite:///" + url
    return url


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs, errors and reports)."""
    return re.sub(r"(://[^:/@]+:)[^@]*(@)", r"\1***\2", url)


class Settings(BaseSettings):
    """Every setting glassbench reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="GLASSBENCH_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_SQLITE_FILE}",
        description="SQLAlchemy URL of the results database; default ./glassbench.db (SQLite).",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000, description="How long an SQLite writer waits for a lock, in ms."
    )
    thermo_batch_rows: int = Field(
        default=500, description="Thermo rows buffered by a runner before one bulk write."
    )
    threads: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Threads per simulation process (torch/OpenMP/MKL), over OMP_NUM_THREADS; None or 0: "
            "OMP_NUM_THREADS if set, else the cores this process may use (CPU affinity capped by "
            "a cgroup quota); OpenMP waits passively (runners/interpreter.limit_threads)."
        ),
    )
    device: str = Field(
        default="cpu",
        description="Device for torch-based MLIPs (MACE, CHGNet, SevenNet): cpu, cuda, cuda:1.",
    )
    report_dir: Path = Field(default=Path("report"), description="Default report output folder.")

    @field_validator("database_url")
    @classmethod
    def _normalize(cls, v: str) -> str:
        return normalize_database_url(v)


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides (None values ignored)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
