"""Transactional enqueue from async code: ``aenqueue(conn=...)`` on an async connection.

The insert runs on the caller's psycopg ``AsyncConnection`` (or the one under a
SQLAlchemy ``AsyncConnection``/``AsyncSession``), awaited on the caller's loop,
inside the caller's transaction: invisible until commit, gone on rollback.
Each size takes the same path as the sync insert: one row, an ``unnest``
INSERT, a COPY, and unique jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

import errands
from errands.engines import pg_copy
from errands.engines.postgres import PostgresEngine
from errands.errors import DatabaseError, InvalidJobError
from errands.job import Job
from tests.integration.postgres.conftest import JobFactory
from tests.integration.postgres.test_listen import Wakes, listening
from tests.support import POSTGRES_URL, wait_for

SQLALCHEMY_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: One job, a few (unnest INSERT), many (COPY).
SIZES = [1, 3, pg_copy.COPY_MIN * 2]

Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture
def run() -> Run:
    return asyncio.run


def _stored(engine: PostgresEngine, jobs: list[Job]) -> None:
    """Each returned job is what the database holds, ids in input order."""
    assert [job.id for job in jobs] == sorted(job.id for job in jobs)
    for job in jobs:
        assert engine.get_job(job.id) == job


@pytest.mark.parametrize("size", SIZES)
def test_psycopg_async_connection_commit_and_rollback(
    engine: PostgresEngine, new_job: JobFactory, size: int, run: Run
) -> None:
    async def main() -> tuple[list[Job], list[Job]]:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            await conn.execute("SELECT 1")  # the caller's transaction is open
            kept = await engine.ainsert([new_job(args={"n": i}) for i in range(size)], conn)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            assert all(engine.get_job(job.id) is None for job in kept), "visible before commit"
            await conn.commit()
            dropped = await engine.ainsert([new_job(args={"x": i}) for i in range(size)], conn)
            await conn.rollback()
        return kept, dropped

    kept, dropped = run(main())
    assert len(kept) == size
    _stored(engine, kept)
    assert all(engine.get_job(job.id) is None for job in dropped)
    assert sorted(job.args["n"] for job in engine.list_jobs(limit=500)) == list(range(size))


@pytest.mark.parametrize("size", SIZES)
def test_an_autocommit_async_connection_commits_each_batch_whole(
    engine: PostgresEngine, new_job: JobFactory, size: int, run: Run
) -> None:
    async def main() -> list[Job]:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            jobs = await engine.ainsert([new_job() for _ in range(size)], conn)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            return jobs

    _stored(engine, run(main()))


def test_a_copy_that_fails_midway_inserts_nothing(
    engine: PostgresEngine, new_job: JobFactory, run: Run
) -> None:
    batch = [new_job() for _ in range(pg_copy.COPY_MIN * 2)]
    batch[30] = dataclasses.replace(batch[30], priority=40_000)  # past smallint

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            with pytest.raises(InvalidJobError, match="job 30 of the batch"):
                await engine.ainsert(batch, conn)

    run(main())
    assert engine.list_jobs() == []


def test_unique_jobs_on_an_async_connection(pg_schema: str, run: Run) -> None:
    app = errands.App(POSTGRES_URL, schema=pg_schema)

    @app.job(unique=errands.Unique())
    async def sync_account(n: int) -> None: ...

    app.migrate()

    async def main() -> tuple[list[Job], list[Job]]:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            new = sync_account.new
            first = await app.aenqueue_many([new(n=1), new(n=2), new(n=1)], conn=conn)
            await conn.commit()
            again = await app.aenqueue_many([new(n=2), new(n=3)], conn=conn)
            await conn.commit()
        return first, again

    try:
        first, again = run(main())
        assert [j.conflict for j in first] == [False, False, True]
        assert first[2].id == first[0].id, "a duplicate within the batch is the first one"
        assert again[0].conflict and again[0].id == first[1].id
        assert not again[1].conflict
        assert sorted(j.args["n"] for j in app.list_jobs()) == [1, 2, 3]
    finally:
        app.close()


@pytest.fixture
def sa_async() -> Iterator[AsyncEngine]:
    engine = create_async_engine(SQLALCHEMY_URL)
    yield engine
    asyncio.run(engine.dispose())


def test_sqlalchemy_async_session(
    engine: PostgresEngine, new_job: JobFactory, sa_async: AsyncEngine, run: Run
) -> None:
    async def main() -> tuple[list[Job], list[Job], list[Job]]:
        async with AsyncSession(sa_async) as session:
            await session.execute(text("SELECT 1"))
            kept = await engine.ainsert([new_job(args={"n": 1})], session)
            assert engine.get_job(kept[0].id) is None
            await session.commit()
        async with AsyncSession(sa_async) as session:  # no statement yet: the session begins one
            dropped = await engine.ainsert([new_job(args={"n": 2}) for _ in range(30)], session)
            await session.rollback()
        async with AsyncSession(sa_async) as session, session.begin():
            begun = await engine.ainsert([new_job(args={"n": 3})], session)
        await sa_async.dispose()
        return kept, dropped, begun

    kept, dropped, begun = run(main())
    _stored(engine, kept + begun)
    assert all(engine.get_job(job.id) is None for job in dropped)


def test_sqlalchemy_async_connection(
    engine: PostgresEngine, new_job: JobFactory, sa_async: AsyncEngine, run: Run
) -> None:
    async def main() -> tuple[list[Job], list[Job]]:
        async with sa_async.connect() as conn:
            kept = await engine.ainsert([new_job()], conn)
            assert engine.get_job(kept[0].id) is None
            await conn.commit()
        async with sa_async.connect() as conn:
            dropped = await engine.ainsert([new_job()], conn)
        # closing without commit rolls back, as for the caller's own statements
        await sa_async.dispose()
        return kept, dropped

    kept, dropped = run(main())
    _stored(engine, kept)
    assert engine.get_job(dropped[0].id) is None


def test_notifications_wait_for_the_commit(
    engine: PostgresEngine, new_job: JobFactory, run: Run
) -> None:
    wakes = Wakes()
    listener = listening(engine, wakes)
    committed = threading.Event()

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            await engine.ainsert(
                [new_job(queue="a")] + [new_job(queue="b") for _ in range(30)], conn
            )
            await asyncio.sleep(0.3)
            assert wakes.total() == 0, "woke listeners before the commit"
            await conn.commit()
            committed.set()

    try:
        run(main())
        assert committed.is_set()
        wait_for(lambda: wakes.total() >= 2)
        assert wakes.queues == Counter({"a": 1, "b": 1})
    finally:
        listener.stop()


def test_the_app_and_job_functions_take_an_async_conn(pg_schema: str, run: Run) -> None:
    app = errands.App(POSTGRES_URL, schema=pg_schema)

    @app.job(queue="mail")
    async def send(to: str) -> None: ...

    app.migrate()

    async def main() -> list[Job]:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            one = await send.aenqueue(to="a", conn=conn)
            two = await app.aenqueue(send, {"to": "b"}, conn=conn)
            many = await app.aenqueue_many([send.new(to=str(i)) for i in range(40)], conn=conn)
            assert app.list_jobs() == [], "visible before commit"
            await conn.commit()
        return [one, two, *many]

    try:
        jobs = run(main())
        assert [app.get_job(job.id) for job in jobs] == jobs
        assert {job.queue for job in jobs} == {"mail"}
    finally:
        app.close()


def test_sync_enqueue_with_an_async_connection_points_to_aenqueue(
    engine: PostgresEngine, new_job: JobFactory, run: Run
) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            with pytest.raises(TypeError, match=r"AsyncConnection.*use `await aenqueue"):
                engine.insert([new_job()], conn=conn)

    run(main())


def test_other_objects_are_a_type_error(
    engine: PostgresEngine, new_job: JobFactory, run: Run
) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match=r"AsyncSession\), got builtins\.str"):
            await engine.ainsert([new_job()], "not a connection")

    run(main())


def test_database_errors_on_the_callers_async_connection(
    make_engine: Any, new_job: JobFactory, run: Run
) -> None:
    unmigrated = make_engine()

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            with pytest.raises(DatabaseError, match="caller's connection") as info:
                await unmigrated.ainsert([new_job()], conn)
            assert isinstance(info.value.__cause__, psycopg.Error)
            await conn.rollback()

    run(main())


def test_a_sync_connection_passed_to_ainsert_runs_in_place(
    engine: PostgresEngine, new_job: JobFactory, run: Run
) -> None:
    with psycopg.connect(POSTGRES_URL) as conn:
        [job] = run(engine.ainsert([new_job()], conn))
        assert engine.get_job(job.id) is None
        conn.commit()
    assert engine.get_job(job.id) == job
