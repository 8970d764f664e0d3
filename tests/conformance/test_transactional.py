"""Transactional enqueue (invariant 1): ``enqueue(conn=...)`` joins the caller's transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import errands
from errands import JobState


def _ready(app: errands.App, transactions: Any) -> errands.JobFunction[..., object]:
    app.migrate()
    transactions.create_table()

    @app.job()
    def ship(order: int) -> int:
        return order

    return ship


def test_uncommitted_job_is_invisible_and_commit_makes_it_run(
    app: errands.App, transactions: Any
) -> None:
    ship = _ready(app, transactions)
    conn = transactions.open()
    transactions.add_order(conn, 1)
    job = ship.enqueue(order=1, conn=conn)
    assert job.id > 0 and job.state == JobState.AVAILABLE

    # not committed: other connections see neither the order nor the job
    assert app.get_job(job.id) is None
    assert app.list_jobs() == []
    assert app.queue_counts() == {}
    assert transactions.orders() == []
    # (no drain here: on SQLite the open write transaction holds the one write lock,
    # so any writer, a node included, waits for the commit; that is SQLite, not a bug)

    transactions.commit(conn)
    assert transactions.orders() == [1]
    stored = app.get_job(job.id)
    assert stored is not None and stored.state == JobState.AVAILABLE
    assert app.drain() == {"completed": 1}
    assert app.get_job(job.id).result == 1  # type: ignore[union-attr]


def test_rolled_back_job_never_exists_and_never_runs(
    app: errands.App, transactions: Any, arun: Callable[..., Any]
) -> None:
    ship = _ready(app, transactions)
    ran: list[int] = []

    @app.job()
    def tracked(order: int) -> None:
        ran.append(order)

    conn = transactions.open()
    transactions.add_order(conn, 2)
    job = tracked.enqueue(order=2, conn=conn)
    many = app.enqueue_many([ship.new(order=3), ship.new(order=4)], conn=conn)
    transactions.rollback(conn)

    assert transactions.orders() == []
    for job_id in (job.id, *(j.id for j in many)):
        assert app.get_job(job_id) is None
    assert app.list_jobs() == []
    assert app.drain() == {}

    async def main() -> None:
        await app.start()
        try:
            await asyncio.sleep(0.3)
        finally:
            await app.stop()

    arun(main())
    assert ran == []
    assert app.list_jobs() == []


def test_enqueue_many_in_a_transaction_is_all_or_nothing(
    app: errands.App, transactions: Any
) -> None:
    ship = _ready(app, transactions)
    conn = transactions.open()
    jobs = app.enqueue_many([ship.new(order=i) for i in range(5)], conn=conn)
    assert len(jobs) == 5 and len({j.id for j in jobs}) == 5
    assert app.list_jobs() == []
    transactions.commit(conn)
    assert sorted(j.id for j in app.list_jobs()) == sorted(j.id for j in jobs)
    assert app.drain() == {"completed": 5}


def test_async_enqueue_with_conn(
    app: errands.App, transactions: Any, arun: Callable[..., Any]
) -> None:
    ship = _ready(app, transactions)
    conn = transactions.open()

    async def main() -> errands.Job:
        return await ship.aenqueue(order=9, conn=conn)

    job = arun(main())
    assert app.get_job(job.id) is None
    transactions.commit(conn)
    assert app.get_job(job.id) is not None


def test_commit_while_a_node_runs_is_picked_up(
    app: errands.App, transactions: Any, arun: Callable[..., Any], until: Callable[..., Any]
) -> None:
    """An enqueue inside the caller's transaction cannot wake the node before commit;
    after commit the job must still run promptly (notification or polling)."""
    ship = _ready(app, transactions)

    async def main() -> int:
        await app.start()
        try:

            def enqueue_and_commit() -> errands.Job:
                # a sync web request: one thread opens, enqueues and commits
                conn = transactions.open()
                job = ship.enqueue(order=5, conn=conn)
                time.sleep(0.1)
                transactions.commit(conn)
                return job

            job = await asyncio.to_thread(enqueue_and_commit)
            await until(
                lambda: (
                    (stored := app.get_job(job.id)) is not None
                    and stored.state == JobState.COMPLETED
                ),
                3,
            )
            return job.id
        finally:
            await app.stop()

    job_id = arun(main())
    assert app.get_job(job_id).result == 5  # type: ignore[union-attr]


def test_sqlalchemy_connection_and_session(app: errands.App, transactions: Any) -> None:
    """Sync web apps hold a SQLAlchemy Connection or Session, not a raw driver connection."""
    import sqlalchemy
    from sqlalchemy.orm import Session

    ship = _ready(app, transactions)
    engine = transactions.sqlalchemy_engine()
    insert = sqlalchemy.text(f"INSERT INTO {transactions.table} (id) VALUES (:id)")

    with engine.connect() as conn:
        conn.execute(insert, {"id": 10})
        rolled_back = ship.enqueue(order=10, conn=conn)
        conn.rollback()
    assert app.get_job(rolled_back.id) is None

    with engine.connect() as conn:
        conn.execute(insert, {"id": 11})
        kept = ship.enqueue(order=11, conn=conn)
        assert app.get_job(kept.id) is None
        conn.commit()
    assert app.get_job(kept.id) is not None

    with Session(engine) as session:
        session.execute(insert, {"id": 12})
        in_session = ship.enqueue(order=12, conn=session)
        assert app.get_job(in_session.id) is None
        session.commit()
    assert app.get_job(in_session.id) is not None

    assert transactions.orders() == [11, 12]
    assert app.drain() == {"completed": 2}
