"""Database URLs and settings (issue 17): passwords masked in every form a user can type,
unsupported or malformed URLs refused naming the setting, settings errors naming the real
setting, and a PostgreSQL connect timeout that makes an unreachable server fail in seconds."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from glassbench.settings import DatabaseUrlError, mask_url, normalize_database_url
from tests.conftest import postgres_base_url, require_postgres, table_counts
from tests.hardening.conftest import gb_limited

# A password with raw '@' and no run of 3 characters that a message could hold by chance.
RAW = "Qz8@Xv4@Jk"

# --- masking, table-driven ------------------------------------------------------------------

# (text as a message or log may hold it, the secret that must not survive, exact result or None)
MASK_CASES: list[tuple[str, str, str | None]] = [
    (
        "postgresql+psycopg://alice:s3cr3t@db.example:5432/gb",
        "s3cr3t",
        "postgresql+psycopg://alice:***@db.example:5432/gb",
    ),
    ("postgresql://u:p@ss@host/db", "p@ss", "postgresql://u:***@host/db"),
    ("postgresql://u:Qz8@Xv4@Jk@127.0.0.1:5999/db", RAW, "postgresql://u:***@127.0.0.1:5999/db"),
    ("postgresql://u:p%40ss%2Fw@host/db", "p%40ss%2Fw", "postgresql://u:***@host/db"),
    ("postgres://:secret@host/db", "secret", "postgres://:***@host/db"),
    ("postgresql+psycopg://:p@ss@host:1/db", "p@ss", "postgresql+psycopg://:***@host:1/db"),
    ("postgresql://u:a/b:c@host/db", "a/b:c", "postgresql://u:***@host/db"),
    (
        "postgresql://u@[::1]:5432/db?password=k3y",
        "k3y",
        "postgresql://u@[::1]:5432/db?password=***",
    ),
    (
        "postgresql://u@h/db?sslmode=require&password=p@ss&application_name=x",
        "p@ss",
        "postgresql://u@h/db?sslmode=require&password=***&application_name=x",
    ),
    ("postgresql://u@h/db?sslpassword=c3rtkey", "c3rtkey", "postgresql://u@h/db?sslpassword=***"),
    ("postgresql://u:one@h/db?password=two", "two", "postgresql://u:***@h/db?password=***"),
    (
        "Error: cannot open database postgresql://u:Qz8@Xv4@Jk@10.0.0.1:5432/db: timeout",
        RAW,
        "Error: cannot open database postgresql://u:***@10.0.0.1:5432/db: timeout",
    ),
    (
        'connection to "postgresql://u:pw9x@h/db" failed',
        "pw9x",
        'connection to "postgresql://u:***@h/db" failed',
    ),
    ("(postgresql://u:pw9x@h)", "pw9x", "(postgresql://u:***@h)"),
    # key=value DSNs, as drivers and SQLAlchemy echo them
    (
        "host=127.0.0.1 port=5999 user=u password=secret dbname=x",
        "secret",
        "host=127.0.0.1 port=5999 user=u password=*** dbname=x",
    ),
    ("host=h password = 'se cr\\'et' dbname=x", "se cr", "host=h password = *** dbname=x"),
    ("dbname=x PASSWORD=Upper5 host=h", "Upper5", "dbname=x PASSWORD=*** host=h"),
    ("user=u sslpassword=k3y host=h", "k3y", "user=u sslpassword=*** host=h"),
    ("{'host': 'h', 'password': 'd1ctpw'}", "d1ctpw", "{'host': 'h', 'password': '***'}"),
    ("PGPASSWORD=envpw1 psql", "envpw1", "PGPASSWORD=*** psql"),
]

# Text that holds no password must come back unchanged.
UNCHANGED = [
    "sqlite:///glassbench.db",
    "sqlite:////abs/path/x.db",
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    'connection to server at "127.0.0.1", port 5999 failed: Connection refused',
    "(Background on this error at: https://sqlalche.me/e/20/e3q8)",
    'password authentication failed for user "u"',
]


@pytest.mark.parametrize(("text", "secret", "expected"), MASK_CASES)
def test_mask_url_hides_every_form(text: str, secret: str, expected: str | None) -> None:
    masked = mask_url(text)
    assert secret not in masked, masked
    if expected is not None:
        assert masked == expected
    assert mask_url(masked) == masked  # masking is idempotent


@pytest.mark.parametrize("text", UNCHANGED)
def test_mask_url_leaves_other_text(text: str) -> None:
    assert mask_url(text) == text


# --- normalisation ----------------------------------------------------------------------------

NORMALIZED = [
    ("postgres://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db", "p"),
    ("postgresql://u:p@ss@host/db", "postgresql+psycopg://u:p%40ss@host/db", "p@ss"),
    ("postgresql://u:p%40ss@host/db", "postgresql+psycopg://u:p%40ss@host/db", "p@ss"),
    ("postgresql://:s@cret@host/db", "postgresql+psycopg://:s%40cret@host/db", "s@cret"),
    (
        f"postgresql://u:{RAW}@127.0.0.1/db",
        "postgresql+psycopg://u:Qz8%40Xv4%40Jk@127.0.0.1/db",
        RAW,
    ),
    ("postgresql://u:50%@x@h/db", "postgresql+psycopg://u:50%25%40x@h/db", "50%@x"),
    ("POSTGRESQL://u@h/db", "postgresql+psycopg://u@h/db", None),
    ("postgresql+psycopg://u@h/db?password=x@y", "postgresql+psycopg://u@h/db?password=x@y", None),
    ("sqlite:///x.db", "sqlite:///x.db", None),
    ("results.db", "sqlite:///results.db", None),
    ("results.SQLite3", "sqlite:///results.SQLite3", None),
    ("sqlite://", "sqlite://", None),
]


@pytest.mark.parametrize(("given", "expected", "password"), NORMALIZED)
def test_normalize_keeps_the_password_whole(
    given: str, expected: str, password: str | None
) -> None:
    url = normalize_database_url(given)
    assert url == expected
    assert normalize_database_url(url) == url
    assert make_url(url).password == password
    if password is not None:
        assert make_url(url).host in {"h", "host", "127.0.0.1"}


BAD_URLS = [
    ("mysql://u:pw@x/y", "unsupported database URL scheme 'mysql://'"),
    ("postgresq://x/y", "unsupported database URL scheme 'postgresq://'"),
    ("sqlit:///x", "unsupported database URL scheme 'sqlit://'"),
    ("postgresql://host:notaport/db", "the port is not a number"),
    ("postgresql://host:70000/db", "port 70000 is outside 1..65535"),
    ("sqlite://x.db", "a file needs three slashes, sqlite:///x.db"),
    ("notaurl", "'notaurl' is not a database URL, nor an existing file"),
    ("u:pw@host/db", "'***@host/db' is not a database URL"),
    ("   ", "empty database URL"),
]


@pytest.mark.parametrize(("given", "reason"), BAD_URLS)
def test_bad_urls_refused_by_normalize(given: str, reason: str) -> None:
    with pytest.raises(DatabaseUrlError) as bad:
        normalize_database_url(given)
    assert reason in str(bad.value)
    assert "pw" not in str(bad.value)


def test_bare_path_of_an_existing_file_is_sqlite(tmp_path: Path) -> None:
    f = tmp_path / "results"
    f.write_bytes(b"")
    assert normalize_database_url(str(f)) == f"sqlite:///{f}"
    with pytest.raises(DatabaseUrlError):
        normalize_database_url(str(tmp_path / "missing"))


# --- the CLI: bad URLs and settings name the setting, exit 2, nothing created ----------------


def _invoke(args: list[str], env: Mapping[str, str | None] | None = None) -> Result:
    from glassbench.cli import cli

    base: dict[str, str | None] = {"GLASSBENCH_DATABASE_URL": None, "GLASSBENCH_THREADS": None}
    return CliRunner().invoke(cli, args, env={**base, **(env or {})}, catch_exceptions=False)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    # A refused URL never becomes a file (`notaurl`, `sqlite://x.db`, the default database).
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(("given", "reason"), [b for b in BAD_URLS if b[0].strip()])
@pytest.mark.parametrize("command", [["db", "current"], ["db", "upgrade"], ["sql", "SELECT 1"]])
def test_bad_url_on_the_command_line(
    in_tmp: Path, given: str, reason: str, command: list[str]
) -> None:
    for args, env, label in (
        (["--db", given, *command], {}, "--db: "),
        (command, {"GLASSBENCH_DATABASE_URL": given}, "GLASSBENCH_DATABASE_URL: "),
    ):
        res = _invoke(args, env)
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1, res.output
        assert lines[0].startswith(f"Error: {label}") and reason in lines[0], lines[0]
        assert "supported: sqlite:///FILE" in lines[0] or "three slashes" in lines[0]
        assert "Error" not in lines[0][len("Error: ") :], lines[0]  # no ValueError & co.
        assert ":pw@" not in lines[0]


SETTINGS_ERRORS = [
    ({"GLASSBENCH_THREADS": "abc"}, "GLASSBENCH_THREADS: input should be a valid integer"),
    ({"GLASSBENCH_THREADS": "-1"}, "GLASSBENCH_THREADS: input should be greater than or equal"),
    ({"GLASSBENCH_CONNECT_TIMEOUT_S": "0"}, "GLASSBENCH_CONNECT_TIMEOUT_S: input should be"),
    ({"GLASSBENCH_SQL_TIMEOUT_S": "soon"}, "GLASSBENCH_SQL_TIMEOUT_S: input should be a valid"),
    ({"GLASSBENCH_SQLITE_BUSY_TIMEOUT_MS": "-5"}, "GLASSBENCH_SQLITE_BUSY_TIMEOUT_MS: input"),
    ({"GLASSBENCH_CAMPAIGN_MAX_RUNS": "many"}, "GLASSBENCH_CAMPAIGN_MAX_RUNS: input should be"),
]


@pytest.mark.parametrize(("env", "message"), SETTINGS_ERRORS)
def test_settings_errors_name_the_variable(
    engine: Any, db_url: str, env: dict[str, str], message: str
) -> None:
    before = table_counts(engine)
    for args in (["mlip", "add", "m", "--arch", "chgnet"], ["db", "current"]):
        res = _invoke(["--db", db_url, *args], env)
        assert res.exit_code == 2, res.output
        line = res.output.strip()
        assert len(line.splitlines()) == 1 and line.startswith(f"Error: {message}"), line
        assert "--db" not in line and "database URL" not in line
    assert table_counts(engine) == before


def test_several_bad_settings_in_one_line(in_tmp: Path) -> None:
    res = _invoke(
        ["db", "current"],
        {"GLASSBENCH_DATABASE_URL": "mysql://u:pw@h/d", "GLASSBENCH_THREADS": "x"},
    )
    assert res.exit_code == 2
    line = res.output.strip()
    assert len(line.splitlines()) == 1
    assert "GLASSBENCH_DATABASE_URL: unsupported" in line and "; GLASSBENCH_THREADS: " in line


def test_api_connect_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from glassbench import api

    with pytest.raises(api.BadInput) as bad:
        api.connect("mysql://u:pw@h/d")
    assert bad.value.field == "database_url" and "pw" not in str(bad.value)
    monkeypatch.setenv("GLASSBENCH_DATABASE_URL", "notaurl")
    with pytest.raises(api.BadInput) as bad:
        api.connect()
    assert bad.value.field == "GLASSBENCH_DATABASE_URL"
    monkeypatch.setenv("GLASSBENCH_DATABASE_URL", str(tmp_path / "x.db"))
    monkeypatch.setenv("GLASSBENCH_THREADS", "abc")
    with pytest.raises(api.BadInput) as bad:
        api.connect()
    assert str(bad.value).startswith("GLASSBENCH_THREADS: ")
    assert not (tmp_path / "x.db").exists()


# --- unreachable PostgreSQL: connect timeout, one line, host and port, password masked --------


def _pg_url(password: str, port: int, host: str = "127.0.0.1") -> str:
    base = make_url(postgres_base_url())
    return f"postgresql://{base.username or 'postgres'}:{password}@{host}:{port}/{base.database}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that completes the TCP handshake (listen backlog) and then never answers: a
    server that hangs. Without a connect timeout libpq waits forever."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def _substrings(secret: str, n: int = 3) -> set[str]:
    return {
        secret[i : i + k] for k in range(n, len(secret) + 1) for i in range(len(secret) - k + 1)
    }


def _no_part_of(secret: str, text: str) -> None:
    leaked = sorted(s for s in _substrings(secret) if s in text)
    assert not leaked, f"password fragments {leaked} in: {text}"


READ_COMMANDS = [
    ["db", "current"],
    ["db", "check"],
    ["db", "upgrade"],
    ["mlip", "list"],
    ["sql", "SELECT 1"],
    ["report", "generate", "--out", "r"],
]


@pytest.mark.parametrize("args", READ_COMMANDS)
def test_raw_at_password_to_a_closed_port(tmp_path: Path, args: list[str]) -> None:
    port = _closed_port()
    url = _pg_url(RAW, port)
    for db, env, flags in (
        (url, {}, []),
        (None, {"GLASSBENCH_DATABASE_URL": url}, []),
        (url, {}, ["-v"]),
    ):
        proc = gb_limited(db, *flags, *args, cwd=tmp_path, env=env, timeout=60)
        text = proc.stdout + proc.stderr
        assert proc.returncode == 1, text
        _no_part_of(RAW, text)
        # -v adds debug log lines (masked too), never a second error line
        lines = [ln for ln in text.strip().splitlines() if "-v" not in flags or "Error" in ln]
        assert len(lines) == 1, text
        assert f"cannot connect to the database server at 127.0.0.1:{port}" in lines[0]
        assert ":***@127.0.0.1" in lines[0]


def test_connect_timeout_makes_a_silent_server_fail(tmp_path: Path, silent_server: int) -> None:
    url = _pg_url(RAW, silent_server)
    # A hang would end in TimeoutExpired: libpq's own default is to wait forever.
    proc = gb_limited(
        url, "mlip", "list", cwd=tmp_path, env={"GLASSBENCH_CONNECT_TIMEOUT_S": "2"}, timeout=30
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert text.strip() == (
        f"Error: cannot connect to the database server at 127.0.0.1:{silent_server} "
        f"(postgresql+psycopg://{make_url(url).username}:***@127.0.0.1:{silent_server}/"
        f"{make_url(url).database}): connection timeout expired after 2 s "
        "(GLASSBENCH_CONNECT_TIMEOUT_S)"
    )


def test_connect_timeout_reaches_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    """The setting is what the driver receives, unless the URL sets its own."""
    require_postgres()
    from sqlalchemy import event

    from glassbench.service.db import make_engine
    from glassbench.settings import get_settings

    seen: list[dict[str, Any]] = []

    def record(engine: Any) -> None:
        @event.listens_for(engine, "do_connect")
        def _seen(_d: Any, _r: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
            seen.append(dict(cparams))

    monkeypatch.setenv("GLASSBENCH_CONNECT_TIMEOUT_S", "7")
    for url, expected in (
        (postgres_base_url(), 7),
        (postgres_base_url() + "?connect_timeout=3", "3"),
    ):
        settings = get_settings(database_url=url)
        eng = make_engine(settings.database_url, settings=settings)
        record(eng)
        with eng.connect():
            pass
        eng.dispose()
        assert seen[-1]["connect_timeout"] == expected
    # Built without settings (campaign workers), the environment still applies.
    eng = make_engine(postgres_base_url())
    record(eng)
    with eng.connect():
        pass
    eng.dispose()
    assert seen[-1]["connect_timeout"] == 7


def test_working_session_with_raw_at_password(pg_url: str, tmp_path: Path) -> None:
    """Trust auth ignores the password: a raw-@ password must reach the server intact (the
    host is not mangled) and never show in the output."""
    from tests.conftest import Cli

    url = pg_url.replace("://postgres@", f"://postgres:{RAW}@", 1)
    assert RAW in url
    gb = Cli(url)
    outs = [
        gb.ok("db", "upgrade").output,
        gb.ok("db", "current").output,
        gb.ok("mlip", "add", "MP0", "--arch", "chgnet").output,
        gb.ok("db", "check").output,
    ]
    for out in outs:
        _no_part_of(RAW, out)
    assert "postgres:***@" in outs[0]


# --- logs -----------------------------------------------------------------------------------


def test_log_records_are_masked() -> None:
    from glassbench.cli import MaskingFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskingFilter())
    log = logging.getLogger("glassbench.test_urls")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("worker connects to %s", f"postgresql://u:{RAW}@h/db")
        log.warning("dsn host=h password=%s dbname=d", "k3yk3y")
        log.warning("plain message with %d args", 2)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    text = stream.getvalue()
    _no_part_of(RAW, text)
    assert "k3yk3y" not in text
    assert "postgresql://u:***@h/db" in text and "plain message with 2 args" in text


def test_existing_file_that_is_not_a_database(in_tmp: Path) -> None:
    (in_tmp / "notes.csv").write_text("a,b\n1,2\n")
    (in_tmp / "folder.db").mkdir()
    for db, reason in (
        ("notes.csv", "--db: notes.csv is not an SQLite database (file is not a database)"),
        (f"sqlite:///{in_tmp / 'notes.csv'}", "is not an SQLite database"),
        ("sqlite:///folder.db", "--db: folder.db is not a file (an SQLite database)"),
    ):
        for args in (["db", "current"], ["db", "upgrade"], ["sql", "SELECT 1"]):
            res = _invoke(["--db", db, *args])
            assert res.exit_code == 2, res.output
            assert len(res.output.strip().splitlines()) == 1 and reason in res.output, res.output
    assert (in_tmp / "notes.csv").read_text() == "a,b\n1,2\n"
    # no -wal/-shm files or anything else beside them
    assert sorted(p.name for p in in_tmp.iterdir()) == ["folder.db", "notes.csv"]
    (in_tmp / "notes.csv").unlink()  # the fixture checks that the folder is left empty
    (in_tmp / "folder.db").rmdir()
