"""Invariant 8 for configuration: hostile URLs and cron strings fail at ``App(...)``.

``App(...)`` never connects; a URL it cannot use must be refused right there
with :class:`errands.ConfigError`, never later as some other exception from a
driver. Cron entries are checked at ``App(cron=[...])`` the same way, quickly
whatever the string.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import errands
from tests.support import POSTGRES_URL

GARBAGE_URLS = [
    "",
    "   ",
    "nonsense",
    "://",
    "sqlite:",
    "sqlite://",
    "sqlite:///",
    "mysql://root@localhost/db",
    "http://example.com/db",
    "postgresql://",
    "postgresql:///db",
    "postgresql://[::1/db",
    "postgresql://u@h:99999/db",
    "postgresql://u@h:-1/db",
    "postgresql://u@h:port/db",
    "sqlite:///x.db?mode=evil",
    "sqlite:///x.db?busy_timeout=-1",
    "sqlite:///x.db?busy_timeout=nan",
    "sqlite:///x.db?busy_timeout=inf",
    "sqlite:///x.db?journal_mode=off",
    "sqlite:///x.db?busy_timeout=1e999",
]


@pytest.mark.parametrize("url", GARBAGE_URLS)
def test_garbage_urls_fail_at_app(url: str) -> None:
    with pytest.raises(errands.ConfigError):
        errands.App(url)


@pytest.mark.parametrize("url", [123, b"sqlite:///x.db", ["sqlite:///x.db"], object()])
def test_non_string_urls_fail_at_app(url: Any) -> None:
    with pytest.raises(errands.ConfigError):
        errands.App(url)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{tmp}/jobs\x00.db",
        "sqlite:///{tmp}/a\x00/../../evil.db",
        "postgresql://postgres@127.0.0.1:5432/te\x00st",
        "postgresql://postgres@127.0.0.1:5432/test?application_name=x\x00y",
    ],
    ids=["sqlite-nul", "sqlite-nul-traversal", "postgres-nul-dbname", "postgres-nul-query"],
)
def test_urls_with_nul_fail_at_app(url: str, tmp_path: Path) -> None:
    """No file name or connection string can hold a NUL: SQLite would cut the path at it."""
    with pytest.raises(errands.ConfigError):
        errands.App(url.format(tmp=tmp_path))
    assert list(tmp_path.iterdir()) == [], "a file was created from a URL with a NUL in it"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@" + "h" * 64 + ".example/test",  # a DNS label > 63 bytes
        "postgresql://postgres@" + "h" * 300 + "/test",
        "postgresql://postgres@" + ".".join(["a" * 60] * 100) + "/test",
        "sqlite:///" + "a" * 100_000 + ".db",
        "sqlite:///" + "/".join(["d" * 200] * 30) + ".db",
    ],
    ids=["dns-label-64", "host-300", "host-6000", "sqlite-100k", "sqlite-deep"],
)
def test_enormous_urls_fail_cleanly(url: str) -> None:
    """Refused at App(), or at first use as a DatabaseError: never a stray driver exception."""
    try:
        app = errands.App(url, auto_migrate=True)
    except errands.ConfigError:
        return
    try:
        app.migrate()
    except errands.ConfigError:
        return
    except errands.DatabaseError:
        return
    finally:
        app.close()
    pytest.fail(f"an enormous URL ({len(url)} characters) worked: {url[:60]}...")


def test_injection_like_sqlite_path_is_just_a_file_name(tmp_path: Path) -> None:
    """Quotes and SQL in the path name a file; they are never executed."""
    victim = errands.App(f"sqlite:///{tmp_path}/victim.db")
    victim.migrate()
    victim.close()
    name = "x.db'; DROP TABLE errands_jobs; --"
    app = errands.App(f"sqlite:///{tmp_path}/{name}")

    @app.job(name="hostile.noop")
    def noop() -> int:
        return 1

    noop.enqueue()
    assert app.drain() == {"completed": 1}
    app.close()
    assert (tmp_path / name).exists()
    with sqlite3.connect(tmp_path / "victim.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "errands_jobs" in tables


def test_injection_like_postgres_url_executes_nothing() -> None:
    """A database name full of SQL is a name: the connection fails, nothing runs."""
    url = POSTGRES_URL + "'; DROP SCHEMA public CASCADE; --"
    try:
        app = errands.App(url)
    except errands.ConfigError:
        return
    with pytest.raises(errands.DatabaseError):
        app.migrate()
    app.close()
    with psycopg.connect(POSTGRES_URL) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'public'").fetchone()
    assert row is not None and row[0] == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    url=st.one_of(
        st.text(st.characters(codec=None), max_size=60),
        st.builds(
            lambda scheme, rest: scheme + rest,
            st.sampled_from(
                ["sqlite:///", "sqlite://", "postgresql://", "postgres://", "SQLITE:///"]
            ),
            st.text(st.characters(codec=None), max_size=60),
        ),
    )
)
def test_any_url_gives_an_app_or_a_config_error(url: str) -> None:
    """Whatever the string, ``App(url)`` gives an App or a ConfigError (it never connects)."""
    try:
        app = errands.App(url)
    except errands.ConfigError as exc:
        assert str(exc)
        return
    assert app.database_url.dialect in ("sqlite", "postgres")
    assert "\x00" not in url, f"App accepted a URL with a NUL: {url!r}"


# -- cron -------------------------------------------------------------------------------
HOSTILE_CRON = [
    "",
    " ",
    "* * * *",
    "* * * * * *",
    "60 * * * *",
    "* 24 * * *",
    "* * 32 * *",
    "* * * 13 *",
    "* * * * 8",
    "*/0 * * * *",
    "-1 * * * *",
    "1-0-3 * * * *",
    "0 0 30 2 *",  # February 30th: never fires
    "0 0 31 4,6,9,11 *",
    "H * * * *",
    "R R * * *",
    "@every 5m",
    "@reboot",
    "@",
    "* * * * MON-",
    "* * * * 5#9",
    "0 0 L-40 * *",
    "\x00 * * * *",
    "* * * * *\x00",
    "\ud800 * * * *",
    "*/1" * 10_000 + " * * * *",
    ",".join(str(i) for i in range(60)) * 1000 + " * * * *",
    "* * * * * ; rm -rf /",
    "'; DROP TABLE errands_cron_slots; -- * * * *",
]


@pytest.mark.parametrize("expression", HOSTILE_CRON, ids=range(len(HOSTILE_CRON)))
def test_hostile_cron_expressions_fail_at_app(expression: str) -> None:
    began = time.monotonic()
    with pytest.raises(errands.ConfigError):
        errands.App("sqlite:///:memory:", cron=[(expression, "hostile.noop")])
    assert time.monotonic() - began < 2.0, "checking one cron expression took over 2 s"


@pytest.mark.parametrize(
    "timezone",
    [
        "",
        "Mars/Olympus",
        "../../../../etc/passwd",
        "/etc/localtime",
        "UTC\x00",
        "\ud800",
        "x" * 10_000,
        5,
    ],
)
def test_hostile_cron_timezones_fail_at_app(timezone: Any) -> None:
    with pytest.raises(errands.ConfigError):
        errands.App("sqlite:///:memory:", cron=[("* * * * *", "w", {"timezone": timezone})])


@pytest.mark.parametrize(
    "cron",
    ["* * * * *", {"* * * * *": "w"}, [("* * * * *",)], [("* * * * *", "w", "opts")], [None], 5],
)
def test_malformed_cron_lists_fail_at_app(cron: Any) -> None:
    with pytest.raises(errands.ConfigError):
        errands.App("sqlite:///:memory:", cron=cron)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expression=st.one_of(
        st.text(st.sampled_from("0123456789*/-,LW#?@ MONTUEJANDECHR"), max_size=40),
        st.text(st.characters(codec=None), max_size=30),
    )
)
def test_any_cron_string_gives_an_app_or_a_config_error_fast(expression: str) -> None:
    began = time.monotonic()
    try:
        errands.App("sqlite:///:memory:", cron=[(expression, "hostile.noop")])
    except errands.ConfigError as exc:
        assert str(exc)
    assert time.monotonic() - began < 2.0, f"checking {expression!r} took over 2 s"
