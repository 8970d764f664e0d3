"""Count the SQL statements this process sends, at the driver, for ``sql_statements_per_job``.

An engine call is not a statement: on SQLite one ``ack_fetch`` is
``BEGIN IMMEDIATE``, one ``UPDATE`` per outcome, the claim and ``COMMIT``. So
the drain workloads also count what reaches the database driver:

- SQLite: each connection ``sqlite3.connect`` opens while counting is made a
  subclass whose ``execute`` counts one statement and ``executemany`` one per
  parameter set (``BEGIN``/``COMMIT``/``PRAGMA`` go through ``execute`` too).
  A trace callback (``set_trace_callback``) would count the same but cost ~11 %
  of SQLite's drain rate: SQLite expands every statement's text for it.
- PostgreSQL (psycopg 3): ``Cursor.execute`` (``Connection.execute`` goes
  through it, so it is not wrapped twice), ``Cursor.executemany`` (once per
  parameter set, as the server runs it once per set), ``Cursor.copy`` and
  ``Cursor.stream`` (one each), and the commands psycopg sends by itself
  (``BEGIN``, ``COMMIT``, ``ROLLBACK``, savepoints of ``conn.transaction()``),
  which all go through ``Connection._exec_command``.

The patches are process-wide, so every thread's statements count (the
heartbeat, the LISTEN or ``data_version`` listener, the pool's liveness pings),
and they are undone when the block ends.

Example::

    with count_statements("sqlite") as statements:
        app = bench_app(url, None)  # connections opened inside the block are counted
        app.engine.ack(acks)
    print(statements.total)
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["StatementCounter", "count_statements"]

_Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


class StatementCounter:
    """A running total of statements sent by every thread of this process."""

    def __init__(self) -> None:
        # Statements run on several threads at once (db threads, heartbeat, listener).
        self._lock = threading.Lock()
        self._local = threading.local()
        self._total = 0

    @property
    def total(self) -> int:
        """Statements counted so far."""
        return self._total

    def add(self, statements: int = 1) -> None:
        """Count ``statements`` sent by the calling thread, unless it is :meth:`paused`."""
        if getattr(self._local, "paused", False):
            return
        with self._lock:
            self._total += statements

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave out what this thread sends meanwhile (the harness's own reads, not load)."""
        self._local.paused = True
        try:
            yield
        finally:
            self._local.paused = False


def _patch(owner: Any, name: str, wrap: _Wrap, undo: list[Callable[[], None]]) -> None:
    """Replace ``owner.name`` by ``wrap(original)``; ``undo`` gets the way back."""
    inherited = name not in vars(owner)
    original = getattr(owner, name)
    setattr(owner, name, functools.wraps(original)(wrap(original)))

    def restore() -> None:
        if inherited:  # setting it back would shadow the base class's method for good
            delattr(owner, name)
        else:
            setattr(owner, name, original)

    undo.append(restore)


def _once(counter: StatementCounter) -> _Wrap:
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counter.add()
            return original(*args, **kwargs)

        return counted

    return wrap


def _per_parameter_set(counter: StatementCounter) -> _Wrap:
    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(
            cur: Any, query: Any, params_seq: Iterable[Any], *args: Any, **kwargs: Any
        ) -> Any:
            rows = list(params_seq)  # a generator can be read only once: count a copy
            counter.add(len(rows))
            return original(cur, query, rows, *args, **kwargs)

        return counted

    return wrap


def _counting_connection(counter: StatementCounter) -> type[sqlite3.Connection]:
    class CountingConnection(sqlite3.Connection):
        """Counts what the engine runs through ``execute`` and ``executemany``."""

        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            counter.add()
            return super().execute(sql, parameters)

        def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
            rows = list(parameters)  # a generator can be read only once: count a copy
            counter.add(len(rows))
            return super().executemany(sql, rows)

    return CountingConnection


def _counted_connect(counter: StatementCounter) -> _Wrap:
    factory = _counting_connection(counter)

    def wrap(connect: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            return connect(*args, factory=factory, **kwargs)

        return counted

    return wrap


def _patch_sqlite(counter: StatementCounter, undo: list[Callable[[], None]]) -> None:
    # The engine calls sqlite3.connect by attribute, so every connection it opens
    # from now on (its own, the data_version listener's) counts.
    _patch(sqlite3, "connect", _counted_connect(counter), undo)


def _patch_psycopg(counter: StatementCounter, undo: list[Callable[[], None]]) -> None:
    import psycopg  # only PostgreSQL runs pay for importing it

    if not hasattr(psycopg.Connection, "_exec_command"):
        # Without it BEGIN/COMMIT would go uncounted: a wrong figure is worse than none.
        raise RuntimeError(
            f"psycopg {psycopg.__version__} has no Connection._exec_command: "
            "errands.bench.statements cannot count its transaction commands"
        )
    for name in ("execute", "copy", "stream"):
        _patch(psycopg.Cursor, name, _once(counter), undo)
    _patch(psycopg.Cursor, "executemany", _per_parameter_set(counter), undo)
    _patch(psycopg.Connection, "_exec_command", _once(counter), undo)
    # The worker's loop path (pg_async) claims and acks through the async classes;
    # _once counts at the call, before the coroutine is awaited.
    for name in ("execute", "copy", "stream"):
        _patch(psycopg.AsyncCursor, name, _once(counter), undo)
    _patch(psycopg.AsyncCursor, "executemany", _per_parameter_set(counter), undo)
    _patch(psycopg.AsyncConnection, "_exec_command", _once(counter), undo)


@contextmanager
def count_statements(dialect: str) -> Iterator[StatementCounter]:
    """Count statements sent through ``dialect``'s driver (``sqlite`` or ``postgres``).

    On SQLite only connections opened inside the block are counted.
    """
    patchers = {"sqlite": _patch_sqlite, "postgres": _patch_psycopg}
    if dialect not in patchers:
        raise ValueError(f"cannot count statements for dialect {dialect!r}")
    counter = StatementCounter()
    undo: list[Callable[[], None]] = []
    try:
        patchers[dialect](counter, undo)
        yield counter
    finally:
        for restore in reversed(undo):
            restore()
