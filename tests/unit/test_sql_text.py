"""Shared SQL fragments: ``-- include: _name`` lines in the engines' .sql files."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources

import pytest
from psycopg import sql

from errands.engines.base import load_sql
from errands.engines.sql_text import SqlIncludeError, expand_includes, read_sql_file

DIALECTS = ("sqlite", "postgres")


def reader(files: dict[str, str]) -> Callable[[str, str], str]:
    """A fragment reader over ``files`` ({name: text}), like the package's files."""

    def read(dialect: str, name: str) -> str:
        assert dialect == "postgres"
        try:
            return files[name]
        except KeyError:
            raise FileNotFoundError(name) from None

    return read


def sql_files(dialect: str) -> list[str]:
    """The names (without .sql) of every file in ``engines/sql/<dialect>/``."""
    folder = resources.files("errands.engines").joinpath("sql", dialect)
    return sorted(f.name.removesuffix(".sql") for f in folder.iterdir() if f.name.endswith(".sql"))


def queries(dialect: str) -> list[str]:
    return [name for name in sql_files(dialect) if not name.startswith("_")]


def fragments(dialect: str) -> list[str]:
    return [name for name in sql_files(dialect) if name.startswith("_")]


# -- expansion ---------------------------------------------------------------------


def test_a_fragment_replaces_its_line_indented_like_it() -> None:
    read = reader({"_cols": "-- why\nSELECT a,\n\n       b\n"})
    text = "WITH x AS (\n    -- include: _cols\n    FROM t\n)\nSELECT 1\n"
    assert expand_includes("postgres", text, read=read) == (
        "WITH x AS (\n    -- why\n    SELECT a,\n\n           b\n    FROM t\n)\nSELECT 1\n"
    )


def test_several_includes_in_one_file() -> None:
    read = reader({"_a": "a = 1\n", "_b": "b = 2"})
    text = "-- header\nSET\n-- include: _a\n\t-- include: _b\n  --include:_a\nWHERE x"
    assert expand_includes("postgres", text, read=read) == (
        "-- header\nSET\na = 1\n\tb = 2\n  a = 1\nWHERE x"
    )


def test_text_without_includes_is_unchanged() -> None:
    text = "-- a comment that mentions include: nothing\nSELECT '-- include: _x'\n"
    assert expand_includes("postgres", text, read=reader({})) == text


def test_an_unknown_fragment_is_named_with_the_including_file() -> None:
    with pytest.raises(SqlIncludeError) as info:
        expand_includes("postgres", "  -- include: _nope\n", source="claim.sql", read=reader({}))
    message = str(info.value)
    assert "'_nope'" in message
    assert "postgres/claim.sql" in message
    assert "postgres/_nope.sql does not exist" in message


def test_an_unknown_fragment_in_the_package_is_refused() -> None:
    with pytest.raises(SqlIncludeError, match=r"sqlite/q\.sql includes '_no_such_fragment'"):
        expand_includes("sqlite", "-- include: _no_such_fragment\n", source="q.sql")


@pytest.mark.parametrize("nested", ["-- include: _a", "    -- include: _b"])
def test_a_fragment_may_not_include_a_fragment(nested: str) -> None:
    read = reader({"_a": f"SELECT 1\n{nested}\n", "_b": "x"})
    with pytest.raises(SqlIncludeError) as info:
        expand_includes("postgres", "-- include: _a\n", source="q.sql", read=read)
    message = str(info.value)
    assert "postgres/_a.sql" in message
    assert "postgres/q.sql" in message
    assert "one level only" in message


@pytest.mark.parametrize(
    "line", ["-- include:", "-- include: cols", "-- include: _a _b", "-- include: _a.sql"]
)
def test_a_malformed_include_line_is_refused(line: str) -> None:
    with pytest.raises(SqlIncludeError, match="malformed include line"):
        expand_includes("postgres", f"{line}\n", source="q.sql", read=reader({"_a": "x"}))


# -- the package's own files -------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_query_loads_with_its_includes_resolved(dialect: str) -> None:
    names = queries(dialect)
    assert "fetch_limited" in names
    used: set[str] = set()
    for name in names:
        used.update(
            re.findall(r"^[ \t]*--[ \t]*include:[ \t]*(\S+)", read_sql_file(dialect, name), re.M)
        )
        text = load_sql(dialect, name)
        assert not re.search(r"--[ \t]*include:", text), f"{dialect}/{name}.sql"
        if dialect == "postgres":
            # As postgres.py fills it in ({channel} only in listen.sql); a lone brace,
            # in a fragment too, would raise here.
            names = {"schema": sql.Identifier("errands"), "channel": sql.Identifier("ch")}
            sql.SQL(text).format(**names).as_bytes(None)
    assert used == set(fragments(dialect)), "every fragment is included by some query"


def test_the_queries_that_share_fragments_include_them() -> None:
    for dialect, name, fragment in [
        ("sqlite", "claimable", "_limited_ranked"),
        ("sqlite", "fetch_limited", "_limited_ranked"),
        ("postgres", "fetch_limited", "_partition_key"),
        ("postgres", "claim", "_claim_update"),
        ("postgres", "claim", "_claimed_job_json"),
        ("postgres", "ack_fetch", "_claim_update"),
        ("postgres", "ack_fetch", "_claimed_job_json"),
        ("postgres", "ack_fetch", "_ack_update"),
        ("postgres", "ack_fetch", "_ack_input"),
        ("postgres", "ack", "_ack_update"),
        ("postgres", "ack", "_ack_input"),
    ]:
        assert f"-- include: {fragment}\n" in read_sql_file(dialect, name)
        body = [line for line in read_sql_file(dialect, fragment).splitlines() if line.strip()]
        text = load_sql(dialect, name)
        assert all(line in text for line in body), f"{dialect}/{name}.sql lacks {fragment}"
