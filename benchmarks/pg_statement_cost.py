"""What a single enqueue and a drained job cost PostgreSQL, against the least they could.

Two probes, each the median of interleaved rounds so both sides meet the same
moment of a noisy host:

- ``insert``: wall µs per one-row autocommit insert, and the CPU µs this
  process (the client) and the server's processes (read from ``/proc``)
  spent on it — a bare three-column ``INSERT``; the same with a
  ``pg_notify`` (what waking idle workers costs); errands' ``insert_one.sql``
  on a connection of its own; the engine's insert on a caller's connection
  (a transactional enqueue, its own commit here); and ``app.enqueue``.
- ``drain``: the server's CPU µs per job to claim jobs 50 at a time and record
  them completed — the least a claim and a completion can be (``UPDATE …
  RETURNING id`` over ``FOR UPDATE SKIP LOCKED``, then ``UPDATE … FROM
  unnest``) against the engine's own statements: its claim then its ack (what
  a worker on PostgreSQL runs), and ``ack_fetch`` (one statement records a
  batch completed and claims the next).

The CPU is the backends' own, read from ``/proc``, so the server must run on
this machine (for both probes).

Usage::

    python benchmarks/pg_statement_cost.py insert
    python benchmarks/pg_statement_cost.py drain --jobs 40000 --pairs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from errands.bench.child import process_cpu_seconds
from errands.bench.jobs import BENCH_QUEUE, bench_app
from errands.bench.workloads import Target
from errands.engines.base import Ack
from errands.engines.postgres import PostgresEngine
from errands.job import JobState

URL = os.environ.get("ERRANDS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "errands_statement_cost"


def _fresh_app(jobs: int = 0) -> Any:
    """An app on an emptied, migrated schema holding ``jobs`` available no-op jobs."""
    Target.postgres(URL, SCHEMA).reset()
    app = bench_app(URL, SCHEMA)
    if jobs:
        app.enqueue_many([app.new_job("bench.noop", {"i": i}) for i in range(jobs)])
    return app


def _backend_cpu(pids: list[int]) -> float:
    """CPU seconds the server processes ``pids`` used so far (user + system)."""
    return sum(process_cpu_seconds(pid) for pid in pids)


def _errands_backends() -> list[int]:
    """Server process ids of the connections errands opened (application_name errands)."""
    with psycopg.connect(URL, autocommit=True) as look:
        rows = look.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'errands'"
        ).fetchall()
    return [int(row[0]) for row in rows]


#: A variant of the insert probe: what one insert does, and the server processes it uses.
Variant = tuple[Callable[[], object], Callable[[], list[int]]]


def _medians(variants: dict[str, Variant], rounds: int, per_round: int) -> None:
    """Per variant, medians over interleaved rounds: wall µs, this process's CPU µs
    (the client's: Python, psycopg, the socket calls) and its backends' CPU µs."""
    spent: dict[str, list[float]] = {name: [] for name in variants}
    client: dict[str, list[float]] = {name: [] for name in variants}
    server: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (call, backends) in variants.items():
            pids = backends()
            cpu_before, own_before = _backend_cpu(pids), time.process_time()
            started = time.perf_counter()
            for _ in range(per_round):
                call()
            spent[name].append((time.perf_counter() - started) / per_round * 1e6)
            client[name].append((time.process_time() - own_before) / per_round * 1e6)
            server[name].append((_backend_cpu(pids) - cpu_before) / per_round * 1e6)
    for name, values in spent.items():
        print(
            f"{name:44s} {statistics.median(values):7.1f} us per insert (wall), "
            f"client CPU {statistics.median(client[name]):6.1f}, "
            f"server CPU {statistics.median(server[name]):6.1f}"
        )


def insert_probe(rounds: int, per_round: int) -> None:
    """Wall time of one-row commits: bare, with NOTIFY, errands' statement, errands."""
    app = _fresh_app()
    noop = app.registry.resolve("bench.noop")
    app.enqueue(noop, {"i": -1})  # opens errands' connections, so their backends are known
    engine = app.engine
    assert isinstance(engine, PostgresEngine)
    own = psycopg.connect(URL, autocommit=True)
    held = psycopg.connect(URL, autocommit=True)
    cursor = own.cursor(row_factory=tuple_row)
    table = f"{SCHEMA}.errands_jobs"
    bare = f"INSERT INTO {table} (queue, worker, args) VALUES (%s, %s, %s::jsonb)"
    notifying = bare + " RETURNING pg_notify(%s, %s)"
    one_params = {
        "queue": BENCH_QUEUE,
        "worker": "bench.noop",
        "args": '{"i": 1}',
        "meta": "{}",
        "tags": "[]",
        "priority": 0,
        "max_attempts": 20,
        "timeout": None,
        "scheduled_at": None,
        "channel": engine._channel,
    }
    insert_one = engine._q("insert_one")
    job = app.new_job(noop, {"i": 1})
    wake = (engine._channel, BENCH_QUEUE)

    def one_statement() -> None:
        cursor.execute(insert_one, one_params)
        cursor.fetchall()

    def on_own() -> list[int]:
        return [own.info.backend_pid]

    _medians(
        {
            "bare INSERT": (lambda: cursor.execute(bare, ("bare", "x", "{}")), on_own),
            "bare INSERT + pg_notify": (
                lambda: cursor.execute(notifying, ("bare", "x", "{}", *wake)),
                on_own,
            ),
            "insert_one.sql alone": (one_statement, on_own),
            "engine.insert on a caller's connection": (
                lambda: engine.insert([job], conn=held),
                lambda: [held.info.backend_pid],
            ),
            "app.enqueue (the engine's own connections)": (
                lambda: app.enqueue(noop, {"i": 1}),
                _errands_backends,
            ),
        },
        rounds,
        per_round,
    )
    own.close()
    held.close()
    app.close()


LEAST_CLAIM = """
UPDATE {table} AS j
SET state = 'executing', attempt = j.attempt + 1, attempted_at = now(), attempted_by = 'p'
FROM (SELECT id FROM {table}
      WHERE state = 'available' AND queue = %(queue)s
      ORDER BY priority, scheduled_at, id LIMIT %(limit)s
      FOR UPDATE SKIP LOCKED) AS picked
WHERE j.id = picked.id
RETURNING j.id
"""
LEAST_ACK = """
UPDATE {table} AS j SET state = 'completed', finished_at = now()
FROM unnest(%(ids)s::int8[]) AS a(id)
WHERE j.id = a.id AND j.state = 'executing'
"""


def _least(jobs: int, batch: int) -> float:
    """Server CPU µs per job for the least claim and completion, on one connection."""
    app = _fresh_app(jobs)
    app.close()
    table = f"{SCHEMA}.errands_jobs"
    claim, ack = LEAST_CLAIM.format(table=table), LEAST_ACK.format(table=table)
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")  # as errands' claims and acks
        pids = [conn.info.backend_pid]
        before, done = _backend_cpu(pids), 0
        params = {"queue": BENCH_QUEUE, "limit": batch}
        while ids := [row[0] for row in conn.execute(claim, params)]:
            conn.execute(ack, {"ids": ids})
            done += len(ids)
        spent = _backend_cpu(pids) - before
    assert done == jobs, done
    return spent / jobs * 1e6


def _errands(jobs: int, batch: int, *, combined: bool) -> float:
    """Server CPU µs per job for the engine's own claims and acks.

    ``combined``: each statement records the last batch and claims the next
    (``ack_fetch``); otherwise a claim, then an ack of what it claimed, as a
    worker on PostgreSQL does (its completer acks beside the producer's claims).
    """
    app = _fresh_app(jobs)
    engine = app.engine
    pids = _errands_backends()
    before, done = _backend_cpu(pids), 0
    claimed = engine.fetch(BENCH_QUEUE, batch, "p", ["bench.noop"])
    while claimed:
        acks = [Ack(job.id, job.attempt, "p", JobState.COMPLETED) for job in claimed]
        if combined:
            applied, claimed, _ = engine.ack_fetch(acks, BENCH_QUEUE, batch, "p", ["bench.noop"])
        else:
            applied = engine.ack(acks)
            claimed = engine.fetch(BENCH_QUEUE, batch, "p", ["bench.noop"])
        done += applied
    spent = _backend_cpu(pids) - before
    app.close()
    assert done == jobs, done
    return spent / jobs * 1e6


def drain_probe(jobs: int, pairs: int, batch: int) -> None:
    """Server CPU per job: the least claim + completion against errands' statements."""
    runs: dict[str, list[float]] = {
        "least claim + completion": [],
        "errands claim, then ack": [],
        "errands ack_fetch": [],
    }
    for _ in range(pairs):
        runs["least claim + completion"].append(_least(jobs, batch))
        runs["errands claim, then ack"].append(_errands(jobs, batch, combined=False))
        runs["errands ack_fetch"].append(_errands(jobs, batch, combined=True))
    for name, values in runs.items():
        print(f"{name + ':':26s} {', '.join(f'{v:.1f}' for v in values)} us per job (server)")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("probe", choices=["insert", "drain"])
    parser.add_argument("--rounds", type=int, default=10, help="insert: interleaved rounds")
    parser.add_argument("--per-round", type=int, default=300, help="insert: inserts per round")
    parser.add_argument("--jobs", type=int, default=40_000, help="drain: jobs per pass")
    parser.add_argument("--pairs", type=int, default=3, help="drain: alternating passes")
    parser.add_argument("--batch", type=int, default=50, help="drain: jobs per claim")
    options = parser.parse_args()
    if options.probe == "insert":
        insert_probe(options.rounds, options.per_round)
    else:
        drain_probe(options.jobs, options.pairs, options.batch)


if __name__ == "__main__":
    main()
