"""Migrations and schema checks of the PostgreSQL engine."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql

from errands.engines.migrations import latest_version, migrations
from errands.errors import SchemaError
from tests.integration.postgres.conftest import EngineFactory
from tests.support import postgres_schema

TABLES = (
    "errands_jobs",
    "errands_producers",
    "errands_leader",
    "errands_schema",
    "errands_cron_slots",
    "errands_queues",
)


def snapshot(db: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    """Columns, indexes, constraints and storage options of ``schema``, schema name erased."""

    def rows(query: str) -> list[tuple[Any, ...]]:
        found = db.execute(query, (schema,)).fetchall()
        return sorted(tuple(str(v).replace(schema, "<schema>") for v in row) for row in found)

    return {
        "columns": rows(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = %s"
        ),
        "indexes": rows(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s"
        ),
        "constraints": rows(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = %s"
        ),
        "options": rows(
            "SELECT c.relname, coalesce(c.reloptions::text, '') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'"
        ),
    }


def stored_versions(db: psycopg.Connection[Any], schema: str) -> list[int]:
    query = sql.SQL("SELECT version FROM {}.errands_schema ORDER BY version")
    return [row[0] for row in db.execute(query.format(sql.Identifier(schema))).fetchall()]


def test_migrate_creates_the_schema_and_is_idempotent(
    make_engine: EngineFactory, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    engine = make_engine()
    latest = latest_version("postgres")
    assert engine.migrate() == latest
    first = snapshot(db, pg_schema)
    assert engine.migrate() == latest
    assert snapshot(db, pg_schema) == first
    assert stored_versions(db, pg_schema) == [v for v, _, _ in migrations("postgres")]
    tables = {row[0] for row in first["options"]}
    assert tables == set(TABLES)


def test_fresh_install_equals_upgrading_one_version_at_a_time(
    make_engine: EngineFactory, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    make_engine().migrate()
    fresh = snapshot(db, pg_schema)
    steps = migrations("postgres")
    for applied in range(len(steps)):
        # A database left at version `applied` by an older errands, then migrated.
        with postgres_schema() as other:
            db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(other)))
            with db.transaction():
                db.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(other)))
                db.execute(
                    "CREATE TABLE errands_schema (version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                for version, name, text in steps[:applied]:
                    db.execute(text.encode())
                    db.execute(
                        "INSERT INTO errands_schema (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
            assert make_engine(schema=other).migrate() == latest_version("postgres")
            assert snapshot(db, other) == fresh


def test_each_migration_file_can_run_twice(pg_schema: str, db: psycopg.Connection[Any]) -> None:
    db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    with db.transaction():
        db.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(pg_schema)))
        for _, _, text in migrations("postgres"):
            db.execute(text.encode())
            db.execute(text.encode())


def test_tables_have_the_same_columns_as_sqlite(
    engine: Any, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    lite = sqlite3.connect(":memory:")
    for _, _, text in migrations("sqlite"):
        lite.executescript(text)
    for table in ("errands_jobs", "errands_producers", "errands_leader", "errands_queues"):
        expected = [row[1] for row in lite.execute(f"PRAGMA table_xinfo({table})")]
        found = db.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (pg_schema, table),
        ).fetchall()
        assert [row[0] for row in found] == expected, table


def test_idiomatic_types_and_autovacuum(
    engine: Any, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    types = dict(
        db.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'errands_jobs'",
            (pg_schema,),
        ).fetchall()
    )
    assert types["id"] == "bigint"
    assert types["args"] == types["errors"] == types["result"] == "jsonb"
    assert types["scheduled_at"] == "timestamp with time zone"
    options = snapshot(db, pg_schema)["options"]
    jobs_options = next(row[1] for row in options if row[0] == "errands_jobs")
    assert "autovacuum_vacuum_scale_factor" in jobs_options


def test_check_schema_before_and_after_migrate(make_engine: EngineFactory) -> None:
    engine = make_engine()
    with pytest.raises(SchemaError, match="errands migrate"):
        engine.check_schema()  # the schema does not even exist yet
    engine.migrate()
    engine.check_schema()


def test_check_schema_when_the_stored_version_is_old(
    engine: Any, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    db.execute(sql.SQL("DELETE FROM {}.errands_schema").format(sql.Identifier(pg_schema)))
    with pytest.raises(SchemaError, match=r"version 0, this code needs \d+: run `errands migrate`"):
        engine.check_schema()


def test_concurrent_migrations_are_serialised(
    make_engine: EngineFactory, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    engines = [make_engine() for _ in range(6)]
    results: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def run(engine: Any) -> None:
        barrier.wait()
        try:
            results.append(engine.migrate())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [latest_version("postgres")] * len(engines)
    assert stored_versions(db, pg_schema) == [v for v, _, _ in migrations("postgres")]
