"""Storage engines behind one protocol (:class:`~errands.engines.base.Engine`).

Example::

    engine = create_engine("sqlite:///jobs.db")
    engine.migrate()
"""

from __future__ import annotations

from errands.config import parse_database_url
from errands.engines.base import Engine
from errands.errors import ConfigError

__all__ = ["Engine", "create_engine"]


def create_engine(
    url: str | None = None,
    *,
    schema: str | None = None,
    notify: bool = True,
    synchronous_acks: bool = False,
) -> Engine:
    """The engine for ``url``; PostgreSQL needs ``pip install 'errands[postgres]'``.

    ``notify=False`` turns cross-process wake-ups off (NOTIFY on PostgreSQL,
    ``PRAGMA data_version`` on SQLite): workers then find jobs by polling only.
    ``synchronous_acks=True`` (PostgreSQL) commits claims and outcomes
    synchronously too; SQLite's commits are unaffected (WAL, ``synchronous=NORMAL``).
    """
    parsed = parse_database_url(url)
    if parsed.dialect == "sqlite":
        if schema is not None:
            raise ConfigError(f"schema={schema!r} is for PostgreSQL; SQLite has no schemas")
        from errands.engines.sqlite import SQLiteEngine

        options = dict(parsed.options)
        return SQLiteEngine(
            parsed.path,
            mode=options.get("mode", "rwc"),
            busy_timeout=float(options.get("busy_timeout", 10.0)),
            notify=notify,
        )
    try:
        from errands.engines.postgres import PostgresEngine
    except ImportError as exc:  # psycopg is an optional extra
        raise ConfigError(
            f"database URL {parsed.masked!r} needs PostgreSQL support: "
            f"pip install 'errands[postgres]' ({exc})"
        ) from None
    return PostgresEngine(
        parsed.url, schema=schema or "public", notify=notify, synchronous_acks=synchronous_acks
    )
