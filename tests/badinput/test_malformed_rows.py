"""Invariant 8 for rows errands did not write: bad rows are refused, or isolated.

Each case writes one row straight into the jobs table with SQL, between good
jobs. Where the schema forbids the row (CHECK constraints, jsonb, timestamptz),
the test is that the database refuses it. Where the schema lets it in, a
running node (and ``app.drain()``) must still complete every good job, keep
working, and leave the bad row isolated: untouched, failed into
``retryable``/``discarded``, or rescued and run when the row is a legitimate
orphan. A bad row must never take good jobs down with it, nor sit forever in
``executing`` under a live producer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

import errands
from tests.badinput.conftest import RawTable, running_node
from tests.support import wait_for

BOTH = ("sqlite", "postgres")


@dataclass(frozen=True)
class Case:
    """One malformed row: its columns, which schemas refuse it, and where it may end up."""

    name: str
    columns: dict[str, Any]
    refused_by: tuple[str, ...] = ()
    #: States the row may settle in under a running node (when the schema took it).
    settles: tuple[str, ...] = ()
    #: States it may be in after ``app.drain()`` (None: drain does not apply, e.g. orphans).
    drained: tuple[str, ...] | None = field(default=None)


CASES = [
    Case("args-not-json", {"args": "not json"}, refused_by=BOTH),
    Case("negative-attempt", {"attempt": -1}, refused_by=BOTH),
    Case("unknown-state", {"state": "bogus"}, refused_by=BOTH),
    Case("priority-out-of-range", {"priority": 42}, refused_by=BOTH),
    Case("zero-max-attempts", {"max_attempts": 0}, refused_by=BOTH),
    Case(
        # Rows the runtime cannot run are discarded at claim (errands.MalformedJob).
        "args-an-array",
        {"args": "[1, 2]"},
        settles=("discarded",),
        drained=("discarded",),
    ),
    Case("args-null", {"args": "null"}, settles=("discarded",), drained=("discarded",)),
    Case(
        # Valid JSON (and valid jsonb), but no Python float holds it.
        "args-number-overflows-double",
        {"args": '{"n": 1e999}'},
        settles=("available", "discarded"),
        drained=("available", "discarded"),
    ),
    Case(
        "args-lone-surrogate-escape",
        {"args": '{"s": "\\ud800"}'},
        refused_by=("postgres",),
        settles=("available", "discarded"),
        drained=("available", "discarded"),
    ),
    Case(
        "unknown-worker",
        {"worker": "no.such.worker"},
        settles=("available",),
        drained=("available",),
    ),
    Case(
        "attempts-already-spent",
        {"attempt": 5, "max_attempts": 3},
        settles=("available", "discarded"),
        drained=("available", "discarded"),
    ),
    Case(
        "executing-without-producer",
        {"state": "executing", "attempt": 1},
        settles=("completed",),
    ),
    Case(
        "executing-by-unknown-producer",
        {"state": "executing", "attempt": 1, "attempted_by": "ghost-1/default/0000"},
        settles=("completed",),
    ),
    Case(
        "executing-spent-without-producer",
        {"state": "executing", "attempt": 3, "max_attempts": 3},
        settles=("discarded",),
    ),
    Case(
        "errors-a-number-and-the-job-fails",
        {"worker": "bad.fail", "errors": "5"},
        settles=("discarded",),
        drained=("discarded",),
    ),
    Case(
        "errors-an-object-and-the-job-fails",
        {"worker": "bad.fail", "errors": "{}", "max_attempts": 1},
        settles=("discarded",),
        drained=("discarded",),
    ),
    Case(
        "meta-and-tags-of-the-wrong-type",
        {"meta": "[1]", "tags": '{"a": 1}'},
        settles=("discarded",),
        drained=("discarded",),
    ),
    Case(
        # SQLite's type affinity keeps text in a REAL column; timestamptz refuses it.
        "text-in-a-time-column",
        {"scheduled_at": "garbage"},
        refused_by=("postgres",),
        settles=("available", "completed", "discarded"),
        drained=("available", "completed", "discarded"),
    ),
    Case(
        # SQLite keeps the text; float8 refuses it.
        "text-as-timeout",
        {"timeout": "soon"},
        refused_by=("postgres",),
        settles=("discarded",),
        drained=("discarded",),
    ),
    Case(
        # timestamptz takes 'infinity'; the claim's JSON then holds "Infinity", a
        # string (PostgreSQL), and SQLite keeps the text: no time to run it by.
        "infinite-due-time",
        {"scheduled_at": "infinity"},
        settles=("discarded",),
        drained=("discarded",),
    ),
]
IDS = [case.name for case in CASES]


def _workers(app: errands.App) -> errands.JobFunction[..., int]:
    @app.job(name="bad.ok", max_attempts=3)
    def ok(n: int = 0) -> int:
        return n + 1

    @app.job(name="bad.fail", max_attempts=3)
    def fail() -> None:
        raise ValueError("bad.fail always fails")

    return ok


def _table_with_bad_row(
    app: errands.App, case: Case
) -> tuple[RawTable, errands.JobFunction[..., int], list[int], int]:
    ok = _workers(app)
    app.migrate()
    raw = RawTable(app)
    good = [ok.enqueue(n=i).id for i in range(3)]
    bad = raw.insert(**case.columns)
    good += [ok.enqueue(n=i).id for i in range(3, 6)]
    return raw, ok, good, bad


def _assert_refused(app: errands.App, case: Case) -> None:
    _workers(app)
    app.migrate()
    with pytest.raises((sqlite3.Error, psycopg.Error)):
        RawTable(app).insert(**case.columns)
    assert app.list_jobs() == [], "a refused row left something behind"


def _good_done(app: errands.App, good: list[int]) -> bool:
    return all(
        (job := app.get_job(i)) is not None and job.state == errands.JobState.COMPLETED
        for i in good
    )


def _explain(raw: RawTable, good: list[int], bad: int) -> str:
    states = raw.states()
    return f"good jobs {[states.get(i) for i in good]}, bad row {raw.row(bad)}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_schema_refuses_or_a_node_isolates(
    case: Case, engine_name: str, make_app: Callable[..., errands.App]
) -> None:
    app = make_app()
    if engine_name in case.refused_by:
        _assert_refused(app, case)
        return
    raw, ok, good, bad = _table_with_bad_row(app, case)
    with running_node(app):
        try:
            wait_for(lambda: _good_done(app, good), timeout=10)
        except AssertionError:
            pytest.fail(
                f"good jobs did not complete beside {case.name}: {_explain(raw, good, bad)}"
            )
        try:
            wait_for(lambda: (raw.row(bad) or {}).get("state") in case.settles, timeout=8)
        except AssertionError:
            pytest.fail(
                f"the bad row ({case.name}) did not settle in {case.settles}: "
                f"{_explain(raw, good, bad)}"
            )
        later = ok.enqueue(n=99)
        wait_for(lambda: _good_done(app, [later.id]), timeout=10)
    row = raw.row(bad)
    assert row is not None and row["state"] in case.settles, row
    assert row["attempt"] <= max(row["max_attempts"], case.columns.get("attempt", 0)), (
        f"a spent job ran again: {row}"
    )


DRAINABLE = [case for case in CASES if case.drained is not None and case.refused_by != BOTH]


@pytest.mark.parametrize("case", DRAINABLE, ids=[case.name for case in DRAINABLE])
def test_drain_isolates(case: Case, engine_name: str, make_app: Callable[..., errands.App]) -> None:
    app = make_app()
    if engine_name in case.refused_by:
        _assert_refused(app, case)
        return
    raw, _, good, bad = _table_with_bad_row(app, case)
    try:
        app.drain()
    except Exception as exc:
        pytest.fail(f"drain crashed on {case.name}: {exc!r}; {_explain(raw, good, bad)}")
    assert _good_done(app, good), _explain(raw, good, bad)
    row = raw.row(bad)
    assert row is not None and row["state"] in (case.drained or ()), _explain(raw, good, bad)
    assert row["attempt"] <= max(row["max_attempts"], case.columns.get("attempt", 0)), (
        f"a spent job ran again: {row}"
    )
