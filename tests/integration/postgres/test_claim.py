"""The PostgreSQL hot path (pg_claim): outcomes and claims in one statement."""

from __future__ import annotations

import time
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from errands.engines.base import Ack
from errands.engines.pg_claim import ack_params, job_from_claim
from errands.engines.postgres import PostgresEngine
from errands.job import Job, JobState
from errands.limits import QueueLimits, RateLimit, claim_params
from tests.integration.postgres.conftest import EngineFactory, JobFactory
from tests.support import POSTGRES_URL


def _done(job_id: int, attempt: int, producer: str = "p1") -> Ack:
    return Ack(id=job_id, attempt=attempt, producer=producer, state=JobState.COMPLETED)


def test_ack_fetch_records_outcomes_and_claims_in_one_call(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    engine.insert([new_job(args={"i": i}) for i in range(5)])
    first = engine.fetch("default", 2, "p1", ["w"])
    assert len(first) == 2
    applied, second, retry = engine.ack_fetch(
        [_done(job.id, job.attempt) for job in first], "default", 10, "p1", ["w"]
    )
    assert applied == 2 and retry == []
    assert len(second) == 3 and {j.id for j in second}.isdisjoint(j.id for j in first)
    assert all(engine.get_job(j.id).state is JobState.COMPLETED for j in first)  # type: ignore[union-attr]
    # The claimed jobs decode to what the database holds.
    for job in second:
        assert engine.get_job(job.id) == job


def test_a_claimed_row_with_every_field_set_decodes_to_the_stored_job(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any], pg_schema: str
) -> None:
    """The claim's JSON array carries Job's fields in order; none may shift or go missing."""
    [job] = engine.insert(
        [new_job(args={"s": "é\u2028", "deep": [1, {"x": None}]}, meta={"k": 1}, tags=["t"])]
    )
    db.execute(
        sql.SQL(
            'UPDATE {}.errands_jobs SET errors = \'[{{"type": "ValueError"}}]\', '
            "result = '{{\"ok\": true}}', timeout = 2.5, priority = 3, max_attempts = 7, "
            "finished_at = to_timestamp(1764360000.123456) WHERE id = %s"
        ).format(sql.Identifier(pg_schema)),
        [job.id],
    )
    [claimed] = engine.fetch("default", 1, "p1", ["w"])
    assert claimed == engine.get_job(job.id)
    assert claimed.args == {"s": "é\u2028", "deep": [1, {"x": None}]} and claimed.tags == ["t"]
    assert claimed.errors == [{"type": "ValueError"}] and claimed.result == {"ok": True}
    assert (claimed.priority, claimed.max_attempts, claimed.timeout) == (3, 7, 2.5)
    assert claimed.state is JobState.EXECUTING and claimed.attempted_by == "p1"
    assert claimed.finished_at == 1764360000.123456


def test_a_claimed_row_of_the_wrong_shape_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="a claimed row has 3 fields, not 18"):
        job_from_claim({"id": 1, "attempt": 1, "job": "[1, 2, 3]"})


def test_a_stale_ack_in_ack_fetch_changes_nothing(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    [job] = engine.insert([new_job()])
    [claimed] = engine.fetch("default", 1, "p1", ["w"])
    stale = _done(claimed.id, claimed.attempt, producer="someone-else")
    applied, jobs, retry = engine.ack_fetch([stale], "default", 1, "p1", ["w"])
    assert (applied, jobs, retry) == (0, [], [])
    assert engine.get_job(job.id).state is JobState.EXECUTING  # type: ignore[union-attr]


def test_a_locked_row_is_skipped_not_waited_for(
    engine: PostgresEngine, new_job: JobFactory, pg_schema: str
) -> None:
    """An operator's transaction holding a row lock must not stall the claim."""
    engine.insert([new_job(args={"i": i}) for i in range(3)])
    [running] = engine.fetch("default", 1, "p1", ["w"])
    ack = _done(running.id, running.attempt)
    with psycopg.connect(POSTGRES_URL) as locker:
        locker.execute(
            sql.SQL("SELECT id FROM {}.errands_jobs WHERE id = %s FOR UPDATE").format(
                sql.Identifier(pg_schema)
            ),
            (running.id,),
        )
        started = time.monotonic()
        applied, claimed, retry = engine.ack_fetch([ack], "default", 5, "p1", ["w"])
        assert time.monotonic() - started < 2.0
        assert applied == 0 and retry == [ack]
        assert len(claimed) == 2
        locker.rollback()
    assert engine.ack(retry) == 1
    assert engine.get_job(running.id).state is JobState.COMPLETED  # type: ignore[union-attr]


def _commit_modes(db: psycopg.Connection[Any], schema: str) -> None:
    """Install a trigger recording synchronous_commit as each job row is updated."""
    ident = sql.Identifier(schema)
    db.execute(sql.SQL("CREATE TABLE {}.commit_modes (mode text)").format(ident))
    db.execute(
        sql.SQL(
            "CREATE FUNCTION {}.note_mode() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO {}.commit_modes VALUES (current_setting('synchronous_commit')); "
            "RETURN NEW; END $$"
        ).format(ident, ident)
    )
    db.execute(
        sql.SQL(
            "CREATE TRIGGER note_mode AFTER UPDATE ON {}.errands_jobs "
            "FOR EACH ROW EXECUTE FUNCTION {}.note_mode()"
        ).format(ident, ident)
    )


def _modes(db: psycopg.Connection[Any], schema: str) -> set[str]:
    rows = db.execute(
        sql.SQL("SELECT DISTINCT mode FROM {}.commit_modes").format(sql.Identifier(schema))
    ).fetchall()
    return {row[0] for row in rows}


def test_claims_and_outcomes_commit_asynchronously_by_default(
    engine: PostgresEngine, new_job: JobFactory, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    _commit_modes(db, pg_schema)
    engine.insert([new_job() for _ in range(2)])
    [job] = engine.fetch("default", 1, "p1", ["w"])
    engine.ack_fetch([_done(job.id, job.attempt)], "default", 1, "p1", ["w"])
    assert _modes(db, pg_schema) == {"off"}
    # The setting is local to those statements: the pool's connections keep the default.
    with engine._pool.connection("checking") as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
    assert row is not None and row[0] == "on"


def test_synchronous_acks_keeps_every_commit_synchronous(
    make_engine: EngineFactory, new_job: JobFactory, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    engine = make_engine(synchronous_acks=True)
    engine.migrate()
    _commit_modes(db, pg_schema)
    engine.insert([new_job() for _ in range(2)])
    [job] = engine.fetch("default", 1, "p1", ["w"])
    assert engine.ack([_done(job.id, job.attempt)]) == 1
    engine.ack_fetch([], "default", 1, "p1", ["w"])
    assert _modes(db, pg_schema) == {"on"}


def test_the_app_passes_synchronous_acks_to_its_engine(pg_schema: str) -> None:
    import errands

    default = errands.App(POSTGRES_URL, schema=pg_schema)
    durable = errands.App(POSTGRES_URL, schema=pg_schema, synchronous_acks=True)
    assert isinstance(default.engine, PostgresEngine) and not default.engine.synchronous_acks
    assert isinstance(durable.engine, PostgresEngine) and durable.engine.synchronous_acks
    default.close()
    durable.close()


def _scanned_rows(plan: dict[str, Any]) -> int:
    """The most rows any scan of errands_jobs produced in an EXPLAIN ANALYZE plan."""
    own = plan.get("Actual Rows", 0) if plan.get("Relation Name") == "errands_jobs" else 0
    return max([own, *(_scanned_rows(child) for child in plan.get("Plans", []))])


def test_the_claim_reads_only_the_jobs_it_takes_before_the_table_has_statistics(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any], pg_schema: str
) -> None:
    """A freshly bulk-loaded, never-analyzed table must not make every claim sort the queue.

    With the old (state, queue) index the planner read and sorted all 60,000
    available jobs on each claim; draining 60,000 fell from ~9,000 to ~1,100 jobs/s.
    """
    table = sql.SQL("{}.errands_jobs").format(sql.Identifier(pg_schema))
    db.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(table))
    engine.insert([new_job(args={"i": i}) for i in range(60_000)])
    [[reltuples]] = db.execute(
        "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [f"{pg_schema}.errands_jobs"]
    ).fetchall()
    assert reltuples == -1  # never analyzed: the planner has no statistics
    params = engine._fetch_params("default", 10, "p1", ["w"])
    params.update(commit="on", acks="[]", ids=[])
    for statement in ("claim", "ack_fetch"):
        with db.transaction(force_rollback=True):
            explain = b"EXPLAIN (ANALYZE, FORMAT JSON) " + engine._q(statement)
            [[plans]] = db.execute(explain, params).fetchall()
        assert 10 <= _scanned_rows(plans[0]["Plan"]) <= 20, statement


def _read_rows(plan: dict[str, Any]) -> int:
    """The most rows (all loops) any node read from errands_jobs or one of its indexes,
    counting those its filter then dropped."""
    reads = plan.get("Relation Name") == "errands_jobs" or str(
        plan.get("Index Name", "")
    ).startswith("errands_jobs")
    read = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
    own = read * plan.get("Actual Loops", 1) if reads else 0
    return max([own, *(_read_rows(child) for child in plan.get("Plans", []))])


def _rows_read_by_outcomes(
    engine: PostgresEngine, db: psycopg.Connection[Any], table: sql.Composed, claimed: list[Job]
) -> dict[tuple[str, bool], int]:
    """The rows ack, ack_fetch and release read (:func:`_read_rows`) for the
    outcomes of ``claimed``, each rolled back, before and after ``ANALYZE``."""
    acks = {
        **engine._fetch_params("default", 10, "p1", ["w"]),
        **ack_params([_done(job.id, job.attempt) for job in claimed]),
        "commit": "on",
    }
    released = {
        "jobs": orjson.dumps([{"id": job.id, "attempt": job.attempt} for job in claimed]).decode(),
        "ids": [job.id for job in claimed],
        "producer": "p1",
    }
    read: dict[tuple[str, bool], int] = {}
    for analyzed in (False, True):
        if analyzed:
            db.execute(sql.SQL("ANALYZE {}").format(table))
        for statement, params in (("ack", acks), ("ack_fetch", acks), ("release", released)):
            with db.transaction(force_rollback=True):
                explain = b"EXPLAIN (ANALYZE, FORMAT JSON) " + engine._q(statement)
                [[plans]] = db.execute(explain, params).fetchall()
            read[(statement, analyzed)] = _read_rows(plans[0]["Plan"])
    return read


def test_acks_read_only_their_own_jobs_however_many_passed_through_executing(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any], pg_schema: str
) -> None:
    """Every job passes through the partial index of executing jobs, which keeps the
    dead entries until a vacuum. An ack that named the state let the planner scan
    that index: each batch read every job run since the last vacuum (3,700 index
    entries for 50 acks, mid-drain). Acks (and a hand-back of claimed jobs, which
    is fenced the same way) find their jobs by primary key."""
    table = sql.SQL("{}.errands_jobs").format(sql.Identifier(pg_schema))
    db.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(table))
    engine.insert([new_job(args={"i": i}) for i in range(20_010)])
    for step in (
        "UPDATE {} SET state = 'executing', attempt = 1, attempted_by = 'old', "
        "attempted_at = now() WHERE id NOT IN (SELECT id FROM {} ORDER BY id DESC LIMIT 10)",
        "UPDATE {} SET state = 'completed', finished_at = now() WHERE attempted_by = 'old'",
    ):
        db.execute(sql.SQL(step).format(table, table))
    claimed = engine.fetch("default", 10, "p1", ["w"])
    assert len(claimed) == 10
    read = _rows_read_by_outcomes(engine, db, table, claimed)
    assert max(read.values()) <= 20, read
    assert engine.release(claimed[:5], "p1") == 5
    assert engine.ack([_done(job.id, job.attempt) for job in claimed[5:]]) == 5


def test_a_full_batch_of_acks_never_reads_the_whole_table(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any], pg_schema: str
) -> None:
    """A connection's first runs of a statement are planned with its values. Shown
    a batch's ids, the planner costs one index probe per id against one pass over
    the table: from ~100 ids on a 20,000-row table the pass won, and each of the
    first acks on every new connection read the whole table (15-90 ms each,
    mid-drain). The ids now reach the plan as a value the planner cannot see, so
    a batch is always found by primary key."""
    table = sql.SQL("{}.errands_jobs").format(sql.Identifier(pg_schema))
    db.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(table))
    engine.insert([new_job() for _ in range(20_000)])
    claimed = engine.fetch("default", 200, "p1", ["w"])
    assert len(claimed) == 200
    read = _rows_read_by_outcomes(engine, db, table, claimed)
    # A pass over the table reads 20,000 rows; by key, each claimed job's row
    # versions (available, executing) and the claim's few: under 1,000.
    assert max(read.values()) <= 1_000, read
    assert engine.ack([_done(job.id, job.attempt) for job in claimed]) == 200


@pytest.mark.parametrize("held", [10, 500])
def test_looking_for_cancelled_jobs_reads_only_the_running_ones(
    engine: PostgresEngine,
    new_job: JobFactory,
    db: psycopg.Connection[Any],
    pg_schema: str,
    held: int,
) -> None:
    """Every node asks each second which of the jobs it holds (hundreds, on a busy
    node) were cancelled. On a table without statistics the planner intersected 10
    ids with the whole partial index of finished jobs (20,001 entries read, every
    job ever finished); shown 500, it costed one probe per id above one pass over
    the table and read all of it. State and ids now reach the plan as values it
    cannot see into."""
    table = sql.SQL("{}.errands_jobs").format(sql.Identifier(pg_schema))
    db.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(table))
    engine.insert([new_job() for _ in range(20_000 + held)])
    db.execute(
        sql.SQL(
            "UPDATE {} SET state = 'completed', attempt = 1, finished_at = now() "
            "WHERE id NOT IN (SELECT id FROM {} ORDER BY id DESC LIMIT %s)"
        ).format(table, table),
        [held],
    )
    running = engine.fetch("default", held, "p1", ["w"])
    assert len(running) == held
    assert engine.cancel_job(running[0].id) is not None
    ids = [job.id for job in running]
    for analyzed in (False, True):
        if analyzed:
            db.execute(sql.SQL("ANALYZE {}").format(table))
        explain = b"EXPLAIN (ANALYZE, FORMAT JSON) " + engine._q("cancelled_jobs")
        [[plans]] = db.execute(explain, {"ids": ids}).fetchall()
        # By key: each held job's row versions (available, executing), and a few more.
        assert _read_rows(plans[0]["Plan"]) <= 3 * held + 10, (analyzed, plans)
    assert engine.cancelled_jobs(ids) == [running[0].id]


def test_a_rate_limited_claim_reads_only_the_starts_in_its_window(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any], pg_schema: str
) -> None:
    """A job keeps its rate_started_at until it is pruned, so a rate-limited queue's
    index holds every start of the last days. Counting the window's starts as a
    join with the clock, the planner (with or without statistics, for a queue that
    is a quarter of the table) read the queue's whole rate index and filtered it
    afterwards: 5,000 entries for a window that held none, on every claim of the
    queue. The window's start is now a bound of the index scan."""
    table = sql.SQL("{}.errands_jobs").format(sql.Identifier(pg_schema))
    db.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(table))
    engine.insert([new_job(queue="limited" if i % 4 == 0 else "default") for i in range(20_040)])
    db.execute(
        sql.SQL(
            "UPDATE {} SET state = 'completed', attempt = 1, attempted_by = 'old', "
            "attempted_at = now() - interval '1 hour', finished_at = now(), "
            "rate_started_at = CASE WHEN queue = 'limited' THEN now() - interval '1 hour' END "
            "WHERE id NOT IN (SELECT id FROM {} WHERE queue = 'limited' ORDER BY id DESC LIMIT 10)"
        ).format(table, table)
    )
    for limits in (
        QueueLimits(rate_limit=RateLimit(100, 60)),
        QueueLimits(global_limit=5, rate_limit=RateLimit(100, 60)),
    ):
        params = {**engine._fetch_params("limited", 10, "p1", ["w"]), **claim_params(limits, 10)}
        del params["keys"]
        for analyzed in (False, True):
            if analyzed:
                db.execute(sql.SQL("ANALYZE {}").format(table))
            with db.transaction(force_rollback=True):
                explain = b"EXPLAIN (ANALYZE, FORMAT JSON) " + engine._q("fetch_limited")
                [[plans]] = db.execute(explain, params).fetchall()
            # The claim's own few: its candidates, and the starts it rolled back.
            assert _read_rows(plans[0]["Plan"]) <= 50, (limits, analyzed, plans)
    limits = QueueLimits(global_limit=5, rate_limit=RateLimit(100, 60))
    assert len(engine.fetch("limited", 10, "p1", ["w"], limits)) == 5


def test_the_queues_with_available_jobs_are_found_without_reading_the_rest(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any], pg_schema: str
) -> None:
    """app.drain() with no queue asks each round which queues have jobs ready. It
    counted every job by queue and state (queue_counts: the whole table); now it is
    one look-up in the index of available jobs per queue, however many wait."""
    table = sql.SQL("{}.errands_jobs").format(sql.Identifier(pg_schema))
    db.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(table))
    engine.insert([new_job(queue=f"q{i % 3}") for i in range(20_000)])
    db.execute(
        sql.SQL(
            "UPDATE {} SET state = 'completed', attempt = 1, finished_at = now() "
            "WHERE id % 100 <> 0 OR queue = 'q2'"
        ).format(table)
    )
    for analyzed in (False, True):
        if analyzed:
            db.execute(sql.SQL("ANALYZE {}").format(table))
        explain = b"EXPLAIN (ANALYZE, FORMAT JSON) " + engine._q("available_queues")
        [[plans]] = db.execute(explain).fetchall()
        # 133 jobs wait in q0 and q1: three look-ups, the last finding nothing past q1.
        assert _read_rows(plans[0]["Plan"]) <= 10, (analyzed, plans)
    assert engine.available_queues() == ["q0", "q1"]


def test_rescue_reads_only_executing_jobs_among_many_finished_ones(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any], pg_schema: str
) -> None:
    """Schema v5 dropped the (attempted_by) index: by-producer lookups use the queue one.

    Executing jobs are few; a lookup by producer must read those, never the
    finished history, whether or not the table has statistics.
    """
    table = sql.SQL("{}.errands_jobs").format(sql.Identifier(pg_schema))
    db.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(table))
    engine.insert([new_job(args={"i": i}) for i in range(20_030)])
    db.execute(
        sql.SQL(
            "UPDATE {} SET state = 'completed', attempt = 1, attempted_by = 'old', "
            "attempted_at = now(), finished_at = now() WHERE id NOT IN "
            "(SELECT id FROM {} ORDER BY id DESC LIMIT 30)"
        ).format(table, table)
    )
    assert len(engine.fetch("default", 30, "p1", ["w"])) == 30
    for analyzed in (False, True):
        if analyzed:
            db.execute(sql.SQL("ANALYZE {}").format(table))
        for statement, params in (
            ("rescue_producer", {"producer": "p1"}),
            ("rescue", {"rescue_after": 30.0}),
        ):
            with db.transaction(force_rollback=True):
                explain = b"EXPLAIN (ANALYZE, FORMAT JSON) " + engine._q(statement)
                [[plans]] = db.execute(explain, params).fetchall()
            assert _scanned_rows(plans[0]["Plan"]) == 30, (statement, analyzed, plans)


def _index_pages(db: psycopg.Connection[Any], schema: str, index: str) -> int:
    [[size]] = db.execute("SELECT pg_relation_size(%s::regclass)", [f"{schema}.{index}"]).fetchall()
    return int(size) // 8192


def test_plain_claims_and_acks_never_write_the_rate_index(
    engine: PostgresEngine, new_job: JobFactory, db: psycopg.Connection[Any], pg_schema: str
) -> None:
    """Schema v6: only rate-limited claims enter errands_jobs_rate_started.

    Its predicate (rate_started_at IS NOT NULL) is false for every row a plain
    claim or ack writes, so the index stays at its metapage and one empty leaf.
    """
    engine.insert([new_job(args={"i": i}) for i in range(600)])
    empty = _index_pages(db, pg_schema, "errands_jobs_rate_started")
    for _ in range(3):
        claimed = engine.fetch("default", 100, "p1", ["w"])
        assert engine.ack([_done(job.id, job.attempt) for job in claimed]) == 100
    assert _index_pages(db, pg_schema, "errands_jobs_rate_started") == empty <= 2

    rate = QueueLimits(rate_limit=RateLimit(1000, 60))
    limited = engine.fetch("default", 300, "p1", ["w"], rate)
    assert len(limited) == 300
    assert _index_pages(db, pg_schema, "errands_jobs_rate_started") > empty, "rate starts are in it"
