"""The `limner` command: `serve`, `images generate|edit|create-variation`, `models`,
`batches` (in `cli_batches`).

The `images` commands take the official `openai` CLI's flags and send only those the user
set, so the server applies the same defaults as for any other client; `edit` and
`create-variation` send multipart, as the official SDK does. `--base-url`, `--api-key`
and `--format` work anywhere on the line.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import mimetypes
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import httpx

from limner import __version__

if TYPE_CHECKING:
    from limner.config import Settings

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
F = TypeVar("F", bound=Callable[..., Any])


# Client options, accepted on every level ----------------------------------------------------
def client_options(func: F) -> F:
    for option in reversed((
        click.option("--base-url", default=None, metavar="URL",
                     help=f"Server base URL (env LIMNER_BASE_URL; default {DEFAULT_BASE_URL})."),
        click.option("--api-key", default=None, metavar="KEY",
                     help="API key to send (env LIMNER_API_KEY)."),
        click.option("--format", "output_format_", default=None,
                     type=click.Choice(["json", "jsonl", "raw"]),
                     help="How to print responses (default json)."),
    )):
        func = option(func)
    return func


def _remember(ctx: click.Context, base_url: str | None, api_key: str | None,
              output_format_: str | None) -> None:
    obj = ctx.ensure_object(dict)
    for key, value in (("base_url", base_url), ("api_key", api_key),
                       ("format", output_format_)):
        if value is not None:
            obj[key] = value


def _client_settings(ctx: click.Context) -> tuple[str, str, str]:
    obj = ctx.find_root().ensure_object(dict)
    base = obj.get("base_url") or os.environ.get("LIMNER_BASE_URL") or DEFAULT_BASE_URL
    key = obj.get("api_key") or os.environ.get("LIMNER_API_KEY") or "limner"
    return base.rstrip("/"), key, obj.get("format", "json")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@client_options
@click.version_option(__version__, "-v", "--version")
@click.pass_context
def main(ctx: click.Context, base_url: str | None, api_key: str | None,
         output_format_: str | None) -> None:
    """limner: OpenAI-compatible image generation on your own machine."""
    _remember(ctx, base_url, api_key, output_format_)


# serve ------------------------------------------------------------------------------------
@main.command()
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1: this machine "
              "only; 0.0.0.0 exposes the service to the network).")
@click.option("--port", default=None, type=int, help="Port (default 8000).")
@click.option("--api-key", "api_keys", multiple=True, metavar="KEY",
              help="Accept this API key (repeatable; env LIMNER_API_KEYS, comma-separated). "
                   "With none, any key is accepted.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="A TOML config file.")
@click.option("--model", default=None, metavar="NAME_OR_PATH",
              help="Serve a diffusers pipeline instead of the embedded model, "
                   "under every OpenAI model name: a preset name (see `limner models "
                   "presets`), a local folder, or a hub id.")
@click.option("--public-base-url", default=None, metavar="URL",
              help="Base of the `url`s handed out, e.g. behind a reverse proxy.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where image files and the URL signing key live.")
@click.option("--threads", default=None, type=int, help="CPU threads for the model.")
@click.option("--max-connections", default=None, type=click.IntRange(min=1),
              help="Open connections at most; more are answered 503 (default 1000).")
@click.option("--header-timeout", "header_timeout_s", default=None,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds for a request's head to arrive (default 10).")
@click.option("--body-timeout", "body_timeout_s", default=None,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds for a request's body to arrive after its head (default 60).")
@click.option("--keep-alive-timeout", "keep_alive_timeout_s", default=None,
              type=click.FloatRange(min=1), help="Seconds an idle connection is kept open "
              "between requests (default 5).")
@click.option("--ray", "on_ray", is_flag=True,
              help="Serve through Ray Serve: each engine a deployment (needs limner[ray]).")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="The Ray cluster to join (default RAY_ADDRESS, else a local instance).")
@click.option("--replicas", default=None, type=click.IntRange(min=1),
              help="With --ray: replicas of every engine (else each engine's config).")
@click.option("--log-level", default="info",
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(host: str | None, port: int | None, api_keys: tuple[str, ...],
          config_file: Path | None, model: str | None, public_base_url: str | None,
          data_dir: Path | None, threads: int | None, max_connections: int | None,
          header_timeout_s: float | None, body_timeout_s: float | None,
          keep_alive_timeout_s: float | None, on_ray: bool, ray_address: str | None,
          replicas: int | None, log_level: str) -> None:
    """Run the HTTP service."""
    from limner.allocator import keep_freed_memory

    keep_freed_memory()  # first: before any thread allocates (see allocator)
    from limner.config import EngineConfig, load_settings
    from limner.engines.diffusers.presets import resolve_model
    from limner.server.app import create_app
    from limner.server.runner import LimnerServer, bind, uvicorn_config

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {"host": host, "port": port, "api_keys": api_keys,
                                 "public_base_url": public_base_url, "data_dir": data_dir,
                                 "threads": threads, "max_connections": max_connections,
                                 "header_timeout_s": header_timeout_s,
                                 "body_timeout_s": body_timeout_s,
                                 "keep_alive_timeout_s": keep_alive_timeout_s}
    try:
        settings = load_settings(config_file, **overrides)
    except (ValueError, KeyError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if on_ray or ray_address or replicas:
        _serve_on_ray(settings, model, ray_address, replicas)
        return
    try:
        listener = bind(settings.host, settings.port)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from exc
    try:
        if model is not None:
            name, source, options = resolve_model(model, settings.data_dir)
            settings = dataclasses.replace(
                settings, engines=(EngineConfig(name, "diffusers", source, options),),
                default_engine=name)
        app = create_app(settings)
    except (ValueError, KeyError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    exposure = "this machine only" if settings.host in ("127.0.0.1", "localhost", "::1") \
        else "the network"
    auth = f"{len(settings.api_keys)} API key(s)" if settings.api_keys else \
        "no API keys (any key is accepted)"
    click.echo(f"limner {__version__} on http://{settings.host}:{settings.port} "
               f"(reachable from {exposure}; {auth}); OpenAI base URL: "
               f"{settings.base_url}/v1; playground: {settings.base_url}/", err=True)
    LimnerServer(uvicorn_config(app, settings), app).run(sockets=[listener])
    click.echo("limner stopped", err=True)


def _serve_on_ray(settings: Settings, model: str | None, address: str | None,
                  replicas: int | None) -> None:
    """`serve --ray`: the same application, each engine a Ray Serve deployment."""
    import importlib.util

    from limner.config import EngineConfig
    from limner.engines.diffusers.presets import resolve_model

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        raise click.ClickException("--ray needs Ray Serve, which is not installed: "
                                   "pip install 'limner[ray]'")
    from limner.ray.runner import run

    if model is not None:
        name, source, options = resolve_model(model, settings.data_dir)
        settings = dataclasses.replace(
            settings, engines=(EngineConfig(name, "diffusers", source, options),),
            default_engine=name)
    click.echo(f"limner {__version__} on Ray Serve: starting; OpenAI base URL: "
               f"{settings.base_url}/v1", err=True)
    run(settings, address=address, replicas=replicas,
        on_ready=f"limner is ready on Ray Serve at {settings.base_url}/v1")
    click.echo("limner stopped", err=True)


# images generate ----------------------------------------------------------------------------
@main.group()
@client_options
@click.pass_context
def images(ctx: click.Context, base_url: str | None, api_key: str | None,
           output_format_: str | None) -> None:
    """Image commands (client side: they talk to a running server)."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, listed in the order `--help` shows them."""
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func
    return apply


# The options generations and edits share (the server checks both the same way).
_model = click.option("--model", default=None)
_n = click.option("--n", type=int, default=None, help="How many images (1-10).")
_size = click.option("--size", default=None,
                     help="auto, 1024x1024, 1536x1024, ... or WIDTHxHEIGHT.")
_quality = click.option(
    "--quality", default=None,
    help="low, medium, high, auto; xhigh and max (gpt-image-2.5); standard/hd (dall-e).")
_complexity = click.option("--complexity", default=None, help="low, medium or high: one level "
                           "less or more work than --quality asks.")
_background = click.option("--background", default=None, help="transparent, opaque or auto.")
_response_format = click.option("--response-format", default=None, help="b64_json or url.")
_user = click.option("--user", default=None,
                     help="End-user id (deprecated: --safety-identifier).")
_output = click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write the images here (numbered name-1.png, name-2.png ... for n>1).")
_rest = _options(
    click.option("--output-format", default=None, help="png, jpeg, webp, gif or svg."),
    click.option("--frame-count", type=int, default=None, help="gif: frames, 2-16 (default 9)."),
    click.option("--frame-duration-ms", type=int, default=None,
                 help="gif: each frame's time, in 10 ms steps (default 200)."),
    click.option("--svg-model", default=None,
                 help="svg: the SVG author model, echoed in svg_usage."),
    click.option("--output-compression", type=int, default=None, help="0-100 (jpeg, webp)."),
    _response_format,
    click.option("--moderation", default=None, help="auto or low."),
    click.option("--partial-images", type=int, default=None, help="0-3 (with --stream)."),
    click.option("--stream", is_flag=True, default=None, help="Stream partial images."),
    click.option("--safety-identifier", default=None,
                 help="End-user id (a hash), recorded in the server's log; wins over --user."),
    _user,
    click.option("--seed", type=int, default=None,
                 help="limner extension: reproducible images."),
    click.option("--steps", type=int, default=None,
                 help="limner extension: denoising steps, instead of --quality's."),
    click.option("--guidance-scale", type=float, default=None,
                 help="limner extension: classifier-free guidance (0-30)."),
    click.option("--negative-prompt", default=None,
                 help="limner extension: what the picture should not show."),
    click.option("--scheduler", default=None,
                 help="limner extension: euler, euler_a, dpm++, ddim or lcm."),
    _output,
    client_options,
)
_input_file = click.Path(exists=True, dir_okay=False, path_type=Path)
FilePart = tuple[str, tuple[str, bytes, str]]
"""A multipart file part as httpx takes it: field, (file name, bytes, content type)."""
_CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                  ".webp": "image/webp", ".gif": "image/gif"}


@images.command()
@click.option("--prompt", required=True, help="What to draw.")
@_options(_model, _n, _size, _quality, _complexity)
@click.option("--style", default=None, help="vivid or natural (dall-e-3).")
@_background
@_rest
@click.pass_context
def generate(ctx: click.Context, /, output: Path | None, base_url: str | None,
             api_key: str | None, output_format_: str | None, **fields: Any) -> None:
    """Generate images: POST /images/generations."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    _send(ctx, "generations", _body(fields), None, output)


@images.command()
@click.option("--image", "images_", multiple=True, required=True, type=_input_file,
              help="The picture to edit (PNG, WebP or JPEG); repeat for several (at most "
                   "16; dall-e-2: one square PNG).")
@click.option("--mask", type=_input_file, default=None, help="A PNG the size of the first "
              "image; its fully transparent pixels are redrawn.")
@click.option("--prompt", required=True, help="What the edited picture should show.")
@_options(_model, _n, _size, _quality, _complexity, _background)
@click.option("--input-fidelity", default=None,
              help="high or low: how closely to keep the input's features (GPT models).")
@_rest
@click.pass_context
def edit(ctx: click.Context, /, images_: tuple[Path, ...], mask: Path | None,
         output: Path | None, base_url: str | None, api_key: str | None,
         output_format_: str | None, **fields: Any) -> None:
    """Edit or extend images: POST /images/edits (multipart, as the official SDK sends it)."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    name = "image" if len(images_) == 1 else "image[]"
    files = [_file_part(name, path) for path in images_]
    if mask is not None:
        files.append(_file_part("mask", mask))
    _send(ctx, "edits", _body(fields), files, output)


@images.command("create-variation")
@click.option("--image", required=True, type=_input_file,
              help="A square PNG under 4 MB.")
@_options(click.option("--model", default=None, help="dall-e-2 (the default)."), _n,
          click.option("--size", default=None, help="256x256, 512x512 or 1024x1024."),
          _response_format, click.option("--user", default=None, help="End-user id."),
          _output, client_options)
@click.pass_context
def create_variation(ctx: click.Context, /, image: Path, output: Path | None,
                     base_url: str | None, api_key: str | None, output_format_: str | None,
                     **fields: Any) -> None:
    """Variations of an image (dall-e-2): POST /images/variations."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    _send(ctx, "variations", _body(fields), [_file_part("image", image)], output)


def _body(fields: dict[str, Any]) -> dict[str, Any]:
    """The request body: only the flags given, `--svg-model` as `svg.model`."""
    svg_model = fields.pop("svg_model", None)
    body = {name: value for name, value in fields.items() if value is not None}
    if svg_model is not None:
        body["svg"] = {"model": svg_model}
    return body


def _send(ctx: click.Context, endpoint: str, body: dict[str, Any],
          files: list[FilePart] | None, output: Path | None) -> None:
    """POSTs `body` to /images/`endpoint` (as JSON, or as multipart with `files`), prints
    the answer (each event when streaming) and writes its images to `output`."""
    base, key, fmt = _client_settings(ctx)
    url = f"{base}/images/{endpoint}"
    headers = {"authorization": f"Bearer {key}", "user-agent": f"limner-cli/{__version__}"}
    content: dict[str, Any] = {"json": body} if files is None else {
        "data": _form_fields(body), "files": files}
    timeout = httpx.Timeout(600, connect=5)
    try:
        with httpx.Client(timeout=timeout) as client:
            if body.get("stream"):
                _stream(client, url, headers, content, body, output, fmt)
            else:
                response = client.post(url, headers=headers, **content)
                _fail_on_error(response)
                payload = response.json()
                written = _write_images(client, payload.get("data", []), output,
                                        body.get("output_format", "png"))
                _print(_shorten(payload, written) if output else payload, fmt, response.content)
                for path in written:
                    click.echo(f"wrote {path}", err=True)
    except httpx.HTTPError as exc:
        click.echo(f"error: could not reach {url}: {exc}", err=True)
        sys.exit(1)


def _file_part(field: str, path: Path) -> FilePart:
    """A multipart file part: the file's name, bytes, and a type guessed from its name."""
    content_type = _CONTENT_TYPES.get(path.suffix.lower()) or \
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}",
                                 param_hint=f"--{field.rstrip('[]')}") from exc
    return field, (path.name, data, content_type)


def _form_fields(body: dict[str, Any]) -> dict[str, str]:
    """Every scalar as a string field, as OpenAI's multipart takes them (`svg[model]`)."""
    def text(value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    fields: dict[str, str] = {}
    for name, value in body.items():
        if isinstance(value, dict):
            fields.update({f"{name}[{inner}]": text(v) for inner, v in value.items()})
        else:
            fields[name] = text(value)
    return fields


# Helpers ------------------------------------------------------------------------------------
def _print(payload: Any, fmt: str, raw: bytes | None = None) -> None:
    if fmt == "raw" and raw is not None:
        click.echo(raw.decode("utf-8", "replace"))
    elif fmt == "jsonl":
        click.echo(json.dumps(payload, separators=(",", ":")))
    else:
        click.echo(json.dumps(payload, indent=2))


def _fail_on_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    request = response.request
    click.echo(f'{request.method} "{request.url}": {response.status_code} '
               f"{response.reason_phrase}", err=True)
    try:
        payload = response.json()
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
    except ValueError:
        error = {"message": response.text}
    click.echo(json.dumps(error, indent=2))
    sys.exit(1)


def _output_paths(output: Path, count: int, fmt: str) -> list[Path]:
    if not output.suffix:
        output = output.with_suffix("." + fmt)
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(1, count + 1)]


def _write_images(client: httpx.Client, data: list[dict[str, Any]], output: Path | None,
                  fmt: str) -> list[Path]:
    if output is None or not data:
        return []
    paths = _output_paths(output, len(data), fmt)
    for item, path in zip(data, paths, strict=True):
        if item.get("b64_json"):
            blob = base64.b64decode(item["b64_json"])
        else:
            download = client.get(item["url"])
            download.raise_for_status()
            blob = download.content
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return paths


def _shorten(payload: dict[str, Any], written: list[Path]) -> dict[str, Any]:
    """The response as printed with -o: each b64_json replaced by where it was written."""
    shown = dict(payload)
    shown["data"] = [
        {**item, "b64_json": f"<written to {path}>"} if "b64_json" in item else item
        for item, path in zip(payload.get("data", []), written, strict=False)
    ]
    return shown


def _sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    event, data = "", list[str]()
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def _stream(client: httpx.Client, url: str, headers: dict[str, str], content: dict[str, Any],
            body: dict[str, Any], output: Path | None, fmt: str) -> None:
    """Prints each event of a streamed answer (`image_generation.*` or `image_edit.*`),
    shows progress on stderr, and writes the completed images."""
    from rich.console import Console

    console = Console(stderr=True)
    n = int(body.get("n") or 1)
    partials_each = int(body.get("partial_images") or 0)
    doing = "editing" if url.endswith("/edits") else "generating"
    finals: list[dict[str, Any]] = []
    with client.stream("POST", url, headers=headers, **content) as response:
        if not response.is_success:
            response.read()
            _fail_on_error(response)
        with console.status(f"{doing}: waiting for the first step...") as status:
            partials = 0
            for event_type, payload in _sse_events(response):
                kind = str(payload.get("type", ""))
                if event_type == "error" or kind == "error":
                    console.print(f"[red]error while {doing}:[/red] "
                                  f"{payload.get('error', {}).get('message')}")
                    click.echo(json.dumps(payload.get("error", payload), indent=2))
                    sys.exit(1)
                if kind.endswith(".partial_image"):
                    partials += 1
                    status.update(f"{doing}: partial image {partials} of "
                                  f"{partials_each * n} received")
                elif kind.endswith(".completed"):
                    finals.append(payload)
                    status.update(f"{doing}: {len(finals)} of {n} image(s) done")
                shown = payload
                if output is not None and "b64_json" in payload:
                    shown = {**payload, "b64_json": f"<{len(payload['b64_json'])} base64 chars>"}
                _print(shown, fmt if fmt != "raw" else "jsonl")
    written = _write_images(client, finals, output, body.get("output_format", "png"))
    for path in written:
        click.echo(f"wrote {path}", err=True)


def _add_commands() -> None:
    """The command groups that live in their own modules (they import this one's helpers)."""
    from limner.cli_batches import batches
    from limner.cli_models import models_command
    from limner.cli_provenance import provenance
    from limner.cli_responses import responses

    main.add_command(batches)
    main.add_command(models_command)
    main.add_command(provenance)
    main.add_command(responses)


_add_commands()
