"""Does a busy queue make a node's idle queues claim? (SQLite)

One worker node serves a busy queue and ``--idle`` queues that have no jobs.
While it drains ``--jobs`` jobs of 2 ms from the busy queue, this probe counts
the claims each kind of queue makes. SQLite's cross-process wake-up
(``PRAGMA data_version``) sees every commit of the node's own claims and
outcomes too; if it woke every producer on each, the idle ones would claim
about 200 times a second each, for nothing. The node polls every 30 s here, so
an idle queue should make no claim at all during the drain.

Usage::

    python benchmarks/idle_queues.py
    python benchmarks/idle_queues.py --idle 0       # the same drain with no idle queue
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import errands

BUSY = "busy"


async def drain(path: Path, idle: int, jobs: int) -> tuple[float, Counter[str], float]:
    """Jobs/s of the busy queue, claims per kind of queue, and the drain's seconds."""
    queues = {BUSY: 10, **{f"idle{i}": 10 for i in range(idle)}}
    app = errands.App(f"sqlite:///{path}", queues=queues, prune_after=None, poll_interval=30.0)

    @app.job(name="work", queue=BUSY)
    def work() -> None:
        time.sleep(0.002)

    claims: Counter[str] = Counter()
    engine: Any = app.engine
    ack_fetch = engine.ack_fetch

    def counted(acks: Any, queue: str, *args: Any) -> Any:
        claims["busy" if queue == BUSY else "idle"] += 1
        return ack_fetch(acks, queue, *args)

    engine.ack_fetch = counted  # the SQLite producer's every claim goes through it
    node = await app.start()
    try:
        await asyncio.sleep(0.3)  # every producer's first look, before the count
        claims.clear()
        started = time.monotonic()
        await app.aenqueue_many([work.new() for _ in range(jobs)])
        while node.outcomes.total() < jobs:
            if time.monotonic() - started > 120:
                raise TimeoutError(f"{node.outcomes.total()} of {jobs} jobs done after 120 s")
            await asyncio.sleep(0.01)
        seconds = time.monotonic() - started
    finally:
        await app.stop()
    return jobs / seconds, claims, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rate, claims, seconds = asyncio.run(drain(Path(tmp) / "jobs.db", args.idle, args.jobs))
    print(f"busy queue: {args.jobs} jobs of 2 ms at {rate:,.0f} jobs/s, {claims['busy']} claims")
    print(f"{args.idle} idle queues: {claims['idle']} claims in {seconds:.2f} s")


if __name__ == "__main__":
    main()
