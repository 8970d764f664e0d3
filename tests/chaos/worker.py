"""The process the chaos driver starts: a worker node, or an inserter, configured by env.

Run as ``python -m tests.chaos.worker`` from the repository root. Every job
body appends ``start``/``end`` lines to the sink file ``$CHAOS_SINK`` (outside
the database), so the driver's checks never trust the table they check::

    start <job id> <attempt> <pid> <unix time>
    end   <job id> <attempt> <pid> <unix time> <ok|fail|discard|cancel>
    tick  <job id> <attempt> <pid> <unix time>      (bodies with a tick_ms arg, while they sleep)
    batch <batch> <pid> <unix time> <jobs>          (the inserter, after each commit)

Each line is one ``O_APPEND`` write, atomic across processes, and a SIGKILL
between two lines loses nothing already written.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import errands

WORKER = "chaos.work"


def record(*fields: object) -> None:
    """Append one line to the sink file (one ``write`` call: atomic across processes)."""
    line = (" ".join(str(f) for f in fields) + "\n").encode()
    fd = os.open(os.environ["CHAOS_SINK"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def make_app() -> errands.App:
    env = os.environ
    limit = int(env.get("CHAOS_LIMIT", "4"))
    app = errands.App(
        env["CHAOS_URL"],
        schema=env.get("CHAOS_SCHEMA") or None,
        auto_migrate=True,
        node=f"chaos-{os.getpid()}",
        queues={"default": limit},
        rescue_after=float(env.get("CHAOS_RESCUE_AFTER", "1.0")),
        grace_period=float(env.get("CHAOS_GRACE", "1.0")),
        stage_interval=0.05,
        poll_interval=float(env.get("CHAOS_POLL", "0.05")),
        prune_after=None,
    )
    pool_max = env.get("CHAOS_POOL_MAX")
    if pool_max:
        # The App has no pool option; a tiny pool is the point of the scenario.
        from errands.engines.postgres import PostgresEngine

        app._engine = PostgresEngine(
            app.database_url.url,
            schema=app.schema or "public",
            min_size=1,
            max_size=int(pool_max),
            pool_timeout=float(env.get("CHAOS_POOL_TIMEOUT", "10")),
        )
    return app


app = make_app()


@app.register
class Work(errands.Worker, name=WORKER, max_attempts=25):
    """Sleeps ``ms``, reads its own row ``reads`` times, then ends as ``outcome`` says."""

    def perform(self, job: errands.Job) -> Any:
        args = job.args
        record("start", job.id, job.attempt, os.getpid(), time.time())
        tick = float(args.get("tick_ms", 0)) / 1000
        if tick:  # sleep in steps, saying "still running" after each one
            until = time.time() + float(args.get("ms", 0)) / 1000
            while time.time() < until:
                time.sleep(tick)
                record("tick", job.id, job.attempt, os.getpid(), time.time())
        else:
            time.sleep(float(args.get("ms", 0)) / 1000)
        for _ in range(int(args.get("reads", 0))):
            app.get_job(job.id)  # a pooled connection per read: pool pressure
        outcome = args.get("outcome", "complete")
        if outcome == "fail_once" and job.attempt == 1:
            record("end", job.id, job.attempt, os.getpid(), time.time(), "fail")
            raise RuntimeError("chaos: failing the first attempt on purpose")
        if outcome == "discard":
            record("end", job.id, job.attempt, os.getpid(), time.time(), "discard")
            raise errands.Discard("chaos")
        if outcome == "cancel":
            record("end", job.id, job.attempt, os.getpid(), time.time(), "cancel")
            raise errands.Cancel("chaos")
        record("end", job.id, job.attempt, os.getpid(), time.time(), "ok")
        return os.getpid()

    def backoff(self, job: errands.Job) -> float:
        return 0.05


def insert_batches() -> None:
    """Insert batches ``CHAOS_BATCHES=first:last`` of ``CHAOS_BATCH_SIZE`` tiny jobs each."""
    first, last = (int(x) for x in os.environ["CHAOS_BATCHES"].split(":"))
    size = int(os.environ.get("CHAOS_BATCH_SIZE", "20"))
    ms = float(os.environ.get("CHAOS_BATCH_MS", "1"))
    for batch in range(first, last):
        app.enqueue_many(
            [app.new_job(WORKER, {"ms": ms, "batch": batch, "i": i}) for i in range(size)]
        )
        record("batch", batch, os.getpid(), time.time(), size)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    role = os.environ.get("CHAOS_ROLE", "worker")
    if role == "inserter":
        insert_batches()
    else:
        app.run()


if __name__ == "__main__":
    main()
