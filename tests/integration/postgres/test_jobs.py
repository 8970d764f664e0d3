"""Insert, claim, ack, stage, rescue and prune on the PostgreSQL engine."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql
from rich.console import Console

from errands.cli_render import job_detail, jobs_table
from errands.engines.base import Ack, ProducerInfo
from errands.engines.postgres import PostgresEngine
from errands.errors import InvalidJobError
from errands.job import JobState
from tests.integration.postgres.conftest import JobFactory
from tests.support import POSTGRES_URL


def db_now(db: psycopg.Connection[Any]) -> float:
    row = db.execute("SELECT extract(epoch FROM now())::float8").fetchone()
    assert row is not None
    return float(row[0])


def run_sql(db: psycopg.Connection[Any], query: str, schema: str, *params: Any) -> None:
    """Run ``query`` with ``{}`` standing for the schema."""
    db.execute(sql.SQL(query).format(sql.Identifier(schema)), params or None)


class CountingCursor(psycopg.Cursor[Any]):
    executed: list[bytes] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        CountingCursor.executed.append(bytes(query) if isinstance(query, bytes) else b"?")
        return super().execute(query, params, **kwargs)

    def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        CountingCursor.executed.append(b"COPY")
        return super().copy(statement, params, **kwargs)


# -- insert -------------------------------------------------------------------


def test_insert_one_job(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any]
) -> None:
    [job] = engine.insert([new_job(args={"to": "a@b.c"}, tags=["x"], meta={"k": 1}, timeout=2.5)])
    assert job.state is JobState.AVAILABLE
    assert job.args == {"to": "a@b.c"} and job.tags == ["x"] and job.meta == {"k": 1}
    assert job.timeout == 2.5 and job.attempt == 0 and job.errors == [] and job.result is None
    assert isinstance(job.inserted_at, float) and job.scheduled_at == job.inserted_at
    assert abs(job.inserted_at - db_now(db)) < 5  # the database's clock
    assert engine.get_job(job.id) == job


def test_insert_future_job_is_scheduled_and_past_job_available(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    later, earlier = time.time() + 3600, time.time() - 3600
    future, past = engine.insert([new_job(scheduled_at=later), new_job(scheduled_at=earlier)])
    assert future.state is JobState.SCHEDULED and abs(future.scheduled_at - later) < 1e-3
    assert past.state is JobState.AVAILABLE and abs(past.scheduled_at - earlier) < 1e-3


def test_a_single_insert_is_scheduled_or_available_by_its_due_time(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    later = time.time() + 3600
    [future] = engine.insert([new_job(scheduled_at=later)])
    [now] = engine.insert([new_job(scheduled_at=time.time() - 1)])
    assert future.state is JobState.SCHEDULED and abs(future.scheduled_at - later) < 1e-3
    assert now.state is JobState.AVAILABLE
    assert engine.get_job(future.id) == future and engine.get_job(now.id) == now


def test_single_inserts_from_many_threads_each_get_their_own_job(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    """One thread takes the warm connection, the rest pooled ones, each its own cursor."""
    inserted: list[tuple[int, int, int]] = []

    def insert(thread: int) -> None:
        for n in range(25):
            [job] = engine.insert([new_job(args={"t": thread, "n": n})])
            inserted.append((job.id, job.args["t"], job.args["n"]))

    threads = [threading.Thread(target=insert, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({job_id for job_id, _, _ in inserted}) == 200
    for job_id, thread_no, n in inserted:
        stored = engine.get_job(job_id)
        assert stored is not None and stored.args == {"t": thread_no, "n": n}


def test_bulk_insert_is_a_few_statements_and_keeps_input_order(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    jobs = [new_job(args={"n": n}, queue=f"q{n % 3}", priority=n % 10) for n in range(5_000)]
    CountingCursor.executed = []
    with psycopg.connect(POSTGRES_URL, cursor_factory=CountingCursor) as conn:
        inserted = engine.insert(jobs, conn=conn)
        # Reserve the ids, one COPY of every row, one NOTIFY statement: never one per job.
        assert len(CountingCursor.executed) == 3 and CountingCursor.executed[1] == b"COPY"
        conn.commit()
    assert [job.args["n"] for job in inserted] == list(range(5_000))
    assert [job.queue for job in inserted] == [job.queue for job in jobs]
    ids = [job.id for job in inserted]
    assert ids == sorted(ids) and len(set(ids)) == 5_000
    assert sum(engine.queue_counts()[q]["available"] for q in ("q0", "q1", "q2")) == 5_000


def test_insert_nothing(engine: PostgresEngine) -> None:
    assert engine.insert([]) == []


def test_json_scalars_round_trip(engine: PostgresEngine, new_job: JobFactory) -> None:
    [job] = engine.insert([new_job(args={"s": "text", "f": 1.5, "n": None, "u": "é\u2603"})])
    assert len(engine.fetch("default", 1, "p", ["w"])) == 1
    ack = Ack(job.id, 1, "p", JobState.COMPLETED, result=b'"just a string"')
    assert engine.ack([ack]) == 1
    done = engine.get_job(job.id)
    assert done is not None
    assert done.args == {"s": "text", "f": 1.5, "n": None, "u": "é\u2603"}
    assert done.result == "just a string"


# -- fetch --------------------------------------------------------------------


def test_fetch_respects_limit_priority_and_workers(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    engine.insert([new_job(priority=p, args={"p": p}) for p in (5, 1, 9, 0, 1, 3)])
    engine.insert([new_job(worker="other"), new_job(queue="elsewhere")])
    first = engine.fetch("default", 4, "p1", ["w"])
    assert [job.priority for job in first] == [0, 1, 1, 3]
    assert all(job.state is JobState.EXECUTING and job.attempt == 1 for job in first)
    assert all(job.attempted_by == "p1" and job.attempted_at is not None for job in first)
    rest = engine.fetch("default", 100, "p1", ["w"])
    assert [job.priority for job in rest] == [5, 9]
    assert engine.fetch("default", 100, "p1", ["w"]) == []
    assert engine.fetch("default", 0, "p1", ["w", "other"]) == []
    assert engine.fetch("default", 10, "p1", []) == []
    assert engine.unknown_workers("default", ["w"]) == ["other"]
    assert [job.worker for job in engine.fetch("default", 10, "p1", ["other"])] == ["other"]


def test_fetch_orders_equal_priorities_by_due_time_then_id(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    now = time.time()
    engine.insert([new_job(args={"n": 1}, scheduled_at=now - 10), new_job(args={"n": 2})])
    engine.insert([new_job(args={"n": 3}, scheduled_at=now - 20)])
    assert [job.args["n"] for job in engine.fetch("default", 10, "p", ["w"])] == [3, 1, 2]


def test_fetch_skips_rows_locked_by_another_transaction(
    engine: PostgresEngine, new_job: JobFactory, pg_schema: str
) -> None:
    locked, free = engine.insert([new_job(), new_job()])
    with psycopg.connect(POSTGRES_URL) as other:
        other.execute(
            sql.SQL("SELECT 1 FROM {}.errands_jobs WHERE id = %s FOR UPDATE").format(
                sql.Identifier(pg_schema)
            ),
            (locked.id,),
        )
        started = time.monotonic()
        assert [job.id for job in engine.fetch("default", 10, "p", ["w"])] == [free.id]
        assert time.monotonic() - started < 2  # skipped, not waited for
        other.rollback()
    assert [job.id for job in engine.fetch("default", 10, "p", ["w"])] == [locked.id]


def test_concurrent_fetchers_never_share_a_job(
    make_engine: Any, engine: PostgresEngine, new_job: JobFactory
) -> None:
    total = 3_000
    engine.insert([new_job(args={"n": n}) for n in range(total)])
    fetchers = [make_engine(max_size=2) for _ in range(4)]
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(8)

    def work(name: str, fetcher: PostgresEngine) -> None:
        barrier.wait()
        mine = claimed.setdefault(name, [])
        while True:
            jobs = fetcher.fetch("default", 7, name, ["w"])
            assert len(jobs) <= 7
            if not jobs:
                return
            mine.extend(job.id for job in jobs)

    threads = [threading.Thread(target=work, args=(f"p{i}", fetchers[i % 4])) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [job_id for ids in claimed.values() for job_id in ids]
    assert len(every) == total and len(set(every)) == total
    assert sum(1 for ids in claimed.values() if ids) > 1
    assert engine.queue_counts() == {"default": {"executing": total}}


# -- ack ----------------------------------------------------------------------


def test_ack_batch_applies_outcomes_and_fences_stale_acks(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    a, b, c, d, e = engine.insert([new_job(args={"n": n}) for n in range(5)])
    engine.fetch("default", 5, "p1", ["w"])
    retry_at = time.time() + 60
    error = {"type": "ValueError", "message": "boom", "traceback": "tb", "at": 1.0, "attempt": 1}
    acks = [
        Ack(a.id, 1, "p1", JobState.COMPLETED, result=b'{"ok":true}'),
        Ack(b.id, 1, "p1", JobState.RETRYABLE, error=error, scheduled_at=retry_at),
        Ack(c.id, 1, "p1", JobState.SCHEDULED, scheduled_at=retry_at, snoozed=True),
        Ack(d.id, 2, "p1", JobState.COMPLETED),  # stale attempt
        Ack(e.id, 1, "intruder", JobState.DISCARDED),  # wrong producer
    ]
    assert engine.ack(acks) == 3
    done, retryable, snoozed, still_d, still_e = (engine.get_job(j.id) for j in (a, b, c, d, e))
    assert done is not None and done.state is JobState.COMPLETED
    assert done.result == {"ok": True} and done.finished_at is not None
    assert retryable is not None and retryable.state is JobState.RETRYABLE
    assert retryable.errors == [error] and retryable.finished_at is None
    assert abs(retryable.scheduled_at - retry_at) < 1e-3
    assert snoozed is not None and snoozed.state is JobState.SCHEDULED
    # a snooze spends no attempt: attempt keeps counting claims, max_attempts grows
    assert (snoozed.attempt, snoozed.max_attempts) == (1, c.max_attempts + 1)
    for untouched in (still_d, still_e):
        assert untouched is not None and untouched.state is JobState.EXECUTING
        assert untouched.attempt == 1 and untouched.errors == []
    # The same acks again are all stale now (d, e still stale).
    assert engine.ack(acks) == 0
    assert engine.ack([]) == 0


def test_errors_accumulate_over_attempts(engine: PostgresEngine, new_job: JobFactory) -> None:
    [job] = engine.insert([new_job(max_attempts=3)])
    for attempt in (1, 2):
        [claimed] = engine.fetch("default", 1, "p", ["w"])
        assert claimed.attempt == attempt
        error = {"type": "E", "message": str(attempt), "attempt": attempt}
        state = JobState.RETRYABLE
        assert engine.ack([Ack(job.id, attempt, "p", state, error=error, scheduled_at=0)]) == 1
        assert engine.stage(10) == ["default"]
    final = engine.get_job(job.id)
    assert final is not None and [err["message"] for err in final.errors] == ["1", "2"]


def test_ack_after_cancel_is_stale(engine: PostgresEngine, new_job: JobFactory) -> None:
    [job] = engine.insert([new_job()])
    engine.fetch("default", 1, "p", ["w"])
    cancelled = engine.cancel_job(job.id)
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert engine.ack([Ack(job.id, 1, "p", JobState.COMPLETED)]) == 0
    assert engine.cancel_job(job.id) is None


# -- stage, rescue, prune -----------------------------------------------------


def test_stage_makes_due_jobs_available(
    engine: PostgresEngine, new_job: JobFactory, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    future = time.time() + 3600
    jobs = engine.insert(
        [new_job(queue="a", scheduled_at=future), new_job(queue="b", scheduled_at=future)]
        + [new_job(queue="c", scheduled_at=future) for _ in range(3)]
    )
    later = engine.insert([new_job(queue="d", scheduled_at=future)])
    assert engine.stage(100) == []
    for queue, ago in (("a", 3), ("b", 2), ("c", 1)):
        run_sql(
            db,
            "UPDATE {}.errands_jobs SET scheduled_at = now() - make_interval(secs => %s) "
            "WHERE queue = %s",
            pg_schema,
            ago,
            queue,
        )
    run_sql(db, "UPDATE {}.errands_jobs SET state = 'retryable' WHERE queue = 'b'", pg_schema)
    assert engine.stage(2) == ["a", "b"]  # oldest due first, bounded
    assert engine.stage(100) == ["c"]
    assert engine.stage(100) == []
    states = {job.id: job.state for job in engine.list_jobs(limit=100)}
    assert {states[job.id] for job in jobs} == {JobState.AVAILABLE}
    assert states[later[0].id] is JobState.SCHEDULED


def test_rescue_returns_jobs_of_silent_producers(
    engine: PostgresEngine, new_job: JobFactory, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    engine.register_producer(ProducerInfo("dead", "node-1", "default", 1))
    engine.register_producer(ProducerInfo("alive", "node-2", "default", 2))
    spent, fresh, kept = engine.insert(
        [new_job(max_attempts=1), new_job(max_attempts=5), new_job()]
    )
    engine.fetch("default", 2, "dead", ["w"])
    engine.fetch("default", 1, "alive", ["w"])
    assert engine.rescue(30).total == 0  # everyone heart-beat just now
    run_sql(
        db,
        "UPDATE {}.errands_producers SET heartbeat_at = now() - interval '60 s' WHERE id = %s",
        pg_schema,
        "dead",
    )
    engine.heartbeat(["alive"])
    counts = engine.rescue(30)
    assert (counts.available, counts.discarded) == (1, 1)
    gone, back, running = (engine.get_job(j.id) for j in (spent, fresh, kept))
    assert gone is not None and gone.state is JobState.DISCARDED and gone.finished_at
    assert back is not None and back.state is JobState.AVAILABLE
    assert back.errors[-1]["type"] == "errands.Rescued" and "dead" in back.errors[-1]["message"]
    assert running is not None and running.state is JobState.EXECUTING
    # A producer silent for 10 x rescue_after is forgotten.
    run_sql(
        db,
        "UPDATE {}.errands_producers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        pg_schema,
        "dead",
    )
    engine.rescue(30)
    rows = db.execute(
        sql.SQL("SELECT id FROM {}.errands_producers").format(sql.Identifier(pg_schema))
    ).fetchall()
    assert rows == [("alive",)]


def test_rescue_of_jobs_whose_producer_never_registered(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    engine.insert([new_job()])
    engine.fetch("default", 1, "ghost", ["w"])
    assert engine.rescue(30).available == 1


def test_rescue_producer_and_unregister(engine: PostgresEngine, new_job: JobFactory) -> None:
    engine.register_producer(ProducerInfo("p", "node", "default", 1))
    a, b = engine.insert([new_job(), new_job()])
    engine.fetch("default", 1, "p", ["w"])
    engine.fetch("default", 1, "other", ["w"])
    other = engine.get_job(b.id)
    assert other is not None and other.attempted_by == "other"
    counts = engine.rescue_producer("p")
    assert (counts.available, counts.discarded) == (1, 0)
    job = engine.get_job(a.id)
    assert job is not None and job.errors[-1]["type"] == "errands.Shutdown"
    engine.unregister_producers(["p"])
    engine.heartbeat(["p"])  # a forgotten producer's heartbeat changes nothing
    engine.unregister_producers([])
    engine.heartbeat([])
    other = engine.get_job(b.id)
    assert other is not None and other.state is JobState.EXECUTING  # not p's job


def test_prune_deletes_old_finished_jobs_in_bounded_batches(
    engine: PostgresEngine, new_job: JobFactory, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    jobs = engine.insert([new_job() for _ in range(5)])
    for job in jobs[:4]:
        engine.cancel_job(job.id)
    assert engine.prune(3600, 10) == 0
    run_sql(db, "UPDATE {}.errands_jobs SET finished_at = now() - interval '2 h'", pg_schema)
    assert engine.prune(3600, 3) == 3
    assert engine.prune(3600, 3) == 1
    assert engine.queue_counts() == {"default": {"available": 1}}


# -- control ------------------------------------------------------------------


def test_retry_cancel_delete_and_list(engine: PostgresEngine, new_job: JobFactory) -> None:
    a, b, c = engine.insert([new_job(max_attempts=1), new_job(queue="mail"), new_job()])
    engine.fetch("default", 1, "p", ["w"])
    assert engine.retry_job(a.id) is None  # executing
    assert engine.delete_job(a.id) is False
    engine.ack([Ack(a.id, 1, "p", JobState.DISCARDED, error={"type": "E"})])
    retried = engine.retry_job(a.id)
    assert retried is not None and retried.state is JobState.AVAILABLE
    assert retried.max_attempts == 2 and retried.finished_at is None
    assert [job.id for job in engine.list_jobs()] == [c.id, b.id, a.id]
    assert [job.id for job in engine.list_jobs(queue="mail")] == [b.id]
    assert [job.id for job in engine.list_jobs(state="available", limit=2)] == [c.id, b.id]
    assert engine.list_jobs(worker="nobody") == []
    assert engine.delete_job(b.id) is True and engine.get_job(b.id) is None
    assert engine.delete_job(b.id) is False
    assert engine.get_job(10**12) is None
    assert engine.retry_job(10**12) is None
    assert engine.queue_counts() == {"default": {"available": 2}}


# -- values PostgreSQL cannot store ---------------------------------------------


def test_nul_in_args_is_refused_before_anything_is_inserted(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    with pytest.raises(InvalidJobError, match="NUL"):
        engine.insert([new_job(), new_job(args={"s": "a\x00b"})])
    with pytest.raises(InvalidJobError, match="meta"):
        engine.insert([new_job(meta={"k": "\x00"})])
    assert engine.queue_counts() == {}
    # The six characters \u0000 are not a NUL and round-trip.
    [job] = engine.insert([new_job(args={"s": "\\u0000", "t": "\\\\u0000"})])
    stored = engine.get_job(job.id)
    assert stored is not None and stored.args == {"s": "\\u0000", "t": "\\\\u0000"}


def test_nul_in_an_outcome_does_not_fail_the_ack_batch(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    # The codec refuses NUL in results before an ack is built; the engine still
    # defends a batch against one that slips through (raw JSON bytes here).
    a, b, c = engine.insert([new_job(), new_job(), new_job()])
    engine.fetch("default", 3, "p", ["w"])
    acks = [
        Ack(a.id, 1, "p", JobState.COMPLETED, result=b'"x\\u0000y"'),
        Ack(b.id, 1, "p", JobState.RETRYABLE, error={"message": "bad \x00"}, scheduled_at=0),
        Ack(c.id, 1, "p", JobState.COMPLETED, result=b"1"),
    ]
    assert engine.ack(acks) == 3
    done, failed, other = (engine.get_job(j.id) for j in (a, b, c))
    assert done is not None and done.result == "x\\u0000y"
    assert failed is not None and failed.errors == [{"message": "bad \\u0000"}]
    assert other is not None and other.result == 1


def test_times_postgres_or_python_cannot_hold(engine: PostgresEngine, new_job: JobFactory) -> None:
    with pytest.raises(InvalidJobError, match="year 9999"):
        engine.insert([new_job(scheduled_at=1e15)])
    a, b = engine.insert([new_job(), new_job()])
    engine.fetch("default", 2, "p", ["w"])
    nan, huge = float("nan"), 1e300
    acks = [
        Ack(a.id, 1, "p", JobState.RETRYABLE, error={"type": "E"}, scheduled_at=nan),
        Ack(b.id, 1, "p", JobState.RETRYABLE, error={"type": "E"}, scheduled_at=huge),
    ]
    assert engine.ack(acks) == 2
    kept, far = engine.get_job(a.id), engine.get_job(b.id)
    assert kept is not None and kept.scheduled_at == a.scheduled_at
    assert far is not None and far.scheduled_at > 2e11


def test_a_job_parked_at_infinity_is_listed_shown_and_never_staged(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any], pg_schema: str
) -> None:
    """PostgreSQL takes 'infinity' in a timestamptz, which datetime cannot hold.

    One such row (a job parked by hand) once made every listing fail; its times
    now read as ``inf``, and the CLI shows them as "never".
    """
    [parked, other] = engine.insert([new_job(args={"n": 1}), new_job(args={"n": 2})])
    table = sql.Identifier(pg_schema, "errands_jobs")
    db.execute(
        sql.SQL(
            "UPDATE {} SET state = 'scheduled', scheduled_at = 'infinity', "
            "finished_at = '-infinity' WHERE id = %s"
        ).format(table),
        [parked.id],
    )
    stored = engine.get_job(parked.id)
    assert stored is not None and stored.state is JobState.SCHEDULED
    assert stored.scheduled_at == math.inf and stored.finished_at == -math.inf
    assert stored.scheduled_time.year == 9999
    assert {job.id for job in engine.list_jobs()} == {parked.id, other.id}
    assert engine.stage(100) == []  # never due
    console = Console(width=200, record=True)
    console.print(jobs_table([stored]))
    console.print(job_detail(stored))  # what `errands jobs` and `errands job ID` print
    shown = console.export_text()
    assert "never" in shown and "since always" in shown
