"""Fixtures for integration tests: the same engines as the conformance suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import POSTGRES_URL, postgres_schema


@pytest.fixture(params=["sqlite", "postgres"])
def engine_name(request: pytest.FixtureRequest) -> str:
    selected = request.config.getoption("--engine", default=None)
    if selected and request.param != selected:
        pytest.skip(f"--engine {selected} selected")
    return str(request.param)


@pytest.fixture
def schema(engine_name: str) -> Iterator[str | None]:
    if engine_name == "postgres":
        with postgres_schema() as name:
            yield name
    else:
        yield None


@pytest.fixture
def database_url(engine_name: str, tmp_path: Path, schema: str | None) -> str:
    if engine_name == "postgres":
        return POSTGRES_URL
    return f"sqlite:///{tmp_path}/jobs.db"
