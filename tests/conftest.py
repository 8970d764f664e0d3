"""Shared test helpers: the ``--engine`` option and polling with deadlines.

Every test that waits for something polls with :func:`wait_for` (or its async
twin :func:`await_until`) instead of sleeping a fixed time, so the suite is as
fast as the code allows and fails with a clear message when it is not.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

#: Every engine the conformance suite knows, in the order they run.
ENGINES = ("sqlite", "postgres")

#: The PostgreSQL server the tests use (trust auth); override with $ERRANDS_TEST_POSTGRES_URL.
POSTGRES_URL = os.environ.get(
    "ERRANDS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine",
        action="store",
        default=None,
        choices=ENGINES,
        help="run the conformance suite against one engine only (default: every engine)",
    )


def selected_engines(config: pytest.Config) -> tuple[str, ...]:
    """The engines chosen with ``--engine`` (all of them when the option is not given)."""
    chosen = config.getoption("--engine")
    return ENGINES if chosen is None else (chosen,)


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    *,
    interval: float = 0.01,
    message: str = "",
) -> T:
    """Call ``predicate`` until it returns something truthy; return that value.

    Raises ``AssertionError`` (naming ``message``) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message or predicate}")
        time.sleep(interval)


async def await_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    *,
    interval: float = 0.01,
    message: str = "",
) -> T:
    """The async twin of :func:`wait_for`: ``predicate`` runs in a thread, off the loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message or predicate}")
        await asyncio.sleep(interval)


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run ``coro`` in a fresh event loop with an overall deadline (no pytest-asyncio)."""

    async def guarded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


# The helpers as fixtures, so test modules need no import path to this file.
@pytest.fixture
def wait() -> Callable[..., Any]:
    """:func:`wait_for`: ``wait(lambda: app.get_job(i).state == "completed", 5)``."""
    return wait_for


@pytest.fixture
def until() -> Callable[..., Any]:
    """:func:`await_until`, for use inside ``async def`` test bodies."""
    return await_until


@pytest.fixture
def arun() -> Callable[..., Any]:
    """:func:`run`: run a coroutine to completion in a fresh loop, with a deadline."""
    return run
