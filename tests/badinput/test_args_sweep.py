"""Invariant 8 for job args: hostile values are stored exactly, or refused naming the field.

Hypothesis throws values at ``enqueue`` (deep nesting, huge strings, NaN and
infinities, lone surrogates, bytes, sets, integers past 64 bits, NUL
characters, non-string keys, ...). Each one must either be stored and come
back exactly (same types, same values, same sign of zero; tuples become
lists, as JSON has no tuples) or raise :class:`errands.InvalidJobError` whose
message names ``args``; either way the jobs already in the table are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import errands

NAME = "sweep.echo"

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN, infinities, -0.0, subnormals, huge and tiny
    st.text(st.characters(codec=None), max_size=20),  # includes lone surrogates
    st.text(st.characters(categories=["Cs", "Cc", "Zl", "Zp"]), max_size=5),
    st.binary(max_size=10),  # bytes objects, valid UTF-8 or not
    st.frozensets(st.integers(), max_size=3),
    st.sets(st.text(max_size=3), max_size=3),
    st.just("\x00"),
    st.just("a\x00b"),
    st.integers(0, 2_000_000).map(lambda n: "x" * n),  # up to 2 MB strings
    st.complex_numbers(allow_nan=False, max_magnitude=10),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
        st.dictionaries(st.one_of(st.integers(), st.none(), st.booleans()), inner, max_size=2),
    ),
    max_leaves=12,
)


def nested(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


deep = st.builds(nested, st.integers(1, 1200), st.sampled_from(["list", "dict"]))


def as_json(value: Any) -> Any:
    """What a stored value should read back as: tuples are JSON arrays."""
    if isinstance(value, (list, tuple)):
        return [as_json(item) for item in value]
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    return value


def same(expected: Any, got: Any, path: str = "args", jsonb: bool = False) -> str | None:
    """Where ``got`` differs from ``expected`` in type or value (``None``: identical).

    ``jsonb``: PostgreSQL keeps a number's value, not its spelling (documented in
    docs/reliability.md): an integral float may come back as an equal int, and
    -0.0 as 0. Any other difference still counts.
    """
    if jsonb and isinstance(expected, float) and isinstance(got, (int, float)):
        return None if expected == float(got) else f"{path}: {expected!r} came back as {got!r}"
    if type(expected) is not type(got):
        kinds = f"{type(expected).__name__} -> {type(got).__name__}"
        return f"{path}: {expected!r:.60} came back as {got!r:.60} ({kinds})"
    if isinstance(expected, float):
        if expected != got or math.copysign(1, expected) != math.copysign(1, got):
            return f"{path}: {expected!r} came back as {got!r}"
    elif isinstance(expected, list):
        if len(expected) != len(got):
            return f"{path}: {len(expected)} items came back as {len(got)}"
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            if (where := same(a, b, f"{path}[{i}]", jsonb)) is not None:
                return where
    elif isinstance(expected, dict):
        if set(expected) != set(got):
            return f"{path}: keys {sorted(expected)!r:.80} came back as {sorted(got)!r:.80}"
        for key in expected:
            if (where := same(expected[key], got[key], f"{path}[{key!r}]", jsonb)) is not None:
                return where
    elif expected != got:
        return f"{path}: {expected!r:.60} came back as {got!r:.60}"
    return None


class Sweep:
    """An app with a few jobs already stored, to prove bad input leaves them alone."""

    def __init__(self, app: errands.App) -> None:
        self.app = app

        @app.job(name=NAME, max_attempts=1)
        def echo(**kwargs: Any) -> int:
            return len(kwargs)

        self.echo = echo
        echo.enqueue(a=1, b=[1.5, "x"])
        echo.options(priority=3, queue="other").enqueue(c={"d": None})
        app.drain(queue="other")
        self.before = {job.id: job for job in app.list_jobs(limit=100)}
        self.ids: set[int] = set(self.before)

    def check(self, args: dict[str, Any]) -> None:
        try:
            job = self.app.enqueue(NAME, args)
        except errands.InvalidJobError as exc:
            assert "args" in str(exc), f"the error does not name args: {exc}"
        else:
            self.ids.add(job.id)
            stored = self.app.get_job(job.id)
            assert stored is not None
            jsonb = self.app.engine.dialect == "postgres"
            difference = same(as_json(args), stored.args, jsonb=jsonb)
            assert difference is None, f"{self.app.engine.dialect} changed the args: {difference}"
        rows = {job.id: job for job in self.app.list_jobs(limit=100_000)}
        assert set(rows) == self.ids, "a job appeared or vanished"
        for job_id, before in self.before.items():
            assert rows[job_id] == before, f"job {job_id} changed"


SWEEP_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SWEEP_SETTINGS
@given(value=st.one_of(values, deep))
@example(value=1e16)  # integral floats that orjson writes with an exponent
@example(value=-0.0)
@example(value=2**64 - 1)
@example(value=2**64)
@example(value=float("nan"))
@example(value="\ud800")
@example(value=b"\xff\xfe")
@example(value={1, 2})
@example(value="nul \x00 inside")
@example(value=nested(300, "list"))
def test_hostile_values_round_trip_or_are_refused(
    make_app: Callable[..., errands.App], value: Any
) -> None:
    sweep = _sweep(make_app)
    sweep.check({"v": value})


@SWEEP_SETTINGS
@given(args=st.dictionaries(st.text(st.characters(codec=None), max_size=6), values, max_size=3))
@example(args={"\x00": 1})
@example(args={"\udc80": 1})
@example(args={"": 1})
def test_hostile_keys(make_app: Callable[..., errands.App], args: dict[str, Any]) -> None:
    _sweep(make_app).check(args)


def _sweep(make_app: Callable[..., errands.App]) -> Sweep:
    """One Sweep per test (Hypothesis calls the test body many times with one fixture)."""
    sweep: Sweep | None = getattr(make_app, "sweep", None)
    if sweep is None:
        sweep = Sweep(make_app())
        make_app.sweep = sweep  # type: ignore[attr-defined]
    return sweep


def test_oversized_args_and_result_round_trip(make_app: Callable[..., errands.App]) -> None:
    app = make_app()
    big = "é" * (5 * 1024 * 1024 // 2)  # 5 MB of UTF-8

    @app.job(name="sweep.big", max_attempts=1)
    def big_job(text: str, nested: list[Any]) -> str:
        assert text == big and nested[2]["deep"] == big[:1000]
        return text[::-1]

    @app.job(name="sweep.small", max_attempts=1)
    def small_job(n: int) -> int:
        return n + 1

    before = small_job.enqueue(n=1)
    job = big_job.enqueue(text=big, nested=[0, 1, {"deep": big[:1000]}])
    after = small_job.enqueue(n=2)
    stored = app.get_job(job.id)
    assert stored is not None and stored.args["text"] == big
    assert app.drain() == {"completed": 3}
    done = app.get_job(job.id)
    assert done is not None and done.state == errands.JobState.COMPLETED
    assert done.result == big[::-1]
    for small, result in ((before, 2), (after, 3)):
        got = app.get_job(small.id)
        assert got is not None and (got.state, got.result) == (errands.JobState.COMPLETED, result)
