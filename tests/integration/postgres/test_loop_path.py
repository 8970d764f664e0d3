"""The PostgreSQL loop path (pg_async): claims and acks on the worker's event loop.

It must behave exactly like the engine's blocking ``fetch``/``ack`` (the
conformance suite runs every worker test through it); these tests pin what
is its own: its pool's size, its errors, connections cut under it, and that
a worker node really uses it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

import errands
from errands.engines.base import Ack
from errands.engines.pg_async import PgLoopPath
from errands.engines.postgres import PostgresEngine
from errands.errors import DatabaseError
from errands.job import JobState
from tests.conftest import run
from tests.integration.postgres.conftest import EngineFactory, JobFactory
from tests.support import POSTGRES_URL, wait_for


def _done(job_id: int, attempt: int, producer: str = "p1") -> Ack:
    return Ack(id=job_id, attempt=attempt, producer=producer, state=JobState.COMPLETED)


def _connections(db: psycopg.Connection[Any], application_name: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
    ).fetchone()
    return int(row[0]) if row else 0


def _loop_path(engine: PostgresEngine) -> PgLoopPath:
    path = engine.loop_path()
    assert path is not None  # None only on Windows' proactor loop
    return path


async def _claim_one(engine: PostgresEngine) -> list[errands.Job]:
    path = _loop_path(engine)
    try:
        return await path.fetch("default", 1, "p1", ["w"])
    finally:
        await path.close()


def test_it_claims_and_acks_what_the_engine_would(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    inserted = engine.insert([new_job(args={"i": i}, priority=i % 2) for i in range(5)])
    inserted.append(*engine.insert([new_job(worker="other")]))

    async def main() -> tuple[list[errands.Job], int, int]:
        path = _loop_path(engine)
        try:
            jobs = await path.fetch("default", 3, "p1", ["w"])
            applied = await path.ack([_done(job.id, job.attempt) for job in jobs])
            stale = await path.ack([_done(jobs[0].id, jobs[0].attempt, producer="p2")])
            return jobs, applied, stale
        finally:
            await path.close()
            await path.close()  # twice is fine

    jobs, applied, stale = run(main())
    assert [job.priority for job in jobs] == [0, 0, 0]  # priority order, as the engine claims
    assert all(job.worker == "w" and job.attempt == 1 for job in jobs)
    assert (applied, stale) == (3, 0)
    for job in jobs:
        stored = engine.get_job(job.id)
        assert stored is not None and stored.state is JobState.COMPLETED
    left = engine.fetch("default", 10, "p1", ["w", "other"])
    assert sorted(job.id for job in left) == sorted(
        job.id for job in inserted if job.id not in {j.id for j in jobs}
    )


def test_nothing_to_claim_costs_no_connection(engine: PostgresEngine) -> None:
    async def main() -> tuple[list[errands.Job], list[errands.Job], int]:
        path = _loop_path(engine)
        try:
            return (
                await path.fetch("default", 0, "p1", ["w"]),
                await path.fetch("default", 5, "p1", []),
                await path.ack([]),
            )
        finally:
            await path.close()

    assert run(main()) == ([], [], 0)


def test_a_malformed_row_is_discarded_and_the_rest_run(
    engine: PostgresEngine, new_job: JobFactory, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    good, bad = engine.insert([new_job(args={"i": 1}), new_job(args={"i": 2})])
    db.execute(
        sql.SQL("UPDATE {}.errands_jobs SET args = '[1]' WHERE id = %s").format(
            sql.Identifier(pg_schema)
        ),
        (bad.id,),
    )

    async def main() -> list[errands.Job]:
        path = _loop_path(engine)
        try:
            return await path.fetch("default", 10, "p1", ["w"])
        finally:
            await path.close()

    assert [job.id for job in run(main())] == [good.id]
    discarded = engine.get_job(bad.id)
    assert discarded is not None and discarded.state is JobState.DISCARDED
    assert discarded.errors[-1]["type"] == "errands.MalformedJob"


def test_its_pool_stays_within_the_engines_max_size(
    make_engine: EngineFactory, new_job: JobFactory, db: psycopg.Connection[Any]
) -> None:
    name = f"errands-loop-{uuid.uuid4().hex[:8]}"
    engine = make_engine(f"{POSTGRES_URL}?application_name={name}", max_size=1)
    engine.migrate()
    engine.insert([new_job(args={"i": i}) for i in range(40)])
    engine.close()  # the blocking pool is gone: what remains is the loop path's
    peak = 0

    async def main() -> int:
        nonlocal peak
        path = _loop_path(engine)
        claimed = 0
        try:
            for _ in range(4):
                batches = await asyncio.gather(
                    *(path.fetch("default", 2, f"p{i}", ["w"]) for i in range(5))
                )
                claimed += sum(len(batch) for batch in batches)
                peak = max(peak, await asyncio.to_thread(_connections, db, name))
        finally:
            await path.close()
        return claimed

    assert run(main()) == 40
    assert peak == 1


def test_an_unreachable_server_is_a_database_error_naming_it(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine(
        "postgresql://postgres@127.0.0.1:1/test", connect_timeout=1, pool_timeout=1
    )

    with pytest.raises(DatabaseError, match=r"cannot connect to PostgreSQL at .*127\.0\.0\.1:1"):
        run(_claim_one(engine))


def test_a_failing_statement_is_a_database_error_saying_what_failed(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine()  # never migrated: no jobs table

    with pytest.raises(DatabaseError, match=r"claiming jobs failed: .*errands_jobs"):
        run(_claim_one(engine))


def test_it_carries_on_after_its_connections_are_terminated(
    make_engine: EngineFactory, new_job: JobFactory, db: psycopg.Connection[Any]
) -> None:
    name = f"errands-loop-{uuid.uuid4().hex[:8]}"
    engine = make_engine(f"{POSTGRES_URL}?application_name={name}")
    engine.migrate()
    engine.insert([new_job(args={"i": i}) for i in range(4)])

    async def main() -> tuple[int, list[BaseException]]:
        path = _loop_path(engine)
        failures: list[BaseException] = []
        try:
            first = await path.fetch("default", 2, "p1", ["w"])
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (name,),
            )
            for _ in range(5):  # the runtime retries a failed claim with backoff
                try:
                    second = await path.fetch("default", 2, "p1", ["w"])
                    break
                except Exception as exc:
                    failures.append(exc)
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"never claimed again: {failures}")
            applied = await path.ack([_done(j.id, j.attempt) for j in [*first, *second]])
        finally:
            await path.close()
        return applied, failures

    applied, failures = run(main())
    assert applied == 4
    # The connection cut under it fails one call, as a DatabaseError; the pool replaces it.
    assert len(failures) <= 1 and all(isinstance(exc, DatabaseError) for exc in failures), failures


def test_a_worker_node_claims_and_acks_on_the_loop(pg_schema: str) -> None:
    queues = {"default": 10, "limited": {"limit": 2, "global_limit": 2}}
    app = errands.App(
        POSTGRES_URL, schema=pg_schema, queues=queues, auto_migrate=True, poll_interval=0.05
    )
    blocking: list[tuple[str, bool]] = []
    engine: Any = app.engine
    original_fetch, original_ack = engine.fetch, engine.ack

    def fetch(queue: str, limit: int, producer: str, workers: Any, limits: Any = None) -> Any:
        blocking.append(("fetch", limits is not None))
        return original_fetch(queue, limit, producer, workers, limits)

    def ack(acks: Any) -> int:
        blocking.append(("ack", False))
        return int(original_ack(acks))

    engine.fetch, engine.ack = fetch, ack

    @app.job()
    def noop(i: int) -> int:
        return i

    @app.job(queue="limited")
    def limited() -> None:
        return None

    async def main() -> None:
        node = await app.start()
        assert isinstance(node.loop_path, PgLoopPath)
        ids = [noop.enqueue(i=i).id for i in range(30)] + [limited.enqueue().id]

        def done() -> bool:
            return all(app.get_job(i).state is JobState.COMPLETED for i in ids)  # type: ignore[union-attr]

        await asyncio.to_thread(wait_for, done, 10)
        await app.stop()
        assert node.loop_path is None  # closed with the node

    try:
        run(main())
    finally:
        app.close()
    # Only the queue with global limits claimed through the blocking engine call.
    assert blocking and all(call == ("fetch", True) for call in blocking), blocking


def test_no_loop_path_on_windows_proactor_loops(
    engine: PostgresEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg's async connections refuse Windows' ProactorEventLoop: claim on threads there."""

    async def main() -> tuple[object, object]:
        loop_class = type(asyncio.get_running_loop())
        with monkeypatch.context() as patch:
            patch.setattr("sys.platform", "win32")
            patch.setattr(asyncio, "ProactorEventLoop", loop_class, raising=False)
            on_proactor = engine.loop_path()
        elsewhere = _loop_path(engine)
        await elsewhere.close()
        return on_proactor, elsewhere

    on_proactor, elsewhere = run(main())
    assert on_proactor is None and isinstance(elsewhere, PgLoopPath)


def test_a_node_without_a_loop_path_claims_and_acks_on_threads(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = errands.App(POSTGRES_URL, schema=pg_schema, auto_migrate=True, poll_interval=0.05)
    monkeypatch.setattr(PostgresEngine, "loop_path", lambda self: None)

    @app.job()
    def double(i: int) -> int:
        return 2 * i

    async def main() -> list[Any]:
        node = await app.start()
        assert node.loop_path is None
        ids = [double.enqueue(i=i).id for i in range(10)]

        def done() -> bool:
            return all(app.get_job(i).state is JobState.COMPLETED for i in ids)  # type: ignore[union-attr]

        await asyncio.to_thread(wait_for, done, 10)
        await app.stop()
        return [app.get_job(i).result for i in ids]  # type: ignore[union-attr]

    try:
        assert run(main()) == [2 * i for i in range(10)]
    finally:
        app.close()
