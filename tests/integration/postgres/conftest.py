"""Fixtures for the PostgreSQL engine's own tests: one fresh schema per test.

Every test gets its own schema (dropped afterwards), so these tests can run in
parallel (``pytest -n auto``) against one real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from errands import codec
from errands.engines.postgres import PostgresEngine
from errands.job import NewJob
from tests.support import POSTGRES_URL, postgres_schema

EngineFactory = Callable[..., PostgresEngine]
JobFactory = Callable[..., NewJob]


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema name; the schema is dropped CASCADE after the test."""
    with postgres_schema() as name:
        yield name


@pytest.fixture
def make_engine(pg_schema: str) -> Iterator[EngineFactory]:
    """Build engines on ``pg_schema`` (by default); every one is closed after the test."""
    engines: list[PostgresEngine] = []

    def make(url: str = POSTGRES_URL, **options: Any) -> PostgresEngine:
        options.setdefault("schema", pg_schema)
        engine = PostgresEngine(url, **options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine: EngineFactory) -> PostgresEngine:
    """A migrated engine on a fresh schema."""
    engine = make_engine()
    engine.migrate()
    return engine


@pytest.fixture
def db() -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection for looking behind the engine's back."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        yield conn


@pytest.fixture
def new_job() -> JobFactory:
    """``new_job(worker="w", queue="default", args={}, **fields)`` -> a NewJob."""

    def make(
        worker: str = "w",
        queue: str = "default",
        args: dict[str, Any] | None = None,
        **fields: Any,
    ) -> NewJob:
        args = {} if args is None else args
        values: dict[str, Any] = {
            "worker": worker,
            "queue": queue,
            "args": args,
            "args_json": codec.encode(args, "args"),
            "meta_json": codec.encode(fields.pop("meta", {}), "meta"),
            "tags_json": codec.encode(fields.pop("tags", []), "tags"),
            "priority": 0,
            "max_attempts": 20,
            "scheduled_at": None,
            "timeout": None,
        }
        values.update(fields)
        return NewJob(**values)

    return make
