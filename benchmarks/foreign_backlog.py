"""What a claim costs a node when its queue holds other workers' jobs.

A node claims only the jobs of workers its app registers. When nodes serve
different parts of an app on one queue, each node's claims read past the jobs
it cannot run: the claim's index orders a queue's waiting jobs by priority and
time, not by worker. This probe inserts ``--jobs`` waiting jobs of a worker
the claiming app does not register, then times that app's claims, which find
nothing (median of ``--tries``). docs/multi-node.md quotes it.

Usage::

    python benchmarks/foreign_backlog.py                       # both engines, 200,000 jobs
    python benchmarks/foreign_backlog.py --engine sqlite --jobs 20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import errands
from errands.bench.workloads import Target

PG_URL = os.environ.get("ERRANDS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "errands_foreign_backlog"


def _apps(url: str, schema: str | None) -> tuple[errands.App, errands.App]:
    """An app that registers both workers (it enqueues), and one that registers only its own."""
    everything = errands.App(url, schema=schema, auto_migrate=True, queues={"default": 10})
    part = errands.App(url, schema=schema, auto_migrate=True, queues={"default": 10})

    @everything.job(name="theirs")
    def theirs() -> None:
        return None

    @part.job(name="ours")
    def ours() -> None:
        return None

    return everything, part


def _time_claims(app: errands.App, tries: int) -> list[float]:
    """Milliseconds each of ``tries`` claims by ``app`` took; each must find nothing."""
    timings = []
    for _ in range(tries):
        started = time.perf_counter()
        claimed = app.engine.fetch("default", 10, "foreign-backlog", ["ours"], None)
        timings.append((time.perf_counter() - started) * 1e3)
        assert claimed == [], "the partial app must claim none of the other worker's jobs"
    return timings


def empty_claim_ms(target: Target, jobs: int, tries: int) -> tuple[float, float, int]:
    """Median milliseconds of the partial app's empty claims: on an empty queue, then behind
    ``jobs`` waiting jobs of the other worker; and how many jobs still wait after them."""
    target.reset()
    url, schema = target.url, target.schema
    everything, part = _apps(url, schema)
    alone = statistics.median(_time_claims(part, tries))
    batch = [everything.new_job("theirs", {}) for _ in range(min(jobs, 10_000))]
    for start in range(0, jobs, 10_000):
        everything.enqueue_many(batch[: jobs - start])
    if schema is not None:  # the planner's statistics, as autovacuum would leave them
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"ANALYZE {schema}.errands_jobs")
    behind = statistics.median(_time_claims(part, tries))
    waiting = part.engine.queue_counts().get("default", {}).get("available", 0)
    everything.close()
    part.close()
    return alone, behind, waiting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.jobs:,} waiting jobs of a worker the claiming app does not register")
    print(f"(medians of {args.tries} claims)")
    results: dict[str, tuple[float, float, int]] = {}
    if args.engine in ("sqlite", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            target = Target.sqlite(str(Path(tmp) / "foreign.db"))
            results["sqlite"] = empty_claim_ms(target, args.jobs, args.tries)
    if args.engine in ("postgres", "all"):
        target = Target.postgres(PG_URL, SCHEMA)
        results["postgres"] = empty_claim_ms(target, args.jobs, args.tries)
    for engine, (alone, behind, waiting) in results.items():
        print(
            f"{engine:9} an empty claim: {alone:.2f} ms on an empty queue, "
            f"{behind:.2f} ms behind them ({waiting:,} still waiting)"
        )


if __name__ == "__main__":
    main()
