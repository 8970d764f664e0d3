"""The benchmark's app and jobs, importable by worker processes.

Every benchmark process builds the same app from the environment, so a child
process finds the same registered workers by name (no pickle, no code in rows).

Example::

    app = bench_app("sqlite:////tmp/bench.db", None, limit=10)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import errands

__all__ = ["BENCH_QUEUE", "bench_app", "busy", "env_app"]

BENCH_QUEUE = "bench"


def busy(seconds: float) -> int:
    """Spin the CPU for ``seconds``; returns the loop count (so nothing is optimised away)."""
    end = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < end:
        count += 1
    return count


def bench_app(
    url: str,
    schema: str | None,
    *,
    limit: int = 10,
    executor: str = "thread",
    **settings: Any,
) -> errands.App:
    """An app with the benchmark's workers on queue ``bench``."""
    app = errands.App(
        url,
        schema=schema,
        auto_migrate=True,
        queues={BENCH_QUEUE: {"limit": limit, "executor": executor}},
        prune_after=None,
        # Process-executor children import the app from here (see env_app below).
        import_path="errands.bench.jobs:app",
        **settings,
    )

    @app.job(name="bench.noop", queue=BENCH_QUEUE)
    def noop(i: int = 0) -> None:
        return None

    @app.job(name="bench.anoop", queue=BENCH_QUEUE)
    async def anoop(i: int = 0) -> None:
        return None

    @app.job(name="bench.io", queue=BENCH_QUEUE)
    async def io(seconds: float = 0.1) -> None:
        await asyncio.sleep(seconds)

    @app.job(name="bench.cpu", queue=BENCH_QUEUE)
    def cpu(seconds: float = 0.01) -> int:
        return busy(seconds)

    @app.job(name="bench.latency", queue=BENCH_QUEUE)
    def latency(sent: float) -> float:
        return time.time()  # when the body started; the enqueuer knows when it committed

    return app


def env_app() -> errands.App:
    """The app described by ``ERRANDS_BENCH_*`` variables (for child processes)."""
    return bench_app(
        os.environ["ERRANDS_BENCH_URL"],
        os.environ.get("ERRANDS_BENCH_SCHEMA") or None,
        limit=int(os.environ.get("ERRANDS_BENCH_LIMIT", "10")),
        executor=os.environ.get("ERRANDS_BENCH_EXECUTOR", "thread"),
    )


#: The import path children use for the process executor.
app = env_app() if "ERRANDS_BENCH_URL" in os.environ else None
