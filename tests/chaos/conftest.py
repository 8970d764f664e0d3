"""The chaos suite's size: ``--chaos-scale N`` or ``$ERRANDS_CHAOS_SCALE`` (1 = CI size).

``--chaos-scale`` is known when pytest is pointed at this folder
(``pytest tests/chaos --chaos-scale 5``); the environment variable works from
anywhere (``ERRANDS_CHAOS_SCALE=5 pytest``).
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-scale",
        type=float,
        default=None,
        help="multiply the chaos suite's jobs and faults (default $ERRANDS_CHAOS_SCALE or 1)",
    )


def scale_of(config: pytest.Config) -> float:
    given = config.getoption("--chaos-scale", default=None)
    if given is None:
        given = float(os.environ.get("ERRANDS_CHAOS_SCALE", "1"))
    if not given > 0:
        raise pytest.UsageError(f"--chaos-scale must be > 0, got {given}")
    return float(given)


@pytest.fixture
def chaos_scale(request: pytest.FixtureRequest) -> float:
    return scale_of(request.config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A bigger run gets a longer per-test timeout; ``--engine`` keeps one engine."""
    scale = scale_of(config)
    chosen = config.getoption("--engine", default=None)
    keep, dropped = [], []
    for item in items:
        if "tests/chaos/" not in item.nodeid:
            keep.append(item)
            continue
        item.add_marker(pytest.mark.timeout(max(120, int(150 * scale))))
        engine = getattr(item, "callspec", None) and item.callspec.params.get("engine")
        (dropped if chosen and engine and engine != chosen else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
