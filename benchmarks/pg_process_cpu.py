"""Where the machine's CPU goes while worker processes drain: PostgreSQL's processes by kind.

Runs ``errands bench``'s PostgreSQL drain and, while the workers run (not while
the jobs are inserted), samples the CPU time of every ``postgres`` process on
this machine from ``/proc`` every few milliseconds. It prints, per job, the
server's processes grouped by kind (the backends serving connections, the WAL
writer, autovacuum, ...) beside the workers' own CPU and the whole machine's:
how much of a drain's CPU is the database's, which is what caps two worker
processes on a small host (docs/benchmarks.md, "The targets not met").

A process that ends between two samples loses its last few milliseconds, and
``/proc`` counts in clock ticks (10 ms): read the figures to about a microsecond
per job over 20,000 jobs. The server must run on this machine.

Usage::

    python benchmarks/pg_process_cpu.py
    python benchmarks/pg_process_cpu.py --processes 2 --jobs 40000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from collections import Counter
from collections.abc import Iterator

from errands.bench.child import process_cpu_seconds
from errands.bench.workloads import Target, drain

URL = os.environ.get("ERRANDS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: Titles of PostgreSQL's own processes (after "postgres: " and the cluster name).
_AUXILIARY = (
    "autovacuum launcher",
    "autovacuum worker",
    "background writer",
    "checkpointer",
    "walwriter",
    "logical replication launcher",
    "stats collector",
    "archiver",
)


def kind(cmdline: str) -> str | None:
    """The kind of a ``postgres`` process from its command line; None for another program.

    Example: ``kind("postgres: 15/main: walwriter ") == "walwriter"``
    """
    if not cmdline.startswith("postgres"):
        return None
    title = cmdline.split(": ", 1)[1] if ": " in cmdline else ""
    if title[:1].isdigit() and ": " in title:  # Debian's "15/main: " cluster prefix
        title = title.split(": ", 1)[1]
    for name in _AUXILIARY:
        if title.startswith(name):
            return name
    return "backends" if title else "postmaster"


def _postgres_processes() -> dict[int, str]:
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                cmdline = file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = kind(cmdline)
        if name is not None:
            found[int(entry)] = name
    return found


class ProcessSampler:
    """Samples every ``postgres`` process's CPU time until stopped; totals by kind.

    Example::

        sampler = ProcessSampler()
        with sampler.running():
            ...  # the drain
        print(sampler.seconds_by_kind())
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._first: dict[int, float] = {}  # CPU seconds at the first sight of each process
        self._last: dict[int, float] = {}
        self._kinds: dict[int, str] = {}
        self._stop = threading.Event()

    def _sample(self, *, start: bool = False) -> None:
        for pid, name in _postgres_processes().items():
            try:
                seconds = process_cpu_seconds(pid)
            except OSError:  # ended meanwhile
                continue
            # A process seen at the start counts from then; a later one from its birth.
            self._first.setdefault(pid, seconds if start else 0.0)
            self._last[pid] = seconds
            self._kinds[pid] = name

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @contextlib.contextmanager
    def running(self) -> Iterator[ProcessSampler]:
        """Sample from entering to leaving, in a thread."""
        self._sample(start=True)
        thread = threading.Thread(target=self._run, name="pg-process-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self._sample()

    def seconds_by_kind(self) -> Counter[str]:
        """CPU seconds each kind of process used while sampled."""
        totals: Counter[str] = Counter()
        for pid, last in self._last.items():
            totals[self._kinds[pid]] += last - self._first[pid]
        return totals


def main() -> None:
    """Entry point: parse the arguments, drain, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=1)
    options = parser.parse_args()
    sampler = ProcessSampler()
    figures = drain(
        Target.postgres(URL),
        jobs=options.jobs,
        processes=options.processes,
        during=sampler.running,
    )
    per_job = 1e6 / options.jobs
    print(
        f"drained {options.jobs} jobs with {options.processes} process(es) at "
        f"{figures['jobs_s']:,.0f} jobs/s (sampling costs a little CPU)"
    )
    print(f"{'the workers (their own CPU)':<40} {figures['worker_cpu_us_per_job']:>8.1f} us/job")
    for name, seconds in sorted(sampler.seconds_by_kind().items(), key=lambda kv: -kv[1]):
        print(f"{'postgres: ' + name:<40} {seconds * per_job:>8.1f} us/job")
    print(f"{'the whole machine':<40} {figures['host_cpu_us_per_job']:>8.1f} us/job")


if __name__ == "__main__":
    main()
