"""Invariant 8: bad input fails at the call that caused it and leaves other jobs alone."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import errands
from errands import InvalidJobError, UnknownWorkerError


class Table:
    """An app with a few jobs in every state, and a snapshot of the table to compare."""

    def __init__(self, app: errands.App) -> None:
        self.app = app

        @app.job(name="t.add")
        def add(a: int, b: int = 0) -> int:
            return a + b

        @app.job(name="t.fail", max_attempts=1)
        def fail() -> None:
            raise ValueError("x")

        @app.register
        class Report(errands.Worker, name="t.Report"):
            def perform(self, job: errands.Job) -> None: ...

        self.add = add
        self.fail = fail
        self.report = Report
        add.enqueue(a=1, b=2)
        fail.enqueue()
        app.drain()  # one completed, one discarded
        add.enqueue(a=5)
        add.options(queue="mail", priority=3, tags=["x"], meta={"m": 1}).enqueue(a=6)
        add.options(scheduled_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).enqueue(a=7)
        self.before = self.snapshot()
        assert len(self.before) == 5

    def snapshot(self) -> list[errands.Job]:
        return self.app.list_jobs(limit=1000)

    def assert_untouched(self) -> None:
        assert self.snapshot() == self.before


@pytest.fixture
def table(tmp_path: Path) -> Iterator[Table]:
    app = errands.App(f"sqlite:///{tmp_path}/jobs.db")
    yield Table(app)
    app.close()


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([1, 2], "must be a dict, got list"),
        ("a=1", "must be a dict, got str"),
        (42, "must be a dict, got int"),
        ((("a", 1),), "must be a dict, got tuple"),
    ],
)
def test_args_not_a_dict(table: Table, args: Any, fragment: str) -> None:
    with pytest.raises(InvalidJobError) as info:
        table.app.enqueue("t.add", args)
    assert fragment in str(info.value) and "'t.add'" in str(info.value)
    table.assert_untouched()


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        _Opaque(),
        math.nan,
        math.inf,
        [1, math.nan],
        b"bytes",
        2**64,
        "lone \ud800 surrogate",
        dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    ],
    ids=["set", "object", "nan", "inf", "nested-nan", "bytes", "huge-int", "surrogate", "datetime"],
)
def test_args_not_json(table: Table, value: Any) -> None:
    with pytest.raises(InvalidJobError) as info:
        table.add.enqueue(a=value)
    assert "args of 't.add'" in str(info.value)
    with pytest.raises(InvalidJobError):
        table.app.enqueue(table.report, {"v": value})
    with pytest.raises(InvalidJobError):
        table.add.new(a=value)
    table.assert_untouched()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({}, "missing a required argument: 'a'"),
        ({"a": 1, "c": 2}, "unexpected keyword argument"),
        ({"b": 1}, "'a'"),
    ],
)
def test_args_not_matching_the_signature(table: Table, args: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidJobError) as info:
        table.app.enqueue("t.add", args)
    assert fragment in str(info.value)
    assert "'t.add'" in str(info.value)
    with pytest.raises(InvalidJobError):
        table.add.enqueue(**args)
    table.assert_untouched()


def test_unknown_worker_name(table: Table) -> None:
    with pytest.raises(UnknownWorkerError) as info:
        table.app.enqueue("t.nope", {})
    assert "'t.nope'" in str(info.value)
    assert "t.add" in str(info.value) and "t.Report" in str(info.value)
    with pytest.raises(UnknownWorkerError):
        table.app.new_job("t.nope")

    class Unregistered(errands.Worker, name="t.unregistered"):
        def perform(self, job: errands.Job) -> None: ...

    with pytest.raises(UnknownWorkerError):
        table.app.enqueue(Unregistered)
    with pytest.raises(InvalidJobError):
        table.app.enqueue(123, {})  # type: ignore[arg-type]
    table.assert_untouched()


@pytest.mark.parametrize(
    "options",
    [
        {"priority": 12},
        {"priority": -1},
        {"schedule_in": -5},
        {"schedule_in": "soon"},
        {"schedule_in": math.nan},
        {"max_attempts": 0},
        {"scheduled_at": dt.datetime(2030, 1, 1)},
        {"tags": "one"},
        {"tags": [1]},
        {"meta": ["x"]},
        {"meta": {"k": {1, 2}}},
        {"meta": {"k": math.nan}},
        {"queue": "has space"},
        {"queue": "x" * 200},
        {"timeout": 0},
        {"prioritee": 1},
    ],
)
def test_bad_options_at_every_entry_point(table: Table, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidJobError):
        table.app.enqueue("t.add", {"a": 1}, **options)
    with pytest.raises(InvalidJobError):
        table.add.options(**options).enqueue(a=1)

    async def attempt() -> None:
        await table.app.aenqueue("t.add", {"a": 1}, **options)

    with pytest.raises(InvalidJobError):
        asyncio.run(attempt())
    table.assert_untouched()


def test_meta_error_names_meta(table: Table) -> None:
    with pytest.raises(InvalidJobError, match="meta"):
        table.add.options(meta={"k": object()}).enqueue(a=1)
    table.assert_untouched()


def test_enqueue_many_with_a_bad_item_inserts_nothing(table: Table) -> None:
    good = [table.add.new(a=i) for i in range(3)]
    with pytest.raises(InvalidJobError, match="enqueue_many takes jobs made by"):
        table.app.enqueue_many([*good, {"worker": "t.add"}])  # type: ignore[list-item]
    with pytest.raises(InvalidJobError):
        table.app.enqueue_many([*good, "t.add"])  # type: ignore[list-item]
    table.assert_untouched()
    # and a batch that builds its items lazily fails before inserting any
    with pytest.raises(InvalidJobError):
        table.app.enqueue_many(table.add.new(a=v) for v in (1, 2, math.nan))
    table.assert_untouched()


def test_conn_of_the_wrong_kind(table: Table) -> None:
    with pytest.raises(TypeError, match=r"sqlite3\.Connection"):
        table.add.enqueue(a=1, conn=object())
    table.assert_untouched()


def test_drain_inside_a_loop_is_refused(table: Table) -> None:
    async def inside() -> None:
        table.app.drain()

    with pytest.raises(RuntimeError, match="adrain"):
        asyncio.run(inside())
    table.assert_untouched()


def test_good_input_after_bad_still_works(table: Table) -> None:
    with pytest.raises(InvalidJobError):
        table.add.enqueue(a=math.nan)
    job = table.add.enqueue(a=40, b=2)
    assert table.app.drain() == {"completed": 3}  # the new job and the two left available
    stored = table.app.get_job(job.id)
    assert stored is not None and stored.result == 42
