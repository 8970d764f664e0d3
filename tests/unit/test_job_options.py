"""JobOptions validation and merging, and the outcome exceptions' own checks."""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import errands
from errands import InvalidJobError, JobOptions


def test_defaults_are_all_none() -> None:
    options = JobOptions()
    assert all(getattr(options, name) is None for name in JobOptions.__slots__)
    assert options.run_at() is None


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"priority": -1}, "priority must be an int from 0 to 9, got -1"),
        ({"priority": 10}, "got 10"),
        ({"priority": 1.0}, "priority"),
        ({"priority": "1"}, "priority"),
        ({"priority": True}, "priority"),
        ({"max_attempts": 0}, "max_attempts must be an int >= 1, got 0"),
        ({"max_attempts": -2}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"max_attempts": False}, "max_attempts"),
        ({"schedule_in": -1}, "schedule_in must be a number >= 0, got -1"),
        ({"schedule_in": "60"}, "schedule_in"),
        ({"schedule_in": math.nan}, "schedule_in"),
        ({"schedule_in": math.inf}, "schedule_in"),
        ({"schedule_in": True}, "schedule_in"),
        ({"schedule_in": dt.timedelta(seconds=5)}, "schedule_in"),
        ({"scheduled_at": dt.datetime(2030, 1, 1)}, "timezone-aware"),
        ({"scheduled_at": -5.0}, "scheduled_at"),
        ({"scheduled_at": math.nan}, "scheduled_at"),
        ({"scheduled_at": "2030-01-01"}, "scheduled_at"),
        ({"schedule_in": 5, "scheduled_at": time.time()}, "not both"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": math.nan}, "timeout"),
        ({"tags": "urgent"}, "tags must be a list of strings"),
        ({"tags": ["ok", 1]}, "tags"),
        ({"tags": [None]}, "tags"),
        ({"meta": ["not", "a", "dict"]}, "meta must be a dict"),
        ({"meta": "x"}, "meta"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"queue": 5}, "queue"),
    ],
)
def test_invalid_options_name_the_option(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidJobError) as info:
        JobOptions(**options)
    assert fragment in str(info.value)


def test_valid_edge_values() -> None:
    JobOptions(priority=0)
    JobOptions(priority=9)
    JobOptions(max_attempts=1)
    JobOptions(schedule_in=0)
    JobOptions(schedule_in=0.001)
    JobOptions(tags=())
    JobOptions(tags=["a"])
    JobOptions(meta={})
    JobOptions(scheduled_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))


def test_run_at() -> None:
    assert JobOptions(schedule_in=10).run_at(now=100.0) == 110.0
    when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert JobOptions(scheduled_at=when).run_at() == when.timestamp()
    assert JobOptions(scheduled_at=1234.5).run_at() == 1234.5


def test_merged_lays_set_options_over() -> None:
    base = JobOptions(queue="default", priority=0, max_attempts=5, tags=("a",))
    merged = base.merged(JobOptions(priority=3, meta={"k": 1}))
    assert merged == JobOptions(
        queue="default", priority=3, max_attempts=5, tags=("a",), meta={"k": 1}
    )


def test_merged_keeps_schedule_in() -> None:
    """The worker's defaults merged with ``schedule_in`` must keep it (the enqueue path)."""
    merged = JobOptions(queue="default", priority=0).merged(JobOptions(schedule_in=60))
    assert merged.schedule_in == 60
    assert merged.run_at(now=1000.0) == 1060.0


def test_merged_schedule_options_replace_each_other() -> None:
    when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    first = JobOptions(scheduled_at=when).merged(JobOptions(schedule_in=5))
    assert (first.schedule_in, first.scheduled_at) == (5, None)
    second = JobOptions(schedule_in=5).merged(JobOptions(scheduled_at=when))
    assert (second.schedule_in, second.scheduled_at) == (None, when)


@given(
    priority=st.one_of(st.none(), st.integers(0, 9)),
    max_attempts=st.one_of(st.none(), st.integers(1, 1000)),
    schedule_in=st.one_of(st.none(), st.floats(0, 1e6)),
)
def test_merged_over_empty_is_identity(
    priority: int | None, max_attempts: int | None, schedule_in: float | None
) -> None:
    given_options = JobOptions(
        priority=priority, max_attempts=max_attempts, schedule_in=schedule_in
    )
    assert JobOptions().merged(given_options) == given_options
    assert given_options.merged(JobOptions()) == given_options


# -- outcome exceptions ------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0, 0.5, 60, 3600.0])
def test_snooze_accepts_non_negative_numbers(seconds: float) -> None:
    assert errands.Snooze(seconds).seconds == float(seconds)


@pytest.mark.parametrize("seconds", [-1, "60", None, True, math.nan, math.inf])
def test_snooze_refuses_bad_seconds(seconds: Any) -> None:
    with pytest.raises(InvalidJobError, match="Snooze seconds"):
        errands.Snooze(seconds)


def test_cancel_and_discard_keep_their_reason() -> None:
    assert errands.Cancel("why").reason == "why"
    assert errands.Discard().reason == ""
    assert str(errands.Discard("bad")) == "bad"


def test_job_time_properties() -> None:
    job = errands.Job(
        id=1,
        worker="w",
        queue="q",
        args={},
        state=errands.JobState.AVAILABLE,
        inserted_at=0.0,
        scheduled_at=60.0,
    )
    assert job.scheduled_time == dt.datetime(1970, 1, 1, 0, 1, tzinfo=dt.UTC)
    assert job.inserted_time.tzinfo is dt.UTC
    assert job.finished_time is None
    assert job.cancelled() is False
