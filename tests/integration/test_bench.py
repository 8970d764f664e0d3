"""`errands bench` runs its workloads end to end and reports medians with the machine."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from errands.bench.calibrate import calibrate
from errands.bench.jobs import BENCH_QUEUE, bench_app
from errands.bench.statements import count_statements
from errands.bench.workloads import Target, drain, enqueue
from errands.engines.base import Ack
from errands.job import JobState
from tests.support import POSTGRES_URL, postgres_schema


def test_bench_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "errands",
            "bench",
            "--engine",
            "sqlite",
            "--runs",
            "1",
            "--quick",
            "--workload",
            "enqueue",
            "--workload",
            "drain c=10",
            "--workload",
            "cpu 10ms process c=2",
            "--workload",
            "drain c=10 x2 processes",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, COLUMNS="200"),  # so rich prints figure names unwrapped
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    env = report["environment"]
    assert env["cores"] >= 1 and env["sqlite"]
    # The calibration that lets figures from two machines be told apart.
    assert env["python_op_us"] > 0 and env["thread_hop_us"] > 0 and "pg_round_trip_us" not in env
    assert "thread_hop_us" in proc.stdout
    figures = {(f["workload"], f["figure"]): f for f in report["figures"]}
    assert not [key for key in figures if key[1] == "failed"], figures
    for key in [
        ("enqueue", "enqueue_many_jobs_s"),
        ("drain c=10", "jobs_s"),
        ("cpu 10ms process c=2", "jobs_s"),
    ]:
        figure = figures[key]
        assert figure["median"] > 0 and len(figure["runs"]) == 1
    assert figures[("drain c=10", "rss_mib")]["median"] > 5
    statements = figures[("drain c=10", "sql_statements_per_job")]
    assert statements["median"] > 0 and len(statements["runs"]) == 1
    assert "sql_statements_per_job" in proc.stdout  # the printed table has it too
    # The two-process target is a ratio, measured against one process in the same run.
    speedup = figures[("drain c=10 x2 processes", "speedup_vs_one_process")]
    assert len(speedup["runs"]) == 1 and 0.1 < speedup["median"] < 4, speedup
    two = {
        name: figure["median"]
        for (workload, name), figure in figures.items()
        if workload == "drain c=10 x2 processes"
    }
    # Where the machine's cores would cap two processes, and how near they came.
    ceiling = env["cores"] * 1e6 / two["host_cpu_us_per_job"]
    assert two["cpu_ceiling_jobs_s"] == pytest.approx(ceiling)
    assert two["of_cpu_ceiling"] == pytest.approx(two["jobs_s"] / ceiling)
    assert two["jobs_s"] / two["one_process_jobs_s"] == pytest.approx(two["speedup_vs_one_process"])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="--pin-cpus is Linux only")
def test_a_pinned_drain_runs_each_worker_process_on_one_core(tmp_path: Path) -> None:
    target = Target.sqlite(str(tmp_path / "bench.db"))
    free = drain(target, jobs=200, processes=2)
    pinned = drain(target, jobs=200, processes=2, pin_cpus=True)
    assert free["cores_per_process"] == len(os.sched_getaffinity(0))
    assert pinned["cores_per_process"] == 1
    assert pinned["jobs_s"] > 0


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_enqueue_measures_the_bare_insert_beside_errands(engine: str, tmp_path: Path) -> None:
    if engine == "sqlite":
        target = Target.sqlite(str(tmp_path / "bench.db"))
        figures = enqueue(target, single=200, many=300)
        app = bench_app(target.url, None)
    else:
        with postgres_schema() as schema:
            target = Target.postgres(POSTGRES_URL, schema)
            figures = enqueue(target, single=200, many=300)
            app = bench_app(target.url, schema)
            counts = app.engine.queue_counts()
            app.close()
    if engine == "sqlite":
        counts = app.engine.queue_counts()
        app.close()
    single, bare = figures["enqueue_single_jobs_s"], figures["enqueue_single_bare_insert_s"]
    assert single > 0 and bare > 0 and figures["enqueue_many_jobs_s"] > 0
    assert figures["enqueue_single_vs_bare_insert"] == pytest.approx(single / bare)
    # Both really inserted: the warm-ups, 200 enqueues, 200 bare rows and the batch.
    assert counts[BENCH_QUEUE]["available"] == 1 + 200 + 300
    assert counts["bare"]["available"] == 1 + 200


def test_calibration_times_a_postgres_round_trip() -> None:
    figures = calibrate(POSTGRES_URL)
    assert set(figures) == {"python_op_us", "thread_hop_us", "pg_round_trip_us"}
    # A loopback round trip costs more than a dict encoded to JSON, and both take time.
    assert figures["pg_round_trip_us"] > figures["python_op_us"] > 0


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_drain_reports_sql_statements_per_job(engine: str, tmp_path: Path) -> None:
    # Quick mode's size of "drain c=10"; a schema of its own so parallel tests never clash.
    jobs = 2_000
    if engine == "sqlite":
        figures = drain(Target.sqlite(str(tmp_path / "bench.db")), jobs=jobs, concurrency=10)
    else:
        with postgres_schema() as schema:
            figures = drain(Target.postgres(POSTGRES_URL, schema), jobs=jobs, concurrency=10)
    per_job, calls = figures["sql_statements_per_job"], figures["engine_calls_per_job"]
    assert calls > 0, figures  # still reported beside the new figure
    if engine == "sqlite":
        # A batch of completions is one UPDATE, and each engine call runs at least
        # three statements (BEGIN, the claim, COMMIT; or the probe and two more).
        assert per_job >= 3 * calls, figures
    else:
        # One statement carries a batch of outcomes and a claim, and every counted
        # engine call sends at least one statement.
        assert per_job >= calls, figures
    assert per_job < 3, figures  # the listener's polls and heartbeats are not per job
    if engine == "sqlite":
        assert "wal_records_per_job" not in figures and "wal_bytes_per_job" not in figures
        # Every claim and batch of outcomes took the writer lock; between them the
        # worker ran jobs, so the lock was busy for part of the drain only.
        assert 0.01 < figures["writer_busy_share"] < 1.0, figures
    else:
        assert "writer_busy_share" not in figures  # no writer lock on PostgreSQL
        # A claim and an outcome each write the row and its index entries: several
        # records per job, each tens of bytes at least.
        assert 4 <= figures["wal_records_per_job"] < 100, figures
        assert figures["wal_bytes_per_job"] > 40 * figures["wal_records_per_job"], figures


def test_sqlite_statements_are_counted_one_per_executed_statement(tmp_path: Path) -> None:
    original_connect = sqlite3.connect
    with count_statements("sqlite") as statements:
        app = bench_app(f"sqlite:///{tmp_path}/jobs.db", None)  # opens its connection here
        noop = app.registry.resolve("bench.noop")
        app.enqueue_many([app.new_job(noop, {"i": i}) for i in range(10)])
        engine = app.engine

        before = statements.total
        claimed = engine.fetch(BENCH_QUEUE, 3, "p1", ["bench.noop"])
        # The probe SELECT, BEGIN IMMEDIATE, the claim UPDATE, COMMIT, reading the jobs.
        assert (len(claimed), statements.total - before) == (3, 5)

        before = statements.total
        acks = [Ack(job.id, job.attempt, "p1", JobState.COMPLETED) for job in claimed]
        applied, more, _ = engine.ack_fetch(acks, BENCH_QUEUE, 2, "p1", ["bench.noop"])
        # BEGIN IMMEDIATE, one UPDATE for the three completions, the claim, COMMIT, the read.
        assert (applied, len(more), statements.total - before) == (3, 2, 5)

        before = statements.total
        retry = Ack(more[0].id, more[0].attempt, "p1", JobState.RETRYABLE, scheduled_at=1.0)
        done = Ack(more[1].id, more[1].attempt, "p1", JobState.COMPLETED)
        assert engine.ack([retry, done]) == 2
        # BEGIN IMMEDIATE, the completion, the other outcome (executemany), COMMIT.
        assert statements.total - before == 4

        before = statements.total
        with statements.paused():  # the harness's own reads are left out
            engine.queue_counts()
        assert statements.total == before
        app.close()
    assert sqlite3.connect is original_connect


def test_postgres_statements_count_what_the_server_runs() -> None:
    import psycopg

    execute = psycopg.Cursor.execute
    with (
        count_statements("postgres") as statements,
        psycopg.connect(POSTGRES_URL, autocommit=True) as conn,
    ):
        conn.execute("SELECT 1")  # through Cursor.execute, counted once
        assert statements.total == 1
        with conn.cursor() as cur:
            cur.executemany("SELECT %s::int", [(i,) for i in range(3)])
            assert statements.total == 4  # once per parameter set
            with conn.transaction():
                cur.execute("SELECT 2")
            assert statements.total == 7  # BEGIN, the SELECT, COMMIT
            with cur.copy("COPY (SELECT 1) TO STDOUT") as copy:
                list(copy)
            assert statements.total == 8
    assert psycopg.Cursor.execute is execute
    assert "_exec_command" not in vars(psycopg.Connection)  # inherited again, not shadowed


def _probe(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script>`` with ``args``, as its docstring's usage does."""
    path = Path(__file__).parents[2] / "benchmarks" / script
    return subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(path.parents[1])),
    )


def test_statement_cost_probes_print_what_they_measure() -> None:
    insert = _probe("pg_statement_cost.py", "insert", "--rounds", "1", "--per-round", "5")
    assert insert.returncode == 0, insert.stderr
    figures = re.findall(
        r"([\d.]+) us per insert \(wall\), client CPU +([\d.]+), server CPU +([\d.]+)",
        insert.stdout,
    )
    # The bare insert, with NOTIFY, errands' statement, its engine and app.enqueue: each
    # took time, and the CPU of both sides was read (0 is possible over 5 inserts).
    assert len(figures) == 5, insert.stdout
    assert all(float(wall) > 0 and float(c) >= 0 and float(s) >= 0 for wall, c, s in figures)
    drain_run = _probe("pg_statement_cost.py", "drain", "--jobs", "300", "--pairs", "1")
    assert drain_run.returncode == 0, drain_run.stderr  # each pass asserts every job done
    assert drain_run.stdout.count("us per job (server)") == 3, drain_run.stdout


def test_the_plan_log_probe_adds_up_a_drains_statements() -> None:
    run = _probe("pg_plan_log.py", "--jobs", "300")
    assert run.returncode == 0, run.stderr
    assert "drained 300 jobs with 1 process(es)" in run.stdout
    rows = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines()[2:]}
    # The worker's claims and acks, named by their SQL files, each logged with its plan.
    for statement in ("claim", "ack"):
        assert statement in rows and int(rows[statement][0]) >= 1, run.stdout


def test_the_process_cpu_probe_splits_a_drain_by_postgres_process() -> None:
    run = _probe("pg_process_cpu.py", "--jobs", "2000")
    assert run.returncode == 0, run.stderr
    assert "drained 2000 jobs with 1 process(es)" in run.stdout
    rows = dict(re.findall(r"^(.+?)\s+([\d.]+) us/job$", run.stdout, re.M))
    # The backends serving the worker claimed and completed 2,000 jobs: some CPU.
    assert float(rows["postgres: backends"]) > 0, run.stdout
    assert "postgres: walwriter" in rows and "the whole machine" in rows, run.stdout


def test_the_foreign_backlog_probe_times_claims_that_find_nothing() -> None:
    run = _probe("foreign_backlog.py", "--jobs", "3000", "--tries", "2")
    assert run.returncode == 0, run.stderr
    found = re.findall(
        r"^(sqlite|postgres) +an empty claim: [\d.]+ ms on an empty queue, "
        r"[\d.]+ ms behind them \(([\d,]+) still waiting\)$",
        run.stdout,
        re.M,
    )
    # Each engine's claims took none of the 3,000 jobs of the worker the app lacks.
    assert found == [("sqlite", "3,000"), ("postgres", "3,000")], run.stdout


def test_a_busy_sqlite_queue_does_not_make_idle_queues_claim() -> None:
    run = _probe("idle_queues.py", "--idle", "3", "--jobs", "600")
    assert run.returncode == 0, run.stderr
    assert re.search(r"^busy queue: 600 jobs of 2 ms at [\d,]+ jobs/s", run.stdout, re.M)
    # Woken on every commit of the busy queue's claims and outcomes, they made
    # hundreds; polling every 30 s, they have no reason to claim at all.
    assert re.search(r"^3 idle queues: 0 claims in", run.stdout, re.M), run.stdout


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("postgres -D /var/lib/postgresql/15/main -c config_file=x ", "postmaster"),
        ("postgres: 15/main: walwriter ", "walwriter"),
        ("postgres: 15/main: autovacuum worker test", "autovacuum worker"),
        ("postgres: 15/main: postgres test 127.0.0.1(5432) idle", "backends"),
        ("postgres: checkpointer ", "checkpointer"),
        ("python -m errands worker", None),
    ],
)
def test_postgres_processes_are_told_apart_by_their_title(
    cmdline: str, expected: str | None
) -> None:
    script = Path(__file__).parents[2] / "benchmarks" / "pg_process_cpu.py"
    spec = importlib.util.spec_from_file_location("pg_process_cpu", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.kind(cmdline) == expected
