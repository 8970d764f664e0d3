"""One benchmark worker process: start on "go", stop when the queue is empty, report JSON.

The parent starts every child, waits for each to print ``ready`` (imports
done, database open), then writes ``go`` to all at once, so process start-up
never counts as drain time. A child reports when it started, when its last
outcome was written, its peak RSS and how many engine calls it made.

Example (what the harness runs)::

    ERRANDS_BENCH_URL=sqlite:////tmp/b.db python -m errands.bench.child
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from errands.app import App
from errands.bench.jobs import BENCH_QUEUE, env_app

__all__ = ["count_calls", "peak_rss_kib"]

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


async def _work(app: App, expect: int) -> dict[str, Any]:
    calls: Counter[str] = Counter()
    last_ack = [0.0]
    count_calls(app.engine, calls, last_ack)
    started = time.time()
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
        counts = await node.call_db(app.engine.queue_counts)
        left = counts.get(BENCH_QUEUE, {})
        if not any(left.get(state, 0) for state in ("available", "executing", "scheduled")):
            break
        idle_since = None
    outcomes = dict(node.outcomes)
    await app.stop()
    return {
        "started": started,
        "last_ack": last_ack[0],
        "outcomes": outcomes,
        "engine_calls": dict(calls),
        "rss_kib": peak_rss_kib(),
    }


def main() -> None:
    """Entry point of ``python -m errands.bench.child``."""
    app = env_app()
    app.ensure_schema()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    report = asyncio.run(_work(app, int(os.environ.get("ERRANDS_BENCH_EXPECT", "0"))))
    app.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
