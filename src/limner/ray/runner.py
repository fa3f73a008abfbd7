"""`limner serve --ray`: join (or start) a Ray instance, run the application, wait for a signal."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from limner.config import Settings

log = logging.getLogger("limner.ray")


def run(settings: Settings, *, address: str | None = None, replicas: int | None = None,
        on_ready: str = "") -> None:
    """Blocks until SIGINT or SIGTERM. `address` (or `RAY_ADDRESS`) names a cluster to join;
    without one a local Ray instance is started, and stopped again at the end."""
    import ray
    from ray import serve

    from limner.ray.deployments import APP_NAME, build_app

    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(build_app(settings, replicas=replicas), name=APP_NAME, route_prefix="/")
        if on_ready:
            log.warning("%s", on_ready)
        stopped = threading.Event()

        def stop(signum: int, frame: FrameType | None) -> None:
            stopped.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        stopped.wait()
        serve.delete(APP_NAME)
    finally:
        ray.shutdown()
