"""Seconds per image and memory of limner's engine under several option sets, in turns.

Usage:
    python benchmarks/engine_variants.py [--models sd-turbo,sdxs-512] [--threads 2]
        [--device cpu] [--reps 3]
        [--variants '{"channels_last": false}' '{"channels_last": true}']

Each variant (a JSON object of engine options, laid over the model's preset) runs in its own
process (diffusers_speed.py's limner worker), which loads the engine and draws 512x512 images
at 1 step, a new prompt each time. The variants draw in turns, call by call, so all see the
same machine: one warm-up each, then --reps timed rounds. Reported per variant: the median,
the peak RSS (VmHWM: loading included) and the RSS after the draws (VmRSS: what serving
holds). For a comparison against plain diffusers, see diffusers_speed.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="sd-turbo,sdxs-512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", nargs="+",
                    default=['{"channels_last": false}', '{"channels_last": true}'])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "limner-bench")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from diffusers_speed import Turns
    from random_pipelines import build_pipeline, build_taesd

    taesd = build_taesd(args.root / "taesd")
    report: dict[str, Any] = {}
    for model in args.models.split(","):
        folder = build_pipeline(model, args.root)
        workers = [Turns("limner", args, model=model, folder=str(folder), taesd=str(taesd),
                         options=variant) for variant in args.variants]
        for timed in [False] + [True] * args.reps:
            for worker in workers:
                worker.draw(timed=timed)
        report[model] = {}
        for variant, worker in zip(args.variants, workers, strict=True):
            result = worker.end()
            report[model][variant] = result
            print(f"{model} {variant}: {result['seconds']:.3f} s/image "
                  f"({', '.join(f'{t:.3f}' for t in result['times'])}); peak RSS "
                  f"{result['peak_rss_mib']:.0f} MiB, after the draws "
                  f"{result['rss_mib']:.0f} MiB; load {result['load_s']:.1f} s", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
