"""Configuration from the environment (prefix ``GLASSBENCH_``), built on demand, never at import.

Also the one place that knows what a database URL may look like (:func:`normalize_database_url`)
and how a password is kept out of every message and log (:func:`mask_url`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_FILE = "glassbench.db"
ENV_PREFIX = "GLASSBENCH_"

# A bare path is taken for an SQLite file only when it names an existing file or carries one of
# these suffixes: a mistyped URL (`notaurl`, `mysql:/x`) must not silently become a new database.
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SUPPORTED_URLS = (
    "supported: sqlite:///FILE, a path ending in .db/.sqlite/.sqlite3, "
    "postgresql://USER@HOST[:PORT]/DATABASE (with a password: USER:PASSWORD@HOST)"
)
_POSTGRES = "postgresql+psycopg"
# scheme as typed (lower case) -> scheme glassbench uses
_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgres": _POSTGRES,
    "postgresql": _POSTGRES,
    "postgresql+psycopg": _POSTGRES,
}


class DatabaseUrlError(ValueError):
    """A database URL glassbench cannot use; the message never holds a password."""


def _mask_bare(value: str) -> str:
    # Something typed without a scheme may still hold `user:password@`.
    return "***@" + value.rsplit("@", 1)[1] if "@" in value else value


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """``(userinfo, host_and_rest)`` of what follows ``scheme://``.

    The userinfo ends at the LAST ``@`` before the query string whose host part holds no ``@``:
    a raw ``@`` in a password (``u:p@ss@host/db``) belongs to the password, where SQLAlchemy
    would split at the first one and take ``ss@host`` for the host.
    """
    m = re.fullmatch(r"(?P<userinfo>[^?]*)@(?P<rest>[^@/?]*(?:[/?].*)?)", rest, flags=re.DOTALL)
    if m is None:
        return None, rest
    return m["userinfo"], m["rest"]


def normalize_database_url(url: str) -> str:
    """The database URL glassbench connects with, from any spelling a user may type.

    - ``postgres://`` and ``postgresql://`` select psycopg 3 (``postgresql+psycopg://``);
    - a raw ``@`` in a password is percent-encoded (the userinfo ends at the last ``@``);
    - a bare path is SQLite when it names an existing file or ends in .db/.sqlite/.sqlite3;
    - anything else (an unknown scheme, a malformed URL, a port that is not a number) raises
      :class:`DatabaseUrlError` with a one-line message that lists what is supported.
    """
    url = url.strip()
    if not url:
        raise DatabaseUrlError(f"empty database URL; {SUPPORTED_URLS}")
    if "\n" in url or "\r" in url or "\x00" in url:
        raise DatabaseUrlError(f"the database URL holds a control character; {SUPPORTED_URLS}")
    if "://" not in url:
        if Path(url).is_file() or url.lower().endswith(SQLITE_SUFFIXES):
            return "sqlite:///" + url
        raise DatabaseUrlError(
            f"'{_mask_bare(url)}' is not a database URL, nor an existing file; {SUPPORTED_URLS}"
        )
    scheme, rest = url.split("://", 1)
    canonical = _SCHEMES.get(scheme.lower())
    if canonical is None:
        shown = scheme if re.fullmatch(r"[A-Za-z][\w+.-]{0,40}", scheme) else "?"
        raise DatabaseUrlError(f"unsupported database URL scheme '{shown}://'; {SUPPORTED_URLS}")
    userinfo, host_rest = _split_userinfo(rest)
    if userinfo is not None and "@" in userinfo:
        user, colon, password = userinfo.partition(":")
        # Typed raw (it holds a raw '@'), so every character is literal: encode all of them.
        userinfo = quote(user, safe="") + colon + quote(password, safe="")
        rest = f"{userinfo}@{host_rest}"
    normalized = f"{canonical}://{rest}"
    _check_parses(normalized, shown=mask_url(url))
    return normalized


def _check_parses(url: str, *, shown: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(f"malformed database URL {shown}; {SUPPORTED_URLS}") from None
    except ValueError:  # the only int() in SQLAlchemy's parser is the port's
        raise DatabaseUrlError(
            f"malformed database URL {shown}: the port is not a number; {SUPPORTED_URLS}"
        ) from None
    if parsed.get_backend_name() == "sqlite" and (
        parsed.host or parsed.username or parsed.password or parsed.port
    ):
        # sqlite://x.db parses as an in-memory database on "host" x.db: results would vanish.
        raise DatabaseUrlError(
            f"malformed SQLite URL {shown}: a file needs three slashes, "
            f"sqlite:///{parsed.host or 'FILE'} (four for an absolute path)"
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise DatabaseUrlError(
            f"malformed database URL {shown}: port {parsed.port} is outside 1..65535; "
            f"{SUPPORTED_URLS}"
        )


def sqlite_file(url: str) -> Path | None:
    """The file an SQLite URL names; None for in-memory databases and other engines."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database
    if not db or db == ":memory:" or parsed.query.get("mode") == "memory" or db.startswith("file:"):
        return None
    return Path(db)


# --- password masking --------------------------------------------------------------------------

_MASK = "***"
# scheme://[user]:PASSWORD@host -- the password may hold raw '@': it runs to the last '@' whose
# host part (up to '/', '?', a quote or a space) holds no further '@'.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][\w+.-]*://[^\s:/?#@'\"]*:)(?P<pw>\S*?)@(?=[^\s@/?'\"]*(?:[\s/?'\"]|$))"
)
# password=..., sslpassword=... in query strings and libpq key=value DSNs (quoted or not), and
# 'password': '...' in a printed dict
_KV_PASSWORD = re.compile(
    r"(?P<head>(?i:\b(?:ssl)?password|\bpgpassword)\s*=\s*)"
    r"(?P<val>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s&]*)"
)
_DICT_PASSWORD = re.compile(
    r"(?P<head>(?P<q>['\"])(?i:(?:ssl)?password)(?P=q)\s*:\s*)"
    r"(?P<val>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s,}]*)"
)
# Passwords the patterns cannot delimit (a raw space or quote in a URL) are removed literally.
_SECRETS: set[str] = set()


def register_secret(password: str | None) -> None:
    """Remember a password so that :func:`mask_url` removes it from any text, literally.

    Only passwords with a character outside letters and digits are removed literally: the
    patterns find every password where it can be delimited, and a plain word (``postgres``) as
    a literal would also disfigure the scheme and user names around it.
    """
    if not password or len(password) < 4 or password.isalnum():
        return
    _SECRETS.update({password, quote(password, safe=""), quote_plus(password)})


def mask_url(text: str) -> str:
    """``text`` with every database password replaced by ``***``, for messages and logs.

    Covers URLs (raw ``@`` or percent-encoded passwords, with or without a user name), also
    inside a longer message; ``password=``/``sslpassword=`` in query strings and key=value DSNs
    (quoted or not); and every password registered with :func:`register_secret`.
    """
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{_MASK}@", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m['head']}{_MASK}", text)
    return _DICT_PASSWORD.sub(lambda m: f"{m['head']}{m['q']}{_MASK}{m['q']}", text)


class Settings(BaseSettings):
    """Every setting glassbench reads from the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_SQLITE_FILE}",
        description=(
            "Database URL: sqlite:///FILE (a bare path ending in .db/.sqlite/.sqlite3, or naming "
            "an existing file, is SQLite too) or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB; "
            "default ./glassbench.db (SQLite)."
        ),
    )
    sqlite_busy_timeout_ms: int = Field(
        default=30_000, ge=0, description="How long an SQLite writer waits for a lock, in ms."
    )
    thermo_batch_rows: int = Field(
        default=500, ge=1, description="Thermo rows buffered by a runner before one bulk write."
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
    sql_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Statement timeout of `glassbench sql` on both engines, in s (--timeout).",
    )
    connect_timeout_s: int = Field(
        default=10,
        ge=1,
        le=3600,
        description="How long a PostgreSQL connection attempt may take, in s.",
    )
    campaign_max_runs: int = Field(
        default=10_000,
        ge=1,
        description="Largest campaign matrix `campaign run` starts without --yes.",
    )

    @field_validator("database_url")
    @classmethod
    def _normalize(cls, v: str) -> str:
        return normalize_database_url(v)


def settings_or_defaults() -> Settings:
    """Settings from the environment, or the defaults when a variable is bad.

    For code that needs one value where no settings were handed in (an engine built by a
    campaign worker, the library's SQL timeout): a bad variable is reported where settings are
    loaded for real (the CLI, ``api.connect``), not by whichever helper read it first.
    """
    try:
        return Settings()
    except ValidationError:
        return Settings.model_construct()


def env_name(field: str) -> str:
    """The environment variable of a setting: ``threads`` -> ``GLASSBENCH_THREADS``."""
    return ENV_PREFIX + field.upper()


def get_settings(*, url_label: str | None = None, **overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides (None values ignored).

    A bad value is one ``BadInput`` naming each bad setting: a variable by its name
    (``GLASSBENCH_THREADS``), an override by its field (``database_url``). ``url_label`` names
    the database URL instead: the CLI passes ``database_url`` (shown as ``--db``) for a typed
    URL, or the variable the option was read from.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    labels = {k: k for k in clean}
    if url_label is not None:
        labels["database_url"] = url_label
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise _settings_error(exc, labels) from None


def _settings_error(exc: ValidationError, labels: dict[str, str]) -> Exception:
    from glassbench.errors import BadInput

    parts = [_describe_error(err, labels) for err in exc.errors()]
    label, first = parts[0]
    rest = "".join(f"; {lab}: {msg}" for lab, msg in parts[1:])
    return BadInput(first + rest, field=label)


def _describe_error(err: Any, labels: dict[str, str]) -> tuple[str, str]:
    loc = err.get("loc") or ("?",)
    name = str(loc[0])
    label = labels.get(name, env_name(name))
    if name == "database_url":
        cause = (err.get("ctx") or {}).get("error")
        # DatabaseUrlError messages are written to be shown (password masked); pydantic's own
        # would echo the input.
        msg = str(cause) if isinstance(cause, ValueError) else "not a database URL"
        return label, mask_url(msg)
    shown = mask_url(repr(err.get("input")))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    msg = str(err.get("msg", "invalid value"))
    msg = msg[:1].lower() + msg[1:]
    return label, f"{msg} (got {shown})"
