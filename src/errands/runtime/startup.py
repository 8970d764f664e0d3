"""Start a worker once its database can be reached, however long that takes.

A worker container often starts while PostgreSQL is restarting or its host
name does not resolve yet. :func:`start_when_reachable` retries the start-up
while it fails only because the database cannot be reached
(:func:`is_connection_failure`), with a backoff of 0.5 s doubling to 10 s and
one WARNING per failed attempt, until it succeeds or ``stop`` is set (the
worker got SIGTERM/SIGINT). Anything else — a schema that is missing or old,
bad configuration, a server that answers and refuses the login (unknown
database or role, wrong password) — is raised at once: waiting cannot fix it.

Used by ``errands worker`` (every process of it) and :meth:`errands.App.run`;
``await app.start()`` itself still raises, so library code decides for itself.

Example::

    stop = asyncio.Event()          # set by the signal handlers
    node = await start_when_reachable(lambda: app.start(queues), stop)
    if node is None:                # stopped before the database came back
        return
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from errands.errors import ConfigError, SchemaError

__all__ = ["FIRST_DELAY", "MAX_DELAY", "is_connection_failure", "start_when_reachable"]

log = logging.getLogger("errands.startup")

T = TypeVar("T")

#: Seconds before the second attempt; each later wait doubles, up to MAX_DELAY.
FIRST_DELAY = 0.5
MAX_DELAY = 10.0

#: SQLSTATEs that mean "not now" rather than "never": connection exceptions
#: (class 08), the server shutting down, crashing or starting up (57P01-57P03),
#: and no free connection slot (53300).
_TRANSIENT_STATES = ("08", "57P01", "57P02", "57P03", "53300")

#: A login the server refused with FATAL is a configuration error (unknown
#: database or role, wrong password, pg_hba.conf), unless the FATAL says the
#: server is only busy or not ready yet. libpq gives no SQLSTATE for a refused
#: login, so its text is all there is to go on.
_TRANSIENT_FATAL = (
    "starting up",
    "shutting down",
    "recovery mode",
    "not yet accepting connections",
    "not accepting connections",
    "too many clients",
    "connection slots are reserved",
    "terminating connection",
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (or while handling), as tracebacks show."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ if link.__cause__ is not None else link.__context__


def _driver_errors() -> tuple[type[BaseException], ...]:
    """psycopg's class for "the connection failed or broke", if psycopg is installed."""
    try:
        import psycopg
    except ImportError:  # no PostgreSQL support: SQLite opens a file, it never "connects"
        return ()
    # psycopg_pool.PoolTimeout subclasses it too.
    return (psycopg.OperationalError,)


def is_connection_failure(exc: BaseException) -> bool:
    """True if ``exc`` only says the database cannot be reached right now.

    The engines wrap driver errors in :class:`~errands.errors.DatabaseError`
    (``raise ... from exc``), so the chain is searched for the driver's
    connection error. :class:`~errands.errors.SchemaError` and
    :class:`~errands.errors.ConfigError` never count, nor does a server that
    answered and refused the login, nor any SQLite error.

    Example::

        try:
            await app.start()
        except errands.DatabaseError as exc:
            if not is_connection_failure(exc):
                raise
    """
    links = list(_chain(exc))
    if any(isinstance(link, (SchemaError, ConfigError)) for link in links):
        return False
    driver = _driver_errors()
    failures = [link for link in links if driver and isinstance(link, driver)]
    if not failures:
        return False
    for failure in failures:
        state = getattr(failure, "sqlstate", None)
        if state is not None and not state.startswith(_TRANSIENT_STATES):
            return False  # a real SQL error (lock timeout, disk full, ...): not a reachability one
    text = " ".join(str(link) for link in links).lower()
    return "fatal:" not in text or any(marker in text for marker in _TRANSIENT_FATAL)


async def _attempt_or_stop(start: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T | None:
    """``await start()``, cancelled if ``stop`` is set first (then None)."""
    attempt: asyncio.Future[T] = asyncio.ensure_future(start())
    stopping = asyncio.ensure_future(stop.wait())
    first: set[asyncio.Future[Any]] = {attempt, stopping}
    try:
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not attempt.done():
            # A connect can hang for the driver's connect timeout: a signal must not.
            attempt.cancel()
            await asyncio.wait({attempt})  # let it clean up (Lifecycle.start stops its node)
    if attempt.cancelled():
        return None
    return attempt.result()  # raises what start() raised; a node that did start is returned


async def start_when_reachable(
    start: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    first_delay: float = FIRST_DELAY,
    max_delay: float = MAX_DELAY,
) -> T | None:
    """``await start()``, retried while it fails with :func:`is_connection_failure`.

    Waits ``first_delay`` seconds after the first failure, doubling up to
    ``max_delay``, and logs one WARNING per failure naming the error and the
    next delay. Returns ``start()``'s result, or None once ``stop`` is set
    (promptly, even mid-attempt). Any other error is raised at once.

    Example::

        node = await start_when_reachable(lambda: app.start(), stop_event)
    """
    delay = first_delay
    failures = 0
    while not stop.is_set():
        try:
            started = await _attempt_or_stop(start, stop)
        except Exception as exc:
            if not is_connection_failure(exc):
                raise
            failures += 1
            log.warning(
                "cannot reach the database at start-up (attempt %d), retrying in %.1fs "
                "(SIGTERM or Ctrl-C to give up): %s",
                failures,
                delay,
                exc,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, max_delay)
            continue
        if started is not None and failures:
            log.info("database reached after %d failed attempt(s)", failures)
        return started
    return None
