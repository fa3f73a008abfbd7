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
    # Ours, not Ray's (it would print a stack dump): set at once, so a signal during the
    # deployment stops the server as soon as it is up.
    stopped = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(build_app(settings, replicas=replicas), name=APP_NAME, route_prefix="/")
        if on_ready and not stopped.is_set():
            log.warning("%s", on_ready)
        stopped.wait()
        # Not waiting for the deletion: a local instance goes with `ray.shutdown`, and on a
        # cluster Ray stops the replicas after their grace period on its own.
        serve.delete(APP_NAME, _blocking=False)
    finally:
        ray.shutdown()
