"""What a batch of outcomes sends PostgreSQL (pg_claim.ack_params), before any SQL runs.

The statements themselves run against a real server in the conformance suite
(every kind of outcome) and in tests/integration/postgres/test_claim.py.
"""

from __future__ import annotations

import math

import orjson

from errands.engines.base import Ack
from errands.engines.pg_claim import ack_params, ack_payload, id_array
from errands.job import JobState


def test_a_plain_completion_sends_only_what_identifies_it() -> None:
    done = Ack(id=7, attempt=2, producer="p1", state=JobState.COMPLETED)
    # json_to_recordset reads the missing keys as NULL: no result, no error, no due
    # time, not snoozed.
    assert orjson.loads(ack_payload([done])) == [
        {"id": 7, "attempt": 2, "producer": "p1", "state": "completed"}
    ]


def test_every_field_that_differs_from_its_default_is_sent() -> None:
    snoozed = Ack(
        id=8,
        attempt=1,
        producer="p1",
        state=JobState.SCHEDULED,
        result=b'{"ok": true}',
        error={"type": "ValueError", "message": "bad"},
        scheduled_at=1_764_400_000.5,
        snoozed=True,
    )
    [sent] = orjson.loads(ack_payload([snoozed]))
    assert sent == {
        "id": 8,
        "attempt": 1,
        "producer": "p1",
        "state": "scheduled",
        "result": '{"ok": true}',
        "error": '{"type":"ValueError","message":"bad"}',
        "scheduled_at": 1_764_400_000.5,
        "snoozed": True,
    }


def test_a_due_time_that_is_not_a_number_keeps_the_stored_one() -> None:
    retry = Ack(id=9, attempt=1, producer="p1", state="retryable", scheduled_at=math.nan)  # type: ignore[arg-type]
    # Left out like a missing due time (the statement keeps the job's own); a state
    # given as its string value still goes out as that value.
    assert orjson.loads(ack_payload([retry])) == [
        {"id": 9, "attempt": 1, "producer": "p1", "state": "retryable"}
    ]


def test_ids_go_as_one_array_literal() -> None:
    assert id_array([3, 5, 12_345_678_901]) == "{3,5,12345678901}"
    assert id_array([]) == "{}"
    acks = [Ack(id=i, attempt=1, producer="p1", state=JobState.COMPLETED) for i in (4, 2)]
    assert ack_params(acks)["ids"] == "{4,2}"
