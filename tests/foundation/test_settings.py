from __future__ import annotations

import pytest

from glassbench.settings import get_settings, mask_url, normalize_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("results.db", "sqlite:///results.db"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
    ],
)
def test_normalize_database_url(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


def test_mask_url_hides_password() -> None:
    masked = mask_url("postgresql+psycopg://alice:s3cr3t@db.example:5432/gb")
    assert "s3cr3t" not in masked
    assert masked == "postgresql+psycopg://alice:***@db.example:5432/gb"
    assert mask_url("sqlite:///glassbench.db") == "sqlite:///glassbench.db"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLASSBENCH_DATABASE_URL", raising=False)
    assert get_settings().database_url == "sqlite:///glassbench.db"
    monkeypatch.setenv("GLASSBENCH_DATABASE_URL", "postgres://u@h/db")
    assert get_settings().database_url == "postgresql+psycopg://u@h/db"
    # An explicit value (the --db option) wins over the environment.
    assert get_settings(database_url="x.db").database_url == "sqlite:///x.db"


def test_password_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from glassbench.cli import cli

    url = "postgresql+psycopg://alice:hunter2@127.0.0.1:1/nope?connect_timeout=1"
    res = CliRunner().invoke(cli, ["--db", url, "db", "current"])
    assert res.exit_code == 1
    assert "hunter2" not in res.output
    assert "alice:***@" in res.output


def test_bad_settings_are_bad_input_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from glassbench.errors import BadInput

    monkeypatch.setenv("GLASSBENCH_THREADS", "abc")
    with pytest.raises(BadInput) as bad:
        get_settings()
    assert bad.value.field == "GLASSBENCH_THREADS"
    assert str(bad.value).startswith("GLASSBENCH_THREADS: input should be a valid integer")
    monkeypatch.delenv("GLASSBENCH_THREADS")
    with pytest.raises(BadInput) as bad:
        get_settings(database_url="mysql://u:pw@h/d")
    assert bad.value.field == "database_url" and "pw" not in str(bad.value)
