"""`limner batches create|get|list|cancel|results`: the Batch API from the command line.

`create` uploads the JSONL file (`POST /files`, purpose `batch`) and creates the batch;
`results` downloads its output and error files and, with `-o`, writes each answered line's
images as files named by the line's `custom_id`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click
import httpx

from limner import __version__
from limner.cli import (
    _client_settings,
    _fail_on_error,
    _print,
    _remember,
    _write_images,
    client_options,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
"""A custom_id becomes a file name: anything else (dots, slashes) would escape or rename."""


@click.group()
@client_options
@click.pass_context
def batches(ctx: click.Context, base_url: str | None, api_key: str | None,
            output_format_: str | None) -> None:
    """Batch commands (client side: they talk to a running server)."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)


@batches.command()
@click.option("--file", "input_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The JSONL of requests: custom_id, method, url, body on each line.")
@click.option("--endpoint", default="/v1/images/generations", show_default=True,
              type=click.Choice(["/v1/images/generations", "/v1/images/edits"]),
              help="The endpoint every line's url names.")
@click.option("--metadata", multiple=True, metavar="KEY=VALUE",
              help="A metadata pair (repeatable, at most 16).")
@client_options
@click.pass_context
def create(ctx: click.Context, input_file: Path, endpoint: str, metadata: tuple[str, ...],
           base_url: str | None, api_key: str | None, output_format_: str | None) -> None:
    """Upload the file and create a batch of it: POST /files, then POST /batches."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    pairs: dict[str, str] = {}
    for item in metadata:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}",
                                     param_hint="--metadata")
        pairs[key] = value
    try:
        data = input_file.read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {input_file}: {exc.strerror or exc}",
                                 param_hint="--file") from exc
    with _client(ctx) as client:
        uploaded = _call(client, "POST", "/files", data={"purpose": "batch"},
                         files={"file": (input_file.name, data, "application/jsonl")})
        body: dict[str, Any] = {"input_file_id": uploaded["id"], "endpoint": endpoint,
                                "completion_window": "24h"}
        if pairs:
            body["metadata"] = pairs
        _show(ctx, _call(client, "POST", "/batches", json=body))


@batches.command()
@click.argument("batch_id")
@client_options
@click.pass_context
def get(ctx: click.Context, batch_id: str, base_url: str | None, api_key: str | None,
        output_format_: str | None) -> None:
    """A batch's status and counts: GET /batches/ID."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    with _client(ctx) as client:
        _show(ctx, _call(client, "GET", f"/batches/{batch_id}"))


@batches.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=None, help="At most this many "
              "(1-100, default 20).")
@click.option("--after", default=None, metavar="BATCH_ID", help="The page after this batch.")
@client_options
@click.pass_context
def list_(ctx: click.Context, limit: int | None, after: str | None, base_url: str | None,
          api_key: str | None, output_format_: str | None) -> None:
    """Your batches, newest first: GET /batches."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    params = {k: v for k, v in (("limit", limit), ("after", after)) if v is not None}
    with _client(ctx) as client:
        _show(ctx, _call(client, "GET", "/batches", params=params))


@batches.command()
@click.argument("batch_id")
@client_options
@click.pass_context
def cancel(ctx: click.Context, batch_id: str, base_url: str | None, api_key: str | None,
           output_format_: str | None) -> None:
    """Stop a batch; what was answered stays in its files: POST /batches/ID/cancel."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    with _client(ctx) as client:
        _show(ctx, _call(client, "POST", f"/batches/{batch_id}/cancel"))


@batches.command()
@click.argument("batch_id")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Write output.jsonl, errors.jsonl and each line's images "
              "(CUSTOM_ID.png, CUSTOM_ID-1.png ... for n>1) into this folder.")
@client_options
@click.pass_context
def results(ctx: click.Context, batch_id: str, output: Path | None, base_url: str | None,
            api_key: str | None, output_format_: str | None) -> None:
    """A batch's answers: its output and error files' lines, printed or written."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    with _client(ctx) as client:
        batch = _call(client, "GET", f"/batches/{batch_id}")
        files = {"output.jsonl": batch.get("output_file_id"),
                 "errors.jsonl": batch.get("error_file_id")}
        if batch.get("status") not in ("completed", "failed", "expired", "cancelled"):
            click.echo(f"batch {batch_id} is {batch.get('status')}: no results yet", err=True)
            sys.exit(1)
        for name, file_id in files.items():
            if file_id is None:
                continue
            response = client.get(f"/files/{file_id}/content")
            _fail_on_error(response)
            if output is None:
                click.echo(response.text, nl=False)
                continue
            output.mkdir(parents=True, exist_ok=True)
            (output / name).write_bytes(response.content)
            click.echo(f"wrote {output / name}", err=True)
            if name == "output.jsonl":
                _write_line_images(client, response.text, output)


def _write_line_images(client: httpx.Client, text: str, folder: Path) -> None:
    for raw in text.splitlines():
        item = json.loads(raw)
        body = item["response"]["body"]
        name = _UNSAFE.sub("_", item["custom_id"]) or "line"
        for path in _write_images(client, body.get("data", []), folder / name,
                                  body.get("output_format", "png")):
            click.echo(f"wrote {path}", err=True)


def _client(ctx: click.Context) -> httpx.Client:
    base, key, _ = _client_settings(ctx)
    return httpx.Client(base_url=base, timeout=httpx.Timeout(600, connect=5), headers={
        "authorization": f"Bearer {key}", "user-agent": f"limner-cli/{__version__}"})


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """The JSON answer; an error prints its error object and exits 1."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        click.echo(f"error: could not reach {client.base_url}: {exc}", err=True)
        sys.exit(1)
    _fail_on_error(response)
    return response.json()


def _show(ctx: click.Context, payload: Any) -> None:
    _, _, fmt = _client_settings(ctx)
    _print(payload, fmt)
