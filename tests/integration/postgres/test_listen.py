"""LISTEN/NOTIFY wake-ups of the PostgreSQL engine."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg

from errands.engines.base import Ack
from errands.engines.pg_listen import PgListener
from errands.engines.postgres import PostgresEngine, channel_name
from errands.job import JobState
from tests.integration.postgres.conftest import EngineFactory, JobFactory
from tests.support import POSTGRES_URL, postgres_schema, wait_for


class Wakes:
    """Collects wake-ups from a listener thread."""

    def __init__(self) -> None:
        self.queues: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, queue: str) -> None:
        with self._lock:
            self.queues[queue] += 1

    def total(self) -> int:
        with self._lock:
            return sum(self.queues.values())


def listening(engine: PostgresEngine, wakes: Wakes) -> PgListener:
    listener = engine.listen(wakes)
    assert listener.ready.wait(10), "the listener never connected"
    return listener


def test_insert_notifies_once_per_queue_after_commit(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    wakes = Wakes()
    listener = listening(engine, wakes)
    try:
        engine.insert([new_job(queue="a") for _ in range(50)] + [new_job(queue="b")])
        wait_for(lambda: wakes.total() >= 2)
        time.sleep(0.3)
        assert wakes.queues == Counter({"a": 1, "b": 1})
    finally:
        listener.stop()
        listener.stop()  # twice is fine


def test_scheduled_insert_does_not_wake(engine: PostgresEngine, new_job: JobFactory) -> None:
    wakes = Wakes()
    listener = listening(engine, wakes)
    try:
        engine.insert([new_job(queue="later", scheduled_at=time.time() + 3600)])
        engine.insert([new_job(queue="now")])
        wait_for(lambda: wakes.total() >= 1)
        time.sleep(0.2)
        assert wakes.queues == Counter({"now": 1})
    finally:
        listener.stop()


def test_no_notification_before_commit_nor_after_rollback(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    wakes = Wakes()
    listener = listening(engine, wakes)
    try:
        with psycopg.connect(POSTGRES_URL) as conn:
            engine.insert([new_job(queue="rolled")], conn=conn)
            time.sleep(0.3)
            assert wakes.total() == 0
            conn.rollback()
            engine.insert([new_job(queue="kept")], conn=conn)
            conn.commit()
        wait_for(lambda: wakes.total() >= 1)
        time.sleep(0.2)
        assert wakes.queues == Counter({"kept": 1})
    finally:
        listener.stop()


def test_stage_and_retry_notify(
    engine: PostgresEngine, new_job: JobFactory, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    [job] = engine.insert([new_job(queue="s", scheduled_at=time.time() + 0.2)])
    wakes = Wakes()
    listener = listening(engine, wakes)
    try:
        wait_for(lambda: engine.stage(10) == ["s"])
        wait_for(lambda: wakes.queues["s"] == 1)
        engine.fetch("s", 1, "p", ["w"])
        engine.ack([Ack(job.id, 1, "p", JobState.COMPLETED)])
        assert engine.retry_job(job.id) is not None
        wait_for(lambda: wakes.queues["s"] == 2)
    finally:
        listener.stop()


def test_notify_false_sends_nothing_but_polling_still_finds_jobs(
    make_engine: EngineFactory, engine: PostgresEngine, new_job: JobFactory
) -> None:
    quiet = make_engine(notify=False)
    wakes = Wakes()
    listener = listening(engine, wakes)
    try:
        [job] = quiet.insert([new_job(queue="q")])
        time.sleep(0.5)
        assert wakes.total() == 0
        assert [j.id for j in quiet.fetch("q", 10, "p", ["w"])] == [job.id]
        engine.insert([new_job(queue="loud")])  # the listener itself works
        wait_for(lambda: wakes.queues["loud"] == 1)
    finally:
        listener.stop()


def test_schemas_do_not_cross_talk(
    make_engine: EngineFactory, engine: PostgresEngine, new_job: JobFactory
) -> None:
    with postgres_schema() as other_schema:
        other = make_engine(schema=other_schema)
        other.migrate()
        assert channel_name(other_schema) != engine.channel
        wakes = Wakes()
        listener = listening(engine, wakes)
        try:
            other.insert([new_job(queue="theirs")])
            engine.insert([new_job(queue="ours")])
            wait_for(lambda: wakes.queues["ours"] == 1)
            time.sleep(0.2)
            assert wakes.queues == Counter({"ours": 1})
        finally:
            listener.stop()
            other.close()


def test_listener_reconnects_after_losing_its_connection(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any], pg_schema: str
) -> None:
    wakes = Wakes()
    listener = listening(engine, wakes)
    try:
        killed = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"errands-listen:{pg_schema}"[:63],),
        ).fetchall()
        assert killed == [(True,)]
        wait_for(lambda: wakes.queues["*"] >= 1)  # woken for what it may have missed
        engine.insert([new_job(queue="after")])
        wait_for(lambda: wakes.queues["after"] >= 1)
    finally:
        started = time.monotonic()
        listener.stop()
        assert time.monotonic() - started < 1.5


def test_long_schema_names_get_a_short_channel() -> None:
    name = channel_name("s" * 63)
    assert len(name.encode()) <= 63 and name.startswith("errands.")
    assert channel_name("public") == "errands.public"
