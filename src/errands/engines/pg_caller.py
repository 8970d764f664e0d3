"""The psycopg connection under whatever a caller passed as ``conn=``.

A transactional enqueue runs errands' insert on the caller's own connection,
inside the caller's open transaction: it appears on commit and vanishes on
rollback. The caller may hold

- sync: a ``psycopg.Connection``, a SQLAlchemy ``Connection`` or ``Session``
  on ``postgresql+psycopg://``, or a Django connection (psycopg 3 backend):
  :func:`driver_connection`, for ``enqueue``;
- async: a ``psycopg.AsyncConnection``, or a SQLAlchemy ``AsyncConnection`` or
  ``AsyncSession`` on ``postgresql+psycopg://``: :func:`async_driver_connection`,
  for ``aenqueue``.

Anything else is a :class:`TypeError` that names what was passed and what
would do.

Example::

    raw = driver_connection(session)                  # sync SQLAlchemy Session
    araw = await async_driver_connection(async_session)
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["async_driver_connection", "driver_connection", "is_async_connection"]

_ASYNC_SQLALCHEMY = "sqlalchemy.ext.asyncio"


def _kind(conn: Any) -> str:
    return f"{type(conn).__module__}.{type(conn).__qualname__}"


def is_async_connection(conn: Any) -> bool:
    """Whether ``conn`` is used with ``await``: psycopg async, or SQLAlchemy's asyncio objects."""
    module = type(conn).__module__ or ""
    return isinstance(conn, psycopg.AsyncConnection) or module.startswith(_ASYNC_SQLALCHEMY)


def _psycopg_driver(sa_conn: Any, driver: Any, wanted: type[Any]) -> Any:
    if not isinstance(driver, wanted):
        dialect = f"{sa_conn.dialect.name}+{sa_conn.dialect.driver}"
        raise TypeError(
            f"conn is a SQLAlchemy connection using the {dialect!r} driver; errands needs "
            "psycopg 3: create the SQLAlchemy engine with a postgresql+psycopg:// URL"
        )
    return driver


def _from_sqlalchemy(conn: Any) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy Connection or Session, in a transaction."""
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.orm import Session, scoped_session

    if isinstance(conn, (Session, scoped_session)):
        conn = conn.connection()  # joins (or begins) the session's transaction
    if not isinstance(conn, SAConnection):
        raise TypeError(
            f"conn must be a psycopg Connection, a SQLAlchemy Connection or Session, "
            f"got {_kind(conn)}"
        )
    if not conn.in_transaction():
        conn.begin()  # what SQLAlchemy's autobegin would do on the caller's first statement
    driver: psycopg.Connection[Any] = _psycopg_driver(
        conn, conn.connection.driver_connection, psycopg.Connection
    )
    return driver


def driver_connection(conn: Any) -> psycopg.Connection[Any]:
    """The sync psycopg connection behind ``conn``, or :class:`TypeError` naming its type."""
    if isinstance(conn, psycopg.Connection):
        return conn
    if is_async_connection(conn):
        raise TypeError(
            f"conn is an async connection ({_kind(conn)}); enqueue needs a sync one: "
            "use `await aenqueue(..., conn=conn)` (or aenqueue_many) instead"
        )
    module = type(conn).__module__ or ""
    if module.startswith("sqlalchemy"):
        return _from_sqlalchemy(conn)
    # A Django connection wrapper: .cursor() and .connection (None until connected).
    if callable(getattr(conn, "cursor", None)) and hasattr(conn, "connection"):
        ensure = getattr(conn, "ensure_connection", None)
        if callable(ensure):
            ensure()
        raw = conn.connection
        if isinstance(raw, psycopg.Connection):
            return raw
        raise TypeError(
            f"conn ({_kind(conn)}) wraps a {_kind(raw)}; "
            "errands needs a psycopg 3 connection (Django: use the psycopg 3 backend)"
        )
    raise TypeError(
        "conn must be a psycopg Connection, a SQLAlchemy Connection or Session "
        "(postgresql+psycopg://) or a Django connection for a PostgreSQL app (aenqueue also "
        f"takes a psycopg AsyncConnection, SQLAlchemy AsyncConnection or AsyncSession), got "
        f"{_kind(conn)}"
    )


async def async_driver_connection(conn: Any) -> psycopg.AsyncConnection[Any]:
    """The async psycopg connection behind ``conn`` (``aenqueue``), or :class:`TypeError`."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if (type(conn).__module__ or "").startswith(_ASYNC_SQLALCHEMY):
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session

        if isinstance(conn, (AsyncSession, async_scoped_session)):
            conn = await conn.connection()  # joins (or begins) the session's transaction
        if isinstance(conn, AsyncConnection):
            if not conn.in_transaction():
                await conn.begin()  # as SQLAlchemy's autobegin would on a first statement
            raw = await conn.get_raw_connection()
            driver: psycopg.AsyncConnection[Any] = _psycopg_driver(
                conn, raw.driver_connection, psycopg.AsyncConnection
            )
            return driver
    raise TypeError(
        "conn for aenqueue must be a psycopg AsyncConnection or a SQLAlchemy AsyncConnection "
        f"or AsyncSession (postgresql+psycopg://), got {_kind(conn)}"
    )
