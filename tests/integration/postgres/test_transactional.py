"""Transactional enqueue on the caller's connection (psycopg, SQLAlchemy, Django-like)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy
from sqlalchemy.orm import Session

from errands.engines.postgres import PostgresEngine
from errands.errors import DatabaseError
from tests.integration.postgres.conftest import JobFactory
from tests.support import POSTGRES_URL

SQLALCHEMY_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def sa_engine() -> Iterator[sqlalchemy.Engine]:
    engine = sqlalchemy.create_engine(SQLALCHEMY_URL)
    yield engine
    engine.dispose()


def test_psycopg_connection_commit_and_rollback(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    with psycopg.connect(POSTGRES_URL) as conn:
        conn.execute("SELECT 1")  # the caller's transaction is open
        [job] = engine.insert([new_job(args={"n": 1})], conn=conn)
        assert engine.get_job(job.id) is None  # invisible to other connections
        assert engine.fetch("default", 10, "p", ["w"]) == []
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.commit()
        assert engine.get_job(job.id) is not None
        [gone] = engine.insert([new_job(args={"n": 2})], conn=conn)
        conn.rollback()
    assert engine.get_job(gone.id) is None
    assert [j.args for j in engine.list_jobs()] == [{"n": 1}]


def test_caller_search_path_does_not_matter(engine: PostgresEngine, new_job: JobFactory) -> None:
    with psycopg.connect(POSTGRES_URL) as conn:
        conn.execute("SET search_path TO pg_catalog")
        [job] = engine.insert([new_job()], conn=conn)
        conn.commit()
    assert engine.get_job(job.id) is not None


def test_sqlalchemy_session(
    engine: PostgresEngine, new_job: JobFactory, sa_engine: sqlalchemy.Engine
) -> None:
    with Session(sa_engine) as session:
        session.execute(sqlalchemy.text("SELECT 1"))
        [kept] = engine.insert([new_job(args={"n": 1})], conn=session)
        assert engine.get_job(kept.id) is None
        session.commit()
    assert engine.get_job(kept.id) is not None
    with Session(sa_engine) as session:  # no statement yet: the session begins one
        [dropped] = engine.insert([new_job(args={"n": 2})], conn=session)
        session.rollback()
    assert engine.get_job(dropped.id) is None


def test_sqlalchemy_connection(
    engine: PostgresEngine, new_job: JobFactory, sa_engine: sqlalchemy.Engine
) -> None:
    with sa_engine.connect() as conn:
        [kept] = engine.insert([new_job()], conn=conn)
        assert engine.get_job(kept.id) is None
        conn.commit()
    assert engine.get_job(kept.id) is not None
    with sa_engine.connect() as conn:
        [dropped] = engine.insert([new_job()], conn=conn)
    # closing without commit rolls back, as for the caller's own statements
    assert engine.get_job(dropped.id) is None
    with sa_engine.begin() as conn:
        [begun] = engine.insert([new_job()], conn=conn)
    assert engine.get_job(begun.id) is not None


def test_sqlalchemy_with_another_driver_is_a_type_error(
    engine: PostgresEngine, new_job: JobFactory
) -> None:
    other = sqlalchemy.create_engine("sqlite://")
    try:
        with Session(other) as session, pytest.raises(TypeError, match=r"postgresql\+psycopg"):
            engine.insert([new_job()], conn=session)
    finally:
        other.dispose()


class DjangoLikeWrapper:
    """What Django's connection object looks like to errands: .cursor() and .connection."""

    def __init__(self) -> None:
        self.connection: psycopg.Connection[Any] | None = None

    def ensure_connection(self) -> None:
        if self.connection is None:
            # Django's psycopg 3 backend binds parameters client-side by default.
            self.connection = psycopg.connect(POSTGRES_URL, cursor_factory=psycopg.ClientCursor)

    def cursor(self) -> Any:
        self.ensure_connection()
        assert self.connection is not None
        return self.connection.cursor()


def test_django_like_connection_wrapper(engine: PostgresEngine, new_job: JobFactory) -> None:
    wrapper = DjangoLikeWrapper()
    [job] = engine.insert([new_job()], conn=wrapper)
    assert wrapper.connection is not None
    try:
        assert engine.get_job(job.id) is None
        wrapper.connection.commit()
        assert engine.get_job(job.id) is not None
    finally:
        wrapper.connection.close()


def test_other_objects_are_a_type_error(engine: PostgresEngine, new_job: JobFactory) -> None:
    with pytest.raises(TypeError, match=r"got builtins\.str"):
        engine.insert([new_job()], conn="not a connection")
    with pytest.raises(TypeError, match=r"sqlite3\.Connection"):
        engine.insert([new_job()], conn=sqlite3.connect(":memory:"))


def test_database_errors_on_the_callers_connection(make_engine: Any, new_job: JobFactory) -> None:
    unmigrated = make_engine()
    with psycopg.connect(POSTGRES_URL) as conn:
        with pytest.raises(DatabaseError, match="caller's connection") as info:
            unmigrated.insert([new_job()], conn=conn)
        assert isinstance(info.value.__cause__, psycopg.Error)
        conn.rollback()
