"""`limner models`: list the server's models, load and unload them (admin key), list
their adapters; fetch presets and LoRAs into the data folder."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import httpx

from limner.cli import _client_settings, _fail_on_error, _print, _remember, client_options

LOAD_TIMEOUT_S = 1800.0
"""A large model's first load (with a weight cache or OpenVINO to build) takes minutes."""


@click.group("models", invoke_without_command=True)
@client_options
@click.pass_context
def models_command(ctx: click.Context, base_url: str | None, api_key: str | None,
                   output_format_: str | None) -> None:
    """List the server's models (GET /models); `load`, `unload` and `loras` ask the server,
    `pull` and `presets` manage local files."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    if ctx.invoked_subcommand is None:
        _list_models(ctx)


@models_command.command("list")
@client_options
@click.pass_context
def models_list(ctx: click.Context, base_url: str | None, api_key: str | None,
                output_format_: str | None) -> None:
    """List the server's models: GET /models."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    _list_models(ctx)


@models_command.command("presets")
def models_presets() -> None:
    """The well-known models `serve --model NAME` and `models pull NAME` know: family, native
    size, steps (low/medium/high quality), guidance, GB of memory in bf16 (RAM to run on the
    CPU, GPU memory with no offload; estimates from parameter counts), licence and hub id."""
    from limner.engines.diffusers.presets import PRESETS

    rows = [("name", "family", "size", "steps", "cfg", "RAM", "GPU", "licence", "repo")]
    for preset in PRESETS.values():
        steps = "/".join(str(preset.steps[q]) for q in ("low", "medium", "high"))
        rows.append((preset.name, preset.family, str(preset.native_size), steps,
                     f"{preset.guidance:g}", f"{preset.memory_cpu_gb:g}",
                     f"{preset.memory_gpu_gb:g}", preset.licence, preset.repo))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = {2, 4, 5, 6}
    for row in rows:
        cells = [cell.rjust(width) if i in numeric else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
        click.echo(" ".join(cells).rstrip())


@models_command.command("pull")
@click.argument("name")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where models and adapters are kept (DATA_DIR/models, DATA_DIR/loras).")
@click.option("--source", default=None, type=click.Path(exists=True, path_type=Path),
              help="Copy from this local folder (or, with --lora, file) instead of "
                   "downloading.")
@click.option("--lora", "as_lora", is_flag=True,
              help="NAME is a LoRA's hub id (or, with --source, the name to give it): saved "
                   "as DATA_DIR/loras/NAME.safetensors.")
@click.option("--file", "weight_file", default=None,
              help="With --lora: which .safetensors of the repository (where it has several).")
@click.option("--as", "saved_as", default=None,
              help="With --lora: the adapter's name (default: the repository's name).")
def models_pull(name: str, data_dir: Path | None, source: Path | None, as_lora: bool,
                weight_file: str | None, saved_as: str | None) -> None:
    """Fetch a preset's weights once, so `serve --model NAME` needs no network; with
    `--lora`, an adapter into DATA_DIR/loras, offered by the running server at once."""
    from limner.config import load_settings

    settings = load_settings(data_dir=data_dir)
    if as_lora:
        from limner.lora_pull import pull_lora

        try:
            target = pull_lora(name, settings.data_dir / "loras", source=source,
                               filename=weight_file, name=saved_as)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"could not fetch the LoRA {name}: {exc}") from exc
        click.echo(f"{target.stem}: adapter in {target}; ask for it with "
                   f'"lora": [{{"name": "{target.stem}"}}]', err=True)
        return
    from limner.engines.diffusers.presets import PRESETS, pull

    preset = PRESETS.get(name)
    if preset is None:
        raise click.BadParameter(f"unknown preset {name!r}; known: {', '.join(PRESETS)} "
                                 "(a LoRA: --lora)", param_hint="NAME")
    if source is not None and not source.is_dir():
        raise click.BadParameter(f"{source} is not a folder", param_hint="--source")
    try:
        target = pull(preset, settings.data_dir, source)
    except Exception as exc:
        raise click.ClickException(f"could not fetch {preset.repo}: {exc}") from exc
    click.echo(f"{preset.name}: weights in {target}; serve with `limner serve --model "
               f"{preset.name}`", err=True)


@models_command.command("load")
@click.argument("model")
@client_options
@click.pass_context
def models_load(ctx: click.Context, model: str, base_url: str | None, api_key: str | None,
                output_format_: str | None) -> None:
    """Load a model now (admin key): POST /models/MODEL/load; waits until it is ready."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    _admin_call(ctx, model, "load")


@models_command.command("unload")
@click.argument("model")
@client_options
@click.pass_context
def models_unload(ctx: click.Context, model: str, base_url: str | None,
                  api_key: str | None, output_format_: str | None) -> None:
    """Free a model's memory (admin key): POST /models/MODEL/unload."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    _admin_call(ctx, model, "unload")


@models_command.command("loras")
@client_options
@click.pass_context
def models_loras(ctx: click.Context, base_url: str | None, api_key: str | None,
                 output_format_: str | None) -> None:
    """The adapters each model takes per request (GET /models), by engine."""
    _remember(ctx.find_root(), base_url, api_key, output_format_)
    base, key, fmt = _client_settings(ctx)
    response = _get(f"{base}/models", key)
    engines: dict[str, list[str]] = {}
    for model in response.json()["data"]:
        engines.setdefault(model.get("engine") or model["id"], model.get("adapters") or [])
    _print(engines, fmt)


def _admin_call(ctx: click.Context, model: str, action: str) -> None:
    base, key, fmt = _client_settings(ctx)
    try:
        response = httpx.post(f"{base}/models/{model}/{action}",
                              headers={"authorization": f"Bearer {key}"},
                              timeout=LOAD_TIMEOUT_S)
    except httpx.HTTPError as exc:
        click.echo(f"error: could not reach {base}: {exc}", err=True)
        sys.exit(1)
    _fail_on_error(response)
    _print(response.json(), fmt, response.content)


def _get(url: str, key: str) -> httpx.Response:
    try:
        response = httpx.get(url, headers={"authorization": f"Bearer {key}"}, timeout=30)
    except httpx.HTTPError as exc:
        click.echo(f"error: could not reach {url}: {exc}", err=True)
        sys.exit(1)
    _fail_on_error(response)
    return response


def _list_models(ctx: click.Context) -> None:
    base, key, fmt = _client_settings(ctx)
    response = _get(f"{base}/models", key)
    _print(response.json(), fmt, response.content)
    click.echo("Every OpenAI model name is served by the embedded model unless configured "
               "otherwise; what it can draw: docs/MODEL_CARD.md", err=True)
