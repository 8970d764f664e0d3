"""Cron: periodic jobs from standard 5-field expressions, each slot inserted at most once.

This module parses and checks cron entries (at ``App(cron=[...])``, ``@app.job(cron=...)``
or ``class X(errands.Worker, cron=...)``, never later in a loop) and turns an
expression into the instants it fires at. The leader's cron plugin
(:mod:`errands.plugins.cron`) inserts one job per slot; a table of inserted
slots with a unique key on ``(name, slot)`` makes each slot run at most once
across every node.

Expressions: ``minute hour day-of-month month day-of-week`` (croniter's syntax,
with names like ``MON-FRI``, ``JAN``, and ``L``/``#`` extensions) or one of
``@hourly @daily @midnight @weekly @monthly @yearly @annually``. Each entry has
a time zone (default UTC). Daylight saving time is handled the way cron users
expect:

- a wall time that does not exist (the spring-forward gap, e.g. 02:30 in
  Europe/Paris on the last Sunday of March) runs once, shifted forward by the
  gap (03:30 local time);
- a wall time that happens twice (the autumn repeat) runs once, at its first
  occurrence, for an expression with fixed hours (``30 2 * * *``); an
  expression that runs every hour (``*/15 * * * *``) keeps its rhythm in real
  time and runs in both passes.

Example::

    app = errands.App(cron=[
        ("*/5 * * * *", "billing.sync", {"queue": "billing"}),
        ("30 2 * * *", Report, {"args": {"kind": "daily"}, "timezone": "Europe/Paris"}),
    ])

    @app.job(cron="@hourly")
    def heartbeat() -> None: ...
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from errands.errors import ConfigError, ErrandsError
from errands.job import JobOptions, NewJob

if TYPE_CHECKING:
    from errands.app import App

__all__ = [
    "NICKNAMES",
    "CronEntry",
    "CronSchedule",
    "add_entry",
    "check_entries",
    "cron_job",
    "parse_entries",
    "parse_schedule",
]

#: The nicknames errands accepts, as the 5-field expressions they stand for.
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: Options of one ``App(cron=[(expression, worker, options)])`` entry.
ENTRY_OPTIONS = (
    "args",
    "queue",
    "priority",
    "max_attempts",
    "timeout",
    "tags",
    "meta",
    "timezone",
    "name",
)
#: croniter's hashed (H) and random (R) fields would differ between nodes: refused.
_HASHED_OR_RANDOM = re.compile(r"(?<![A-Za-z])[HhRr](?![A-Za-z])")
#: Offsets at both ends equal and a window this short: no DST change inside it.
_QUIET_WINDOW = timedelta(days=1)
#: Otherwise, how far past the window's wall times to look (covers any DST shift).
_DST_MARGIN = timedelta(hours=3)


@dataclass(frozen=True, eq=False)
class CronSchedule:
    """A checked cron expression in a time zone; :meth:`slots_between` lists its instants.

    Example::

        schedule = parse_schedule("30 2 * * *", "Europe/Paris")
        schedule.slots_between(start, end)   # aware UTC datetimes in (start, end]
    """

    expression: str
    timezone: str
    zone: ZoneInfo = field(repr=False)
    #: The expression fires in every hour (``*`` hours): it keeps real-time rhythm over DST.
    every_hour: bool = field(repr=False)

    def slots_between(self, after: datetime, until: datetime) -> list[datetime]:
        """Every instant this schedule fires at, ``after < t <= until``, as aware UTC datetimes.

        Example: ``parse_schedule("@hourly").slots_between(t0, t0 + timedelta(hours=2))``
        """
        if after.tzinfo is None or until.tzinfo is None:
            raise ValueError("slots_between needs timezone-aware datetimes")
        if until <= after:
            return []
        local_after = after.astimezone(self.zone)
        local_until = until.astimezone(self.zone)
        # Near a DST change, wall times and instants do not move together (a wall
        # time in the gap maps past the gap): look further around the window.
        offsets = {
            moment.astimezone(self.zone).utcoffset()
            for moment in (after - _DST_MARGIN, after, until, until + _DST_MARGIN)
        }
        quiet = len(offsets) == 1 and until - after <= _QUIET_WINDOW
        margin = timedelta(0) if quiet else _DST_MARGIN
        start = local_after.replace(tzinfo=None) - margin
        stop = local_until.replace(tzinfo=None) + margin
        # Iterate wall-clock times (naive: plain arithmetic, no DST), then map each
        # wall time to the real instants it stands for.
        walls = croniter(self.expression, start)
        found: set[datetime] = set()
        while True:
            try:
                wall = walls.get_next(datetime)
            except CroniterBadDateError:
                break
            if wall > stop:
                break
            for instant in self._instants(wall):
                if after < instant <= until:
                    found.add(instant)
        return sorted(found)

    def _instants(self, wall: datetime) -> list[datetime]:
        first = wall.replace(tzinfo=self.zone, fold=0)
        second = wall.replace(tzinfo=self.zone, fold=1)
        if first.utcoffset() == second.utcoffset():
            return [first.astimezone(UTC)]
        exists = first.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == wall
        if exists:  # the autumn repeat: this wall time happens twice
            both = [first, second] if self.every_hour else [first]
            return [instant.astimezone(UTC) for instant in both]
        # The spring-forward gap: this wall time never happens. fold=0 reads it
        # with the offset before the jump, i.e. shifted forward by the gap.
        return [] if self.every_hour else [first.astimezone(UTC)]


def parse_schedule(expression: Any, timezone: Any = "UTC", *, where: str = "cron") -> CronSchedule:
    """Check ``expression`` and ``timezone``; raise :class:`ConfigError` naming ``where``.

    Example: ``parse_schedule("0 3 * * MON-FRI", "Europe/Paris", where="cron entry 'x'")``
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ConfigError(
            f"{where}: expression must be a cron string like '*/5 * * * *', got {expression!r}"
        )
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in NICKNAMES:
            raise ConfigError(
                f"{where}: unknown cron nickname {expression!r} (known: {', '.join(NICKNAMES)})"
            )
        text = NICKNAMES[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5:
        raise ConfigError(
            f"{where}: cron expression {expression!r} must have 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    if any(_HASHED_OR_RANDOM.search(part) for part in fields):
        raise ConfigError(
            f"{where}: cron expression {expression!r} uses H or R (hashed/random) fields, "
            "which would fire at different times on different nodes"
        )
    if not isinstance(timezone, str) or not timezone:
        raise ConfigError(
            f"{where}: timezone must be an IANA name like 'Europe/Paris', got {timezone!r}"
        )
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        raise ConfigError(
            f"{where}: unknown timezone {timezone!r:.80} (use an IANA name like 'Europe/Paris')"
        ) from None
    try:
        parsed = croniter(text, datetime(2000, 1, 1))
        parsed.get_next(datetime)
    except CroniterBadDateError:
        raise ConfigError(f"{where}: cron expression {expression!r} never fires") from None
    except (CroniterError, ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: invalid cron expression {expression!r}: {exc}") from None
    hours = parsed.expanded[1]
    every_hour = hours == ["*"] or set(hours) >= set(range(24))
    return CronSchedule(text, timezone, zone, every_hour)


@dataclass(frozen=True, eq=False)
class CronEntry:
    """One periodic job: a schedule, a worker, its args and options, and a stable name.

    The name identifies the entry's slots across nodes and deploys: renaming an
    entry (or changing what its default name is made of) starts a new series.

    Example: ``CronEntry("nightly", parse_schedule("0 3 * * *"), "reports.Nightly")``
    """

    name: str
    schedule: CronSchedule
    #: A worker name, Worker class or job function; resolved when a node starts.
    worker: Any
    args: Mapping[str, Any] = field(default_factory=dict)
    options: JobOptions = field(default_factory=JobOptions)


def _worker_name(worker: Any, where: str) -> str:
    if isinstance(worker, str) and worker:
        return worker
    name = getattr(worker, "name", None)
    resolvable = isinstance(worker, type) or callable(getattr(worker, "enqueue", None))
    if resolvable and isinstance(name, str) and name:
        return name
    raise ConfigError(
        f"{where}: worker must be a worker name, an errands.Worker class or a job function, "
        f"got {worker!r}"
    )


def _entry(item: Any, index: int) -> CronEntry:
    where = f"cron entry {index}"
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise ConfigError(
            f"{where} must be (expression, worker) or (expression, worker, options), got {item!r}"
        )
    expression, worker = item[0], item[1]
    options = item[2] if len(item) == 3 else {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: options must be a dict, got {options!r}")
    unknown = sorted(set(options) - set(ENTRY_OPTIONS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown option {unknown[0]!r} (known: {', '.join(ENTRY_OPTIONS)})"
        )
    name = options.get("name")
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: name must be a non-empty string, got {name!r}")
        where = f"cron entry {name!r}"
    worker_name = _worker_name(worker, where)
    timezone = options.get("timezone", "UTC")
    schedule = parse_schedule(expression, timezone, where=where)
    if name is None:
        name = f"{worker_name} {schedule.expression}"
        if timezone != "UTC":
            name += f" {timezone}"
        where = f"cron entry {name!r}"
    args = options.get("args", {})
    if not isinstance(args, Mapping):
        raise ConfigError(f"{where}: args must be a dict, got {args!r}")
    tags = options.get("tags")
    # A lone string is refused by JobOptions rather than split into letters.
    tag_value: Any = tags if tags is None or isinstance(tags, str) else tuple(tags)
    try:
        job_options = JobOptions(
            queue=options.get("queue"),
            priority=options.get("priority"),
            max_attempts=options.get("max_attempts"),
            timeout=options.get("timeout"),
            tags=tag_value,
            meta=options.get("meta"),
        )
    except (ErrandsError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return CronEntry(name, schedule, worker, dict(args), job_options)


def parse_entries(value: Iterable[Any] | None) -> list[CronEntry]:
    """Check ``App(cron=[...])``: a list of ``(expression, worker[, options])``.

    Example: ``parse_entries([("@daily", "reports.Daily", {"timezone": "Europe/Paris"})])``
    """
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ConfigError(
            f"cron must be a list of (expression, worker[, options]) tuples, got {value!r}"
        )
    entries: list[CronEntry] = []
    for index, item in enumerate(value):
        add_entry(entries, _entry(item, index))
    return entries


def add_entry(entries: list[CronEntry], entry: CronEntry) -> None:
    """Append ``entry``; a second entry with the same name is a :class:`ConfigError`."""
    for existing in entries:
        if existing.name == entry.name:
            raise ConfigError(
                f"cron entry {entry.name!r} is given twice: pass a distinct name in its "
                "options, e.g. {'name': 'nightly-report'}"
            )
    entries.append(entry)


def cron_job(app: App, entry: CronEntry, slot: datetime) -> NewJob:
    """The job for one slot: the entry's args and options, due at the slot.

    ``meta["cron"]`` tells the job its entry and slot:
    ``{"name": "nightly", "slot": "2026-01-01T03:00:00+00:00"}``.
    """
    meta = dict(entry.options.meta or {})
    meta.setdefault("cron", {"name": entry.name, "slot": slot.astimezone(UTC).isoformat()})
    options = entry.options.merged(JobOptions(scheduled_at=slot.timestamp(), meta=meta))
    return app.new_job(entry.worker, entry.args, options)


def check_entries(app: App) -> None:
    """Resolve every entry's worker and check its args now (a node calls this at start).

    Raises :class:`ConfigError` naming the entry, so a typo fails the start of a
    worker, not every tick of its cron loop.
    """
    sample = datetime(2000, 1, 1, tzinfo=UTC)
    for entry in app.cron:
        try:
            cron_job(app, entry, sample)
        except ErrandsError as exc:
            raise ConfigError(f"cron entry {entry.name!r}: {exc}") from None
