"""One benchmark worker process: start on "go", stop when the queue is empty, report JSON.

The parent starts every child, waits for each to print ``ready`` (imports
done, database open), then writes ``go`` to all at once, so process start-up
never counts as drain time. A child reports when it started, when its last
outcome was written, its peak RSS, how many engine calls it made and how many
SQL statements its connections sent (see :mod:`errands.bench.statements`)
and, on SQLite, how long it held the writer lock.

Example (what the harness runs)::

    ERRANDS_BENCH_URL=sqlite:////tmp/b.db python -m errands.bench.child
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from errands.app import App
from errands.bench.jobs import BENCH_QUEUE, env_app
from errands.bench.statements import StatementCounter, count_statements
from errands.runtime.affinity import pin_worker, worker_index

__all__ = [
    "count_calls",
    "cpu_seconds",
    "host_busy_seconds",
    "peak_rss_kib",
    "process_cpu_seconds",
]

T = TypeVar("T")

_COUNTED = (
    "fetch",
    "ack",
    "ack_fetch",
    "insert",
    "stage",
    "rescue",
    "heartbeat",
    "acquire_leader",
    "prune",
)


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    """CPU time this process used so far (user + system, every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """CPU time process ``pid`` of this machine used so far (user + system, ``/proc``).

    Raises :class:`OSError` once the process is gone.

    Example: ``process_cpu_seconds(os.getpid())``
    """
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the command name, which may hold spaces and ")".
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_busy_seconds() -> float:
    """CPU time the whole machine spent busy since boot (``/proc/stat``), every core."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def count_calls(engine: Any, calls: Counter[str], last_ack: list[float]) -> None:
    """Wrap the engine's hot methods to count calls and note the last ack's time."""
    for name in _COUNTED:
        original: Callable[..., Any] | None = getattr(engine, name, None)
        if original is None:  # not every engine has every method
            continue

        def counted(*args: Any, _name: str = name, _fn: Callable[..., Any] = original) -> Any:
            result = _fn(*args)
            calls[_name] += 1
            if _name in ("ack", "ack_fetch"):  # outcomes also ride along with claims
                last_ack[0] = time.time()
            return result

        setattr(engine, name, functools.wraps(original)(counted))
    make_path: Callable[[], Any] | None = getattr(engine, "loop_path", None)
    if make_path is not None:

        def counted_path(_make: Callable[[], Any] = make_path) -> Any:
            path = _make()
            _count_path_calls(path, calls, last_ack)
            return path

        engine.loop_path = counted_path


def _count_path_calls(path: Any, calls: Counter[str], last_ack: list[float]) -> None:
    """Count the claims and acks an engine's loop path makes (see ``Engine.loop_path``)."""
    for name in ("fetch", "ack"):
        original: Callable[..., Awaitable[Any]] = getattr(path, name)

        async def counted(
            *args: Any, _name: str = name, _fn: Callable[..., Awaitable[Any]] = original
        ) -> Any:
            result = await _fn(*args)
            calls[_name] += 1
            if _name == "ack":
                last_ack[0] = time.time()
            return result

        setattr(path, name, functools.wraps(original)(counted))


async def _work(app: App, expect: int, statements: StatementCounter) -> dict[str, Any]:
    calls: Counter[str] = Counter()
    last_ack = [0.0]
    count_calls(app.engine, calls, last_ack)
    writer = getattr(app.engine, "_writer", None)  # SQLite's cross-process writer lock
    held_before = writer.held_seconds if writer is not None else 0.0
    started = time.time()
    cpu_before, host_before = cpu_seconds(), host_busy_seconds()
    # Opening the database and checking the schema came before "go": not drain load.
    statements_before = statements.total
    node = await app.start([BENCH_QUEUE])
    producer = node.producers[BENCH_QUEUE]
    idle_since: float | None = None
    while True:
        await asyncio.sleep(0.01)
        busy = producer.running or node.completer.pending
        if busy:
            idle_since = None
            continue
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since < 0.05 or node.outcomes.total() < expect:
            continue
        counts = await node.call_db(_uncounted, statements, app.engine.queue_counts)
        left = counts.get(BENCH_QUEUE, {})
        if not any(left.get(state, 0) for state in ("available", "executing", "scheduled")):
            break
        idle_since = None
    outcomes = dict(node.outcomes)
    cpu_after, host_after = cpu_seconds(), host_busy_seconds()
    held = writer.held_seconds - held_before if writer is not None else None
    await app.stop()
    return {
        "cpu_s": cpu_after - cpu_before,
        "host_busy": [host_before, host_after],
        "started": started,
        "last_ack": last_ack[0],
        "outcomes": outcomes,
        "engine_calls": dict(calls),
        "sql_statements": statements.total - statements_before,
        "rss_kib": peak_rss_kib(),
        "writer_held_s": held,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def _uncounted(statements: StatementCounter, read: Callable[[], T]) -> T:
    """``read()`` with its statements left out: the harness's end check is not worker load."""
    with statements.paused():
        return read()


def main() -> None:
    """Entry point of ``python -m errands.bench.child``."""
    if os.environ.get("ERRANDS_BENCH_PIN_CPUS"):
        pin_worker(worker_index())  # before any thread starts, as errands worker --pin-cpus
    app = env_app()
    # Counting starts before the first connection opens: SQLite counts only new ones.
    with count_statements(app.engine.dialect) as statements:
        app.ensure_schema()
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        expect = int(os.environ.get("ERRANDS_BENCH_EXPECT", "0"))
        report = asyncio.run(_work(app, expect, statements))
        app.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
