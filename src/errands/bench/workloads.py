"""The benchmark workloads, each on a fresh database, each returning one run's figures.

- ``enqueue``: single ``enqueue`` calls (each its own transaction), beside as
  many bare one-row inserts from the driver (the database's own commit rate),
  and one ``enqueue_many`` batch — jobs/s.
- ``drain``: pre-inserted no-op jobs, worker process(es) at a concurrency —
  jobs/s from first start to last recorded outcome, peak RSS, engine calls/job
  and SQL statements/job (counted at the driver: see ``errands.bench.statements``);
  on PostgreSQL also the WAL records and bytes written per job (``pg_stat_wal``),
  which, unlike time, a noisy machine barely moves.
- ``latency``: an idle worker; jobs enqueued at a steady rate from this
  process — insert-to-start p50/p95/p99.
- ``io`` / ``cpu``: 100 ms async sleeps at concurrency 100; 10 ms CPU-bound
  sync jobs on the process executor.

Example::

    target = Target.sqlite("/tmp/bench.db")
    print(drain(target, jobs=20_000, concurrency=10, processes=1))
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from errands.bench.jobs import bench_app
from errands.runtime.affinity import WORKER_INDEX_ENV

__all__ = ["Target", "drain", "enqueue", "latency", "pg_wal"]


@dataclass(frozen=True)
class Target:
    """Where a workload runs: an engine name, a URL and (PostgreSQL) a schema."""

    engine: str
    url: str
    schema: str | None = None

    @classmethod
    def sqlite(cls, path: str) -> Target:
        """A SQLite file (deleted and recreated before each run)."""
        return cls("sqlite", f"sqlite:///{path}")

    @classmethod
    def postgres(cls, url: str, schema: str = "errands_bench") -> Target:
        """A PostgreSQL schema (dropped and recreated before each run)."""
        return cls("postgres", url, schema)

    def reset(self) -> None:
        """Start from an empty, migrated database."""
        if self.engine == "sqlite":
            path = Path(self.url.removeprefix("sqlite:///"))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        app = bench_app(self.url, self.schema)
        app.migrate()
        app.close()

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a child process working this target."""
        env = dict(os.environ, ERRANDS_BENCH_URL=self.url, ERRANDS_BENCH_SCHEMA=self.schema or "")
        env.update(extra)
        return env


def _bare_insert(target: Target) -> tuple[Callable[[int], None], Callable[[], None]]:
    """One plain single-row ``INSERT`` per call on the driver's own connection, autocommit.

    The database's own durable one-row commit, with nothing of errands in the
    way: same table, same indexes, same commit settings (PostgreSQL's
    ``synchronous_commit``, SQLite's WAL with ``synchronous=NORMAL``). Returns
    the insert and a close.
    """
    if target.engine == "postgres":
        import psycopg

        conn = psycopg.connect(target.url, autocommit=True)
        statement = (
            f'INSERT INTO "{target.schema}".errands_jobs (queue, worker, args) '
            "VALUES (%s, %s, %s::jsonb)"
        )

        def insert(i: int) -> None:
            conn.execute(statement, ("bare", "bench.noop", f'{{"i": {i}}}'), prepare=True)

        return insert, conn.close
    lite = sqlite3.connect(target.url.removeprefix("sqlite:///"), isolation_level=None)
    lite.execute("PRAGMA synchronous=NORMAL")

    def insert_lite(i: int) -> None:
        lite.execute(
            "INSERT INTO errands_jobs (queue, worker, args, inserted_at, scheduled_at) "
            "VALUES (?, ?, ?, ?, ?)",
            ("bare", "bench.noop", f'{{"i": {i}}}', now := time.time(), now),
        )

    return insert_lite, lite.close


def enqueue(target: Target, *, single: int = 5_000, many: int = 20_000) -> dict[str, float]:
    """Jobs/s for ``single`` one-job transactions and one ``enqueue_many`` of ``many``.

    Beside the single enqueues, as many bare one-row inserts (:func:`_bare_insert`),
    in alternating blocks so both meet the same machine: a single enqueue is one
    commit, and ``enqueue_single_vs_bare_insert`` says how much of the
    database's own commit rate errands keeps.
    """
    target.reset()
    app = bench_app(target.url, target.schema)
    noop = app.registry.resolve("bench.noop")
    app.enqueue(noop, {"i": -1})  # connect and warm up outside the clock
    bare, close_bare = _bare_insert(target)
    bare(-1)
    blocks = 5
    spent = {"errands": 0.0, "bare": 0.0}
    for block in range(blocks):
        numbers = range(block * single // blocks, (block + 1) * single // blocks)
        started = time.perf_counter()
        for i in numbers:
            app.enqueue(noop, {"i": i})
        spent["errands"] += time.perf_counter() - started
        started = time.perf_counter()
        for i in numbers:
            bare(i)
        spent["bare"] += time.perf_counter() - started
    close_bare()
    batch = [app.new_job(noop, {"i": i}) for i in range(many)]
    started = time.perf_counter()
    app.enqueue_many(batch)
    many_rate = many / (time.perf_counter() - started)
    app.close()
    return {
        "enqueue_single_jobs_s": single / spent["errands"],
        "enqueue_single_bare_insert_s": single / spent["bare"],
        "enqueue_single_vs_bare_insert": spent["bare"] / spent["errands"],
        "enqueue_many_jobs_s": many_rate,
    }


def _run_children(target: Target, processes: int, env: dict[str, str]) -> list[dict[str, Any]]:
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "errands.bench.child"],
            env=target.env(**env, **{WORKER_INDEX_ENV: str(index)}),  # as the supervisor
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a benchmark worker failed to start")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = []
        for child in children:
            out, _ = child.communicate(timeout=600)
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()


def _insert(target: Target, worker: str, jobs: int, args: dict[str, Any]) -> None:
    app = bench_app(target.url, target.schema)
    job = app.registry.resolve(worker)
    for start in range(0, jobs, 10_000):
        app.enqueue_many([app.new_job(job, args) for _ in range(min(10_000, jobs - start))])
    app.close()


def pg_wal(url: str) -> tuple[int, int, int] | None:
    """PostgreSQL's WAL written so far: (records, full-page images, bytes).

    None before PostgreSQL 14 (no ``pg_stat_wal``). Unlike time, the WAL a
    drain writes hardly depends on how busy the machine is. Full-page images
    follow checkpoints, so compare records and bytes with them in mind.

    Example: ``records, fpi, written = pg_wal("postgresql://postgres@127.0.0.1/test")``
    """
    import psycopg

    query = "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(query).fetchone()
    except psycopg.Error:  # no pg_stat_wal (PostgreSQL < 14)
        return None
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


def _wal(target: Target) -> tuple[int, int, int] | None:
    return pg_wal(target.url) if target.engine == "postgres" else None


def drain(
    target: Target,
    *,
    jobs: int = 20_000,
    concurrency: int = 10,
    processes: int = 1,
    worker: str = "bench.noop",
    args: dict[str, Any] | None = None,
    executor: str = "thread",
    pin_cpus: bool = False,
    during: Callable[[], AbstractContextManager[object]] | None = None,
) -> dict[str, float]:
    """Drain ``jobs`` pre-inserted jobs with ``processes`` workers at ``concurrency`` each.

    ``pin_cpus``: each worker process on a core of its own, as ``errands worker --pin-cpus``.
    ``during``: a context manager entered while the workers run, not while the
    jobs are inserted (a probe measuring the drain alone, e.g. ``benchmarks/pg_process_cpu.py``).
    """
    target.reset()
    _insert(target, worker, jobs, args or {})
    wal_before = _wal(target)
    env = {"ERRANDS_BENCH_LIMIT": str(concurrency), "ERRANDS_BENCH_EXECUTOR": executor}
    if pin_cpus:
        env["ERRANDS_BENCH_PIN_CPUS"] = "1"
    with during() if during is not None else contextlib.nullcontext():
        reports = _run_children(target, processes, env)
    wal_after = _wal(target)
    done = sum(r["outcomes"].get("completed", 0) for r in reports)
    if done != jobs:
        raise RuntimeError(f"drain completed {done} of {jobs} jobs: {reports}")
    elapsed = max(r["last_ack"] for r in reports) - min(r["started"] for r in reports)
    calls = sum(sum(r["engine_calls"].values()) for r in reports)
    statements = sum(r["sql_statements"] for r in reports)
    figures = {
        "jobs_s": jobs / elapsed,
        "rss_mib": max(r["rss_kib"] for r in reports) / 1024,
        "engine_calls_per_job": calls / jobs,
        # Every statement the workers' connections ran, listener and heartbeat included.
        "sql_statements_per_job": statements / jobs,
        # CPU per job, steadier than jobs/s on a shared host: the workers' own, and the
        # whole machine's while they drained (the database server's included, and
        # anything else the host ran meanwhile).
        "worker_cpu_us_per_job": sum(r["cpu_s"] for r in reports) / jobs * 1e6,
        "host_cpu_us_per_job": (
            max(r["host_busy"][1] for r in reports) - min(r["host_busy"][0] for r in reports)
        )
        / jobs
        * 1e6,
    }
    cores = [r["cores"] for r in reports if r.get("cores") is not None]
    if cores:  # 1 under pin_cpus: the setting, printed beside the figures it gave
        figures["cores_per_process"] = sum(cores) / len(cores)
    held: list[float | None] = [r.get("writer_held_s") for r in reports]
    if all(seconds is not None for seconds in held):
        # SQLite writes one transaction at a time: the share of the drain during which
        # some worker held the writer lock. Near 1, more processes cannot drain faster.
        figures["writer_busy_share"] = sum(seconds or 0.0 for seconds in held) / elapsed
    if wal_before is not None and wal_after is not None:
        # The whole server's WAL while the workers ran (their start and stop included).
        figures["wal_records_per_job"] = (wal_after[0] - wal_before[0]) / jobs
        figures["wal_bytes_per_job"] = (wal_after[2] - wal_before[2]) / jobs
    return figures


def latency(target: Target, *, jobs: int = 500, rate: float = 50.0) -> dict[str, float]:
    """Insert-to-start latency of jobs enqueued one by one at ``rate``/s to an idle worker."""
    target.reset()
    app = bench_app(target.url, target.schema)
    job = app.registry.resolve("bench.latency")
    child = subprocess.Popen(
        [sys.executable, "-m", "errands.bench.child"],
        env=target.env(ERRANDS_BENCH_EXPECT=str(jobs)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdin is not None and child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the benchmark worker failed to start")
        child.stdin.write("go\n")
        child.stdin.flush()
        time.sleep(0.5)  # let it settle into idle
        start = time.perf_counter()
        committed: dict[int, float] = {}
        for i in range(jobs):
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
            inserted = app.enqueue(job, {"sent": time.time()})
            committed[inserted.id] = time.time()
        child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    done = app.list_jobs(state="completed", limit=jobs + 1)
    app.close()
    if len(done) != jobs:
        raise RuntimeError(f"latency: {len(done)} of {jobs} jobs completed")
    # From enqueue's return (the job is committed, so visible) to its body's start;
    # and from the enqueue call, which adds the insert's own commit.
    after_commit = statistics.quantiles(
        [(float(j.result) - committed[j.id]) * 1000 for j in done], n=100
    )
    after_call = statistics.quantiles(
        [(float(j.result) - j.args["sent"]) * 1000 for j in done], n=100
    )
    return {
        "p50_ms": after_commit[49],
        "p95_ms": after_commit[94],
        "p99_ms": after_commit[98],
        "p50_from_call_ms": after_call[49],
        "p99_from_call_ms": after_call[98],
    }
