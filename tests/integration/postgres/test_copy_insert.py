"""The PostgreSQL bulk paths: which statement a batch takes, COPY inside a caller's
transaction, coalesced NOTIFY at commit, connections COPY cannot use."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy
from psycopg.rows import dict_row
from sqlalchemy.orm import Session

from errands.engines import inserted, pg_copy, pg_insert
from errands.engines.pg_plan import Plan
from errands.engines.postgres import PostgresEngine
from errands.errors import InvalidJobError
from errands.job import Job, JobState
from tests.integration.postgres.conftest import JobFactory
from tests.integration.postgres.test_django import RollbackError, django_db  # noqa: F401
from tests.integration.postgres.test_listen import Wakes, listening
from tests.support import POSTGRES_URL, wait_for

N = pg_copy.COPY_MIN * 3


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The sizes of the batches that went through COPY."""
    sizes: list[int] = []
    real = pg_copy.copy_plan

    def counting(engine: PostgresEngine, jobs: Any) -> Plan:
        sizes.append(len(jobs))
        return real(engine, jobs)

    monkeypatch.setattr(pg_insert, "copy_plan", counting)
    yield sizes


def _same_as_stored(engine: PostgresEngine, jobs: list[Job]) -> None:
    assert [job.id for job in jobs] == sorted(job.id for job in jobs)
    for job in jobs:
        assert engine.get_job(job.id) == job


def test_only_batches_from_copy_min_take_copy(
    engine: PostgresEngine, new_job: JobFactory, copies: list[int]
) -> None:
    for n in (1, 2, pg_copy.COPY_MIN - 1, pg_copy.COPY_MIN, N):
        _same_as_stored(engine, engine.insert([new_job(args={"i": i}) for i in range(n)]))
    assert copies == [pg_copy.COPY_MIN, N]


def test_copy_times_and_states_are_the_servers(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any]
) -> None:
    before = db.execute("SELECT extract(epoch FROM now())::float8").fetchone()
    assert before is not None
    future, past = time.time() + 600.123456789, 1_000_000_000.5000005
    jobs = engine.insert(
        [new_job(), new_job(scheduled_at=future), new_job(scheduled_at=past)] * (N // 3)
    )
    assert [job.state for job in jobs[:3]] == [
        JobState.AVAILABLE,
        JobState.SCHEDULED,
        JobState.AVAILABLE,
    ]
    assert len({job.inserted_at for job in jobs}) == 1, "one transaction, one now()"
    assert jobs[0].inserted_at >= before[0] and jobs[0].scheduled_at == jobs[0].inserted_at
    # Due times rounded to the microsecond exactly as the server's to_timestamp() does.
    for job, at in ((jobs[1], future), (jobs[2], past)):
        row = db.execute("SELECT (extract(epoch FROM to_timestamp(%s)) * 1e6)::int8", [at])
        stored = row.fetchone()
        assert stored is not None
        assert job.scheduled_at == stored[0] / 1_000_000
        assert inserted.pg_micros(at) + inserted.PG_EPOCH_US == stored[0]
    _same_as_stored(engine, jobs)


def test_copy_joins_the_callers_transaction_and_notifies_at_commit(
    engine: PostgresEngine, new_job: JobFactory, copies: list[int]
) -> None:
    wakes = Wakes()
    listener = listening(engine, wakes)
    try:
        with psycopg.connect(POSTGRES_URL) as conn:
            conn.execute("SELECT 1")  # the caller's transaction is open
            batch = [new_job(queue="a") for _ in range(N)]
            batch += [new_job(queue="b", scheduled_at=time.time() + 3600) for _ in range(N)]
            batch += [new_job(queue="c", scheduled_at=time.time() - 5)]
            jobs = engine.insert(batch, conn=conn)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            assert engine.get_job(jobs[0].id) is None, "invisible until the caller commits"
            time.sleep(0.3)
            assert wakes.total() == 0, "no NOTIFY before commit"
            conn.rollback()
            assert engine.queue_counts() == {}
            jobs = engine.insert(batch, conn=conn)
            conn.commit()
        wait_for(lambda: wakes.total() >= 2)
        time.sleep(0.3)
        assert wakes.queues == Counter({"a": 1, "c": 1}), "one per queue with an available job"
        assert copies == [len(batch), len(batch)]
        _same_as_stored(engine, jobs)
    finally:
        listener.stop()


def test_copy_on_an_autocommit_connection_commits_by_itself(
    engine: PostgresEngine, new_job: JobFactory, copies: list[int]
) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        jobs = engine.insert([new_job() for _ in range(N)], conn=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with conn.transaction():  # an explicit block: COPY goes in a savepoint of it
            engine.insert([new_job() for _ in range(N)], conn=conn)
            conn.execute("SELECT 1")
            raise psycopg.Rollback()
    assert engine.queue_counts() == {"default": {"available": N}}
    _same_as_stored(engine, jobs)
    assert copies == [N, N]


def test_sqlalchemy_session_takes_copy_in_its_transaction(
    engine: PostgresEngine, new_job: JobFactory, copies: list[int]
) -> None:
    sa = sqlalchemy.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with Session(sa) as session:
            engine.insert([new_job() for _ in range(N)], conn=session)
            session.rollback()
            jobs = engine.insert([new_job() for _ in range(N)], conn=session)
            session.commit()
    finally:
        sa.dispose()
    assert engine.queue_counts() == {"default": {"available": N}}
    _same_as_stored(engine, jobs)
    assert copies == [N, N]


def test_a_connection_not_in_utf8_takes_the_unnest_insert(
    engine: PostgresEngine, new_job: JobFactory, copies: list[int]
) -> None:
    with psycopg.connect(POSTGRES_URL) as conn:
        conn.execute("SET client_encoding = 'LATIN1'")
        jobs = engine.insert([new_job(args={"s": "café"}) for _ in range(N)], conn=conn)
        conn.commit()
    assert copies == []
    assert [job.args for job in jobs] == [{"s": "café"}] * N
    _same_as_stored(engine, jobs)


def test_a_connection_in_pipeline_mode_takes_the_unnest_insert(
    engine: PostgresEngine, new_job: JobFactory, copies: list[int]
) -> None:
    with psycopg.connect(POSTGRES_URL) as conn:
        with conn.pipeline():
            jobs = engine.insert([new_job() for _ in range(N)], conn=conn)
            [one] = engine.insert([new_job()], conn=conn)
        conn.commit()
    assert copies == []
    _same_as_stored(engine, [*jobs, one])


@pytest.mark.parametrize(
    "spoil",
    [
        lambda job: dataclasses.replace(job, priority=40_000),  # past smallint
        lambda job: dataclasses.replace(job, queue=None),
    ],
    ids=["priority", "queue"],
)
def test_a_job_copy_cannot_encode_fails_the_copy_and_inserts_nothing(
    engine: PostgresEngine, new_job: JobFactory, spoil: Callable[[Any], Any]
) -> None:
    batch = [new_job() for _ in range(N)]
    batch[N // 2] = spoil(batch[N // 2])
    with pytest.raises(InvalidJobError, match=f"job {N // 2} of the batch"):
        engine.insert(batch)
    assert engine.queue_counts() == {}
    with psycopg.connect(POSTGRES_URL) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(InvalidJobError, match=f"job {N // 2} of the batch"):
            engine.insert(batch, conn=conn)
        # Like any failed statement: the caller's transaction is aborted, and rolls back.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        engine.insert(batch[: N // 2], conn=conn)
        conn.commit()
    assert engine.queue_counts() == {"default": {"available": N // 2}}


def test_pg_micros_rounds_like_the_servers_to_timestamp(db: psycopg.Connection[Any]) -> None:
    """COPY sends times computed here; they must be what to_timestamp() would store."""
    rng = random.Random(5)
    times = [rng.uniform(0, 253_402_300_799) for _ in range(2000)]
    times += [rng.uniform(1.7e9, 1.9e9) for _ in range(2000)]
    # Half a microsecond and its neighbours: where rounding modes disagree.
    times += [int(t) + k / 2_000_000 for t in times[:500] for k in (1, 3, 999_999)]
    times += [0.0, 0.5e-6, 1.5e-6, 946_684_800.0, 253_402_300_799.0]
    rows = db.execute(
        "SELECT (extract(epoch FROM to_timestamp(t)) * 1e6)::int8 FROM unnest(%s::float8[]) t",
        [times],
    ).fetchall()
    assert [inserted.pg_micros(t) + inserted.PG_EPOCH_US for t in times] == [r[0] for r in rows]


@pytest.mark.usefixtures("django_db")
def test_copy_in_djangos_atomic_block(
    engine: PostgresEngine, new_job: JobFactory, copies: list[int]
) -> None:
    from django.db import connection, transaction

    with pytest.raises(RollbackError), transaction.atomic():
        engine.insert([new_job() for _ in range(N)], conn=connection)
        raise RollbackError
    assert engine.queue_counts() == {}
    with transaction.atomic():
        jobs = engine.insert([new_job() for _ in range(N)], conn=connection)
        assert engine.get_job(jobs[0].id) is None, "not before Django commits"
    assert copies == [N, N]
    _same_as_stored(engine, jobs)


def test_a_connection_with_its_own_row_factory_and_cursor_class(
    engine: PostgresEngine, new_job: JobFactory, copies: list[int]
) -> None:
    """The caller's connection settings never leak into errands' statements."""
    with psycopg.connect(
        POSTGRES_URL, row_factory=dict_row, cursor_factory=psycopg.ClientCursor
    ) as conn:
        jobs = engine.insert([new_job() for _ in range(N)], conn=conn)
        jobs += engine.insert([new_job() for _ in range(3)], conn=conn)
        jobs += engine.insert([new_job()], conn=conn)
        conn.commit()
    assert copies == [N]
    _same_as_stored(engine, jobs)


def test_concurrent_copies_draw_distinct_ids(engine: PostgresEngine, new_job: JobFactory) -> None:
    results: list[list[Job]] = []
    errors: list[BaseException] = []

    def insert(worker: int) -> None:
        try:
            for _ in range(3):
                batch = [new_job(args={"w": worker, "i": i}) for i in range(500)]
                results.append(engine.insert(batch))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=insert, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    ids = [job.id for jobs in results for job in jobs]
    assert len(ids) == len(set(ids)) == 4 * 3 * 500
    for jobs in results:
        assert [job.id for job in jobs] == sorted(job.id for job in jobs)
        assert [job.args["i"] for job in jobs] == list(range(500))
    assert engine.queue_counts() == {"default": {"available": 6000}}
    assert all(engine.get_job(job.id) == job for job in results[0])
