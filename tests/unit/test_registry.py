"""The worker registry: names, duplicates, resolution errors, class options."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

import errands
from errands import InvalidJobError, UnknownWorkerError
from errands.worker import Registry


@pytest.fixture
def app(tmp_path: Path) -> errands.App:
    return errands.App(f"sqlite:///{tmp_path}/jobs.db")


def test_function_worker_names(app: errands.App) -> None:
    @app.job()
    def plain() -> None: ...

    @app.job(name="pinned.name")
    def pinned() -> None: ...

    assert plain.name == f"{__name__}.test_function_worker_names.<locals>.plain"
    assert pinned.name == "pinned.name"
    assert app.registry.names() == sorted([plain.name, "pinned.name"])
    assert app.registry.resolve("pinned.name") is pinned.worker
    assert app.registry.resolve(pinned) is pinned.worker
    assert len(app.registry) == 2


def test_job_function_still_callable_inline(app: errands.App) -> None:
    @app.job()
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"
    assert "add" in repr(add)


def test_duplicate_names_are_refused_with_the_name(app: errands.App) -> None:
    @app.job(name="dup")
    def first() -> None: ...

    with pytest.raises(InvalidJobError) as info:

        @app.job(name="dup")
        def second() -> None: ...

    assert "'dup'" in str(info.value) and "already registered" in str(info.value)
    # the first registration is untouched
    assert app.registry.resolve("dup") is first.worker


def test_registering_the_same_class_twice_is_fine(app: errands.App) -> None:
    class Once(errands.Worker, name="once"):
        def perform(self, job: errands.Job) -> None: ...

    assert app.register(Once) is Once
    assert app.register(Once) is Once
    assert app.registry.names() == ["once"]


def test_two_classes_with_one_name_are_refused(app: errands.App) -> None:
    class A(errands.Worker, name="same"):
        def perform(self, job: errands.Job) -> None: ...

    class B(errands.Worker, name="same"):
        def perform(self, job: errands.Job) -> None: ...

    app.register(A)
    with pytest.raises(InvalidJobError, match="'same' is already registered"):
        app.register(B)


def test_only_worker_subclasses_register(app: errands.App) -> None:
    with pytest.raises(TypeError, match=r"only errands\.Worker subclasses"):
        app.register(int)  # type: ignore[type-var]
    with pytest.raises(TypeError):
        app.register(lambda job: None)  # type: ignore[type-var]


def test_resolve_unknown_name_lists_the_registered_ones(app: errands.App) -> None:
    empty = Registry()
    with pytest.raises(UnknownWorkerError, match=r"registered: none"):
        empty.resolve("nope")

    @app.job(name="alpha")
    def alpha() -> None: ...

    @app.job(name="beta")
    def beta() -> None: ...

    with pytest.raises(UnknownWorkerError) as info:
        app.registry.resolve("gamma")
    message = str(info.value)
    assert "'gamma'" in message and "alpha, beta" in message
    assert isinstance(info.value, LookupError) and isinstance(info.value, errands.ErrandsError)


def test_resolve_an_unregistered_class(app: errands.App) -> None:
    class Stray(errands.Worker, name="stray"):
        def perform(self, job: errands.Job) -> None: ...

    with pytest.raises(UnknownWorkerError, match=r"@app\.register"):
        app.registry.resolve(Stray)


def test_resolve_a_job_function_of_another_app(app: errands.App, tmp_path: Path) -> None:
    other = errands.App(f"sqlite:///{tmp_path}/other.db")

    @other.job(name="elsewhere")
    def elsewhere() -> None: ...

    with pytest.raises(UnknownWorkerError):
        app.registry.resolve(elsewhere)


@pytest.mark.parametrize("bad", [42, None, 3.5, ["name"], object()])
def test_resolve_bad_types(app: errands.App, bad: object) -> None:
    with pytest.raises(
        InvalidJobError, match="worker must be a name, Worker class or job function"
    ):
        app.registry.resolve(bad)  # type: ignore[arg-type]


def test_registry_get_and_iteration(app: errands.App) -> None:
    @app.job(name="x")
    def x() -> None: ...

    assert app.registry.get("x") is x.worker
    assert app.registry.get("y") is None
    assert list(app.registry) == [x.worker]


def test_worker_class_options_and_inheritance() -> None:
    class Base(errands.Worker, queue="reports", max_attempts=3, timeout=5, tags=["t"]):
        def perform(self, job: errands.Job) -> None: ...

    class Child(Base, priority=2):
        pass

    assert Base.defaults.queue == "reports" and Base.defaults.max_attempts == 3
    assert Base.defaults.timeout == 5 and Base.defaults.tags == ("t",)
    assert Child.defaults.queue == "reports" and Child.defaults.priority == 2
    assert Child.defaults.max_attempts == 3
    assert Child.name.endswith("Child") and Child.name != Base.name
    assert errands.Worker.defaults.queue == "default"
    assert not Base.is_async()


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"priority": 12}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": -1}, "timeout"),
        ({"queue": ""}, "queue"),
        ({"name": ""}, "worker name"),
        ({"tags": "solo"}, "tags"),
    ],
)
def test_bad_worker_class_options_fail_at_class_creation(
    options: dict[str, object], fragment: str
) -> None:
    with pytest.raises(InvalidJobError, match=fragment):

        class Bad(errands.Worker, **options):  # type: ignore[call-arg]
            pass


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"priority": 99}, "priority"),
        ({"max_attempts": -1}, "max_attempts"),
        ({"timeout": 0}, "timeout"),
        ({"tags": "x"}, "tags"),
    ],
)
def test_bad_decorator_options_fail_at_decoration(
    app: errands.App, options: dict[str, object], fragment: str
) -> None:
    with pytest.raises(InvalidJobError, match=fragment):

        @app.job(**options)  # type: ignore[call-overload]
        def bad() -> None: ...

    assert app.registry.names() == []


def test_unimplemented_perform_fails_the_attempt(app: errands.App) -> None:
    @app.register
    class Lazy(errands.Worker, name="lazy"):
        pass

    job = app.enqueue(Lazy)
    assert app.drain() == {"retryable": 1}
    stored = app.get_job(job.id)
    assert stored is not None and stored.errors[0]["type"] == "NotImplementedError"


def _kinds(x: Any, y: int = 1, *, z: int, **kw: Any) -> None: ...
def _posonly(p: int, /, q: int = 2) -> None: ...
def _posonly_default(p: int = 1, /, q: int = 2) -> None: ...
def _star(*args: Any, k: int) -> None: ...


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (_kinds, {"x": 1, "z": 2}),
        (_kinds, {"x": 1, "z": 2, "extra": 3}),
        (_kinds, {"z": 2}),
        (_kinds, {"x": 1}),
        (_posonly, {"q": 1}),
        (_posonly, {"p": 1}),
        (_posonly_default, {}),
        (_posonly_default, {"q": 3}),
        (_posonly_default, {"p": 3}),
        (_star, {"k": 1}),
        (_star, {}),
        (_star, {"k": 1, "j": 2}),
    ],
)
def test_args_are_checked_exactly_as_signature_bind_would(fn: Any, args: dict[str, Any]) -> None:
    """The fast check of a job function's args agrees with Python's own binding."""
    app = errands.App("sqlite:///:memory:")
    job = app.job(name=f"t.{fn.__name__}")(fn)
    try:
        inspect.signature(fn).bind(**args)
        fits = True
    except TypeError:
        fits = False
    if fits:
        assert app.new_job(job, args).args == args
    else:
        with pytest.raises(errands.InvalidJobError, match="do not fit"):
            app.new_job(job, args)
