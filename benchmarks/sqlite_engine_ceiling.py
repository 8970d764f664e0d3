"""The SQLite engine alone, no runtime: how fast claims and acks can go, in 1 or N processes.

Each process claims 100 jobs (``engine.fetch``) and acks them as completed
(``engine.ack``) in a loop until the queue is empty; it prints the CPU per job
(all processes) and the jobs/s from the first start to the last finish. This
is the ceiling a worker's drain cannot pass on the machine (the runtime's
Python comes on top), and shows what a second process adds when both share
SQLite's one writer::

    python benchmarks/sqlite_engine_ceiling.py 1
    python benchmarks/sqlite_engine_ceiling.py 2
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time

from errands.bench.jobs import bench_app
from errands.engines.base import Ack
from errands.job import JobState

JOBS = 40_000


def work(path: str, total: int, results: mp.Queue[tuple[int, float, float]]) -> None:
    """Claim and ack until the queue is empty; report (jobs, CPU seconds, wall seconds)."""
    app = bench_app(f"sqlite:///{path}", None)
    engine, names, producer = app.engine, app.registry.names(), f"p{os.getpid()}"
    cpu, wall, done = time.process_time(), time.perf_counter(), 0
    while done < total:
        jobs = engine.fetch("bench", 100, producer, names)
        if not jobs:
            break
        engine.ack([Ack(job.id, job.attempt, producer, JobState.COMPLETED) for job in jobs])
        done += len(jobs)
    results.put((done, time.process_time() - cpu, time.perf_counter() - wall))


def main() -> None:
    """Entry point: the number of processes is the only argument."""
    processes = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    path = os.path.join(tempfile.mkdtemp(), "ceiling.db")
    app = bench_app(f"sqlite:///{path}", None)
    app.ensure_schema()
    for start in range(0, JOBS, 10_000):
        batch = range(start, start + 10_000)
        app.enqueue_many([app.new_job("bench.noop", {"i": i}) for i in batch])
    app.close()
    results: mp.Queue[tuple[int, float, float]] = mp.Queue()
    workers = [mp.Process(target=work, args=(path, JOBS, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    reports = [results.get() for _ in workers]
    done = sum(r[0] for r in reports)
    cpu = sum(r[1] for r in reports)
    wall = max(r[2] for r in reports)
    print(
        f"{processes} process(es): {done} jobs, {cpu * 1e6 / done:.1f} us CPU per job, "
        f"{done / wall:,.0f} jobs/s"
    )


if __name__ == "__main__":
    main()
