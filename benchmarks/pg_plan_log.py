"""Drain jobs with every statement's plan logged, then add the plans up per statement.

Runs ``errands bench``'s PostgreSQL drain with ``auto_explain`` loaded into the
workers' connections (``PGOPTIONS``, so the server must accept
``session_preload_libraries`` from this user: a superuser), reads what the
server logged meanwhile, and prints per statement its runs, time, slowest run,
the runs that read ``errands_jobs`` from end to end and the rows filters
dropped (see :mod:`errands.bench.plan_log`). Logging every plan slows the drain:
read the time of a statement against the others, not against ``errands bench``.

Usage::

    python benchmarks/pg_plan_log.py --processes 2
    python benchmarks/pg_plan_log.py --jobs 2000 --log /var/log/postgresql/postgresql-15-main.log

The log defaults to Debian's for the server's major version and the ``main``
cluster; it must be readable here (the server on this machine).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import psycopg

from errands.bench.plan_log import AUTO_EXPLAIN, statement_names, summarize
from errands.bench.workloads import Target, drain

URL = os.environ.get("ERRANDS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _debian_log(url: str) -> Path:
    with psycopg.connect(url, autocommit=True) as conn:
        major = conn.info.server_version // 10000
    return Path(f"/var/log/postgresql/postgresql-{major}-main.log")


def main() -> None:
    """Entry point: parse the arguments, drain, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--log", type=Path, help="the server's log file (default: Debian's)")
    options = parser.parse_args()
    log = options.log or _debian_log(URL)
    start = log.stat().st_size
    os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} {AUTO_EXPLAIN}".strip()
    figures = drain(Target.postgres(URL), jobs=options.jobs, processes=options.processes)
    with log.open(errors="replace") as file:
        file.seek(start)
        text = file.read()
    print(
        f"drained {options.jobs} jobs with {options.processes} process(es) at "
        f"{figures['jobs_s']:,.0f} jobs/s (plans logged: slower than errands bench)"
    )
    print(f"{'statement':<40} {'runs':>6} {'total ms':>9} {'mean ms':>8} {'max ms':>8} "
          f"{'whole-table runs':>16} {'rows dropped':>12}")  # fmt: skip
    for stats in summarize(text, statement_names()):
        print(
            f"{stats.name[:40]:<40} {stats.runs:>6} {stats.total_ms:>9.1f} "
            f"{stats.mean_ms:>8.2f} {stats.max_ms:>8.1f} {stats.whole_table_runs:>16} "
            f"{stats.rows_dropped:>12}"
        )


if __name__ == "__main__":
    main()
