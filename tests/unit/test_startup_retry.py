"""Start-up retry: which errors mean "the database cannot be reached", and the retry loop."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.errors
import pytest
from psycopg_pool import PoolTimeout

from errands.errors import ConfigError, DatabaseError, SchemaError
from errands.runtime.startup import (
    FIRST_DELAY,
    MAX_DELAY,
    is_connection_failure,
    start_when_reachable,
)

REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'
)


def wrapped(cause: BaseException, message: str = "cannot connect to PostgreSQL") -> BaseException:
    """``DatabaseError(message)`` raised from ``cause``, as the engines raise it."""
    try:
        raise DatabaseError(message) from cause
    except DatabaseError as exc:
        return exc


def schema_error_from(cause: BaseException) -> BaseException:
    try:
        raise SchemaError("schema version 0, this code needs 4: run `errands migrate`") from cause
    except SchemaError as exc:
        return exc


# -- is_connection_failure --------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        wrapped(psycopg.OperationalError(REFUSED)),
        wrapped(psycopg.OperationalError("failed to resolve host 'db': Name or service not known")),
        wrapped(psycopg.OperationalError("connection timeout expired")),
        wrapped(PoolTimeout("couldn't get a connection after 30.00 sec")),
        wrapped(psycopg.OperationalError("FATAL:  the database system is starting up")),
        wrapped(psycopg.OperationalError("FATAL:  sorry, too many clients already")),
        wrapped(psycopg.errors.AdminShutdown("terminating connection due to administrator")),
        wrapped(psycopg.errors.CannotConnectNow("the database system is shutting down")),
        psycopg.OperationalError(REFUSED),  # unwrapped, too
    ],
    ids=[
        "refused",
        "dns",
        "timeout",
        "pool-timeout",
        "starting-up",
        "too-many-clients",
        "admin-shutdown",
        "cannot-connect-now",
        "raw-driver-error",
    ],
)
def test_connection_failures_are_recognised(exc: BaseException) -> None:
    assert is_connection_failure(exc)


@pytest.mark.parametrize(
    "exc",
    [
        SchemaError("schema version 0, this code needs 4: run `errands migrate`"),
        schema_error_from(psycopg.OperationalError(REFUSED)),
        ConfigError("unknown queue 'x'"),
        DatabaseError("SQLite '/x/jobs.db': opening failed: unable to open database file"),
        wrapped(sqlite3.OperationalError("unable to open database file")),
        wrapped(psycopg.OperationalError('FATAL:  database "nosuch" does not exist')),
        wrapped(psycopg.OperationalError('FATAL:  password authentication failed for user "a"')),
        wrapped(psycopg.OperationalError('FATAL:  role "nobody" does not exist')),
        wrapped(psycopg.errors.LockNotAvailable("could not obtain lock")),
        wrapped(psycopg.errors.UndefinedTable('relation "x" does not exist')),
        RuntimeError("this app is already running; call stop() first"),
    ],
    ids=[
        "schema",
        "schema-with-driver-cause",
        "config",
        "sqlite-message",
        "sqlite-cause",
        "missing-database",
        "bad-password",
        "missing-role",
        "lock-timeout",
        "sql-error",
        "not-a-database-error",
    ],
)
def test_other_errors_are_not_connection_failures(exc: BaseException) -> None:
    assert not is_connection_failure(exc)


# -- start_when_reachable ---------------------------------------------------------------


def unreachable() -> BaseException:
    return wrapped(psycopg.OperationalError(REFUSED), "cannot connect to PostgreSQL at 'x'")


class FlakyStart:
    """An async start() that fails ``failures`` times with ``error``, then returns "node"."""

    def __init__(self, failures: int, error: Callable[[], BaseException] = unreachable) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        return "node"


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    records = caplog.records
    return [r for r in records if r.name == "errands.startup" and r.levelno == logging.WARNING]


def test_default_backoff_is_half_a_second_doubling_to_ten() -> None:
    assert (FIRST_DELAY, MAX_DELAY) == (0.5, 10.0)


def test_retries_with_doubling_capped_delays_until_started(
    caplog: pytest.LogCaptureFixture, arun: Callable[..., Any]
) -> None:
    start = FlakyStart(failures=4)
    caplog.set_level(logging.INFO, logger="errands.startup")
    result = arun(start_when_reachable(start, asyncio.Event(), first_delay=0.01, max_delay=0.04))
    assert result == "node"
    assert start.calls == 5
    warnings = retry_warnings(caplog)
    assert [r.args[1] for r in warnings] == [0.01, 0.02, 0.04, 0.04]  # type: ignore[index]
    assert [r.args[0] for r in warnings] == [1, 2, 3, 4]  # type: ignore[index]
    message = warnings[0].getMessage()
    assert "cannot reach the database at start-up" in message
    assert "retrying in" in message and "cannot connect to PostgreSQL at 'x'" in message
    reached = "database reached after 4 failed attempt(s)"
    assert any(reached in r.getMessage() for r in caplog.records)


def test_other_errors_are_raised_at_once(
    caplog: pytest.LogCaptureFixture, arun: Callable[..., Any]
) -> None:
    start = FlakyStart(failures=1, error=lambda: SchemaError("run `errands migrate`"))
    with pytest.raises(SchemaError, match="errands migrate"):
        arun(start_when_reachable(start, asyncio.Event(), first_delay=0.01))
    assert start.calls == 1
    assert retry_warnings(caplog) == []


def test_stop_during_the_wait_returns_none_promptly(arun: Callable[..., Any]) -> None:
    start = FlakyStart(failures=10**6)

    async def scenario() -> tuple[object, float]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        began = time.monotonic()
        result = await start_when_reachable(start, stop, first_delay=60.0)
        return result, time.monotonic() - began

    result, took = arun(scenario(), timeout=20)
    assert result is None
    assert start.calls == 1
    assert took < 10


def test_stop_during_a_hanging_attempt_cancels_it(arun: Callable[..., Any]) -> None:
    cancelled = asyncio.Event()

    async def hanging_start() -> str:
        try:
            await asyncio.sleep(3600)  # a connect that hangs until the driver's timeout
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "node"

    async def scenario() -> tuple[object, bool]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        result = await start_when_reachable(hanging_start, stop)
        return result, cancelled.is_set()

    assert arun(scenario(), timeout=10) == (None, True)


def test_already_stopped_never_starts(arun: Callable[..., Any]) -> None:
    start = FlakyStart(failures=0)

    async def scenario() -> object:
        stop = asyncio.Event()
        stop.set()
        return await start_when_reachable(start, stop)

    assert arun(scenario()) is None
    assert start.calls == 0
