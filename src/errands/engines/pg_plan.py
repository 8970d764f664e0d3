"""PostgreSQL inserts written once, run on a sync or an async psycopg connection.

An insert is a :class:`Plan`: a generator that yields the requests it needs
(:class:`Statement`, :class:`CopyIn`), receives each one's rows, and returns
the inserted jobs. :func:`run_plan` drives it on a ``psycopg.Connection``,
:func:`arun_plan` on a ``psycopg.AsyncConnection`` (an ``aenqueue`` joining
the caller's async transaction): the SQL, the parameters and the jobs built
from the rows are the same code on both, as psycopg itself shares one
protocol between its sync and async connections.

Example::

    plan = Plan(steps(), atomic=False)  # steps(): rows = yield Statement(query, params)
    jobs = run_plan(conn, plan)              # or: await arun_plan(async_conn, plan)
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

from errands.engines.inserted import paused_gc
from errands.engines.pg_connect import dict_cursor, job_loaders
from errands.job import Job

__all__ = ["CopyIn", "Plan", "Statement", "arun_plan", "run_plan"]


@dataclass(frozen=True, slots=True)
class Statement:
    """Run ``query`` (which returns rows) with ``params``; the plan receives its rows.

    Rows are tuples, or with ``dicts`` mappings whose JSON columns are left as
    text for errands' codec (:func:`~errands.engines.pg_connect.dict_cursor`).
    """

    query: bytes
    params: Mapping[str, Any]
    dicts: bool = False


@dataclass(frozen=True, slots=True)
class CopyIn:
    """``COPY ... FROM STDIN`` with ``query``, streaming ``chunks`` as they are made."""

    query: bytes
    chunks: Iterable[bytes]


#: The steps of an insert: yields requests, is sent their rows, returns the jobs.
Steps = Generator[Statement | CopyIn, list[Any], list[Job]]


@dataclass(slots=True)
class Plan:
    """An insert's steps, and whether they must commit together.

    ``atomic``: several statements that must land as one. On an autocommit
    connection the driver wraps them in a transaction; in a caller's open
    transaction they simply join it.
    """

    steps: Steps
    atomic: bool


def run_plan(conn: psycopg.Connection[Any], plan: Plan) -> list[Job]:
    """Run ``plan`` on a sync connection."""
    with (
        conn.transaction() if plan.atomic and conn.autocommit else nullcontext(),
        conn.cursor(row_factory=tuple_row) as cur,
    ):
        steps = plan.steps
        rows: list[Any] = []
        try:
            request = next(steps)
            while True:
                if isinstance(request, CopyIn):
                    with paused_gc(), cur.copy(request.query) as copy:
                        for chunk in request.chunks:
                            copy.write(chunk)
                    rows = []
                elif request.dicts:
                    with dict_cursor(conn) as dicts:
                        dicts.execute(request.query, request.params)
                        rows = dicts.fetchall()
                else:
                    cur.execute(request.query, request.params)
                    rows = cur.fetchall()
                request = steps.send(rows)
        except StopIteration as finished:
            result: list[Job] = finished.value
            return result


async def arun_plan(conn: psycopg.AsyncConnection[Any], plan: Plan) -> list[Job]:
    """Run ``plan`` on an async connection: the same requests, awaited."""
    transaction = conn.transaction() if plan.atomic and conn.autocommit else None
    if transaction is not None:
        async with transaction:
            return await _adrive(conn, plan.steps)
    return await _adrive(conn, plan.steps)


async def _adrive(conn: psycopg.AsyncConnection[Any], steps: Steps) -> list[Job]:
    async with conn.cursor(row_factory=tuple_row) as cur:
        rows: list[Any] = []
        try:
            request = next(steps)
            while True:
                if isinstance(request, CopyIn):
                    # No paused_gc here: other tasks of the loop run while this one awaits.
                    async with cur.copy(request.query) as copy:
                        for chunk in request.chunks:
                            await copy.write(chunk)
                    rows = []
                elif request.dicts:
                    async with job_loaders(conn.cursor(row_factory=dict_row)) as dicts:
                        await dicts.execute(request.query, request.params)
                        rows = await dicts.fetchall()
                else:
                    await cur.execute(request.query, request.params)
                    rows = await cur.fetchall()
                request = steps.send(rows)
        except StopIteration as finished:
            result: list[Job] = finished.value
            return result
