"""Fixtures for the bad-input sweep: an app on a fresh database per test, on every engine.

Also the tools to write rows straight into the jobs table (bypassing every
check errands makes) and to run a node in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import errands
from tests.support import POSTGRES_URL, postgres_schema

FAST: dict[str, Any] = {
    "rescue_after": 1.0,
    "stage_interval": 0.05,
    "poll_interval": 0.05,
    "grace_period": 1.0,
}


@pytest.fixture(params=["sqlite", "postgres"])
def engine_name(request: pytest.FixtureRequest) -> str:
    chosen = request.config.getoption("--engine", default=None)
    if chosen and request.param != chosen:
        pytest.skip(f"--engine {chosen} selected")
    return str(request.param)


@pytest.fixture
def make_app(engine_name: str, tmp_path: Path) -> Iterator[Callable[..., errands.App]]:
    """``make_app(**options)``: an App with fast timings on this test's fresh database."""
    apps: list[errands.App] = []
    with contextlib.ExitStack() as stack:
        if engine_name == "sqlite":
            url, extra = f"sqlite:///{tmp_path}/jobs.db", {}
        else:
            schema = stack.enter_context(postgres_schema())
            url, extra = POSTGRES_URL, {"schema": schema, "auto_migrate": True}

        def make(**options: Any) -> errands.App:
            app = errands.App(url, **{**FAST, **extra, **options})
            apps.append(app)
            return app

        yield make
        for app in apps:
            app.close()


class RawTable:
    """Writes and reads the jobs table with plain SQL, behind errands' back."""

    def __init__(self, app: errands.App) -> None:
        self.app = app
        self.sqlite = app.engine.dialect == "sqlite"
        self.table = "errands_jobs" if self.sqlite else f'"{app.schema}".errands_jobs'

    def insert(self, **columns: Any) -> int:
        """Insert one row; JSON columns are given as text, times default to now.

        ``scheduled_at`` may be given raw (SQLite stores text in a REAL column).
        Raises the driver's error when the schema refuses the row.
        """
        row: dict[str, Any] = {
            "state": "available",
            "queue": "default",
            "worker": "bad.ok",
            "args": "{}",
            "meta": "{}",
            "tags": "[]",
            "errors": "[]",
            "result": None,
            "priority": 0,
            "attempt": 0,
            "max_attempts": 3,
            "attempted_by": None,
        }
        row.update(columns)
        names = list(row)
        now = time.time()
        if self.sqlite:
            row.setdefault("scheduled_at", now)
            names = list(row)
            sql = (
                f"INSERT INTO {self.table} ({', '.join(names)}, inserted_at, attempted_at) "
                f"VALUES ({', '.join('?' for _ in names)}, ?, ?) RETURNING id"
            )
            attempted = now if row["state"] == "executing" else None
            with contextlib.closing(sqlite3.connect(self.app.database_url.path)) as conn:
                found = conn.execute(sql, [*row.values(), now, attempted]).fetchone()
                conn.commit()
            return int(found[0])
        casts = {"args", "meta", "tags", "errors", "result"}
        values = ", ".join("%s::jsonb" if n in casts else "%s" for n in names)
        extra = "now(), now()" if row["state"] == "executing" else "now(), NULL"
        if "scheduled_at" in row:
            sql = (
                f"INSERT INTO {self.table} ({', '.join(names)}, inserted_at, attempted_at) "
                f"VALUES ({values}, {extra}) RETURNING id"
            )
        else:
            sql = (
                f"INSERT INTO {self.table} ({', '.join(names)}, inserted_at, attempted_at, "
                f"scheduled_at) VALUES ({values}, {extra}, now()) RETURNING id"
            )
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            found = conn.execute(sql, list(row.values())).fetchone()
        assert found is not None
        return int(found[0])

    def row(self, job_id: int) -> dict[str, Any] | None:
        """The raw row (state, attempt, max_attempts, attempted_by, errors text)."""
        sql = (
            f"SELECT state, attempt, max_attempts, attempted_by, errors FROM {self.table} "
            f"WHERE id = {int(job_id)}"
        )
        if self.sqlite:
            with contextlib.closing(sqlite3.connect(self.app.database_url.path)) as conn:
                found = conn.execute(sql).fetchone()
        else:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                found = conn.execute(sql).fetchone()
        if found is None:
            return None
        keys = ("state", "attempt", "max_attempts", "attempted_by", "errors")
        return dict(zip(keys, found, strict=True))

    def states(self) -> dict[int, str]:
        sql = f"SELECT id, state FROM {self.table}"
        if self.sqlite:
            with contextlib.closing(sqlite3.connect(self.app.database_url.path)) as conn:
                return {int(i): s for i, s in conn.execute(sql).fetchall()}
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            return {int(i): s for i, s in conn.execute(sql).fetchall()}


@contextlib.contextmanager
def running_node(app: errands.App) -> Iterator[None]:
    """Run ``app``'s node on an event loop in a background thread; stop it on exit."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(app.start())
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="badinput-node", daemon=True)
    thread.start()
    assert started.wait(30), "the node did not start within 30 s"
    if failure:
        raise failure[0]
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(app.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
