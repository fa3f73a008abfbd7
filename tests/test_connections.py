"""The connection module's small parts: repeated warnings and asyncio's accept() errors are
logged at a bounded rate, and the connection cap leaves descriptors for files."""

from __future__ import annotations

import logging

import pytest

from limner.server.connections import (
    RESERVED_FDS,
    AcceptErrorFilter,
    LogThrottle,
    connection_cap,
)


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, None)


def test_accept_errors_pass_once_per_interval_and_others_always() -> None:
    accept_errors = AcceptErrorFilter(every_s=3600)
    flood = [record("socket.accept() out of system resource") for _ in range(1000)]
    assert sum(accept_errors.filter(r) for r in flood) == 1
    assert accept_errors.filter(record("Task was destroyed but it is pending!"))


def test_a_repeated_warning_is_logged_once_with_the_count_of_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(logging.getLogger("limner.test"), every_s=0)
    quiet = LogThrottle(logging.getLogger("limner.test"), every_s=3600)
    with caplog.at_level(logging.WARNING, logger="limner.test"):
        for _ in range(5):
            quiet.warning("cap", "refused a connection")
        throttle.warning("cap", "first")
        throttle.warning("cap", "second")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["refused a connection", "first", "second"]
    quiet.every_s = 0
    with caplog.at_level(logging.WARNING, logger="limner.test"):
        quiet.warning("cap", "refused a connection")
    assert caplog.records[-1].getMessage() == (
        "refused a connection (4 more since the last such message)")


def test_the_cap_stays_below_the_open_file_limit() -> None:
    assert connection_cap(1000, 1024) == 1024 - RESERVED_FDS
    assert connection_cap(1000, 65536) == 1000
    assert connection_cap(1000, 64) == 1
