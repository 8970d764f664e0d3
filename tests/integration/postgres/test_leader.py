"""The leader lease of the PostgreSQL engine."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg import sql

from errands.engines.postgres import PostgresEngine


def lease(db: psycopg.Connection[Any], schema: str) -> tuple[str, int] | None:
    query = sql.SQL("SELECT node, term FROM {}.errands_leader WHERE name = 'errands'")
    row = db.execute(query.format(sql.Identifier(schema))).fetchone()
    return None if row is None else (row[0], row[1])


def expire(db: psycopg.Connection[Any], schema: str) -> None:
    query = sql.SQL("UPDATE {}.errands_leader SET expires_at = now() - interval '1 s'")
    db.execute(query.format(sql.Identifier(schema)))


def test_second_node_is_refused_until_the_lease_expires(
    engine: PostgresEngine, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    assert engine.acquire_leader("a", 30) is True
    assert lease(db, pg_schema) == ("a", 1)
    assert engine.acquire_leader("b", 30) is False
    assert engine.acquire_leader("a", 30) is True  # renewal keeps the term
    assert lease(db, pg_schema) == ("a", 1)
    expire(db, pg_schema)
    assert engine.acquire_leader("b", 30) is True
    assert lease(db, pg_schema) == ("b", 2)  # a new leader, a new term
    assert engine.acquire_leader("a", 30) is False


def test_short_ttl_expires_on_the_database_clock(
    engine: PostgresEngine, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    assert engine.acquire_leader("a", 0.05) is True
    db.execute("SELECT pg_sleep(0.1)")
    assert engine.acquire_leader("b", 30) is True


def test_release_frees_the_lease_only_for_its_holder(
    engine: PostgresEngine, pg_schema: str, db: psycopg.Connection[Any]
) -> None:
    assert engine.acquire_leader("a", 30)
    engine.release_leader("b")
    assert lease(db, pg_schema) == ("a", 1)
    engine.release_leader("a")
    assert lease(db, pg_schema) is None
    assert engine.acquire_leader("b", 30) is True


def test_one_leader_among_racing_nodes(make_engine: Any, engine: PostgresEngine) -> None:
    engines = [make_engine(max_size=1) for _ in range(8)]
    barrier = threading.Barrier(len(engines))
    won: list[str] = []

    def race(node: str, mine: PostgresEngine) -> None:
        barrier.wait()
        if mine.acquire_leader(node, 30):
            won.append(node)

    threads = [threading.Thread(target=race, args=(f"n{i}", e)) for i, e in enumerate(engines)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
