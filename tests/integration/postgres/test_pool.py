"""The engine's pool keeps one connection warm for calls made one after another.

psycopg_pool hands out idle connections first in, first out; a thread making
calls in turn would visit each idle connection (and its server backend) in
turn. PgPool keeps one connection for whoever finds it free, and every other
caller uses the pool as before.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from errands.engines import pg_pool
from errands.engines.pg_pool import PgPool
from errands.errors import DatabaseError
from tests.support import POSTGRES_URL


@pytest.fixture
def name() -> str:
    return f"errands-pool-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pool(name: str) -> Iterator[PgPool]:
    pool = PgPool(
        f"{POSTGRES_URL}?application_name={name}",
        label="errands test",
        min_size=3,
        max_size=4,
        connect_timeout=5,
        pool_timeout=5,
    )
    yield pool
    pool.close()


def _backend(pool: PgPool) -> int:
    with pool.connection("reading the backend") as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def _wait_for_connections(db: psycopg.Connection[Any], name: str, count: int) -> None:
    for _ in range(200):
        found = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
        if found is not None and found[0] >= count:
            return
        threading.Event().wait(0.02)
    raise AssertionError(f"the pool never opened {count} connections")


def _calls(pool: PgPool, done: list[int], failures: list[Exception]) -> None:
    try:
        for _ in range(40):
            with pool.connection("working") as conn:
                conn.execute("SELECT pg_sleep(0.001)")
        done.append(1)
    except Exception as exc:
        failures.append(exc)


def _terminate(db: psycopg.Connection[Any], backend: int) -> None:
    db.execute("SELECT pg_terminate_backend(%s)", (backend,))


def test_calls_one_after_another_use_one_backend(
    pool: PgPool, db: psycopg.Connection[Any], name: str
) -> None:
    _backend(pool)
    _wait_for_connections(db, name, 3)  # the pool alone would rotate through them
    assert len({_backend(pool) for _ in range(10)}) == 1


def test_a_caller_that_finds_it_busy_gets_another_connection(pool: PgPool) -> None:
    with pool.connection("holding the warm connection") as warm:
        warm_backend = warm.info.backend_pid
        seen: list[int] = []
        other = threading.Thread(target=lambda: seen.append(_backend(pool)))
        other.start()
        other.join(10)
    assert seen and seen[0] != warm_backend
    assert _backend(pool) == warm_backend  # free again: back to the warm one


def test_a_block_that_fails_in_a_transaction_rolls_it_back(
    pool: PgPool, db: psycopg.Connection[Any]
) -> None:
    table = f"pool_probe_{uuid.uuid4().hex[:8]}"
    db.execute(f"CREATE TABLE {table} (n int)")
    try:
        with pytest.raises(RuntimeError), pool.connection("writing") as conn:
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO {table} VALUES (1)")
            raise RuntimeError("the caller's code failed")
        with pool.connection("reading") as conn:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        # A transaction left open by a block that ended well is committed.
        with pool.connection("writing") as conn:
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO {table} VALUES (2)")
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)
    finally:
        db.execute(f"DROP TABLE {table}")


def test_a_terminated_warm_connection_fails_one_call_then_is_replaced(
    pool: PgPool, db: psycopg.Connection[Any]
) -> None:
    first = _backend(pool)
    _terminate(db, first)
    with pytest.raises(DatabaseError, match="reading the backend failed"):
        _backend(pool)
    assert _backend(pool) not in (first, 0)


def test_an_idle_warm_connection_is_checked_so_the_caller_never_sees_it_dead(
    pool: PgPool, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _backend(pool)
    _terminate(db, first)
    monkeypatch.setattr(pg_pool, "IDLE_CHECK", 0.0)  # it has been idle "long enough"
    assert _backend(pool) != first


def test_the_pool_never_sees_calls_the_warm_connection_takes(pool: PgPool) -> None:
    _backend(pool)
    requests = pool._get().get_stats().get("requests_num", 0)
    _backend(pool)
    _backend(pool)
    assert pool._get().get_stats().get("requests_num", 0) == requests


def test_the_warm_connection_is_reopened_after_its_lifetime(
    pool: PgPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _backend(pool)
    monkeypatch.setattr(pg_pool, "WARM_LIFETIME", 0.0)
    assert _backend(pool) != first


def test_it_never_opens_more_than_max_size_and_no_caller_starves(
    name: str, db: psycopg.Connection[Any]
) -> None:
    """Many threads on pools of 1 and 2: every call gets a connection (none waits
    out the pool's timeout behind an idle warm one), and never more than max_size."""
    for size in (1, 2):
        pool = PgPool(
            f"{POSTGRES_URL}?application_name={name}",
            label="errands test",
            min_size=1,
            max_size=size,
            connect_timeout=5,
            pool_timeout=3,
        )
        peak = 0
        done: list[int] = []
        failures: list[Exception] = []
        threads = [threading.Thread(target=_calls, args=(pool, done, failures)) for _ in range(4)]
        try:
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                row = db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
                ).fetchone()
                peak = max(peak, row[0] if row else 0)
                threading.Event().wait(0.005)
            for thread in threads:
                thread.join()
        finally:
            pool.close()
        assert not failures and len(done) == 4, (size, failures)
        assert 0 < peak <= size


def test_close_closes_the_warm_connection_and_the_pool_opens_again(pool: PgPool) -> None:
    with pool.connection("holding") as conn:
        warm = conn
    pool.close()
    assert warm.closed
    assert _backend(pool) > 0


def test_a_close_that_finds_it_busy_leaves_it_to_the_call_to_close(pool: PgPool) -> None:
    with pool.connection("holding") as conn:
        closer = threading.Thread(target=pool.close)
        closer.start()
        closer.join(10)
        assert not conn.closed  # in use: not pulled from under the caller
    assert conn.closed
    assert _backend(pool) > 0  # a new pool, a new warm connection


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
# Forking a process whose pool runs threads is the case under test (a preloading
# web server, multiprocessing's fork); Python 3.12+ warns about it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_leaves_its_parents_warm_connection_alone(pool: PgPool) -> None:
    parent_backend = _backend(pool)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            code = 0 if _backend(pool) != parent_backend else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _backend(pool) == parent_backend  # still alive: the child did not close it
