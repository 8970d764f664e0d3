"""The child's side of the readiness pipe (runtime/ready.py)."""

from __future__ import annotations

import os

import pytest

from errands.runtime.ready import READY_FD_ENV, READY_MESSAGE, ReadyPipe


def test_report_writes_one_byte_once_and_closes_the_fd(monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, write_fd = os.pipe()
    monkeypatch.setenv(READY_FD_ENV, str(write_fd))
    ready = ReadyPipe.from_env()
    assert READY_FD_ENV not in os.environ  # not handed on to this process's children
    try:
        ready.report()
        ready.report()  # the fd is closed: a second report must not write anywhere
        assert os.read(read_fd, 64) == READY_MESSAGE
        assert os.read(read_fd, 64) == b""  # EOF: the write end was closed
    finally:
        os.close(read_fd)


def test_without_the_variable_report_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(READY_FD_ENV, raising=False)
    ReadyPipe.from_env().report()


@pytest.mark.parametrize("value", ["not-a-number", "987654"])
def test_a_bad_variable_is_ignored(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(READY_FD_ENV, value)
    ReadyPipe.from_env().report()
    assert READY_FD_ENV not in os.environ
