"""Configuration: database URLs, queue options and Settings, each error naming what is wrong."""

from __future__ import annotations

import math
from typing import Any

import pytest

import errands
from errands.config import (
    DEFAULT_DATABASE_URL,
    QueueConfig,
    Settings,
    mask_url,
    parse_database_url,
    parse_queues,
)
from errands.errors import ConfigError

# -- database URLs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "dialect", "path"),
    [
        ("sqlite:///jobs.db", "sqlite", "jobs.db"),
        ("sqlite:///sub/dir/jobs.db", "sqlite", "sub/dir/jobs.db"),
        ("sqlite:////abs/path/jobs.db", "sqlite", "/abs/path/jobs.db"),
        ("sqlite:///:memory:", "sqlite", ":memory:"),
        ("SQLite:///Upper.db", "sqlite", "Upper.db"),
    ],
)
def test_sqlite_urls(url: str, dialect: str, path: str) -> None:
    parsed = parse_database_url(url)
    assert (parsed.dialect, parsed.path, parsed.url) == (dialect, path, url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:pw@localhost:5432/app",
        "postgresql://localhost/app",
        "postgres://user@db.internal/app",
        "postgresql+psycopg://user@host/app?sslmode=require",
        "postgresql:///app?host=/var/run/postgresql",
    ],
)
def test_postgres_urls(url: str) -> None:
    parsed = parse_database_url(url)
    assert parsed.dialect == "postgres"
    assert parsed.url.startswith("postgresql://")
    assert parsed.url.split("://", 1)[1] == url.split("://", 1)[1]


def test_default_url_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERRANDS_DATABASE_URL", raising=False)
    assert parse_database_url(None).url == DEFAULT_DATABASE_URL == "sqlite:///errands.db"
    monkeypatch.setenv("ERRANDS_DATABASE_URL", "sqlite:///from-env.db")
    assert parse_database_url(None).path == "from-env.db"
    monkeypatch.setenv("ERRANDS_DATABASE_URL", "")
    assert parse_database_url(None).url == DEFAULT_DATABASE_URL
    monkeypatch.setenv("ERRANDS_DATABASE_URL", "mysql://x@y/z")
    with pytest.raises(ConfigError, match="mysql"):
        parse_database_url(None)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        (b"sqlite:///jobs.db", "non-empty"),
        (42, "non-empty"),
        ("jobs.db", "no scheme"),
        ("/var/lib/jobs.db", "no scheme"),
        ("sqlite://", "no file path"),
        ("sqlite:///", "no file path"),
        ("sqlite://relative.db", "no file path"),
        ("mysql://u@h/db", "not supported"),
        ("http://example.com", "not supported"),
        ("postgresql:///app", "names no host"),
        ("postgresql://u@h:notaport/db", "malformed"),
    ],
)
def test_bad_urls(url: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_database_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:s3cretpw@h:notaport/db",
        "postgresql://alice:s3cretpw@[::1/db",
        "mysql://alice:s3cretpw@h/db",
        "postgresql://alice:s3cretpw@/db",
        "oracle://alice:s3cretpw@h:99999/db",
    ],
)
def test_passwords_never_appear_in_errors(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_database_url(url)
    assert "s3cretpw" not in str(info.value)


def test_mask_url() -> None:
    assert mask_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_url("postgresql://u:p%40ss@h:5/db") == "postgresql://u:***@h:5/db"
    assert "pw" not in mask_url("postgresql://u:pw@[::1/db")
    parsed = parse_database_url("postgresql://u:topsecret@h/db")
    assert "topsecret" not in parsed.masked
    assert "topsecret" not in repr(errands.App("postgresql://u:topsecret@h/db"))


# -- queues ------------------------------------------------------------------------


def test_parse_queues_shapes() -> None:
    assert parse_queues(None) == {"default": QueueConfig("default", 10)}
    parsed = parse_queues({"a": 5, "b": {"limit": 2, "paused": True}, "c": {}, "d.e:f-g_1": 1})
    assert parsed["a"] == QueueConfig("a", 5, False)
    assert parsed["b"] == QueueConfig("b", 2, True)
    assert parsed["c"] == QueueConfig("c", 10, False)
    assert parsed["d.e:f-g_1"].limit == 1
    assert parse_queues({}) == {}


@pytest.mark.parametrize(
    ("queues", "fragments"),
    [
        (["default"], ["queues must be a dict"]),
        ("default", ["queues must be a dict"]),
        ({"bad name": 1}, ["queue name", "'bad name'"]),
        ({"": 1}, ["queue name"]),
        ({5: 1}, ["queue name", "5"]),
        ({"x" * 129: 1}, ["queue name"]),
        ({"q": 0}, ["queue 'q' limit", "0"]),
        ({"q": -3}, ["queue 'q' limit", "-3"]),
        ({"q": True}, ["queue 'q' limit", "True"]),
        ({"q": 2.5}, ["queue 'q' limit", "2.5"]),
        ({"q": "10"}, ["queue 'q' limit", "'10'"]),
        ({"q": None}, ["queue 'q' limit", "None"]),
        ({"q": {"limit": 0}}, ["queue 'q' limit"]),
        ({"q": {"limt": 3}}, ["queue 'q'", "unknown option 'limt'", "limit, paused"]),
        ({"q": {"limit": 3, "concurrency": 2}}, ["unknown option 'concurrency'"]),
        ({"q": {"paused": "yes"}}, ["queue 'q' paused", "'yes'"]),
        ({"q": {"paused": 1}}, ["paused must be True or False"]),
    ],
)
def test_bad_queues_name_the_problem(queues: Any, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_queues(queues)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_app_validates_queues_at_construction() -> None:
    with pytest.raises(ConfigError, match="unknown option 'limt'"):
        errands.App("sqlite:///never-created.db", queues={"q": {"limt": 1}})


# -- settings ----------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings()
    assert settings.rescue_after == 30.0
    assert settings.effective_heartbeat == 5.0
    assert Settings(rescue_after=1.0).effective_heartbeat == pytest.approx(0.2)
    assert Settings(rescue_after=10, heartbeat_interval=1).effective_heartbeat == 1
    assert Settings(prune_after=None).prune_after is None


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"rescue_after": 0.1}, "rescue_after"),
        ({"rescue_after": -1}, "rescue_after"),
        ({"rescue_after": math.nan}, "rescue_after"),
        ({"rescue_after": math.inf}, "rescue_after"),
        ({"rescue_after": "30"}, "rescue_after"),
        ({"rescue_after": True}, "rescue_after"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"stage_interval": 0}, "stage_interval"),
        ({"grace_period": -1}, "grace_period"),
        ({"prune_after": -5}, "prune_after"),
        ({"prune_interval": 0}, "prune_interval"),
        ({"prune_limit": 0}, "prune_limit"),
        ({"prune_limit": 1.5}, "prune_limit"),
        ({"heartbeat_interval": 0.01}, "heartbeat_interval"),
        ({"rescue_after": 2, "heartbeat_interval": 2}, "shorter than"),
    ],
)
def test_bad_settings(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings(**options)
    # and the same error from App(...)
    with pytest.raises(ConfigError, match=fragment):
        errands.App("sqlite:///never-created.db", **options)


def test_unknown_app_option_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        errands.App("sqlite:///never-created.db", pol_interval=1)
    message = str(info.value)
    assert "pol_interval" in message
    assert "poll_interval" in message and "grace_period" in message


def test_app_construction_does_not_connect(tmp_path: Any) -> None:
    app = errands.App(f"sqlite:///{tmp_path}/missing-dir/jobs.db")
    assert not (tmp_path / "missing-dir").exists()
    app.close()
    errands.App("postgresql://nobody@127.0.0.1:1/none")  # no connection attempt


def test_schema_option_on_sqlite_is_refused_at_construction() -> None:
    """Invariant 8 / config.py: a bad option fails at App(...), not at first use."""
    with pytest.raises(ConfigError, match="schema"):
        errands.App("sqlite:///never-created.db", schema="myschema")


def test_sqlite_url_options() -> None:
    parsed = parse_database_url("sqlite:///jobs.db?mode=ro&busy_timeout=2.5")
    assert parsed.path == "jobs.db"
    assert dict(parsed.options) == {"mode": "ro", "busy_timeout": "2.5"}
    assert parse_database_url("sqlite:///jobs.db").options == ()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("sqlite:///jobs.db?mode=readonly", "mode must be ro, rw or rwc"),
        ("sqlite:///jobs.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite:///jobs.db?busy_timeout=-1", "busy_timeout"),
        ("sqlite:///jobs.db?busy_timeout=nan", "busy_timeout"),
        ("sqlite:///jobs.db?cache=shared", "unknown SQLite option 'cache'"),
        ("sqlite:///?mode=ro", "no file path"),
    ],
)
def test_bad_sqlite_url_options(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_database_url(url)


@pytest.mark.parametrize("option", ["notify", "synchronous_acks"])
def test_app_flags_must_be_booleans(option: str) -> None:
    with pytest.raises(ConfigError, match=rf"{option} must be True or False, got 'yes'"):
        errands.App("sqlite:///:memory:", **{option: "yes"})
