"""Connection and operational errors of the PostgreSQL engine."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from errands.engines import create_engine
from errands.engines.postgres import PostgresEngine
from errands.errors import ConfigError, DatabaseError
from tests.integration.postgres.conftest import EngineFactory


def test_constructing_does_not_connect(make_engine: EngineFactory) -> None:
    make_engine("postgresql://postgres:pw@127.0.0.1:1/test")


def test_unreachable_port_fails_fast_with_a_masked_url(make_engine: EngineFactory) -> None:
    engine = make_engine("postgresql://postgres:s3cret@127.0.0.1:1/test")
    started = time.monotonic()
    with pytest.raises(DatabaseError) as info:
        engine.migrate()
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "postgresql://postgres:***@127.0.0.1:1/test" in message
    assert "s3cret" not in message
    assert "server is running" in message
    with pytest.raises(DatabaseError):  # and again, not a stuck half-open pool
        engine.get_job(1)


def test_missing_database(make_engine: EngineFactory) -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:5432/errands_no_such_db")
    with pytest.raises(DatabaseError, match="does not exist") as info:
        engine.check_schema()
    assert "errands_no_such_db" in str(info.value)
    assert "createdb" in str(info.value)


def test_unknown_role(make_engine: EngineFactory) -> None:
    engine = make_engine("postgresql://errands_no_such_role:pw@127.0.0.1:5432/test")
    with pytest.raises(DatabaseError, match="user name and password") as info:
        engine.migrate()
    assert ":***@" in str(info.value) and ":pw@" not in str(info.value)


def test_failing_query_is_a_database_error_with_the_cause(make_engine: EngineFactory) -> None:
    engine = make_engine()  # never migrated: the tables are missing
    with pytest.raises(DatabaseError, match="reading a job") as info:
        engine.get_job(1)
    assert isinstance(info.value.__cause__, psycopg.Error)
    engine.migrate()  # the engine still works afterwards
    assert engine.get_job(1) is None


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="schema"):
        PostgresEngine("postgresql://postgres@127.0.0.1/test", schema="")
    with pytest.raises(ConfigError, match="schema"):
        PostgresEngine("postgresql://postgres@127.0.0.1/test", schema="x" * 64)
    with pytest.raises(ConfigError, match="min_size"):
        PostgresEngine("postgresql://postgres@127.0.0.1/test", min_size=5, max_size=2)


def test_create_engine_and_scheme_variants(pg_schema: str) -> None:
    for url in (
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgres://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    ):
        engine: Any = create_engine(url, schema=pg_schema)
        try:
            assert isinstance(engine, PostgresEngine) and engine.dialect == "postgres"
            assert engine.migrate() >= 1
            assert "127.0.0.1" in repr(engine)
        finally:
            engine.close()
            engine.close()  # twice is fine


def test_closed_engine_reopens_on_use(engine: PostgresEngine) -> None:
    engine.close()
    assert engine.get_job(1) is None
