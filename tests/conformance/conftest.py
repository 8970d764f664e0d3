"""The conformance suite's fixtures: one database per test, on every engine.

``database_url`` is parametrized over the engines (ids ``sqlite`` and
``postgres``); ``--engine NAME`` keeps one. SQLite gets a file in the test's
``tmp_path``; PostgreSQL gets a fresh schema ``errands_t_<hex>`` in the test
database, dropped at teardown.

Tests use only the public :class:`errands.App` API (plus ``app.engine`` for the
fencing tests), so the same test proves the same behaviour on every engine.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import errands

ENGINES = ("sqlite", "postgres")
POSTGRES_URL = os.environ.get(
    "ERRANDS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

#: Timings that keep a running node snappy in tests.
FAST = {"rescue_after": 1.0, "stage_interval": 0.05, "poll_interval": 0.05, "grace_period": 2}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the parametrizations of engines not chosen with ``--engine``."""
    chosen = config.getoption("--engine")
    if chosen is None:
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = None if callspec is None else callspec.params.get("database_url")
        (dropped if engine is not None and engine != chosen else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


_postgres_problem: list[str] = []


def _postgres_unavailable() -> str | None:
    """Why the PostgreSQL engine cannot be tested here, or None (checked once)."""
    if _postgres_problem:
        return _postgres_problem[0] or None
    problem = ""
    if importlib.util.find_spec("errands.engines.postgres") is None:
        problem = "errands.engines.postgres does not exist yet"
    else:
        try:
            import psycopg

            with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            problem = f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}"
    if not problem:  # remember success only: a restarting server is retried next time
        _postgres_problem.append(problem)
    return problem or None


@pytest.fixture(params=ENGINES, ids=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """The URL of an empty database for this test, on each engine in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobs.db"
    problem = _postgres_unavailable()
    if problem is not None:
        # CI (and --engine postgres) must never pass by skipping PostgreSQL.
        if request.config.getoption("--engine") == "postgres" or os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run: {problem}")
        pytest.skip(problem)
    return POSTGRES_URL


@pytest.fixture
def engine_name(database_url: str) -> str:
    """``sqlite`` or ``postgres``."""
    return "sqlite" if database_url.startswith("sqlite") else "postgres"


@pytest.fixture
def db_schema(engine_name: str) -> Iterator[str | None]:
    """A fresh PostgreSQL schema name (dropped at teardown); None on SQLite."""
    if engine_name != "postgres":
        yield None
        return
    import psycopg

    name = f"errands_t_{uuid.uuid4().hex}"
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def make_app(database_url: str, db_schema: str | None) -> Iterator[Callable[..., errands.App]]:
    """``make_app(**options)``: an App on this test's database with fast timings.

    Every app made here shares the database (and schema); all are closed at teardown.
    """
    apps: list[errands.App] = []

    def make(**options: Any) -> errands.App:
        chosen: dict[str, Any] = dict(FAST)
        if db_schema is not None:
            chosen.update(schema=db_schema, auto_migrate=True)
        chosen.update(options)
        app = errands.App(database_url, **chosen)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: Callable[..., errands.App]) -> errands.App:
    """One App with fast timings on this test's database."""
    return make_app()


class Transactions:
    """Opens the application's own connections for transactional enqueue, per engine.

    ``open()`` returns a driver connection with a transaction already begun;
    ``table`` is a small user table (``orders``) living next to errands' tables,
    so a test can check that the job and the user's row commit or vanish together.
    """

    def __init__(self, engine: str, database_url: str, schema: str | None) -> None:
        self.engine = engine
        self.database_url = database_url
        self.schema = schema
        self.table = "orders" if schema is None else f'"{schema}".orders'
        self._opened: list[Any] = []
        self._engines: list[Any] = []

    def open(self) -> Any:
        if self.engine == "sqlite":
            path = self.database_url.removeprefix("sqlite:///")
            conn = sqlite3.connect(path, isolation_level=None, timeout=10)
            conn.execute("BEGIN")
        else:
            import psycopg

            conn = psycopg.connect(POSTGRES_URL)  # not autocommit: a transaction is open
        self._opened.append(conn)
        return conn

    def create_table(self) -> None:
        """Create ``orders (id integer primary key)`` and commit."""
        conn = self.open()
        conn.execute(f"CREATE TABLE {self.table} (id integer primary key)")
        conn.commit()

    def add_order(self, conn: Any, order_id: int) -> None:
        conn.execute(f"INSERT INTO {self.table} (id) VALUES ({int(order_id)})")

    # sqlite3 and psycopg connections both commit/roll back an explicitly begun transaction.
    def commit(self, conn: Any) -> None:
        conn.commit()

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def orders(self) -> list[int]:
        conn = self.open()
        try:
            rows = conn.execute(f"SELECT id FROM {self.table} ORDER BY id").fetchall()
        finally:
            self.rollback(conn)
        return [row[0] for row in rows]

    def sqlalchemy_engine(self) -> Any:
        """A SQLAlchemy engine on the same database (closed at teardown)."""
        import sqlalchemy

        if self.engine == "sqlite":
            url = self.database_url
        else:
            url = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)
        engine = sqlalchemy.create_engine(url)
        self._engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self._engines:
            engine.dispose()
        self._engines.clear()
        for conn in self._opened:
            with contextlib.suppress(Exception):
                conn.close()
        self._opened.clear()


@pytest.fixture
def transactions(
    engine_name: str, database_url: str, db_schema: str | None
) -> Iterator[Transactions]:
    """The engine's way of opening a user connection for ``enqueue(conn=...)``."""
    helper = Transactions(engine_name, database_url, db_schema)
    yield helper
    helper.close()
