"""Drain pre-inserted no-op jobs in this process and print wall time, CPU per job.

A quick, in-process measure for profiling the worker's hot path (the full
benchmark, with separate processes and medians, is ``errands bench``)::

    python benchmarks/profile_drain.py --engine sqlite --kind def --jobs 20000
    py-spy record -o drain.svg -- python benchmarks/profile_drain.py --engine postgres
    python benchmarks/profile_drain.py --engine sqlite --cprofile 30   # top 30 by tottime

On PostgreSQL it also prints the WAL written per job (``pg_stat_wal``): the
server's write work, which a busy machine barely disturbs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time

import psycopg

from errands.bench.jobs import BENCH_QUEUE, bench_app
from errands.bench.workloads import pg_wal

PG_URL = os.environ.get("ERRANDS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "errands_profile"


def _url(engine: str, folder: str) -> tuple[str, str | None]:
    if engine == "sqlite":
        return f"sqlite:///{folder}/profile.db", None
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    return PG_URL, SCHEMA


async def _drain(app: object, total: int) -> float:
    from errands.app import App

    assert isinstance(app, App)
    started = time.perf_counter()
    node = await app.start([BENCH_QUEUE])
    while node.outcomes.total() < total or node.completer.pending:  # noqa: ASYNC110 - polls state
        await asyncio.sleep(0.002)
    elapsed = time.perf_counter() - started
    await app.stop()
    return elapsed


def _wal(engine: str) -> tuple[int, int, int]:
    """WAL records, full-page images and bytes so far (zeros on SQLite): see ``pg_wal``."""
    return (pg_wal(PG_URL) if engine == "postgres" else None) or (0, 0, 0)


def _machine_busy_seconds() -> float:
    """CPU time spent by every process on the machine (Linux), to see the server's share."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--kind", choices=["def", "async"], default="def")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url, schema = _url(options.engine, folder)
        app = bench_app(url, schema, limit=options.limit)
        app.ensure_schema()
        worker = "bench.noop" if options.kind == "def" else "bench.anoop"
        app.enqueue_many([app.new_job(worker, {"i": i}) for i in range(options.jobs)])
        profile = cProfile.Profile() if options.cprofile else None
        wal = _wal(options.engine)
        busy = _machine_busy_seconds()
        cpu = time.process_time()
        if profile is not None:
            profile.enable()
        elapsed = asyncio.run(_drain(app, options.jobs))
        if profile is not None:
            profile.disable()
        cpu = time.process_time() - cpu
        busy = _machine_busy_seconds() - busy
        records, fpi, wal_bytes = (b - a for a, b in zip(wal, _wal(options.engine), strict=True))
        app.close()
    print(
        f"{options.engine} {options.kind} c={options.limit}: {options.jobs / elapsed:,.0f} jobs/s, "
        f"{cpu / options.jobs * 1e6:.0f} us CPU per job (this process), "
        f"{(busy - cpu) / options.jobs * 1e6:.0f} us elsewhere on the machine (the database server)"
    )
    if options.engine == "postgres":
        per_job = options.jobs
        print(
            f"WAL per job: {records / per_job:.1f} records, {wal_bytes / per_job:,.0f} bytes "
            f"({fpi / per_job:.2f} full-page images)"
        )
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(options.cprofile)


if __name__ == "__main__":
    main()
