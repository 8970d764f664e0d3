"""Strict JSON (codec) and the default backoff curves."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errands import InvalidJobError, backoff, codec

# -- codec -------------------------------------------------------------------------


def test_encode_and_decode_round_trip() -> None:
    value = {"to": "a@b.c", "n": 1, "f": 0.5, "l": [1, None, True], "d": {"x": "ü"}}
    data = codec.encode(value, "args")
    assert isinstance(data, bytes)
    assert codec.decode(data) == value
    assert codec.decode(data.decode()) == value
    assert codec.decode(None) is None
    assert codec.decode({"already": "decoded"}) == {"already": "decoded"}
    assert codec.encode_str({"a": 1}, "args") == '{"a":1}'


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        {"a": math.nan},
        {"a": [1, 2, {"b": math.inf}]},
        [(-math.inf,)],
        {"deep": {"deeper": {"deepest": [0.0, math.nan]}}},
    ],
)
def test_non_finite_numbers_are_refused(value: Any) -> None:
    with pytest.raises(InvalidJobError) as info:
        codec.encode(value, "args of 'x'")
    assert "args of 'x'" in str(info.value)
    assert "finite" in str(info.value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({1: "int key"}, "args"),
        ({("a",): "tuple key"}, "args"),
        ({"s": {1, 2}}, "args"),
        ({"o": object()}, "args"),
        ({"b": b"bytes"}, "args"),
        ({"s": "lone surrogate \ud800"}, "args"),
        ({"\udfff": "surrogate key"}, "args"),
        ({"big": 2**64}, "args"),
        ({"f": lambda: None}, "args"),
    ],
)
def test_unserialisable_values_name_the_field(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidJobError) as info:
        codec.encode(value, "args")
    assert str(info.value).startswith("args must be JSON")


@dataclasses.dataclass
class _Point:
    x: int


@pytest.mark.parametrize(
    "value",
    [dt.datetime(2030, 1, 1, tzinfo=dt.UTC), dt.date(2030, 1, 1), uuid.UUID(int=1), _Point(1)],
    ids=["datetime", "date", "uuid", "dataclass"],
)
def test_values_json_cannot_carry_faithfully_are_refused(value: Any) -> None:
    """codec promises "a job never runs with args other than the ones it was given":
    a datetime/UUID/dataclass would come back as a str/dict, so it must be refused."""
    with pytest.raises(InvalidJobError):
        codec.encode({"v": value}, "args")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(
                alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_every_json_value_round_trips(value: Any) -> None:
    assert codec.decode(codec.encode(value, "args")) == value


# -- backoff -----------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 20])
def test_exponential_stays_within_jitter(attempt: int) -> None:
    base = 15 + 2**attempt
    samples = [backoff.exponential(attempt) for _ in range(300)]
    assert all(base * 0.9 <= s <= base * 1.1 for s in samples)
    # jitter spreads both ways
    assert min(samples) < base < max(samples)


def test_exponential_without_jitter_is_exact() -> None:
    assert backoff.exponential(3, jitter=0) == 23.0
    assert backoff.exponential(0, jitter=0) == 16.0
    assert backoff.exponential(2, base=1, factor=3, jitter=0) == 10.0


def test_exponential_exponent_is_capped() -> None:
    assert backoff.exponential(1000, jitter=0) == 15 + 2**20
    assert backoff.exponential(10**9, jitter=0) == 15 + 2**20
    assert math.isfinite(backoff.exponential(10**9))


def test_exponential_never_exceeds_maximum() -> None:
    """``maximum`` caps the delay: with jitter, no sample may go above it."""
    samples = [backoff.exponential(30, maximum=60) for _ in range(300)]
    assert all(0 <= s <= 60 for s in samples), max(samples)
    assert backoff.exponential(30, maximum=60, jitter=0) == 60


def test_exponential_is_never_negative() -> None:
    assert backoff.exponential(0, base=0, factor=0, jitter=0.5) >= 0
    assert backoff.exponential(1, base=-100, jitter=0) == 0


def test_linear() -> None:
    assert backoff.linear(3) == 30.0
    assert backoff.linear(0) == 0.0
    assert backoff.linear(100, maximum=60) == 60
    assert backoff.linear(2, step=0.5) == 1.0


@pytest.mark.parametrize("value", ["a\x00b", {"k": ["\x00"]}, {"\x00": 1}])
def test_nul_characters_are_refused_on_every_engine(value: object) -> None:
    """PostgreSQL's jsonb cannot hold NUL; errands refuses it everywhere, naming the field."""
    with pytest.raises(InvalidJobError, match=r"args must not contain NUL"):
        codec.encode(value, "args")


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    assert codec.encode("a\\u0000b", "args") == b'"a\\\\u0000b"'
