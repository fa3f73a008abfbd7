"""A limner engine on a random-weight pipeline, as the one-process benchmarks build it
(`memory_stages.py`, `op_profile.py`): the model's preset with the options laid over it, the
weight cache under ROOT/cache, 512x512 images at 1 step."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="sd-turbo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--options", default='{"dtype": "bfloat16"}')
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "limner-bench")
    ap.add_argument("--json", type=Path, default=None)


def build(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The engine, not yet loaded, and the options it was given (the pipeline and the tiny
    decoder are built first where they are not there yet)."""
    from random_pipelines import build_pipeline, build_taesd

    from limner.engines.diffusers import DiffusersEngine
    from limner.presets import PRESETS

    folder = build_pipeline(args.model, args.root)
    taesd = build_taesd(args.root / "taesd")
    options = {**PRESETS[args.model].engine_options(), "cache_dir": str(args.root / "cache"),
               **json.loads(args.options)}
    engine = DiffusersEngine(str(folder), threads=args.threads, tiny_decoder=str(taesd),
                             device="cpu", **options)
    return engine, options


def request(take: int) -> list[Any]:
    """One image, a new prompt each take (so the prompt cache never answers)."""
    from limner.jobs import GenerationParams

    return [GenerationParams(prompt=f"a lighthouse, take {take}", seeds=(take,), width=512,
                             height=512, quality="low")]
