"""A limner engine on a random-weight pipeline, as the one-process benchmarks build it
(`memory_stages.py`, `op_profile.py`): the model's preset with the options laid over it, the
weight cache under ROOT/cache, 512x512 images at 1 step."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARTS = (("text_encoder", "forward", "text encoder"), ("unet", "forward", "UNet"),
         ("vae", "decode", "decoder"))
"""The parts of an image worth telling apart: (pipeline attribute, method, name)."""


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="sd-turbo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--options", default='{"dtype": "bfloat16"}')
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "limner-bench")
    ap.add_argument("--json", type=Path, default=None)


def malloc_as_server(options: dict[str, Any]) -> dict[str, Any]:
    """Set glibc's malloc up as `limner serve` does (`allocator`), or leave it alone where
    `options` says `"malloc": "system"`; returns the engine options without that key. Call
    it before torch is imported: a thread picks its malloc arena at its first allocation."""
    from limner.allocator import keep_freed_memory

    options = dict(options)
    if options.pop("malloc", "tuned") == "system":
        os.environ["LIMNER_MALLOC"] = "system"
    keep_freed_memory()
    return options


def build(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The engine, not yet loaded, and the options it was given (the pipeline and the tiny
    decoder are built first where they are not there yet). glibc's malloc is set up by
    `malloc_as_server` first."""
    given = json.loads(args.options)
    engine_options = malloc_as_server(given)
    from random_pipelines import build_pipeline, build_taesd

    from limner.engines.diffusers import DiffusersEngine
    from limner.engines.diffusers.presets import PRESETS

    folder = build_pipeline(args.model, args.root)
    taesd = build_taesd(args.root / "taesd")
    # These benchmarks time and check torch's engine unless a variant names a backend: the
    # engine's own `auto` would take OpenVINO wherever it is installed.
    options = {"backend": "torch", **PRESETS[args.model].engine_options(),
               "cache_dir": str(args.root / "cache"), **engine_options}
    engine = DiffusersEngine(str(folder), threads=args.threads, tiny_decoder=str(taesd),
                             device=getattr(args, "device", "cpu"), **options)
    return engine, {**options, "malloc": given.get("malloc", "tuned")}


def request(take: int) -> list[Any]:
    """One image, a new prompt each take (so the prompt cache never answers)."""
    from limner.jobs import GenerationParams

    return [GenerationParams(prompt=f"a lighthouse, take {take}", seeds=(take,), width=512,
                             height=512, quality="low")]


@contextmanager
def wrapped_parts(pipe: Any, wrap: Callable[[str, Any], Any]) -> Iterator[None]:
    """Within the block, each part's method is `wrap(name, method)`; afterwards the class's
    own method again."""
    targets = [(getattr(pipe, attribute), method, name) for attribute, method, name in PARTS]
    for target, method, name in targets:
        setattr(target, method, wrap(name, getattr(target, method)))
    try:
        yield
    finally:
        for target, method, _ in targets:
            delattr(target, method)
