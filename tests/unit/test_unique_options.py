"""errands.Unique: validation that names the option, key hashing, and how options reach a job."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import errands
from errands import InvalidJobError, JobOptions, Unique
from errands.unique import INCOMPLETE_STATES, state_mask, unique_hash

ALL_STATES = (*INCOMPLETE_STATES, "completed", "cancelled", "discarded")


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"period": -1}, "Unique period must be a number of seconds > 0 or None, got -1"),
        ({"period": 0}, "period"),
        ({"period": math.nan}, "period"),
        ({"period": math.inf}, "period"),
        ({"period": True}, "period"),
        ({"period": "60"}, "period"),
        ({"fields": ("worker", "colour")}, "Unique fields must name only"),
        ({"fields": ("worker", "colour")}, "'colour'"),
        ({"fields": "args"}, "Unique fields must be a list of strings, got 'args'"),
        ({"fields": ()}, "Unique fields must name at least one"),
        ({"keys": "account_id"}, "Unique keys must be a list of strings, got 'account_id'"),
        ({"keys": ["a", 1]}, "Unique keys must be a list of strings"),
        ({"keys": {"a": 1}}, "Unique keys"),
        ({"keys": ["a"], "fields": ("worker", "queue")}, "neither 'args' nor 'meta'"),
        ({"states": (*INCOMPLETE_STATES, "finished")}, "Unique states must name only"),
        ({"states": (*INCOMPLETE_STATES, "finished")}, "'finished'"),
        ({"states": ("available",)}, "Unique states must include scheduled"),
        ({"states": ("completed",)}, "missing 'scheduled'"),
        ({"states": "available"}, "Unique states must be a list of strings"),
    ],
)
def test_bad_unique_options_name_the_option(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidJobError) as info:
        Unique(**options)
    assert fragment in str(info.value)


def test_unique_normalises_lists_to_tuples_and_drops_repeats() -> None:
    unique = Unique(
        period=60,
        fields=["worker", "args", "args"],  # type: ignore[arg-type]
        keys=["a", "b"],  # type: ignore[arg-type]
        states=[*ALL_STATES],  # type: ignore[arg-type]
    )
    assert unique.period == 60.0 and isinstance(unique.period, float)
    assert unique.fields == ("worker", "args")
    assert unique.keys == ("a", "b")
    assert unique.states == ALL_STATES


def test_defaults() -> None:
    unique = Unique()
    assert unique.period is None
    assert unique.fields == ("worker", "queue", "args")
    assert unique.keys is None
    assert unique.states == ("scheduled", "available", "executing", "retryable")
    assert state_mask(unique.states) == 1 | 2 | 4 | 8
    assert state_mask(ALL_STATES) == 127


def _hash(unique: Unique, **given: Any) -> str:
    fields: dict[str, Any] = {"worker": "w", "queue": "default", "args": {}, "meta": {}}
    fields.update(given)
    return unique_hash(unique, **fields)


def test_hash_is_canonical_whatever_the_key_order() -> None:
    unique = Unique()
    one = _hash(unique, args={"a": 1, "b": {"x": 1, "y": 2}})
    two = _hash(unique, args={"b": {"y": 2, "x": 1}, "a": 1})
    assert one == two
    assert len(one) == 64 and int(one, 16) >= 0
    assert one != _hash(unique, args={"a": 2, "b": {"x": 1, "y": 2}})


def test_hash_covers_only_the_chosen_fields() -> None:
    default = Unique()
    assert _hash(default, queue="a") != _hash(default, queue="b")
    assert _hash(default, worker="a") != _hash(default, worker="b")
    assert _hash(default, meta={"t": 1}) == _hash(default, meta={"t": 2})

    no_queue = Unique(fields=("worker", "args"))
    assert _hash(no_queue, queue="a") == _hash(no_queue, queue="b")

    with_meta = Unique(fields=("worker", "meta"))
    assert _hash(with_meta, meta={"t": 1}) != _hash(with_meta, meta={"t": 2})
    assert _hash(with_meta, args={"a": 1}) == _hash(with_meta, args={"a": 2})


def test_keys_limit_which_args_count() -> None:
    unique = Unique(keys=["account"])
    assert _hash(unique, args={"account": 1, "reason": "x"}) == _hash(
        unique, args={"account": 1, "reason": "y"}
    )
    assert _hash(unique, args={"account": 1}) != _hash(unique, args={"account": 2})
    # A missing key is not the same as a key holding null.
    assert _hash(unique, args={}) != _hash(unique, args={"account": None})


def test_period_is_a_window_aligned_to_multiples_of_the_period() -> None:
    hourly = Unique(period=3600)
    assert _hash(hourly, now=7200.0) == _hash(hourly, now=10_799.9)
    assert _hash(hourly, now=10_799.9) != _hash(hourly, now=10_800.0)
    # A different period is a different key, even in overlapping windows.
    assert _hash(Unique(period=7200), now=7200.0) != _hash(hourly, now=7200.0)
    assert _hash(Unique(), now=1.0) == _hash(Unique(), now=99_999.0)


def test_job_options_take_unique_and_replace() -> None:
    options = JobOptions(unique=Unique(), replace=["scheduled_at", "priority"])  # type: ignore[arg-type]
    assert options.replace == ("scheduled_at", "priority")
    assert JobOptions(unique=False).unique is False
    with pytest.raises(InvalidJobError, match=r"unique must be an errands\.Unique"):
        JobOptions(unique="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError, match="replace must name only"):
        JobOptions(replace=("queue",))
    with pytest.raises(InvalidJobError, match="replace must be a list of strings"):
        JobOptions(replace="scheduled_at")  # type: ignore[arg-type]


def test_new_job_carries_the_key_and_replace_needs_unique(tmp_path: Path) -> None:
    app = errands.App(f"sqlite:///{tmp_path}/jobs.db")

    @app.job(unique=Unique(keys=["a"]))
    def work(a: int, b: int = 0) -> None: ...

    @app.job()
    def plain(a: int) -> None: ...

    one, two = work.new(a=1, b=1), work.new(a=1, b=2)
    assert one.unique_hash is not None and one.unique_hash == two.unique_hash
    assert one.unique_states == 15 and one.replace == ()
    assert plain.new(a=1).unique_hash is None
    # Per call: off, on, and replace.
    assert work.options(unique=False).new(a=1).unique_hash is None
    assert plain.options(unique=Unique()).new(a=1).unique_hash is not None
    debounced = work.options(replace=["scheduled_at"], schedule_in=5).new(a=1)
    assert debounced.replace == ("scheduled_at",)
    with pytest.raises(InvalidJobError, match="replace=\\['priority'\\] needs unique="):
        plain.options(replace=("priority",)).new(a=1)
    with pytest.raises(InvalidJobError, match="unknown job option"):
        app.new_job(plain, {"a": 1}, uniq=Unique())


def test_worker_class_statement_takes_unique() -> None:
    class Sync(errands.Worker, unique=Unique(period=60), replace=("priority",)):
        def perform(self, job: errands.Job) -> None: ...

    assert Sync.defaults.unique == Unique(period=60)
    assert Sync.defaults.replace == ("priority",)
    with pytest.raises(InvalidJobError, match=r"unique must be an errands\.Unique"):

        class Bad(errands.Worker, unique="yes"):  # type: ignore[arg-type]
            pass
