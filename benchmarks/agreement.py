"""Do limner's fast paths draw what diffusers' own modules draw? Each engine variant's text
embedding, UNet output and image against a float32 reference, from the same prompts and seeds.

Usage:
    python benchmarks/agreement.py [--model sd-turbo] [--threads 2] [--device cpu]
        [--draws 2] [--variants '{}' '{"dtype": "bfloat16", "prepack": false, "fuse": false}']
        [--speed-reps 3]

Speed benchmarks cannot tell a fast kernel from a wrong one, least of all with random
weights, whose pictures are noise whatever draws them. This one compares numbers. The
reference is the model's preset in float32 with every fast path off (`prepack`, `fuse` and
`channels_last`: diffusers' own modules), so each variant's error says what its dtype and its
fast paths change. Each variant is judged against its baseline: diffusers' modules in torch,
fast paths off, in the precision the variant computes in (OpenVINO's, for `backend =
"openvino"`), which this script draws too. A fast path that computes what those modules
compute adds at most a little to their rounding error.

Printed per variant and part: the relative error (||x - ref|| / ||ref||, in float32) and, for
the images, the PSNR in dB over 8-bit pixels. The verdict line says whether the text
embedding, the UNet output and the decoder output are each within twice the baseline's error
plus 1e-3 (the exit status is 1 where one is not). Variants load one after the other in this
process, on the random-weight pipeline of `benchmarks/random_pipelines.py`, with the weight
cache off so that every variant converts the same float32 files. A 2% error in the residual
sums of the packed convolutions reads 22 times the allowed error with SDXS-512 in float32.

int8 (`"quantize": "int8"`) is not rounding but a change of arithmetic, so it is judged
against fixed targets instead (issue 21): the UNet's relative error at most 2e-2 and the
image's PSNR at least 35 dB, against the float32 reference. With --speed-reps N, each int8
variant then draws in turns with the same options without int8 (each in a process of its
own, loading the IR this run cached; N timed images each after a warm-up) and its speed
ratio is printed beside its errors. Random weights only: what int8 does to a trained
model's pictures this cannot say.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_engine

REFERENCE = {"dtype": "float32", "prepack": False, "fuse": False, "channels_last": False}
"""diffusers' own modules in float32: what every variant is compared with."""
PLAIN = {"prepack": False, "fuse": False, "channels_last": False}
"""The fast paths off: laid over a variant's dtype, its baseline."""
INT8_TARGETS = {"unet_relative_error": 2e-2, "image_psnr_db": 35.0}
"""What int8 must keep against the float32 reference (issue 21)."""
QUANTIZE_KEYS = ("quantize", "quantize_samples")
CAPTURED = ("text encoder", "UNet", "decoder")
"""The parts whose first output tensor is kept and judged. The image is only reported: a
pixel's 8-bit rounding flips by one level for the smallest change of the decoder's output."""


def first_tensor(output: Any) -> Any:
    """The first tensor in a part's output (a tensor, a tuple or a diffusers output)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if hasattr(output, "values") else output
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"no tensor in {type(output).__name__}")


def draw(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, list[Any]]:
    """Load a variant, draw `args.draws` images; per part, its outputs (float32 tensors)."""
    import numpy as np
    import torch

    engine, _ = bench_engine.build(argparse.Namespace(
        model=args.model, threads=args.threads, root=args.root, device=args.device,
        options=json.dumps({"cache_weights": False, **options})))
    started = time.perf_counter()
    engine.load()
    print(f"  loaded {json.dumps(options)} in {time.perf_counter() - started:.0f} s: "
          f"{'; '.join(engine.applied)}", flush=True)
    outputs: dict[str, list[Any]] = {name: [] for name in (*CAPTURED, "image")}

    def wrap(name: str, method: Any) -> Any:
        def recorded(*a: Any, **k: Any) -> Any:
            result = method(*a, **k)
            if name in outputs:
                outputs[name].append(first_tensor(result).detach().float().cpu().clone())
            return result
        return recorded

    try:
        with bench_engine.wrapped_parts(engine.pipe, wrap):
            for take in range(args.draws):
                [[image]] = engine.generate(bench_engine.request(take))
                outputs["image"].append(torch.from_numpy(
                    np.asarray(image.convert("RGB"), dtype=np.float32)))
    finally:
        engine.close()
        del engine
        gc.collect()
    return outputs


def baseline_of(device: str, options: dict[str, Any]) -> dict[str, Any]:
    """A variant's baseline: torch's eager modules, fast paths off, in the precision the
    variant computes in (`auto` resolved as the engine resolves it; OpenVINO's too)."""
    from limner.engines.diffusers.engine import detect_platform
    from limner.engines.diffusers.options import DiffusersOptions, resolve

    asked = {k: options[k] for k in ("dtype", "backend") if k in options}
    plan = resolve(DiffusersOptions.parse({**asked, "device": device}), detect_platform())
    dtype = "bfloat16" if plan.openvino_precision == "bf16" else plan.dtype
    kept = {k: v for k, v in options.items() if k not in ("backend", "compile", *QUANTIZE_KEYS)}
    return {**kept, **PLAIN, "dtype": dtype}


def compare(outputs: dict[str, list[Any]], reference: dict[str, list[Any]]
            ) -> dict[str, dict[str, float]]:
    """Per part: the relative error against the reference over all draws; PSNR for images."""
    import torch

    report = {}
    for name, tensors in outputs.items():
        x = torch.cat([t.flatten() for t in tensors])
        ref = torch.cat([t.flatten() for t in reference[name]])
        row = {"relative_error": float((x - ref).norm() / ref.norm().clamp_min(1e-12))}
        if name == "image":
            mse = float(((x - ref) ** 2).mean())
            row["psnr_db"] = math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)
            row["max_abs"] = float((x - ref).abs().max())
        report[name] = row
    return report


def without_int8(options: dict[str, Any]) -> dict[str, Any]:
    """The same options without int8: what an int8 variant's speed is compared with."""
    return {k: v for k, v in options.items() if k not in QUANTIZE_KEYS}


def int8_verdict(rows: dict[str, dict[str, float]]) -> tuple[str, str]:
    """(verdict, its line) of an int8 variant against `INT8_TARGETS`."""
    unet, psnr = rows["UNet"]["relative_error"], rows["image"]["psnr_db"]
    met = unet <= INT8_TARGETS["unet_relative_error"] and psnr >= INT8_TARGETS["image_psnr_db"]
    verdict = "meets the int8 targets" if met else "MISSES the int8 targets"
    return verdict, (f"  {verdict}: UNet {unet:.2e} (at most "
                     f"{INT8_TARGETS['unet_relative_error']:.0e}), image {psnr:.1f} dB (at "
                     f"least {INT8_TARGETS['image_psnr_db']:.0f} dB)")


def speed_in_turns(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Seconds per image of an int8 variant and of the same options without int8, drawing
    in turns, each in a worker process of its own (`diffusers_speed.Turns`)."""
    from diffusers_speed import Turns
    from random_pipelines import build_pipeline, build_taesd

    folder = build_pipeline(args.model, args.root)
    taesd = build_taesd(args.root / "taesd")
    cache = {"cache_dir": str(args.root / "cache")}
    pair = {"int8": options, "without": without_int8(options)}
    workers = {name: Turns("limner", args, model=args.model, folder=str(folder),
                           taesd=str(taesd), options=json.dumps({**cache, **opts}))
               for name, opts in pair.items()}
    for timed in [False] + [True] * args.speed_reps:
        for worker in workers.values():
            worker.draw(timed=timed)
    results = {name: worker.end() for name, worker in workers.items()}
    return {"int8_s": results["int8"]["seconds"], "without_s": results["without"]["seconds"],
            "speedup": results["without"]["seconds"] / results["int8"]["seconds"],
            "int8_times": results["int8"]["times"],
            "without_times": results["without"]["times"],
            "int8_peak_rss_mib": results["int8"]["peak_rss_mib"],
            "without_peak_rss_mib": results["without"]["peak_rss_mib"]}


def _line(name: str, rows: dict[str, dict[str, float]]) -> str:
    parts = [f"{part} {row['relative_error']:.2e}" for part, row in rows.items()]
    image = rows["image"]
    return f"{name}: {', '.join(parts)}; image PSNR {image['psnr_db']:.1f} dB, " \
           f"max |diff| {image['max_abs']:.0f}/255"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bench_engine.add_arguments(ap)
    ap.set_defaults(root=Path(tempfile.gettempdir()) / "limner-bench")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["{}"],
                    help="JSON objects of engine options, laid over the model's preset")
    ap.add_argument("--speed-reps", type=int, default=0,
                    help="timed images of each int8 variant and of it without int8, in turns "
                         "(0: no speed)")
    args = ap.parse_args()

    reference = draw(args, REFERENCE)
    report: dict[str, Any] = {"model": args.model, "device": args.device, "variants": {}}
    baselines: dict[str, dict[str, dict[str, float]]] = {}
    verdicts = []
    for variant in args.variants:
        options = {"backend": "torch", **json.loads(variant)}  # as bench_engine builds it
        rows = compare(draw(args, options), reference)
        print(_line(variant, rows), flush=True)
        # The same dtype with the fast paths off: what rounding alone costs.
        plain = baseline_of(args.device, options)
        key = json.dumps(plain, sort_keys=True)
        if key not in baselines:
            baselines[key] = compare(reference, reference) if plain == REFERENCE \
                else compare(draw(args, plain), reference)
            print(_line(f"  baseline {key}", baselines[key]), flush=True)
        base = baselines[key]
        worst = max(rows[part]["relative_error"] / (2 * base[part]["relative_error"] + 1e-3)
                    for part in CAPTURED)
        entry: dict[str, Any] = {"error": rows, "baseline": base, "of_allowed": worst}
        if options.get("quantize") == "int8":
            verdict, line = int8_verdict(rows)
            print(line, flush=True)
            if args.speed_reps > 0:
                speed = entry["speed"] = speed_in_turns(args, options)
                print(f"  speed, in turns: {speed['int8_s']:.3f} s/image with int8, "
                      f"{speed['without_s']:.3f} s without: {speed['speedup']:.2f}x; peak RSS "
                      f"{speed['int8_peak_rss_mib']:.0f} against "
                      f"{speed['without_peak_rss_mib']:.0f} MiB", flush=True)
        else:
            verdict = "agrees" if worst <= 1 else "DISAGREES"
            print(f"  {verdict}: at most {worst:.2f} of the allowed error "
                  "(twice the baseline's, plus 1e-3)", flush=True)
        verdicts.append(verdict)
        entry["verdict"] = verdict
        report["variants"][variant] = entry
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if all(v in ("agrees", "meets the int8 targets") for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
