"""Helpers shared by every test layer (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: The repository's root: worker processes import ``tests.sink`` from it.
REPO_ROOT = Path(__file__).resolve().parent.parent


def worker_pythonpath(module_dir: Path) -> str:
    """``PYTHONPATH`` for a worker process: its written module, then ``tests`` (for the sink)."""
    return os.pathsep.join([str(module_dir), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, every: float = 0.02) -> None:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(every)


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` on the running loop (yielding to it between tries) until truthy."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema name for one test, dropped afterwards."""
    import psycopg

    name = f"errands_t_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def run_past_timeout(saw_cancel: threading.Event, release: threading.Event) -> None:
    """A sync job body that outlives its timeout: it watches ``job.cancelled()``
    (sets ``saw_cancel`` once it turns true), then keeps its thread until
    ``release`` — a runaway, still running after its attempt was recorded."""
    import errands

    job = errands.current_job()
    deadline = time.monotonic() + 5
    while not job.cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    if job.cancelled():
        saw_cancel.set()
    release.wait(10)
