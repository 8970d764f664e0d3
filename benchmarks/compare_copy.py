"""Compare errands' hand-written binary COPY encoder with psycopg's ``Copy.write_row``.

Inserts the same N realistic jobs (built with ``app.new_job``) into a scratch
schema (``errands_copy_cmp``, created by errands' own migration and dropped at
the end) by two methods:

* ``hand-written``: errands' real path, the code of ``pg_copy.copy_insert``
  (``_Rows.encode`` packs COPY rows with ``struct`` and ``copy.write`` sends them);
* ``write_row``: ``cursor.copy(...)`` with ``copy.set_types([...])`` and
  ``copy.write_row(row)`` in binary format, for the same 12 columns and values.

Both reserve ids and the clock with ``copy_reserve.sql`` first (not timed) and
build the same :class:`~errands.job.Job` results with ``inserted_job`` (as
``copy_insert`` does, so a switch would have to too). Only the COPY is timed:
from opening it to the server's acknowledgement of its end (encode + send +
the server storing the rows), wall clock and this process's CPU. Runs alternate
between the methods, after one untimed warm-up each; the table is truncated
after every run. Before timing, the stored rows of ``app.enqueue_many`` (the
whole real path), of the timed hand-written code and of ``write_row`` are
compared column by column (ids and the transaction's clock excepted).

Then both encoders run offline (no server: hand-written into a ``BytesIO``,
write_row through ``Copy(cursor, writer=FileWriter(...))``), which must give the
same bytes, and their CPU is measured alone; so is the ``inserted_job`` part
both share, leaving the cost of encoding itself.

Run from the repository root::

    .venv/bin/python benchmarks/compare_copy.py            # N=20,000, 7 runs each
    .venv/bin/python benchmarks/compare_copy.py --jobs 20000 --runs 7

``ERRANDS_BENCH_PG_URL`` overrides the database (default
``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.copy import Copy, FileWriter
from psycopg.pq import Format
from psycopg.rows import tuple_row

import errands
from errands.engines.inserted import PG_EPOCH_US, inserted_job, paused_gc, pg_micros, unix_seconds
from errands.engines.pg_copy import _SIGNATURE, _TRAILER, CHUNK, _Rows
from errands.engines.postgres import PostgresEngine
from errands.job import Job, JobState, NewJob

PG_URL = os.environ.get("ERRANDS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "errands_copy_cmp"
#: The PostgreSQL types of the columns copy_jobs.sql names, in its order.
COPY_TYPES = [
    "int8",  # id
    "text",  # state
    "timestamptz",  # inserted_at
    "timestamptz",  # scheduled_at
    "text",  # queue
    "text",  # worker
    "jsonb",  # args
    "jsonb",  # meta
    "jsonb",  # tags
    "int2",  # priority
    "int4",  # max_attempts
    "float8",  # timeout
]
PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
AVAILABLE, SCHEDULED = JobState.AVAILABLE, JobState.SCHEDULED

#: One COPY run: (jobs built, wall seconds, CPU seconds of this process).
Method = Callable[
    [PostgresEngine, psycopg.Connection[Any], Sequence[NewJob]], tuple[list[Job], float, float]
]


class RawJsonbBinaryDumper(Dumper):
    """jsonb in binary from JSON bytes already encoded (``NewJob.args_json`` and friends)."""

    format = Format.BINARY
    oid = psycopg.postgres.types["jsonb"].oid

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + obj


def build_app(url: str) -> errands.App:
    """An app with a few workers shaped like real ones (only used to build jobs)."""
    app = errands.App(url, schema=SCHEMA, auto_migrate=True, prune_after=None)

    @app.job(name="mail.send", queue="mail", max_attempts=10)
    def send_email(to: str, template: str, context: dict[str, Any]) -> None:
        return None

    @app.job(name="media.thumbnails", queue="media", priority=2, timeout=30.0, tags=["media"])
    def thumbnails(path: str, sizes: list[int], crop: bool = False) -> None:
        return None

    @app.job(name="billing.sync", queue="billing", max_attempts=5)
    def sync_account(account_id: int, full: bool) -> None:
        return None

    @app.job(name="reports.daily")
    def daily_report(day: str, recipients: list[str]) -> None:
        return None

    return app


def build_jobs(app: errands.App, n: int) -> list[NewJob]:
    """``n`` jobs: mostly due now, some scheduled later, a few already due; varied options."""
    now = time.time()
    jobs: list[NewJob] = []
    for i in range(n):
        kind = i % 20
        if kind < 12:  # 60 %: mail, due now, a few with tags and a higher priority
            args = {
                "to": f"user{i}@example.com",
                "template": ("welcome", "reset", "digest")[i % 3],
                "context": {"name": f"Ann Émilie {i}", "plan": "pro" if i % 7 else "free"},
            }
            extra: dict[str, Any] = {"tags": ["signup"], "priority": 1} if i % 5 == 0 else {}
            jobs.append(app.new_job("mail.send", args, **extra))
        elif kind < 17:  # 25 %: thumbnails with the worker's timeout and tags
            args = {"path": f"uploads/2024/{i % 97:02d}/img_{i}.jpg", "sizes": [64, 256, 1024]}
            jobs.append(app.new_job("media.thumbnails", args))
        elif kind < 19:  # 10 %: scheduled 5 to 60 minutes ahead, meta per tenant
            jobs.append(
                app.new_job(
                    "billing.sync",
                    {"account_id": 100_000 + i, "full": i % 4 == 0},
                    schedule_in=300.0 + (i % 3300),
                    meta={"tenant": f"t{i % 50}", "source": "nightly"},
                )
            )
        else:  # 5 %: a due time already past, so available with that time
            jobs.append(
                app.new_job(
                    "reports.daily",
                    {"day": "2024-05-01", "recipients": ["ops@example.com", "cfo@example.com"]},
                    scheduled_at=now - 10.0 - i / 1000,
                    timeout=120.0,
                )
            )
    return jobs


def _reserve(engine: PostgresEngine, cur: psycopg.Cursor[Any], n: int) -> tuple[int, list[int]]:
    """As copy_insert: ids and the clock (PostgreSQL µs since 2000) from copy_reserve.sql."""
    table = sql.Identifier(engine.schema, "errands_jobs").as_string(None)
    cur.execute(engine._q("copy_reserve"), {"n": n, "table": table})
    reserved = cur.fetchone()
    assert reserved is not None
    return reserved[0] - PG_EPOCH_US, sorted(reserved[1])


def encode_hand_written(
    write: Callable[[bytes], Any], jobs: Sequence[NewJob], ids: list[int], now_pg: int
) -> list[Job]:
    """errands' encoder, as copy_insert drives it: signature, 1,000-row chunks, trailer."""
    result: list[Job] = []
    rows = _Rows(now_pg)
    write(_SIGNATURE)
    for start in range(0, len(jobs), CHUNK):
        write(rows.encode(jobs[start : start + CHUNK], ids, start, result))
    write(_TRAILER)
    return result


def encode_write_row(copy: Copy, jobs: Sequence[NewJob], ids: list[int], now_pg: int) -> list[Job]:
    """The same rows and jobs through set_types + write_row (binary COPY)."""
    result: list[Job] = []
    now_dt = PG_EPOCH + dt.timedelta(microseconds=now_pg)
    now = unix_seconds(now_pg + PG_EPOCH_US)
    available, scheduled = AVAILABLE.value, SCHEDULED.value
    append = result.append
    copy.set_types(COPY_TYPES)
    write_row = copy.write_row
    for job_id, new in zip(ids, jobs, strict=True):
        at = new.scheduled_at
        if at is None:
            state, text, due_dt, due_s = AVAILABLE, available, now_dt, now
        else:
            due = pg_micros(at)  # the state insert.sql's CASE would choose
            due_dt = PG_EPOCH + dt.timedelta(microseconds=due)
            due_s = unix_seconds(due + PG_EPOCH_US)
            if due > now_pg:
                state, text = SCHEDULED, scheduled
            else:
                state, text = AVAILABLE, available
        write_row(
            (
                job_id,
                text,
                now_dt,
                due_dt,
                new.queue,
                new.worker,
                new.args_json,
                new.meta_json,
                new.tags_json,
                new.priority,
                new.max_attempts,
                new.timeout,
            )
        )
        append(inserted_job(new, job_id, state, now, due_s))
    return result


def copy_hand_written(
    engine: PostgresEngine, conn: psycopg.Connection[Any], jobs: Sequence[NewJob]
) -> tuple[list[Job], float, float]:
    """errands' path: the body of pg_copy.copy_insert (without the NOTIFY), COPY timed."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        now_pg, ids = _reserve(engine, cur, len(jobs))
        wall, cpu = time.perf_counter(), time.process_time()
        with paused_gc(), cur.copy(engine._q("copy_jobs")) as copy:
            result = encode_hand_written(copy.write, jobs, ids, now_pg)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, wall, cpu


def copy_write_row(
    engine: PostgresEngine, conn: psycopg.Connection[Any], jobs: Sequence[NewJob]
) -> tuple[list[Job], float, float]:
    """psycopg's path: set_types + write_row in binary, same columns, values and results."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.adapters.register_dumper(None, RawJsonbBinaryDumper)
        now_pg, ids = _reserve(engine, cur, len(jobs))
        wall, cpu = time.perf_counter(), time.process_time()
        with paused_gc(), cur.copy(engine._q("copy_jobs")) as copy:
            result = encode_write_row(copy, jobs, ids, now_pg)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, wall, cpu


def encode_offline(
    conn: psycopg.Connection[Any], jobs: Sequence[NewJob], runs: int
) -> dict[str, list[float]]:
    """CPU seconds to encode (and build the jobs) without a server, into memory.

    write_row writes through psycopg's documented ``Copy(cursor, writer=FileWriter(...))``.
    Also stops unless both produce the very same COPY byte stream.
    """
    ids = list(range(1_000_000, 1_000_000 + len(jobs)))
    now_pg = pg_micros(time.time())
    times: dict[str, list[float]] = {"hand-written": [], "write_row": []}
    streams: dict[str, bytes] = {}
    with conn.cursor() as cur:
        cur.adapters.register_dumper(None, RawJsonbBinaryDumper)
        for run in range(runs + 1):  # the first is a warm-up
            for name in times if run % 2 else reversed(times):
                buffer = io.BytesIO()
                cpu = time.process_time()
                with paused_gc():
                    if name == "hand-written":
                        encode_hand_written(buffer.write, jobs, ids, now_pg)
                    else:
                        with Copy(cur, binary=True, writer=FileWriter(buffer)) as copy:
                            encode_write_row(copy, jobs, ids, now_pg)
                cpu = time.process_time() - cpu
                if run:
                    times[name].append(cpu)
                streams[name] = buffer.getvalue()
    if streams["hand-written"] != streams["write_row"]:
        sys.exit("the two encoders produced different COPY data")
    print(f"offline: both encoders produce the same {len(streams['write_row']):,} bytes of COPY")
    return times


def stored_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Every stored column but id and the clock, in id order; due times given are kept."""
    table = sql.Identifier(SCHEMA, "errands_jobs")
    query = sql.SQL(
        "SELECT (to_jsonb(j) - 'id' - 'inserted_at' - 'scheduled_at')::text,"
        " scheduled_at = inserted_at,"
        " CASE WHEN scheduled_at <> inserted_at"
        "      THEN (extract(epoch FROM scheduled_at) * 1000000)::int8 END"
        " FROM {} AS j ORDER BY id"
    ).format(table)
    return conn.execute(query).fetchall()


def job_fields(jobs: list[Job]) -> list[dict[str, Any]]:
    """Returned jobs without id and times taken from the clock."""
    fields = []
    for job in jobs:
        row = dataclasses.asdict(job)
        del row["id"], row["inserted_at"], row["exception"], row["_cancel_event"]
        if job.scheduled_at == job.inserted_at:
            row["scheduled_at"] = "now"
        fields.append(row)
    return fields


def truncate(conn: psycopg.Connection[Any]) -> None:
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(SCHEMA, "errands_jobs")))


def verify(
    app: errands.App, engine: PostgresEngine, conn: psycopg.Connection[Any], jobs: list[NewJob]
) -> None:
    """Stop unless enqueue_many, the timed hand-written code and write_row store the same."""
    returned = {"enqueue_many": app.enqueue_many(jobs)}
    stored = {"enqueue_many": stored_rows(conn)}
    truncate(conn)
    methods: dict[str, Method] = {"hand-written": copy_hand_written, "write_row": copy_write_row}
    for name, method in methods.items():
        returned[name] = method(engine, conn, jobs)[0]
        stored[name] = stored_rows(conn)
        truncate(conn)
    reference, expected = stored["enqueue_many"], job_fields(returned["enqueue_many"])
    for name in methods:
        if stored[name] != reference:
            if len(stored[name]) != len(reference):
                sys.exit(f"{name} stored {len(stored[name])} rows, not {len(reference)}")
            pairs = zip(stored[name], reference, strict=True)
            bad = next(i for i, (got, want) in enumerate(pairs) if got != want)
            sys.exit(f"{name} stored different rows, first at {bad}: {stored[name][bad]!r}")
        if job_fields(returned[name]) != expected:
            sys.exit(f"{name} returned different jobs than enqueue_many")
    states = Counter(json.loads(row[0])["state"] for row in reference)
    print(
        f"verified: {len(reference):,} rows identical across enqueue_many, hand-written and "
        f"write_row (all columns but id, inserted_at, scheduled_at=now); states {dict(states)}"
    )


def job_building_cpu(jobs: Sequence[NewJob], runs: int = 5) -> float:
    """Median CPU seconds of the ``inserted_job`` calls both methods make (no COPY)."""
    times = []
    for _ in range(runs):
        cpu = time.process_time()
        with paused_gc():
            built = [inserted_job(new, i, AVAILABLE, 1.0, 1.0) for i, new in enumerate(jobs)]
        times.append(time.process_time() - cpu)
        del built
    return statistics.median(times)


def cpu_model() -> str:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per method (>= 5)")
    options = parser.parse_args()
    n = options.jobs
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        server = conn.execute("SHOW server_version").fetchone()
    app = build_app(PG_URL)
    try:
        app.ensure_schema()
        engine = app.engine
        assert isinstance(engine, PostgresEngine)
        jobs = build_jobs(app, n)
        print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average {load()}")
        print(
            f"Python {platform.python_version()}, psycopg {psycopg.__version__} "
            f"({psycopg.pq.__impl__} impl, libpq {psycopg.pq.version()}), "
            f"PostgreSQL {server[0] if server else '?'}"
        )
        print(f"N = {n:,} jobs per run, {options.runs} timed runs per method, alternating")
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            verify(app, engine, conn, jobs)
            methods: dict[str, Method] = {
                "hand-written": copy_hand_written,
                "write_row": copy_write_row,
            }
            for method in methods.values():  # warm-up, untimed
                method(engine, conn, jobs)
                truncate(conn)
            walls: dict[str, list[float]] = {name: [] for name in methods}
            cpus: dict[str, list[float]] = {name: [] for name in methods}
            for run in range(options.runs):
                order = list(methods.items())
                for name, method in order if run % 2 == 0 else order[::-1]:
                    _, wall, cpu = method(engine, conn, jobs)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
                    truncate(conn)
            offline = encode_offline(conn, jobs, options.runs)
        shared = job_building_cpu(jobs)
        print(
            "COPY to the server (timed: open COPY .. server's end-of-COPY reply), "
            "jobs/s from wall time:"
        )
        rates = {}
        for name in methods:
            rates[name] = n / statistics.median(walls[name])
            runs = ", ".join(f"{n / wall:,.0f}" for wall in walls[name])
            print(
                f"  {name:>12}: median {rates[name]:,.0f} jobs/s "
                f"({statistics.median(walls[name]) * 1e3:.1f} ms); runs: {runs}"
            )
        print("client CPU per job, median (us): with the COPY / encoding offline into memory")
        for name in methods:
            print(
                f"  {name:>12}: {statistics.median(cpus[name]) / n * 1e6:.2f} / "
                f"{statistics.median(offline[name]) / n * 1e6:.2f}; offline runs: "
                + ", ".join(f"{cpu / n * 1e6:.2f}" for cpu in offline[name])
            )
        print(
            f"  of which building the Job results (the same inserted_job calls in both): "
            f"{shared / n * 1e6:.2f}"
        )
        copy_cpu = {name: statistics.median(cpus[name]) for name in methods}
        offline_cpu = {name: statistics.median(offline[name]) for name in methods}
        encode = {name: offline_cpu[name] - shared for name in methods}
        hand, row = "hand-written", "write_row"
        print(
            f"ratio hand-written / write_row: {rates[hand] / rates[row]:.2f}x the jobs/s of the "
            f"COPY; write_row costs {copy_cpu[row] / copy_cpu[hand]:.2f}x the client CPU of the "
            f"COPY, {offline_cpu[row] / offline_cpu[hand]:.2f}x offline, "
            f"{encode[row] / encode[hand]:.2f}x for the encoding alone "
            f"({encode[hand] / n * 1e6:.2f} against {encode[row] / n * 1e6:.2f} us/job); "
            f"load average {load()}"
        )
    finally:
        app.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


if __name__ == "__main__":
    main()
