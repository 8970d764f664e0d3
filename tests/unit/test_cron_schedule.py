"""Cron expressions, nicknames, time zones and DST; entries checked at construction."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import errands
from errands import ConfigError
from errands.cron import NICKNAMES, check_entries, parse_entries, parse_schedule

PARIS = ZoneInfo("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(slots: list[datetime], zone: ZoneInfo = PARIS) -> list[str]:
    return [slot.astimezone(zone).isoformat() for slot in slots]


@pytest.mark.parametrize(
    ("nickname", "expected"),
    [
        ("@hourly", ["2026-01-01T01:00:00+00:00", "2026-01-01T02:00:00+00:00"]),
        ("@daily", ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
        ("@midnight", ["2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]),
        ("@weekly", ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"]),
        ("@monthly", ["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]),
        ("@yearly", ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
        ("@annually", ["2027-01-01T00:00:00+00:00", "2028-01-01T00:00:00+00:00"]),
    ],
)
def test_nicknames(nickname: str, expected: list[str]) -> None:
    schedule = parse_schedule(nickname)
    assert schedule.expression == NICKNAMES[nickname]
    last = datetime.fromisoformat(expected[-1])
    slots = schedule.slots_between(utc(2026, 1, 1), last + timedelta(minutes=1))
    assert [slot.isoformat() for slot in slots] == expected


def test_window_is_open_at_the_start_and_closed_at_the_end() -> None:
    schedule = parse_schedule("*/5 * * * *")
    slots = schedule.slots_between(utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 15))
    assert [slot.minute for slot in slots] == [5, 10, 15]
    assert all(slot.tzinfo is UTC for slot in slots)
    assert schedule.slots_between(utc(2026, 1, 1, 10, 15), utc(2026, 1, 1, 10, 15)) == []


def test_names_and_extensions() -> None:
    weekdays = parse_schedule("0 9 * * MON-FRI", "Europe/Paris")
    slots = weekdays.slots_between(utc(2026, 1, 5), utc(2026, 1, 12))  # Monday to Monday
    assert local(slots) == [f"2026-01-{day:02d}T09:00:00+01:00" for day in range(5, 10)]
    last_day = parse_schedule("0 0 L * *").slots_between(utc(2026, 2, 1), utc(2026, 3, 1))
    assert [slot.day for slot in last_day] == [28]


def test_time_zone_shifts_the_instants() -> None:
    slots = parse_schedule("0 3 * * *", "America/New_York").slots_between(
        utc(2026, 1, 10), utc(2026, 1, 11)
    )
    assert [slot.isoformat() for slot in slots] == ["2026-01-10T08:00:00+00:00"]


def test_spring_forward_gap_runs_once_shifted_by_the_gap() -> None:
    # 2026-03-29 in Paris: 02:00 CET jumps to 03:00 CEST; 02:30 never happens.
    schedule = parse_schedule("30 2 * * *", "Europe/Paris")
    slots = schedule.slots_between(utc(2026, 3, 27, 12), utc(2026, 3, 31, 12))
    assert local(slots) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:30:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # The same slot is found whatever window it falls in (each node agrees).
    alone = schedule.slots_between(utc(2026, 3, 29, 1, 29), utc(2026, 3, 29, 1, 31))
    assert alone == [slots[1]]


def test_autumn_repeat_runs_a_fixed_time_once() -> None:
    # 2026-10-25 in Paris: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    schedule = parse_schedule("30 2 * * *", "Europe/Paris")
    slots = schedule.slots_between(utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert local(slots) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    # A window holding only the second 02:30 finds nothing: it is not a slot.
    second_pass = schedule.slots_between(utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 2, 0))
    assert second_pass == []


def test_every_hour_expressions_keep_real_time_rhythm_over_dst() -> None:
    schedule = parse_schedule("*/30 * * * *", "Europe/Paris")
    spring = schedule.slots_between(utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 2, 15))
    assert local(spring) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]
    autumn = schedule.slots_between(utc(2026, 10, 24, 23, 45), utc(2026, 10, 25, 1, 45))
    assert local(autumn) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
    ]
    gaps = {b - a for a, b in itertools.pairwise(autumn)}
    assert gaps == {timedelta(minutes=30)}


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("61 * * * *", "invalid cron expression '61 * * * *'"),
        ("a b c d e", "invalid cron expression"),
        ("* * * *", "must have 5 fields"),
        ("* * * * * *", "must have 5 fields"),
        ("0 0 1 1 * 2026", "must have 5 fields"),
        ("", "expression must be a cron string"),
        (None, "expression must be a cron string"),
        (5, "got 5"),
        ("@reboot", "unknown cron nickname '@reboot'"),
        ("@often", "unknown cron nickname"),
        ("H * * * *", "H or R"),
        ("R * * * *", "H or R"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_bad_expressions_name_the_value(expression: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_schedule(expression, where="cron entry 'x'")
    assert fragment in str(info.value)
    assert "cron entry 'x'" in str(info.value)


def test_month_and_day_names_are_not_taken_for_hashed_fields() -> None:
    assert parse_schedule("0 0 * MAR THU").expression == "0 0 * MAR THU"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", 5, "../etc/passwd"])
def test_unknown_timezone(zone: Any) -> None:
    with pytest.raises(ConfigError, match="timezone"):
        parse_schedule("* * * * *", zone, where="cron entry 'x'")


def make_app(tmp_path: Path, **options: Any) -> errands.App:
    return errands.App(f"sqlite:///{tmp_path}/jobs.db", **options)


def test_app_cron_entries_are_checked_at_construction(tmp_path: Path) -> None:
    entries: list[tuple[Any, ...]] = [
        ("*/5 * * * *", "reports.sync"),
        ("0 3 * * *", "reports.nightly", {"args": {"day": 1}, "timezone": "Europe/Paris"}),
        ("0 3 * * *", "reports.nightly", {"name": "nightly-utc", "queue": "q", "priority": 2}),
    ]
    app = make_app(tmp_path, cron=entries)
    names = [entry.name for entry in app.cron]
    assert names == [
        "reports.sync */5 * * * *",
        "reports.nightly 0 3 * * * Europe/Paris",
        "nightly-utc",
    ]
    assert app.cron[1].args == {"day": 1}
    assert app.cron[2].options.queue == "q" and app.cron[2].options.priority == 2


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ([("bad", "w")], "cron entry 0: cron expression 'bad' must have 5 fields"),
        ([("* * * * *", "w", {"timezone": "Nowhere/Land"})], "unknown timezone 'Nowhere/Land'"),
        ([("* * * * *", "w", {"colour": 1})], "cron entry 0: unknown option 'colour'"),
        ([("* * * * *", "w", {"priority": 12})], "priority must be an int from 0 to 9, got 12"),
        ([("* * * * *", "w", {"args": [1]})], "args must be a dict"),
        ([("* * * * *", "w", {"name": ""})], "name must be a non-empty string"),
        ([("* * * * *", 42)], "worker must be a worker name"),
        ([("* * * * *",)], "must be (expression, worker)"),
        ("* * * * *", "cron must be a list"),
        ([("* * * * *", "w"), ("* * * * *", "w", {"name": "w-again"})], None),
        ([("* * * * *", "w"), ("* * * * *", "w")], "cron entry 'w * * * * *' is given twice"),
        ([("1 * * * *", "w", {"name": "a"}), ("bad", "w", {"name": "b"})], "cron entry 'b'"),
    ],
)
def test_bad_app_cron_raises_config_error(tmp_path: Path, cron: Any, fragment: str | None) -> None:
    if fragment is None:  # a valid control case
        assert len(make_app(tmp_path, cron=cron).cron) == 2
        return
    with pytest.raises(ConfigError) as info:
        make_app(tmp_path, cron=cron)
    assert fragment in str(info.value)


def test_cron_catch_up_is_checked(tmp_path: Path) -> None:
    assert make_app(tmp_path).settings.cron_catch_up == 3600
    assert make_app(tmp_path, cron_catch_up=0).settings.cron_catch_up == 0
    with pytest.raises(ConfigError, match="cron_catch_up must be a number of seconds >= 0"):
        make_app(tmp_path, cron_catch_up=-1)


def test_job_and_worker_cron_are_checked_at_definition(tmp_path: Path) -> None:
    app = make_app(tmp_path)

    @app.job(cron="@hourly", name="tick")
    def tick() -> None: ...

    @app.register
    class Nightly(errands.Worker, cron="0 3 * * *", name="nightly"):
        def perform(self, job: errands.Job) -> None: ...

    assert [(entry.name, entry.schedule.expression) for entry in app.cron] == [
        ("tick", "0 * * * *"),
        ("nightly", "0 3 * * *"),
    ]
    with pytest.raises(ConfigError, match=r"@app.job\(cron=...\): unknown cron nickname '@soon'"):
        app.job(cron="@soon")
    with pytest.raises(ConfigError, match="cron of worker 'bad'"):

        class Bad(errands.Worker, cron="* * *", name="bad"):
            pass

    # A subclass does not inherit its parent's schedule (it would run twice).
    class Child(Nightly, name="child"):
        pass

    assert Child.cron_schedule is None


def test_unknown_cron_worker_is_found_before_any_tick(tmp_path: Path) -> None:
    app = make_app(tmp_path, cron=[("* * * * *", "nobody.home", {"name": "ghost"})])
    with pytest.raises(ConfigError, match=r"cron entry 'ghost': no worker named 'nobody\.home'"):
        check_entries(app)

    @app.job(name="needs_arg")
    def needs_arg(x: int) -> None: ...

    app.cron[:] = parse_entries([("* * * * *", needs_arg, {"name": "bad-args"})])
    with pytest.raises(ConfigError, match="cron entry 'bad-args': args for 'needs_arg'"):
        check_entries(app)


@settings(max_examples=60, deadline=None)
@given(
    expression=st.sampled_from(["30 2 * * *", "*/20 * * * *", "0 1-3 * * *", "15 * * * *"]),
    zone=st.sampled_from(["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "UTC"]),
    start=st.sampled_from(
        [
            utc(2026, 3, 7, 20),
            utc(2026, 3, 28, 20),
            utc(2026, 10, 3, 20),
            utc(2026, 10, 24, 20),
            utc(2026, 10, 31, 20),
        ]
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=36 * 3600), max_size=12),
)
def test_ticking_through_a_range_finds_the_same_slots_as_one_look(
    expression: str, zone: str, start: datetime, cuts: list[int]
) -> None:
    """However the leader's ticks split time, every slot is found once (DST included)."""
    schedule = parse_schedule(expression, zone)
    end = start + timedelta(hours=36)
    whole = schedule.slots_between(start, end)
    edges = [start, *sorted(start + timedelta(seconds=cut) for cut in set(cuts)), end]
    pieces = [slot for a, b in itertools.pairwise(edges) for slot in schedule.slots_between(a, b)]
    assert pieces == whole
    assert len(set(whole)) == len(whole)
