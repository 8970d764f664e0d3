"""Workers: what a job runs. A :class:`Worker` subclass, or a function under ``@app.job``.

Only registered workers run: a worker name found in the table is looked up in
the app's :class:`Registry`, never imported from the row.

Example::

    @app.register
    class Report(errands.Worker, queue="reports", max_attempts=3):
        def perform(self, job: errands.Job) -> None:
            build_report(**job.args)

    @app.job(queue="mail")
    def send_email(to: str) -> None: ...
"""

from __future__ import annotations

import contextvars
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypeVar

from errands import backoff as backoffs
from errands.cron import CronSchedule, parse_schedule
from errands.errors import InvalidJobError, UnknownWorkerError
from errands.job import DEFAULT_MAX_ATTEMPTS, Job, JobOptions
from errands.unique import Unique

if TYPE_CHECKING:
    from errands.app import App
    from errands.job import NewJob

__all__ = ["JobFunction", "Registry", "Worker", "current_job"]

P = ParamSpec("P")
R = TypeVar("R")

_current_job: contextvars.ContextVar[Job] = contextvars.ContextVar("errands_current_job")


def module_name(module: str) -> str:
    """The importable name of ``module``: for ``__main__``, the name a worker would import.

    ``python tasks.py`` runs ``tasks`` as ``__main__``; a worker started with
    ``--app tasks:app`` imports it as ``tasks``. Both must give a job the same
    worker name, or the worker would never find the jobs the script enqueued.
    """
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name).removesuffix(".__main__")
    path = getattr(main, "__file__", None)
    return os.path.splitext(os.path.basename(path))[0] if path else module


def current_job() -> Job:
    """The job being performed in this context (inside a job body only).

    Example: ``errands.current_job().attempt``
    """
    try:
        return _current_job.get()
    except LookupError:
        raise RuntimeError("errands.current_job() is only available inside a running job") from None


def _tags(tags: Any) -> Any:
    # A lone string is refused by JobOptions rather than split into letters.
    return tags if tags is None or isinstance(tags, str) else tuple(tags)


class Worker:
    """Base class of class-based workers; options go in the class statement.

    Subclasses override :meth:`perform` (``def`` runs in a thread, ``async def``
    on the event loop) and may override :meth:`backoff`.

    Example::

        class Resize(errands.Worker, queue="media", max_attempts=5, timeout=60):
            def perform(self, job: errands.Job) -> str:
                return resize(job.args["path"])

        class Digest(errands.Worker, unique=errands.Unique(period=3600), cron="0 * * * *"):
            ...  # at most one per hour, and one inserted every hour (once registered)
    """

    #: The registered name; defaults to ``module.QualName``.
    name: ClassVar[str] = ""
    #: Defaults for every job of this worker.
    defaults: ClassVar[JobOptions] = JobOptions(queue="default", priority=0)
    #: ``cron="..."`` of the class statement, checked; not inherited by subclasses.
    cron_schedule: ClassVar[CronSchedule | None] = None

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        unique: Unique | None = None,
        replace: list[str] | tuple[str, ...] | None = None,
        cron: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None and (not isinstance(name, str) or not name):
            raise InvalidJobError(f"worker name must be a non-empty string, got {name!r}")
        cls.name = name or f"{module_name(cls.__module__)}.{cls.__qualname__}"
        own = JobOptions(
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            tags=_tags(tags),
            unique=unique,
            replace=tuple(replace) if isinstance(replace, list) else replace,
        )
        cls.defaults = cls.defaults.merged(own)
        where = f"cron of worker {cls.name!r}"
        cls.cron_schedule = None if cron is None else parse_schedule(cron, where=where)

    def perform(self, job: Job) -> Any:
        """Do the work; return a JSON value to store as the result, or raise."""
        raise NotImplementedError(f"{type(self).__name__}.perform() is not implemented")

    def backoff(self, job: Job) -> float:
        """Seconds before the next attempt; ``job.exception`` is the failure."""
        return backoffs.exponential(job.attempt)

    @classmethod
    def is_async(cls) -> bool:
        """True when :meth:`perform` is a coroutine function (runs on the loop)."""
        return inspect.iscoroutinefunction(cls.perform)

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> None:
        """Raise :class:`InvalidJobError` when ``args`` cannot be performed (hook)."""


class Registry:
    """Worker names to worker classes, for one app.

    Example: ``app.registry.resolve("reports.Report")``
    """

    def __init__(self) -> None:
        self._workers: dict[str, type[Worker]] = {}

    def add(self, worker: type[Worker]) -> type[Worker]:
        """Register ``worker`` under its name; a different class under a taken name is an error."""
        if not (isinstance(worker, type) and issubclass(worker, Worker)):
            raise TypeError(f"only errands.Worker subclasses can be registered, got {worker!r}")
        existing = self._workers.get(worker.name)
        if existing is not None and existing is not worker:
            raise InvalidJobError(
                f"worker name {worker.name!r} is already registered to {existing!r}: "
                "pass name='...' to pick another"
            )
        self._workers[worker.name] = worker
        return worker

    def resolve(self, worker: str | type[Worker] | JobFunction[Any, Any]) -> type[Worker]:
        """The registered class for a name, class or job function."""
        if isinstance(worker, JobFunction):
            worker = worker.worker
        if isinstance(worker, type) and issubclass(worker, Worker):
            if self._workers.get(worker.name) is not worker:
                raise UnknownWorkerError(
                    f"worker {worker.name!r} is not registered: decorate it with @app.register"
                )
            return worker
        if isinstance(worker, str):
            found = self._workers.get(worker)
            if found is None:
                known = ", ".join(sorted(self._workers)) or "none"
                raise UnknownWorkerError(
                    f"no worker named {worker!r} is registered (registered: {known})"
                )
            return found
        raise InvalidJobError(
            f"worker must be a name, Worker class or job function, got {worker!r}"
        )

    def get(self, name: str) -> type[Worker] | None:
        """The class registered under ``name``, or ``None``."""
        return self._workers.get(name)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._workers)

    def __iter__(self) -> Iterator[type[Worker]]:
        return iter(self._workers.values())

    def __len__(self) -> int:
        return len(self._workers)


def function_worker(fn: Callable[..., Any], name: str | None, options: JobOptions) -> type[Worker]:
    """A :class:`Worker` subclass that calls ``fn(**job.args)``."""
    signature = inspect.signature(fn)
    worker_name = name or f"{module_name(fn.__module__)}.{fn.__qualname__}"

    params = signature.parameters.values()
    keyword = frozenset(
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    required = frozenset(p.name for p in params if p.default is p.empty and p.name in keyword)
    any_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    # A positional-only parameter without a default can never be given as args.
    always_bind = any(p.kind is p.POSITIONAL_ONLY and p.default is p.empty for p in params)

    def check_args(cls: type[Worker], args: dict[str, Any]) -> None:
        names = args.keys()
        # The common case in a few set operations; Signature.bind (5 µs) only to
        # word the error.
        if not always_bind and required <= names and (any_keyword or names <= keyword):
            return
        try:
            signature.bind(**args)
        except TypeError as exc:
            raise InvalidJobError(
                f"args for {worker_name!r} do not fit {fn.__name__}{signature}: {exc}"
            ) from None

    if inspect.iscoroutinefunction(fn):

        async def perform(self: Worker, job: Job) -> Any:
            return await fn(**job.args)

    else:

        def perform(self: Worker, job: Job) -> Any:  # type: ignore[misc]
            return fn(**job.args)

    namespace = {
        "perform": perform,
        "check_args": classmethod(check_args),
        "__module__": fn.__module__,
        "__doc__": fn.__doc__,
        "__qualname__": fn.__qualname__,
    }
    cls: type[Worker] = type(fn.__name__, (Worker,), namespace, name=worker_name)
    cls.defaults = cls.defaults.merged(options)
    return cls


class JobFunction(Generic[P, R]):
    """What ``@app.job`` returns: call it to run inline, or enqueue it.

    Example::

        send_email("a@b.c")                                 # runs now, in this process
        send_email.enqueue(to="a@b.c")                      # runs on a worker
        send_email.options(schedule_in=60).enqueue(to="x")  # with per-call options
        await send_email.aenqueue(to="x")
    """

    def __init__(
        self,
        app: App,
        fn: Callable[P, R],
        worker: type[Worker],
        options: JobOptions | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.worker = worker
        self._options = options or JobOptions()
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", worker.name)
        self.__wrapped__ = fn

    @property
    def name(self) -> str:
        """The registered worker name."""
        return self.worker.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def options(self, **options: Any) -> JobFunction[P, R]:
        """A copy with per-call options (queue, priority, max_attempts, schedule_in, ...)."""
        try:
            extra = JobOptions(**options)
        except TypeError as exc:
            raise InvalidJobError(f"unknown job option: {exc}") from None
        return JobFunction(self.app, self.fn, self.worker, self._options.merged(extra))

    def new(self, **args: Any) -> NewJob:
        """A validated job to pass to ``app.enqueue_many``."""
        return self.app.new_job(self.worker, args, self._options)

    def enqueue(self, *, conn: Any = None, **args: Any) -> Job:
        """Insert the job; ``conn`` joins the caller's open transaction."""
        return self.app.enqueue(self.worker, args, conn=conn, options=self._options)

    async def aenqueue(self, *, conn: Any = None, **args: Any) -> Job:
        """The async twin of :meth:`enqueue`."""
        return await self.app.aenqueue(self.worker, args, conn=conn, options=self._options)

    def __repr__(self) -> str:
        return f"<errands job {self.name!r}>"


def job_timeout(job: Job, worker: type[Worker]) -> float | None:
    """The timeout of one job: its own, else its worker's."""
    return job.timeout if job.timeout is not None else worker.defaults.timeout


def default_max_attempts(worker: type[Worker]) -> int:
    """The worker's max_attempts, or the library default."""
    return worker.defaults.max_attempts or DEFAULT_MAX_ATTEMPTS
