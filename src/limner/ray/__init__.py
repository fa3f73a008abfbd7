"""limner on Ray Serve (`pip install 'limner[ray]'`): `limner serve --ray`, or Ray's own tools
with `serve run limner.ray:app config=limner.toml` (or `LIMNER_CONFIG`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.serve import Application


def app(args: dict[str, Any] | None = None) -> Application:
    """Ray Serve's application builder: `serve run limner.ray:app [config=FILE] [replicas=N]
    [ingress_replicas=N]`, and the `import_path` of a Serve config or a KubeRay
    `RayService`."""
    from limner.config import load_settings
    from limner.ray.deployments import build_app

    args = dict(args or {})
    config = args.get("config") or os.environ.get("LIMNER_CONFIG")
    settings = load_settings(Path(config) if config else None)
    replicas = int(args["replicas"]) if args.get("replicas") else None
    return build_app(settings, replicas=replicas,
                     ingress_replicas=int(args.get("ingress_replicas") or 1))
