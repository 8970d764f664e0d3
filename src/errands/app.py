"""The :class:`App` facade: configuration, the worker registry, enqueue, run.

It holds no job logic of its own: validation lives in :mod:`errands.job` and
:mod:`errands.config`, storage in :mod:`errands.engines`, execution in
:mod:`errands.runtime`. Its other methods come from mixins: start/stop/run/drain
from :mod:`errands.lifecycle`, single jobs from :mod:`errands.jobs_api`, bulk
changes from :mod:`errands.bulk`, queue control from :mod:`errands.control`.

Example::

    import errands

    app = errands.App("sqlite:///errands.db", queues={"default": 10, "mail": 5})

    @app.job(queue="mail", max_attempts=5)
    def send_email(to: str, subject: str) -> None: ...

    send_email.enqueue(to="a@b.c", subject="hi")
    app.run()   # until SIGTERM / SIGINT
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from errands import codec
from errands.bulk import BulkJobs
from errands.config import QUEUE_NAME, QueueConfig, Settings, parse_database_url, parse_queues
from errands.control import QueueControl
from errands.cron import CronEntry, add_entry, parse_entries, parse_schedule
from errands.engines import Engine, create_engine
from errands.errors import ConfigError, InvalidJobError
from errands.job import DEFAULT_MAX_ATTEMPTS, LAST_TIME, Job, JobOptions, NewJob
from errands.jobs_api import JobAccess
from errands.lifecycle import Lifecycle
from errands.runtime.process_child import check_import_path
from errands.unique import Unique, unique_columns
from errands.worker import JobFunction, Registry, Worker, _tags, function_worker

if TYPE_CHECKING:
    from errands.runtime.node import Node

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")
W = TypeVar("W", bound=type[Worker])


def _job_options(options: JobOptions | None, extra: Mapping[str, Any]) -> JobOptions | None:
    if not extra:
        return options
    try:
        given = JobOptions(**extra)
    except TypeError as exc:
        raise InvalidJobError(f"unknown job option: {exc}") from None
    return given if options is None else options.merged(given)


class App(JobAccess, QueueControl, BulkJobs, Lifecycle):
    """One errands application: a database, queues, and registered workers.

    Args:
        database_url: ``sqlite:///path.db`` or ``postgresql://...``; default
            ``$ERRANDS_DATABASE_URL`` or ``sqlite:///errands.db``.
        queues: ``{name: limit}`` or ``{name: {"limit": n, "paused": bool}}``;
            the queues this app's workers run (default ``{"default": 10}``).
            Cross-node limits: ``"global_limit"``, ``"rate_limit": (n, per_seconds)``,
            ``"partition"`` (see docs/limits.md); live control: docs/queues.md.
        cron: periodic jobs, ``[(expression, worker, {"args": ..., "queue": ...,
            "timezone": "Europe/Paris", "name": ...}), ...]`` (see docs/cron.md);
            ``cron_catch_up=3600`` (seconds) bounds how far back missed slots run.
        rescue_after: seconds without a heartbeat before a producer's jobs are rescued.
        schema: PostgreSQL schema for the tables (default ``public``).
        auto_migrate: create/upgrade tables on first use; default True for
            SQLite, False for PostgreSQL (run ``errands migrate`` there).
        node: this process's name in the producers table (default host-pid-random).
        notify: wake other processes' workers on insert (NOTIFY, ``data_version``);
            with False they find jobs by polling every ``poll_interval`` only.
        synchronous_acks: PostgreSQL: commit claims and outcomes synchronously
            (slower); by default a *database* crash may forget the last moment of
            them and re-run those jobs (docs/reliability.md). Inserts always wait.
        import_path: ``"module:attr"`` naming this app, for queues with
            ``executor="process"`` (see docs/process-executor.md).
        **settings: timings of :class:`~errands.config.Settings` (``poll_interval``,
            ``grace_period``, ``prune_after``, ...).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        queues: Mapping[str, Any] | None = None,
        cron: Iterable[Any] | None = None,
        rescue_after: float = 30.0,
        schema: str | None = None,
        auto_migrate: bool | None = None,
        node: str | None = None,
        notify: bool = True,
        synchronous_acks: bool = False,
        import_path: str | None = None,
        **settings: Any,
    ) -> None:
        self.database_url = parse_database_url(database_url)
        self.queues: dict[str, QueueConfig] = parse_queues(queues)
        try:
            self.settings = Settings(rescue_after=rescue_after, **settings)
        except TypeError as exc:
            known = ", ".join(Settings.__dataclass_fields__)
            raise ConfigError(f"unknown App option: {exc} (known: {known})") from None
        if schema is not None and self.database_url.dialect != "postgres":
            raise ConfigError(f"schema={schema!r} is for PostgreSQL; SQLite has no schemas")
        self.schema = schema
        self.auto_migrate = (
            self.database_url.dialect == "sqlite" if auto_migrate is None else auto_migrate
        )
        self.node_name = node
        for name, flag in (("notify", notify), ("synchronous_acks", synchronous_acks)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{name} must be True or False, got {flag!r}")
        self.notify, self.synchronous_acks = notify, synchronous_acks
        #: ``"module:attr"``: how worker processes of ``executor="process"`` queues import
        #: this app (``errands --app`` sets it; else found from the workers' modules).
        self.import_path = check_import_path(import_path)
        self.registry = Registry()
        #: Every cron entry: from ``cron=``, ``@app.job(cron=...)`` and registered workers.
        self.cron: list[CronEntry] = parse_entries(cron)
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._schema_ready = False
        self._node: Node | None = None

    def __repr__(self) -> str:
        return f"<errands.App {self.database_url.masked} queues={list(self.queues)}>"

    # -- storage ------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The storage engine, created on first use (constructing an App never connects)."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = create_engine(
                        self.database_url.url,
                        schema=self.schema,
                        notify=self.notify,
                        synchronous_acks=self.synchronous_acks,
                    )
        return self._engine

    def ensure_schema(self) -> None:
        """Migrate (when ``auto_migrate``) or check the schema, once per app."""
        if self._schema_ready:
            return
        if self.auto_migrate:
            self.engine.migrate()
        else:
            self.engine.check_schema()
        self._schema_ready = True

    def migrate(self) -> int:
        """Create or upgrade errands' tables; return the schema version."""
        version = self.engine.migrate()
        self._schema_ready = True
        return version

    def close(self) -> None:
        """Close the engine's connections; the app reconnects on next use."""
        if self._engine is not None:
            self._engine.close()

    def queue_config(self, name: str) -> QueueConfig:
        """The options of queue ``name`` (a configured one, else limit 10)."""
        if name in self.queues:
            return self.queues[name]
        return parse_queues({name: 10})[name]

    # -- registry -----------------------------------------------------------------
    @overload
    def job(self, fn: Callable[P, R], /) -> JobFunction[P, R]: ...

    @overload
    def job(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        tags: list[str] | None = None,
        unique: Unique | None = None,
        replace: list[str] | tuple[str, ...] | None = None,
        cron: str | None = None,
    ) -> Callable[[Callable[P, R]], JobFunction[P, R]]: ...

    def job(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        tags: list[str] | None = None,
        unique: Unique | None = None,
        replace: list[str] | tuple[str, ...] | None = None,
        cron: str | None = None,
    ) -> JobFunction[P, R] | Callable[[Callable[P, R]], JobFunction[P, R]]:
        """Turn a function (``def`` or ``async def``) into a registered job.

        Example::

            @app.job(queue="mail", max_attempts=5)
            def send_email(to: str) -> None: ...

            @app.job(unique=errands.Unique(period=60), cron="*/5 * * * *")
            def sync() -> None: ...
        """
        options = JobOptions(
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            tags=_tags(tags),
            unique=unique,
            replace=tuple(replace) if isinstance(replace, list) else replace,
        )
        schedule = None if cron is None else parse_schedule(cron, where="@app.job(cron=...)")

        def decorate(func: Callable[P, R]) -> JobFunction[P, R]:
            worker = self.registry.add(function_worker(func, name, options))
            if schedule is not None:
                add_entry(self.cron, CronEntry(worker.name, schedule, worker))
            return JobFunction(self, func, worker)

        return decorate if fn is None else decorate(fn)

    def register(self, worker: W) -> W:
        """Register a :class:`~errands.Worker` subclass (usable as a decorator)."""
        self.registry.add(worker)
        schedule = worker.cron_schedule
        if schedule is not None and not any(entry.worker is worker for entry in self.cron):
            add_entry(self.cron, CronEntry(worker.name, schedule, worker))
        return worker

    # -- enqueue --------------------------------------------------------------------
    def new_job(
        self,
        worker: str | type[Worker] | JobFunction[Any, Any],
        args: Mapping[str, Any] | None = None,
        options: JobOptions | None = None,
        **extra: Any,
    ) -> NewJob:
        """Validate and encode a job without inserting it (for :meth:`enqueue_many`)."""
        cls = self.registry.resolve(worker)
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            raise InvalidJobError(f"args of {cls.name!r} must be a dict, got {type(args).__name__}")
        args = dict(args)
        cls.check_args(args)
        chosen = _job_options(options, extra)
        opts = cls.defaults if chosen is None else cls.defaults.merged(chosen)
        queue = opts.queue or "default"
        if not QUEUE_NAME.match(queue):
            raise InvalidJobError(
                f"queue must be 1-128 letters, digits or _.:- characters, got {queue!r}"
            )
        run_at = opts.run_at()
        if run_at is not None and not 0 <= run_at <= LAST_TIME:
            raise InvalidJobError(
                f"schedule_in/scheduled_at of {cls.name!r} must give a due time from 1970 "
                "to 9999, "
                f"got {run_at!r} (Unix seconds)"
            )
        unique_hash, unique_states, replace = unique_columns(
            opts.unique, opts.replace, worker=cls.name, queue=queue, args=args, meta=opts.meta or {}
        )
        return NewJob(
            worker=cls.name,
            queue=queue,
            args=args,
            args_json=codec.encode(args, f"args of {cls.name!r}"),
            meta_json=codec.encode(opts.meta, "meta") if opts.meta else b"{}",
            tags_json=codec.encode(list(opts.tags), "tags") if opts.tags else b"[]",
            priority=opts.priority or 0,
            max_attempts=opts.max_attempts or DEFAULT_MAX_ATTEMPTS,
            scheduled_at=run_at,
            timeout=opts.timeout,
            unique_hash=unique_hash,
            unique_states=unique_states,
            replace=replace,
        )

    def enqueue_many(self, jobs: Iterable[NewJob], *, conn: Any = None) -> list[Job]:
        """Insert many jobs in one round trip; ``conn`` joins the caller's transaction.

        Example: ``app.enqueue_many([send_email.new(to=a) for a in addresses])``
        """
        batch = self._checked(jobs)
        self.ensure_schema()
        inserted = self.engine.insert(batch, conn=conn)
        node = self._node
        if node is not None and conn is None:
            for queue in {job.queue for job in inserted}:
                node.wake(queue)
        return inserted

    @staticmethod
    def _checked(jobs: Iterable[NewJob]) -> list[NewJob]:
        batch = list(jobs)
        for item in batch:
            if not isinstance(item, NewJob):
                raise InvalidJobError(
                    f"enqueue_many takes jobs made by fn.new(...) or app.new_job(...), got {item!r}"
                )
        return batch

    def enqueue(
        self,
        worker: str | type[Worker] | JobFunction[Any, Any],
        args: Mapping[str, Any] | None = None,
        *,
        conn: Any = None,
        options: JobOptions | None = None,
        **extra: Any,
    ) -> Job:
        """Insert one job; options (``priority=2``, ``schedule_in=60``...) as keywords.

        Example: ``app.enqueue("reports.Report", args={"day": "2026-01-01"}, priority=1)``
        """
        return self.enqueue_many([self.new_job(worker, args, options, **extra)], conn=conn)[0]

    async def aenqueue(
        self,
        worker: str | type[Worker] | JobFunction[Any, Any],
        args: Mapping[str, Any] | None = None,
        *,
        conn: Any = None,
        options: JobOptions | None = None,
        **extra: Any,
    ) -> Job:
        """The async twin of :meth:`enqueue`; ``conn`` may be an async connection.

        Example: ``await app.aenqueue("mail.send", {"to": "a@b.c"}, conn=session)``
        """
        new = self.new_job(worker, args, options, **extra)
        return (await self.aenqueue_many([new], conn=conn))[0]

    async def aenqueue_many(self, jobs: Iterable[NewJob], *, conn: Any = None) -> list[Job]:
        """The async twin of :meth:`enqueue_many`.

        With ``conn`` the jobs join the caller's open transaction: on PostgreSQL
        an async connection (psycopg ``AsyncConnection``, SQLAlchemy
        ``AsyncConnection`` or ``AsyncSession`` on ``postgresql+psycopg://``) is
        awaited on this loop; a sync one (and any sqlite3 connection, which
        refuses other threads) runs right here. Without ``conn`` the insert runs
        in a thread, on the engine's own connections.

        Example::

            async with AsyncSession(engine) as session, session.begin():
                session.add(order)
                await session.flush()  # order.id is known
                await app.aenqueue_many([ship.new(order_id=order.id)], conn=session)
        """
        if conn is not None:
            batch = self._checked(jobs)
            if not self._schema_ready:
                await asyncio.to_thread(self.ensure_schema)
            return await self.engine.ainsert(batch, conn)
        return await asyncio.to_thread(self.enqueue_many, list(jobs))
