"""With wake-ups between processes off, polling alone still runs every job (invariant 7)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import errands


def test_polling_runs_jobs_when_notifications_are_off(
    make_app: Callable[..., errands.App], arun: Callable[..., Any]
) -> None:
    worker = make_app(notify=False, poll_interval=0.3)
    # Another app (another process's view): its inserts cannot wake the worker
    # in-process, and with notify=False they send no cross-process hint either.
    client = make_app(notify=False)
    for app in (worker, client):

        @app.job(name="ping")
        def ping(n: int) -> int:
            return n

    async def main() -> list[float]:
        await worker.start()
        try:
            await asyncio.sleep(0.5)  # idle, polling
            waits = []
            for n in range(3):
                sent = time.monotonic()
                job = await client.aenqueue("ping", {"n": n})
                while (done := worker.get_job(job.id)) is None or done.state != "completed":
                    assert time.monotonic() - sent < 10, "polling never found the job"
                    await asyncio.sleep(0.02)
                waits.append(time.monotonic() - sent)
            return waits
        finally:
            await worker.stop()

    waits = arun(main())
    # A lost (here: never sent) notification delays a job by at most one poll.
    assert max(waits) < 0.3 + 1.0, waits
