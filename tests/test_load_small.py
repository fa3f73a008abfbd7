"""A small, bounded load run (benchmarks/load_test.py's core) against the fake engine: 10 clients
for ~10 s. Heavier: LIMNER_LOAD_CLIENTS / LIMNER_LOAD_SECONDS, or run the script itself."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from conftest import RunningServer

from limner.engines.fake import FakeEngine
from limner.testing import load as load_test

pytestmark = pytest.mark.slow  # a load test

Serve = Callable[..., RunningServer]
CLIENTS = int(os.environ.get("LIMNER_LOAD_CLIENTS", "10"))
SECONDS = float(os.environ.get("LIMNER_LOAD_SECONDS", "10"))


def test_load_every_request_is_answered(serve: Serve) -> None:
    # A small queue so that some requests are throttled and the 429 path is exercised.
    server = serve(engines={"fake": FakeEngine(step_s=0.01, max_batch_images=2)},
                   max_queue=4)
    report = asyncio.run(load_test.run_load(
        server.base_url, clients=CLIENTS, seconds=SECONDS, pid=os.getpid(), rss_every_s=5,
        body={"prompt": "otter", "model": "gpt-image-1", "quality": "low", "size": "1024x1024",
              "output_format": "jpeg", "output_compression": 50},
        request_timeout_s=60,
    ))
    print(report.summary())
    assert report.sent > CLIENTS
    assert report.lost == 0, report.lost_errors
    assert report.duplicated == 0
    assert set(report.answered) <= {"200", "429"}, report.answered
    assert sum(report.answered.values()) == report.sent
    assert report.answered.get("200", 0) > 0
    assert report.throttled_without_retry_after == 0
    assert report.health_checks >= SECONDS and report.health_failures == 0
    # Loose on a shared CI machine; the full run reports the real figure.
    assert report.health_max_ms < 2000
    assert len(report.rss_mb) >= 2
