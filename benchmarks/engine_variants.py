"""Seconds per image and memory of limner's engine under several option sets, one run.

Usage:
    python benchmarks/engine_variants.py [--models sd-turbo,sdxs-512] [--threads 2]
        [--device cpu] [--reps 3] [--variants '{"channels_last": false}' '{}']

Each variant (a JSON object of engine options, laid over the model's preset) runs in its own
process, which loads the engine, draws one warm-up image and then --reps timed ones (512x512,
1 step, a new prompt each time), and reports the median, the peak RSS (ru_maxrss: loading
included) and the RSS after the draws (VmRSS: what serving holds). Variants run in turns,
model by model. For a comparison against plain diffusers, see diffusers_speed.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _vm_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import resource

    from limner.engines.diffusers import DiffusersEngine
    from limner.jobs import GenerationParams
    from limner.presets import PRESETS

    options = {**PRESETS[args.model].engine_options(), **json.loads(args.variant)}
    engine = DiffusersEngine(args.folder, threads=args.threads, tiny_decoder=args.taesd,
                             device=args.device, **options)
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    times = []
    for index in range(args.reps + 1):
        params = GenerationParams(prompt=f"a photo of a red fox in the snow, take {index}",
                                  seeds=(index,), width=512, height=512, quality="low")
        t0 = time.perf_counter()
        engine.generate([params])
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times[1:]), "times": times[1:], "load_s": load_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_mib": _vm_rss_mib()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="sd-turbo,sdxs-512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=['{"channels_last": false}', "{}"])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "limner-bench")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--taesd", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0

    from random_pipelines import build_pipeline, build_taesd

    taesd = build_taesd(args.root / "taesd")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    report: dict[str, Any] = {}
    for model in args.models.split(","):
        folder = build_pipeline(model, args.root)
        report[model] = {}
        for variant in args.variants:
            command = [sys.executable, __file__, "--worker", "--model", model,
                       "--folder", str(folder), "--taesd", str(taesd), "--variant", variant,
                       "--threads", str(args.threads), "--device", args.device,
                       "--reps", str(args.reps)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if not lines:
                print(f"{model} {variant}: failed\n{done.stderr[-2000:]}", flush=True)
                continue
            result = json.loads(lines[-1][7:])
            report[model][variant] = result
            print(f"{model} {variant}: {result['seconds']:.3f} s/image "
                  f"({', '.join(f'{t:.3f}' for t in result['times'])}); peak RSS "
                  f"{result['peak_rss_mib']:.0f} MiB, after the draws "
                  f"{result['rss_after_mib']:.0f} MiB; load {result['load_s']:.1f} s",
                  flush=True)
            if args.json is not None:
                args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
