"""One `Settings` object, built once at the edge (CLI or tests) and passed down.

Sources, later ones winning: defaults, an optional TOML file (`--config`), environment
variables `LIMNER_*`, command-line flags.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EMBEDDED_ENGINE = "limner-emoji"


@dataclass(frozen=True)
class EngineConfig:
    """An engine to load: `kind` is `embedded`, `diffusers` or `fake`."""

    name: str
    kind: str
    path: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    ray: Mapping[str, Any] = field(default_factory=dict)
    """Its Ray Serve deployment (`limner serve --ray`): `RAY_KEYS` from its TOML table."""
    preload: bool | None = None
    """Loaded at start; None: only the default model is."""
    keep_alive: float | str | None = None
    """Unloaded after this long idle (seconds, or "30s", "5m", "2h"; -1: never); None: the
    server's `keep_alive`."""
    provenance: str | None = None
    """"c2pa" or "none" for this engine's pictures; None: the server's `provenance`."""


RESPONSES_KEYS = ("upstream", "ttl_s", "max_bytes")
"""The `[responses]` table: the text model, and how long and how much is stored."""
LIFECYCLE_KEYS = ("preload", "keep_alive", "provenance")
"""An engine table's keys read by the server, not the engine: when it is in memory, and
whether its pictures carry content credentials."""
RAY_KEYS = ("replicas", "autoscaling", "num_cpus", "num_gpus", "max_ongoing_requests",
            "max_queued_requests")
"""An engine table's keys that shape its deployment under Ray, not the engine itself."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    public_base_url: str | None = None
    """Base of `url` responses, e.g. `https://images.example.com` behind a proxy."""
    data_dir: Path = field(default_factory=lambda: _default_data_dir())
    url_ttl_s: int = 3600
    signing_secret: str | None = None
    max_body_bytes: int = 1_048_576
    max_upload_bytes: int = 67_108_864
    """The largest multipart body (an edit's pictures, a variation's, a file for
    `POST /v1/files`) and JSON edit body; refused (413) while it is read."""
    image_url_hosts: tuple[str, ...] = ()
    """Hosts whose http(s) `image_url`s a JSON edit may name; none by default (data URLs
    and file ids always work)."""
    moderation: bool = True
    max_queue: int = 64
    batch_wait_ms: float = 10.0
    request_timeout_s: float = 540.0
    shutdown_grace_s: float = 30.0
    max_connections: int = 1000
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_timeout_s: float = 5.0
    threads: int | None = None
    encoders: int | None = None
    """Threads that encode and sign pictures; None: a quarter of the cores beside a model on
    the CPU, all but one where a GPU draws (`service.encoder_threads`)."""
    auto_size: str = "1024x1024"
    gpt_default: str = "gpt-image-1"
    engines: tuple[EngineConfig, ...] = (EngineConfig(EMBEDDED_ENGINE, "embedded"),)
    default_engine: str = EMBEDDED_ENGINE
    models: Mapping[str, str | Mapping[str, Any]] = field(default_factory=dict)
    """OpenAI model name (or any new name) -> engine name, or `{engine, lora}`: an engine
    with adapters every request under that name draws with."""
    admin_keys: tuple[str, ...] = ()
    """Keys that may also load, unload and pull models; each is an API key too."""
    max_model_memory: int | str | Mapping[str, int | str] | None = "80%"
    """What the loaded models may hold together, per device (`limner.budget`)."""
    keep_alive: float | str = -1
    """How long an idle model stays loaded (seconds, or "30s", "5m", "2h"); -1: until the
    budget needs its room."""
    loras: Mapping[str, str] = field(default_factory=dict)
    """Adapter name -> a path or hub id, beside the files in `DATA_DIR/loras/`."""
    max_request_loras: int = 4
    """The most adapters one request's `lora` may name."""
    responses_ttl_s: float = 30 * 86400
    """How long a stored response (`store: true`, the default) is kept, as OpenAI does."""
    responses_max_bytes: int = 1 << 30
    """What stored responses may hold on disk together; past it the oldest go first."""
    provenance: str = "c2pa"
    """Content credentials on every picture: "c2pa" (a signed C2PA manifest) or "none"."""
    provenance_cert: str | None = None
    """The signing certificate chain (PEM, the signer's first); with `provenance_key`. None:
    a chain this server makes once under `DATA_DIR/c2pa/`."""
    provenance_key: str | None = None
    """The signing certificate's private key (PEM, EC P-256: ES256)."""
    provenance_trust: str | None = None
    """Trust anchors (PEM) for the check: a manifest whose signer chains to one is
    `trusted`, any other whose signature holds `valid`."""
    provenance_organization: str | None = None
    """Written in each manifest (and the made certificate's name) as who runs the server."""
    provenance_prompt: bool = False
    """Whether manifests carry the prompt (prompts can be private: off by default)."""
    watermark: bool = False
    """An invisible watermark in the pixels as well (png, jpeg, webp; needs
    `limner[watermark]`): an id that maps to `DATA_DIR/watermarks/`'s record."""
    responses_upstream: Mapping[str, Any] | None = None
    """A text model for `/v1/responses` (`base_url`, `model`, `api_key`); none: image-only."""

    @property
    def base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "limner"


def load_settings(config_file: Path | None = None, environ: Mapping[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Defaults < TOML file < `LIMNER_*` environment < keyword overrides (None = not given)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_from_toml(tomllib.loads(config_file.read_text())))
    values.update(_from_environ(os.environ if environ is None else environ))
    values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
    if "engines" in values and "default_engine" not in values:
        values["default_engine"] = values["engines"][0].name
    return Settings(**values)


def _from_toml(doc: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    simple = {f for f in Settings.__dataclass_fields__ if f not in ("engines", "models")}
    for key, value in doc.items():
        if key in simple:
            values[key] = tuple(value) if key in ("api_keys", "image_url_hosts", "admin_keys") \
                else value
        elif key not in ("engines", "models", "responses"):
            raise ValueError(f"unknown setting {key!r} in the config file")
    for key, value in doc.get("responses", {}).items():
        if key not in RESPONSES_KEYS:
            raise ValueError(f"unknown setting {key!r} in [responses] of the config file")
        values[f"responses_{key}"] = value
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"]).expanduser()
    if "engines" in doc:
        engines = []
        for name, table in doc["engines"].items():
            table = dict(table)
            kind = table.pop("kind")
            path = table.pop("path", None)
            ray = {key: table.pop(key) for key in RAY_KEYS if key in table}
            life = {key: table.pop(key) for key in LIFECYCLE_KEYS if key in table}
            engines.append(EngineConfig(name=name, kind=kind, path=path, options=table,
                                        ray=ray, **life))
        values["engines"] = tuple(engines)
    if "models" in doc:
        values["models"] = dict(doc["models"])
    return values


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if keys := environ.get("LIMNER_API_KEYS"):
        values["api_keys"] = tuple(k.strip() for k in keys.split(",") if k.strip())
    if hosts := environ.get("LIMNER_IMAGE_URL_HOSTS"):
        values["image_url_hosts"] = tuple(h.strip() for h in hosts.split(",") if h.strip())
    for name, key, cast in (
        ("host", "LIMNER_HOST", str),
        ("port", "LIMNER_PORT", int),
        ("public_base_url", "LIMNER_PUBLIC_BASE_URL", str),
        ("signing_secret", "LIMNER_SIGNING_SECRET", str),
        ("threads", "LIMNER_THREADS", int),
        ("encoders", "LIMNER_ENCODERS", int),
        ("max_upload_bytes", "LIMNER_MAX_UPLOAD_BYTES", int),
        ("provenance", "LIMNER_PROVENANCE", str),
    ):
        if environ.get(key):
            values[name] = cast(environ[key])
    if keys := environ.get("LIMNER_ADMIN_KEYS"):
        values["admin_keys"] = tuple(k.strip() for k in keys.split(",") if k.strip())
    if environ.get("LIMNER_MAX_MODEL_MEMORY"):
        values["max_model_memory"] = environ["LIMNER_MAX_MODEL_MEMORY"]
    if environ.get("LIMNER_DATA_DIR"):
        values["data_dir"] = Path(environ["LIMNER_DATA_DIR"]).expanduser()
    if environ.get("LIMNER_MODERATION"):
        values["moderation"] = environ["LIMNER_MODERATION"].lower() not in ("off", "0", "false")
    return values


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def keep_alive_seconds(value: float | str, where: str = "keep_alive") -> float | None:
    """Seconds idle before an unload; None (never) for any negative value."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected seconds or a duration like '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        unit = _DURATION_UNITS.get(text[-1:]) if text[-1:].isalpha() else 1.0
        number = text[:-1] if text[-1:].isalpha() else text
        try:
            if unit is None:
                raise ValueError
            seconds = float(number) * unit
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not seconds or a duration like '30s', "
                             "'5m', '2h' (-1: never)") from None
    return None if seconds < 0 else seconds
