"""PostgreSQL's hot path on the event loop: claims and outcomes without a thread hop.

The engine's methods are blocking, so the runtime calls them from a thread
(``Node.call_db``). For the two calls a busy worker makes thousands of times
a second (claim a batch, record a batch of outcomes) that hop costs more
than the round trip it wraps on small machines: a loop → thread → loop hop
is 70-130 µs there, a loopback ``SELECT 1`` 50-60 µs. :class:`PgLoopPath`
runs the same statements as :class:`~errands.engines.pg_claim.PgClaim` on a
psycopg ``AsyncConnectionPool`` bound to the worker's event loop instead.

It changes nothing else: the same SQL, the same fence, the same
``synchronous_commit`` rule, the same ``DatabaseError`` messages, and the
same behaviour across a server restart (a connection found dead is replaced,
the caller's retry with backoff does the rest). Everything but the plain
claim and the ack stays on the engine's blocking pool.

Example::

    path = engine.loop_path()        # in the worker's event loop
    jobs = await path.fetch("default", 10, producer_id, ["app.send"])
    await path.ack(acks)
    await path.close()
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from errands.engines.base import Ack
from errands.engines.pg_claim import ack_params, job_from_claim
from errands.engines.pg_pool import idle_too_long
from errands.engines.rows import claimed_jobs
from errands.job import Job

if TYPE_CHECKING:
    from errands.engines.postgres import PostgresEngine

__all__ = ["LOOP_POOL_SIZE", "PgLoopPath"]

log = logging.getLogger(__name__)

#: Connections of a loop path's pool (never more than the engine's ``max_size``):
#: one claims while the other records outcomes; more producers take turns.
LOOP_POOL_SIZE = 2

AsyncConn = psycopg.AsyncConnection[Any]


class PgLoopPath:
    """Claims and acks of one worker node on its own event loop (one pool per node).

    Its pool holds 1 to ``LOOP_POOL_SIZE`` connections (at most the engine's
    ``max_size``), beside the engine's own pool. Opened by the first call,
    from inside the loop that will use it; :meth:`close` before that loop ends.
    """

    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine
        self._max_size = min(LOOP_POOL_SIZE, engine._pool.max_size)
        self._pool: AsyncConnectionPool[AsyncConn] | None = None
        self._returned: weakref.WeakKeyDictionary[AsyncConn, float] = weakref.WeakKeyDictionary()

    def _get(self) -> AsyncConnectionPool[AsyncConn]:
        if self._pool is None:
            engine = self._engine
            self._pool = AsyncConnectionPool(
                engine.url,
                kwargs=engine._pool.kwargs(autocommit=True),
                min_size=1,
                max_size=self._max_size,
                timeout=engine._pool.pool_timeout,
                name=f"errands-loop {engine._pool.label}",
                check=self._check_idle,
                open=False,
            )
        return self._pool

    async def _check_idle(self, conn: AsyncConn) -> None:
        """Ping a connection that sat idle (see ``PgPool._check_idle``)."""
        if idle_too_long(self._returned.get(conn)):
            await conn.execute("")

    @asynccontextmanager
    async def _connection(self, doing: str) -> AsyncIterator[AsyncConn]:
        pool = self._get()
        try:
            if pool.closed:
                await pool.open(wait=False)
            async with pool.connection() as conn:
                try:
                    yield conn
                finally:
                    self._returned[conn] = time.monotonic()
        except PoolTimeout as exc:
            # The blocking pool's message tells a dead server from a busy pool by
            # connecting once: off the loop, it may take the connect timeout.
            raise await asyncio.to_thread(self._engine._pool.failed, exc, doing) from exc
        except psycopg.Error as exc:
            raise self._engine._pool.failed(exc, doing) from exc

    async def fetch(
        self, queue: str, limit: int, producer: str, workers: Sequence[str]
    ) -> list[Job]:
        """Claim up to ``limit`` jobs (``PgClaim.fetch`` without limits), on the loop."""
        if limit <= 0 or not workers:
            return []
        engine = self._engine
        params = engine._fetch_params(queue, limit, producer, workers)
        params["commit"] = engine._commit_mode
        async with self._connection("claiming jobs") as conn:
            cur = await conn.execute(engine._q("claim"), params)
            rows = await cur.fetchall()
        claimed = [{"id": row[0], "attempt": row[1], "job": row[2]} for row in rows]
        jobs, rejects = claimed_jobs(claimed, producer, job_from_claim)
        if rejects:
            await self.ack(rejects)
        return jobs

    async def ack(self, acks: Sequence[Ack]) -> int:
        """Apply a batch of outcomes (``PgClaim.ack``), on the loop."""
        if not acks:
            return 0
        engine = self._engine
        params = {"commit": engine._commit_mode, **ack_params(acks)}
        async with self._connection("recording job outcomes") as conn:
            cur = await conn.execute(engine._q("ack"), params)
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def close(self) -> None:
        """Close the pool; safe to call twice or unopened."""
        pool, self._pool = self._pool, None
        if pool is not None and not pool.closed:
            await pool.close(timeout=5)
