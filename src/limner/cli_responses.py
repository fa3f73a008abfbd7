"""`limner responses create|get|cancel`: the Responses API's image tool from a terminal.

`create` sends the prompt (and `--image` files as data URLs) with the `image_generation`
tool, and writes the picture of each `image_generation_call` to `-o`; `--previous`
continues a conversation, so a follow-up prompt edits the last picture.
"""

from __future__ import annotations

import base64
import mimetypes
import sys
from pathlib import Path
from typing import Any

import click
import httpx

from limner import __version__
from limner.cli import (
    _client_settings,
    _fail_on_error,
    _output_paths,
    _print,
    _remember,
    _sse_events,
    client_options,
)

TIMEOUT = httpx.Timeout(600, connect=5)


@click.group()
@client_options
@click.pass_context
def responses(ctx: click.Context, base_url: str | None, api_key: str | None,
              output_format_: str | None) -> None:
    """Responses API commands (client side: they talk to a running server)."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)


@responses.command("create")
@click.option("--input", "prompt", required=True, help="What to draw (or how to change it).")
@click.option("--image", "images", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A picture to edit (repeat for several).")
@click.option("--previous", default=None, metavar="ID",
              help="Continue from this response: its picture is the one edited.")
@click.option("--model", default="gpt-5", show_default=True,
              help="The response's model (a text model's name; image-only mode ignores it).")
@click.option("--image-model", default=None, help="The image tool's model.")
@click.option("--size", default=None)
@click.option("--quality", default=None)
@click.option("--output-format", default=None, help="png, jpeg, webp or gif.")
@click.option("--background", "run_in_background", is_flag=True,
              help="Answer at once with a queued response to poll (`limner responses get`).")
@click.option("--stream", is_flag=True, help="Show each event as it comes.")
@click.option("-o", "--output", default=None, type=click.Path(path_type=Path),
              help="Write the picture here.")
@client_options
@click.pass_context
def create(ctx: click.Context, /, prompt: str, images: tuple[Path, ...], previous: str | None,
           model: str, image_model: str | None, size: str | None, quality: str | None,
           output_format: str | None, run_in_background: bool, stream: bool,
           output: Path | None, base_url: str | None, api_key: str | None,
           output_format_: str | None) -> None:
    """Draw with the image_generation tool: POST /responses."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    tool: dict[str, Any] = {"type": "image_generation"}
    for name, value in (("model", image_model), ("size", size), ("quality", quality),
                        ("output_format", output_format)):
        if value is not None:
            tool[name] = value
    content: list[dict[str, Any]] = [{"type": "input_text", "text": prompt}]
    content += [{"type": "input_image", "image_url": _data_url(path)} for path in images]
    body: dict[str, Any] = {"model": model, "tools": [tool],
                            "input": [{"role": "user", "content": content}]}
    if previous:
        body["previous_response_id"] = previous
    if run_in_background:
        body["background"] = True
    if stream:
        body["stream"] = True
    answer = _call(ctx, "POST", "/responses", body, stream=stream)
    _finish(ctx, answer, output, output_format or "png")


@responses.command("get")
@click.argument("response_id")
@click.option("-o", "--output", default=None, type=click.Path(path_type=Path),
              help="Write its picture here, once it has one.")
@click.pass_context
def get(ctx: click.Context, response_id: str, output: Path | None) -> None:
    """A stored response (a background one's progress): GET /responses/ID."""
    _finish(ctx, _call(ctx, "GET", f"/responses/{response_id}"), output, "png")


@responses.command("cancel")
@click.argument("response_id")
@click.pass_context
def cancel(ctx: click.Context, response_id: str) -> None:
    """Stop a background response: POST /responses/ID/cancel."""
    _finish(ctx, _call(ctx, "POST", f"/responses/{response_id}/cancel"), None, "png")


def _call(ctx: click.Context, method: str, path: str, body: dict[str, Any] | None = None,
          *, stream: bool = False) -> dict[str, Any]:
    base, key, fmt = _client_settings(ctx)
    headers = {"authorization": f"Bearer {key}", "user-agent": f"limner-cli/{__version__}"}
    try:
        with httpx.Client(timeout=TIMEOUT) as client:
            if not stream:
                response = client.request(method, base + path, headers=headers, json=body)
                _fail_on_error(response)
                answer: dict[str, Any] = response.json()
                return answer
            final: dict[str, Any] = {}
            with client.stream(method, base + path, headers=headers, json=body) as response:
                _fail_on_error(response)
                for kind, event in _sse_events(response):
                    shown = {k: "<base64>" if k == "partial_image_b64" else v
                             for k, v in event.items() if k != "response"}
                    click.echo(f"{kind} {shown.get('sequence_number', '')}", err=True)
                    if kind == "error":
                        _print(event, fmt)
                        sys.exit(1)
                    if "response" in event:
                        final = event["response"]
            return final
    except httpx.HTTPError as exc:
        click.echo(f"error: could not reach {base + path}: {exc}", err=True)
        sys.exit(1)


def _finish(ctx: click.Context, answer: dict[str, Any], output: Path | None,
            fmt: str) -> None:
    """Prints the response (each picture's base64 shortened when written) and writes the
    pictures of its image_generation_calls."""
    _, _, print_format = _client_settings(ctx)
    calls = [item for item in answer.get("output", [])
             if item.get("type") == "image_generation_call" and item.get("result")]
    written: list[Path] = []
    if output is not None and calls:
        written = _output_paths(output, len(calls), calls[0].get("output_format") or fmt)
        for call, path in zip(calls, written, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(call["result"]))
            call["result"] = f"<written to {path}>"
    _print(answer, print_format)
    for path in written:
        click.echo(f"wrote {path}", err=True)
    if answer.get("status") == "failed":
        sys.exit(1)


def _data_url(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"
