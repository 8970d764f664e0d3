"""Validated configuration: database URLs, queue options and runtime settings.

Every check raises :class:`~errands.errors.ConfigError` naming the option and
the value at fault, at the call that passed it (``App(...)``), never later in
a worker loop.

Example::

    >>> parse_queues({"default": 10, "mail": {"limit": 5}})["mail"].limit
    5
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from errands.errors import ConfigError
from errands.limits import Partition, QueueLimits, RateLimit, parse_limits

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DatabaseURL",
    "QueueConfig",
    "Settings",
    "mask_url",
    "parse_database_url",
    "parse_queues",
]

DEFAULT_DATABASE_URL = "sqlite:///errands.db"
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
QUEUE_OPTIONS = ("limit", "paused", "executor", "global_limit", "rate_limit", "partition")
EXECUTORS = ("thread", "process")


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A parsed database URL: ``dialect`` is ``sqlite`` or ``postgres``."""

    dialect: str
    url: str
    #: For SQLite: the file path (or ``:memory:``).
    path: str = ""
    #: For SQLite: ``mode`` (``ro``/``rw``/``rwc``) and ``busy_timeout`` (seconds) from the query.
    options: tuple[tuple[str, str], ...] = ()

    @property
    def masked(self) -> str:
        """The URL with any password replaced by ``***``, safe to log."""
        return mask_url(self.url)


def mask_url(url: str) -> str:
    """Hide the password of a URL. ``mask_url("postgresql://u:pw@h/db")`` -> ``postgresql://u:***@h/db``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_database_url(url: str | None) -> DatabaseURL:
    """Parse ``url`` (default: ``$ERRANDS_DATABASE_URL`` or ``sqlite:///errands.db``).

    SQLite: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or
    ``sqlite:///:memory:``. PostgreSQL: ``postgresql://user:pw@host:port/db``.
    """
    if url is None:
        url = os.environ.get("ERRANDS_DATABASE_URL") or DEFAULT_DATABASE_URL
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"database URL must be a non-empty string, got {url!r}")
    if "\x00" in url:
        raise ConfigError(f"database URL {mask_url(url)!r:.200} contains a NUL character")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(
            f"database URL {mask_url(url)!r} has no scheme: expected sqlite:///path/to/file.db "
            "or postgresql://user@host/dbname"
        )
    if scheme == "sqlite":
        rest, _, query = rest.partition("?")
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"database URL {url!r} has no file path: expected sqlite:///relative.db, "
                "sqlite:////absolute/path.db or sqlite:///:memory:"
            )
        return DatabaseURL("sqlite", url, path=rest[1:], options=_sqlite_options(url, query))
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ConfigError(f"database URL {mask_url(url)!r} is malformed: {exc}") from None
        if parts.hostname and not parts.hostname.startswith("/"):
            try:
                parts.hostname.encode("idna")  # label lengths, characters
            except UnicodeError as exc:
                raise ConfigError(
                    f"database URL {mask_url(url)!r:.200} has an invalid host name: {exc}"
                ) from None
        if not parts.hostname and "host=" not in parts.query:
            raise ConfigError(
                f"database URL {mask_url(url)!r} names no host: expected postgresql://user@host/dbname"
            )
        return DatabaseURL("postgres", "postgresql" + url[len(scheme) :])
    raise ConfigError(
        f"database URL scheme {scheme!r} is not supported (in {mask_url(url)!r}): "
        "use sqlite:///path.db or postgresql://user@host/dbname"
    )


def _sqlite_options(url: str, query: str) -> tuple[tuple[str, str], ...]:
    options = []
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        if name == "mode" and value in ("ro", "rw", "rwc"):
            options.append((name, value))
        elif name == "busy_timeout":
            try:
                _seconds("busy_timeout", float(value))
            except ValueError:
                raise ConfigError(
                    f"database URL {url!r}: busy_timeout must be seconds >= 0, got {value!r}"
                ) from None
            options.append((name, value))
        elif name == "mode":
            raise ConfigError(f"database URL {url!r}: mode must be ro, rw or rwc, got {value!r}")
        else:
            raise ConfigError(
                f"database URL {url!r}: unknown SQLite option {name!r} (known: mode, busy_timeout)"
            )
    return tuple(options)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One queue's options. ``limit`` is how many of its jobs run at once in this process."""

    name: str
    limit: int
    paused: bool = False
    #: Where sync jobs run: ``"thread"`` (default) or ``"process"`` (a process pool).
    executor: str = "thread"
    #: Cross-node limits, enforced in the claim (see :mod:`errands.limits`).
    global_limit: int | None = None
    rate_limit: RateLimit | None = None
    partition: Partition | None = None

    @property
    def limits(self) -> QueueLimits | None:
        """The cross-node limits, or None when the queue has none (the plain, fast claim)."""
        if self.global_limit is None and self.rate_limit is None:
            return None
        return QueueLimits(self.global_limit, self.rate_limit, self.partition)


def _positive_int(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be an int >= 1, got {value!r}")
    return value


def parse_queues(queues: Mapping[str, Any] | None) -> dict[str, QueueConfig]:
    """Validate ``{name: limit}`` or ``{name: {"limit": n, "paused": bool}}``."""
    if queues is None:
        queues = {"default": 10}
    if not isinstance(queues, Mapping):
        raise ConfigError(f"queues must be a dict of name -> limit, got {queues!r}")
    parsed: dict[str, QueueConfig] = {}
    for name, options in queues.items():
        if not isinstance(name, str) or not QUEUE_NAME.match(name):
            raise ConfigError(
                f"queue name must be 1-128 letters, digits or _.:- characters, got {name!r}"
            )
        if isinstance(options, Mapping):
            unknown = sorted(set(options) - set(QUEUE_OPTIONS))
            if unknown:
                raise ConfigError(
                    f"queue {name!r}: unknown option {unknown[0]!r} "
                    f"(known: {', '.join(QUEUE_OPTIONS)})"
                )
            limit = _positive_int(f"queue {name!r} limit", options.get("limit", 10))
            paused = options.get("paused", False)
            if not isinstance(paused, bool):
                raise ConfigError(f"queue {name!r} paused must be True or False, got {paused!r}")
            executor = options.get("executor", "thread")
            if executor not in EXECUTORS:
                raise ConfigError(
                    f"queue {name!r} executor must be one of {', '.join(EXECUTORS)}, "
                    f"got {executor!r}"
                )
            limits = parse_limits(name, options)
            parsed[name] = QueueConfig(
                name,
                limit,
                paused,
                executor,
                global_limit=limits.global_limit,
                rate_limit=limits.rate_limit,
                partition=limits.partition,
            )
        else:
            parsed[name] = QueueConfig(name, _positive_int(f"queue {name!r} limit", options))
    return parsed


def _seconds(option: str, value: Any, *, minimum: float = 0.0, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ConfigError(f"{option} must be a number of seconds >= {minimum:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime timings, in seconds. Defaults suit production; tests shrink them.

    - ``rescue_after``: a producer silent this long is dead; its jobs are rescued.
    - ``heartbeat_interval``: how often producers say they are alive.
    - ``poll_interval``: how often an idle queue looks for work without a wake-up.
    - ``stage_interval``: how often due scheduled/retryable jobs are made available.
    - ``grace_period``: how long shutdown waits for running jobs.
    - ``prune_after``: finished jobs older than this are deleted (``None``: keep all).
    - ``cron_catch_up``: cron slots missed while no node ran are inserted if they
      fell due less than this long ago (``0``: none are caught up).
    """

    rescue_after: float = 30.0
    heartbeat_interval: float | None = None
    poll_interval: float | None = None
    stage_interval: float = 1.0
    grace_period: float = 15.0
    prune_after: float | None = 7 * 24 * 3600.0
    prune_interval: float = 60.0
    prune_limit: int = 10_000
    cron_catch_up: float = 3600.0

    def __post_init__(self) -> None:
        _seconds("rescue_after", self.rescue_after, minimum=0.5)
        _seconds("heartbeat_interval", self.heartbeat_interval, minimum=0.05, allow_none=True)
        _seconds("poll_interval", self.poll_interval, minimum=0.001, allow_none=True)
        _seconds("stage_interval", self.stage_interval, minimum=0.01)
        _seconds("grace_period", self.grace_period)
        _seconds("prune_after", self.prune_after, allow_none=True)
        _seconds("prune_interval", self.prune_interval, minimum=0.01)
        _positive_int("prune_limit", self.prune_limit)
        _seconds("cron_catch_up", self.cron_catch_up)
        if self.heartbeat_interval is not None and self.heartbeat_interval >= self.rescue_after:
            raise ConfigError(
                f"heartbeat_interval ({self.heartbeat_interval:g}) must be shorter than "
                f"rescue_after ({self.rescue_after:g})"
            )

    @property
    def effective_heartbeat(self) -> float:
        """The heartbeat interval: given, or a fifth of ``rescue_after`` (at most 5 s)."""
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        return min(5.0, self.rescue_after / 5)
