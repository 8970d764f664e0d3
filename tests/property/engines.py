"""Fresh engines for property tests: a new SQLite file or PostgreSQL schema per example.

Example::

    with fresh_engine("sqlite") as engine:
        engine.insert([new_job()])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg

from errands.engines.base import Ack, Engine
from errands.engines.postgres import PostgresEngine
from errands.engines.sqlite import SQLiteEngine
from errands.job import JobState, NewJob
from tests.support import POSTGRES_URL

ENGINES = ("sqlite", "postgres")
WORKER = "prop.work"

#: Far enough in the past or future that no test run crosses it.
PAST = -30.0
FUTURE = 3600.0


@contextlib.contextmanager
def fresh_engine(name: str) -> Iterator[Engine]:
    """A migrated engine on an empty database, dropped afterwards."""
    if name == "sqlite":
        folder = tempfile.mkdtemp(prefix="errands-prop-")
        engine: Engine = SQLiteEngine(os.path.join(folder, "jobs.db"))
        try:
            engine.migrate()
            yield engine
        finally:
            engine.close()
            shutil.rmtree(folder, ignore_errors=True)
        return
    schema = f"errands_prop_{uuid.uuid4().hex[:12]}"
    engine = PostgresEngine(POSTGRES_URL, schema=schema, min_size=1, max_size=2)
    try:
        engine.migrate()
        yield engine
    finally:
        engine.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def new_job(
    *,
    worker: str = WORKER,
    queue: str = "default",
    args: dict[str, Any] | None = None,
    priority: int = 0,
    max_attempts: int = 3,
    due_in: float | None = None,
) -> NewJob:
    """A :class:`NewJob` as ``app.new_job`` would build it (due ``due_in`` s from now)."""
    args = {} if args is None else args
    return NewJob(
        worker=worker,
        queue=queue,
        args=args,
        args_json=orjson.dumps(args),
        meta_json=b"{}",
        tags_json=b"[]",
        priority=priority,
        max_attempts=max_attempts,
        scheduled_at=None if due_in is None else time.time() + due_in,
        timeout=None,
    )


def error_record(attempt: int) -> dict[str, Any]:
    return {
        "type": "Prop",
        "message": "m",
        "traceback": None,
        "at": time.time(),
        "attempt": attempt,
    }


def ack(
    job_id: int,
    attempt: int,
    producer: str,
    outcome: str,
    *,
    due_in: float = PAST,
) -> Ack:
    """The ack the runtime would send for ``outcome`` (retry/snooze due ``due_in`` s from now)."""
    state = {
        "complete": JobState.COMPLETED,
        "retry": JobState.RETRYABLE,
        "snooze": JobState.SCHEDULED,
        "cancel": JobState.CANCELLED,
        "discard": JobState.DISCARDED,
    }[outcome]
    return Ack(
        id=job_id,
        attempt=attempt,
        producer=producer,
        state=state,
        result=orjson.dumps({"job": job_id, "attempt": attempt}) if outcome == "complete" else None,
        error=None if outcome in ("complete", "snooze") else error_record(attempt),
        scheduled_at=time.time() + due_in if outcome in ("retry", "snooze") else None,
        snoozed=outcome == "snooze",
    )
