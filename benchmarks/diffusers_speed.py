"""Seconds per image: plain diffusers against limner's engine and server, from one run.

Usage:
    python benchmarks/diffusers_speed.py [--models sd-turbo,sdxs-512] [--threads 2]
        [--reps 3] [--plain-reps N] [--http-seconds 40] [--backends torch,openvino,torch-compile]
        [--parts engines,http,overhead] [--root /tmp/limner-bench] [--json out.json]
        [--device cpu|cuda]

Builds SD-Turbo and SDXS-512 with random weights from the real architecture configs in
benchmarks/configs (once, into --root), then prints:

1. the machine: CPU, bf16 fast path or not, measured matmul peak (fp32, bf16) at --threads
   (with --device cuda: the GPU, and its fp32, fp16 and bf16 matmul peak);
2. per model, 512x512, 1 step, batch 1: seconds per image for a plain diffusers pipeline
   with default settings (`StableDiffusionPipeline.from_pretrained(folder)`: fp32, the
   model's own decoder, the model card's 1 step and guidance 0; moved to the GPU
   with --device cuda) and for limner's DiffusersEngine with the model's preset (bf16 where
   the CPU has it, fp16 on CUDA, tiny decoder), for each of --backends (torch-compile:MODE
   picks a torch.compile mode), their
   ratio, FLOPs per image and the fraction of the matmul peak of the engine's dtype, the
   cost of one partial image, and each one's peak memory (each runs in its own process; on
   CUDA also the peak GPU memory torch allocated);
3. through the HTTP server (`limner serve`, SD-Turbo preset) with 1, 4 and 8 concurrent
   clients: requests answered by status, images/s, p50/p99 latency, server peak memory;
4. the server's own overhead per request with the embedded model: client-observed latency
   minus the engine and encode time the server reports in /metrics, one client at a time.

Each figure is the median of --reps timed calls after one warm-up (plain diffusers: of all
its timed calls, --plain-reps per backend). The plain pipeline and limner's engine run in two
processes that draw in turns, call by call, so both see the same machine (a shared VM's speed
drifts by tens of percent over minutes) and their ratio is fair.
Close other work first: torch with 2 threads slows down badly when another process holds a
core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

import bench_engine  # noqa: E402

PROMPT = "a photo of a red fox in the snow"


# Workers: each runs in its own process so its peak memory is its own. ------------------
def _peak_rss_mib() -> float:
    """This process's own peak RSS. Not ru_maxrss where /proc has VmHWM: Linux carries
    ru_maxrss over fork and exec, so a worker would report its parent's peak (building the
    random SD-Turbo pipeline: 5.8 GiB) whenever that was higher than its own."""
    from limner.testing.load import memory_mib

    own = memory_mib("self", "VmHWM")
    return own if own is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_time(fn: Any, reps: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _peak_memory(device: str) -> dict[str, float | None]:
    from limner.testing.load import memory_mib

    # The RSS now, after the draws, as against the peak, which loading may set.
    out: dict[str, float | None] = {"peak_rss_mib": _peak_rss_mib(),
                                    "rss_mib": memory_mib("self")}
    if device.startswith("cuda"):
        import torch

        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def worker_peak(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from limner.engines.cpu import cpu_has_bf16

    torch.set_num_threads(args.threads)
    out: dict[str, Any] = {}
    if args.device.startswith("cuda"):
        # fp32 is true fp32 (torch leaves TF32 off for matmul by default).
        out["gpu"] = torch.cuda.get_device_name()
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16),
                            ("bf16", torch.bfloat16)):
            n = 8192
            a = torch.randn(n, n, dtype=dtype, device=args.device)
            b = torch.randn(n, n, dtype=dtype, device=args.device)

            def product(a: Any = a, b: Any = b) -> None:
                torch.matmul(a, b)
                torch.cuda.synchronize()

            seconds, _ = _median_time(product, 10)
            out[f"{name}_gflops"] = 2 * n ** 3 / seconds / 1e9
        return out
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        # Without a bf16 fast path torch emulates it at a few GFLOP/s: a small size will do.
        n = 2048 if name == "fp32" or cpu_has_bf16() else 256
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        seconds, _ = _median_time(lambda a=a, b=b: torch.matmul(a, b), 5)
        out[f"{name}_gflops"] = 2 * n ** 3 / seconds / 1e9
    return out


def worker_plain(args: argparse.Namespace) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.folder).to(args.device)
    load_s = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    takes = iter(range(1_000_000))

    def draw() -> None:
        pipe(f"{PROMPT}, take {next(takes)}", num_inference_steps=1, guidance_scale=0.0,
             generator=torch.Generator().manual_seed(0))

    _take_turns(draw, {"load_s": load_s, "dtype": str(pipe.unet.dtype).removeprefix("torch."),
                       "decoder": type(pipe.vae).__name__}, device=args.device)


def worker_limner(args: argparse.Namespace) -> None:
    # As `limner serve` runs it: glibc's malloc set up first, the draws in a thread of their
    # own (see `_take_turns`).
    options = bench_engine.malloc_as_server(json.loads(args.options))
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from limner.engines.diffusers import DiffusersEngine
    from limner.engines.diffusers.presets import PRESETS
    from limner.jobs import GenerationParams, StepUpdate

    options = {**PRESETS[args.model].engine_options(), **options}
    engine = DiffusersEngine(args.folder, threads=args.threads, tiny_decoder=args.taesd,
                             device=args.device, **options)
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    seed = iter(range(1_000_000))

    def request() -> list[GenerationParams]:
        # A new prompt each time: the engine's prompt cache must not flatter the figures.
        index = next(seed)
        return [GenerationParams(prompt=f"{PROMPT}, take {index}", seeds=(index,), width=512,
                                 height=512, quality="low")]

    def extras() -> dict[str, Any]:
        preview_times: list[float] = []

        def on_step(update: StepUpdate) -> None:
            t = time.perf_counter()
            update.preview()
            preview_times.append(time.perf_counter() - t)

        for _ in range(3):
            engine.generate(request(), on_step)
        flops = None
        # (fp16 on a CPU runs too slowly to count; compiled graphs hide their operations.)
        counted = engine.dtype != torch.float16 or engine.device.startswith("cuda")
        if counted and engine.backend == "torch" and not engine.compile:
            counter = FlopCounterMode(display=False, custom_mapping=_attention_flops())
            with counter:
                engine.generate(request())
            flops = counter.get_total_flops()
        eager = engine.backend == "torch" and not engine.compile
        return {"preview_s": statistics.median(preview_times[1:]), "flops": flops,
                "parts_s": _part_seconds(engine, request) if eager else None}

    _take_turns_in_thread(lambda: engine.generate(request()),
                {"load_s": load_s, "dtype": str(engine.dtype).removeprefix("torch."),
                 "ov_precision": engine.ov_precision, "decoder": type(engine.pipe.vae).__name__,
                 "weights_from_cache": engine.weights_from_cache,
                 "weights_saved": engine.weights_saved,
                 "malloc": os.environ.get("LIMNER_MALLOC") or "tuned"},
                extras, device=args.device)


def _part_seconds(engine: Any, request: Any) -> dict[str, float]:
    """Seconds one image spends in the text encoder, the UNet and the decoder: where the
    rest of the time would have to come from."""
    import torch

    pipe = engine.pipe
    seconds: dict[str, float] = {}

    def timed(name: str, call: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                if engine.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    with bench_engine.wrapped_parts(pipe, timed):
        t0 = time.perf_counter()
        engine.generate(request())
        seconds["image"] = time.perf_counter() - t0
    return seconds


def _take_turns(draw: Any, info: dict[str, Any], extras: Any = None, device: str = "cpu"
                ) -> None:
    """Draw one image per `go` line on stdin, so the parent can interleave two pipelines
    call by call: both then see the same machine, and their ratio is fair."""
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "go":
            t0 = time.perf_counter()
            draw()
            print(f"TIME {time.perf_counter() - t0}", flush=True)
        elif command == "extras":
            print("EXTRAS " + json.dumps(extras() if extras else {}), flush=True)
        elif command == "end":
            print("END " + json.dumps(_peak_memory(device)), flush=True)
            return


def _take_turns_in_thread(*args: Any, **kwargs: Any) -> None:
    """`_take_turns` in a thread of its own, as the server's scheduler draws: a thread other
    than the main one allocates differently (see `limner.allocator`)."""
    worker = threading.Thread(target=_take_turns, args=args, kwargs=kwargs,
                              name="limner-engine")
    worker.start()
    worker.join()


class Turns:
    """A worker process drawing on demand (see `_take_turns`)."""

    def __init__(self, kind: str, args: argparse.Namespace, **extra: str) -> None:
        command, env = _worker_command(kind, args, extra)
        self.kind = kind
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.info: dict[str, Any] = self._wait("READY")
        self.times: list[float] = []

    def _wait(self, tag: str) -> Any:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
        raise SystemExit(f"worker {self.kind} exited (code {self.process.wait()})")

    def _send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def draw(self, timed: bool = True) -> None:
        self._send("go")
        seconds = float(self._wait("TIME"))
        if timed:
            self.times.append(seconds)

    def extras(self) -> dict[str, Any]:
        self._send("extras")
        result: dict[str, Any] = self._wait("EXTRAS")
        return result

    def end(self) -> dict[str, Any]:
        self._send("end")
        result = {**self.info, **self._wait("END"), "times": self.times,
                  "seconds": statistics.median(self.times)}
        self.process.wait()
        return result


def _attention_flops() -> dict[Any, Any]:
    """FlopCounterMode has no formula for the CPU flash-attention kernel (2 matmuls; the
    CUDA attention kernels have theirs), nor for the oneDNN ops that packed layers call
    (`limner.engines.diffusers.accel.prepack`): without these, a packed model would count
    no convolution."""
    import math

    import torch

    def sdpa(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
        batch, heads, q_len, dim = query
        k_len = key[-2]
        return 4 * batch * heads * q_len * k_len * dim

    def packed_conv(x: Any, *args: Any, out_shape: Any, **kwargs: Any) -> int:
        # The weight comes just before the bias and the padding: the `.binary` overload (a
        # fused sum) passes the summand first, where the plain one has the weight.
        padding = next(i for i, a in enumerate(args)  # shapes arrive as torch.Size
                       if isinstance(a, list | tuple) and not isinstance(a, torch.Size))
        weight = args[padding - 2]  # O, I/groups, kH, kW
        return 2 * math.prod(out_shape) * math.prod(weight[1:])

    def packed_linear(x: Any, *args: Any, out_shape: Any, **kwargs: Any) -> int:
        return 2 * math.prod(out_shape) * x[-1]  # the input's features, whatever W's layout

    formulas: dict[Any, Any] = {}
    for namespace, name, formula in (
            (torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", sdpa),
            (torch.ops.mkldnn, "_convolution_pointwise", packed_conv),
            (torch.ops.mkldnn, "_linear_pointwise", packed_linear)):
        packet = getattr(namespace, name, None)
        if packet is not None:
            formulas[packet] = formula
    return formulas


WORKERS: dict[str, Any] = {"peak": worker_peak, "plain": worker_plain,
                           "limner": worker_limner}


def _worker_command(kind: str, args: argparse.Namespace, extra: dict[str, str]
                    ) -> tuple[list[str], dict[str, str]]:
    command = [sys.executable, __file__, "--worker", kind, "--threads", str(args.threads),
               "--device", args.device]
    for key, value in extra.items():
        command += [f"--{key}", value]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    return command, env


def run_worker(kind: str, args: argparse.Namespace, **extra: str) -> dict[str, Any]:
    command, env = _worker_command(kind, args, extra)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise SystemExit(f"worker {kind} {extra} failed:\n{done.stderr[-4000:]}")


# The HTTP part. -----------------------------------------------------------------------
def _metric_sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text,
                                                     re.MULTILINE))


def _spawn(config: str, workdir: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    from limner.testing.load import launch_server

    return launch_server(config, workdir, ("--threads", str(threads)),
                         {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
                          "TRANSFORMERS_OFFLINE": "1"}, timeout_s=600)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def http_levels(args: argparse.Namespace, folder: Path, taesd: Path) -> list[dict[str, Any]]:
    from limner.engines.diffusers.presets import PRESETS
    from limner.testing.load import memory_mib, run_load

    options = PRESETS["sd-turbo"].engine_options()
    steps = ", ".join(f"{k} = {v}" for k, v in options.pop("steps").items())
    scheduler = ", ".join(f"{k} = {json.dumps(v)}" for k, v in options.pop("scheduler").items())
    lines = ['default_engine = "sd-turbo"', "max_queue = 64", "", "[engines.sd-turbo]",
             'kind = "diffusers"', f"path = {json.dumps(str(folder))}",
             f"tiny_decoder = {json.dumps(str(taesd))}", f"steps = {{ {steps} }}",
             f"scheduler = {{ {scheduler} }}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in {**options, "device": args.device}.items()]
    # The engine's own name takes the local rules: 512x512 at quality low (1 step), as above.
    body = {"prompt": PROMPT, "model": "sd-turbo", "size": "512x512", "quality": "low",
            "output_format": "png"}
    results = []
    with tempfile.TemporaryDirectory(prefix="limner-bench-") as tmp:
        process, url = _spawn("\n".join(lines) + "\n", Path(tmp), args.threads)
        try:
            asyncio.run(run_load(url, clients=1, seconds=1, body=body))  # warm-up
            for clients in (1, 4, 8):
                report = asyncio.run(run_load(url, clients=clients, seconds=args.http_seconds,
                                              body=body, pid=process.pid))
                ok = report.answered.get("200", 0)
                results.append({"clients": clients, "sent": report.sent,
                                "answered": report.answered, "lost": report.lost,
                                "images_per_s": ok / report.elapsed_s,
                                "p50_s": (report.p50_ms or 0) / 1000,
                                "p99_s": (report.p99_ms or 0) / 1000,
                                "health_max_ms": report.health_max_ms,
                                "server_peak_rss_mib": memory_mib(process.pid, "VmHWM")})
        finally:
            _stop(process)
    return results


def server_overhead(args: argparse.Namespace, requests: int = 40,
                    size: str = "1024x1024") -> dict[str, Any]:
    """Client latency minus the engine and encode time /metrics reports, one at a time."""
    import httpx

    body = {"prompt": "a slice of pizza", "model": "limner-emoji", "size": size,
            "quality": "low", "output_format": "png"}
    with tempfile.TemporaryDirectory(prefix="limner-bench-") as tmp:
        process, url = _spawn("", Path(tmp), args.threads)
        try:
            with httpx.Client(timeout=120) as http:
                for _ in range(3):  # warm-up
                    http.post(url + "/v1/images/generations", json=body).raise_for_status()
                before = http.get(url + "/metrics").text
                latencies = []
                for _ in range(requests):
                    t0 = time.perf_counter()
                    http.post(url + "/v1/images/generations", json=body).raise_for_status()
                    latencies.append(time.perf_counter() - t0)
                after = http.get(url + "/metrics").text
        finally:
            _stop(process)

    def spent(name: str) -> float:
        return (_metric_sum(after, name) - _metric_sum(before, name)) / requests

    engine_s, encode_s = spent("limner_batch_seconds_sum"), spent("limner_encode_seconds_sum")
    queue_s = spent("limner_queue_seconds_sum")
    latency_s = statistics.mean(latencies)
    return {"requests": requests, "size": size, "latency_ms": latency_s * 1000,
            "engine_ms": engine_s * 1000, "encode_ms": encode_s * 1000, "queue_ms": queue_s * 1000,
            "overhead_ms": (latency_s - engine_s - encode_s) * 1000}


# The report. --------------------------------------------------------------------------
def _backend_options(backend: str, root: Path) -> dict[str, Any]:
    """`torch`, `openvino`, `torch-compile` or `torch-compile:MODE` as engine options."""
    name, _, mode = backend.removesuffix(" again").partition(":")
    compiled = name.endswith("-compile")
    return {"backend": name.removesuffix("-compile"),
            "compile": (mode or True) if compiled else False,
            "cache_dir": str(root / "cache")}


def _gpu_memory(result: dict[str, Any]) -> str:
    peak = result.get("cuda_peak_mib")
    return f", peak GPU memory {peak:.0f} MiB" if peak is not None else ""


def _engine_row(backend: str, ours: dict[str, Any], peak: dict[str, Any],
                results: dict[str, Any]) -> dict[str, Any]:
    """Print one limner backend's figures; return them with the share of the matmul peak."""
    precision = ours["dtype"] if backend.startswith("torch") else ours["ov_precision"]
    short = {"bfloat16": "bf16", "float16": "fp16"}.get(precision, precision)
    short = short if short in ("bf16", "fp16") else "fp32"
    # OpenVINO and compiled graphs run the same arithmetic: count it from the eager run.
    ours["flops"] = ours["flops"] or results.get("torch", {}).get("flops")
    fraction = ours["flops"] / ours["seconds"] / 1e9 / peak[f"{short}_gflops"] \
        if ours["flops"] else None
    plain_s = ours["plain_seconds"]
    against = f" = {plain_s / ours['seconds']:.1f}x faster than plain in the same run " \
        f"({plain_s:.3f} s)" if plain_s else ""
    print(f"  limner, {backend} ({precision}, {ours['decoder']}): {ours['seconds']:.3f} "
          f"s/image{against}; peak RSS {ours['peak_rss_mib']:.0f} MiB{_gpu_memory(ours)}, "
          f"load {ours['load_s']:.1f} s")
    if fraction is not None:
        print(f"    {ours['flops'] / 1e9:.0f} GFLOP/image = {fraction:.1%} of the {short} "
              "matmul peak")
    print(f"    one partial image: {ours['preview_s'] * 1000:.0f} ms = "
          f"{ours['preview_s'] / ours['seconds']:.1%} of the image's time", flush=True)
    if ours.get("parts_s"):
        print("    one image, by part: " + ", ".join(
            f"{name} {seconds:.3f} s" for name, seconds in ours["parts_s"].items()), flush=True)
    return {**ours, "peak_fraction": fraction}


def _default_backends() -> str:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "torch"
    return "torch,openvino"


def _cpu() -> tuple[str, bool]:
    from limner.engines.cpu import cpu_has_bf16

    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name, cpu_has_bf16()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="sd-turbo,sdxs-512")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--plain-reps", type=int, default=None,
                    help="timed draws of plain diffusers per backend, in turns with the first "
                         "of that backend's (default: --reps; 1 saves time where plain is "
                         "slow, 0 skips it)")
    ap.add_argument("--http-seconds", type=float, default=40.0,
                    help="seconds per concurrency level; 0 skips the HTTP part")
    ap.add_argument("--parts", default="engines,http,overhead",
                    help="which parts to run, comma-separated (default: all three)")
    ap.add_argument("--backends", default=None,
                    help="limner engine backends to time, comma-separated (default: torch, "
                         "and openvino when it is installed; torch-compile: torch with "
                         "compile = true, its first call, which compiles, untimed)")
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "limner-bench")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--device", default="cpu",
                    help="where the pipelines run: cpu (default) or cuda (fp16 for limner)")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--taesd", help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        result = WORKERS[args.worker](args)
        if result is not None:
            print("RESULT " + json.dumps(result), flush=True)
        return 0

    from random_pipelines import MODELS, build_pipeline, build_taesd

    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")
    cpu, bf16 = _cpu()
    report: dict[str, Any] = {"cpu": cpu, "bf16_fast_path": bf16, "threads": args.threads,
                              "device": args.device}

    def save() -> None:  # after each part, so a run cut short still leaves its figures
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2))

    print(f"CPU: {cpu}; bf16 fast path (AMX/AVX512-BF16): {'yes' if bf16 else 'no'}; "
          f"{args.threads} threads; device {args.device}; median of {args.reps} after a "
          "warm-up")
    print("building random-weight pipelines in", args.root, flush=True)
    taesd = build_taesd(args.root / "taesd")
    folders = {m: build_pipeline(m, args.root) for m in models}
    peak = run_worker("peak", args)
    report["peak"] = peak
    if "gpu" in peak:
        print(f"GPU: {peak['gpu']}; matmul peak (8192x8192): fp32 "
              f"{peak['fp32_gflops'] / 1000:.1f} TFLOP/s, fp16 {peak['fp16_gflops'] / 1000:.0f}"
              f" TFLOP/s, bf16 {peak['bf16_gflops'] / 1000:.0f} TFLOP/s\n", flush=True)
    else:
        print(f"matmul peak (2048x2048): fp32 {peak['fp32_gflops']:.0f} GFLOP/s, "
              f"bf16 {peak['bf16_gflops']:.1f} GFLOP/s\n", flush=True)

    parts = set(args.parts.split(","))
    backends = (args.backends or _default_backends()).split(",")
    report["models"] = {}
    plain_reps = args.reps if args.plain_reps is None else args.plain_reps
    for model in models if "engines" in parts else []:
        # The plain pipeline and each limner backend draw in turns, call by call; each
        # backend's figures are printed and saved as soon as it is done.
        print(f"{model}, 512x512, 1 step, batch 1", flush=True)
        results = report["models"].setdefault(model, {})
        plain_turns = None
        if plain_reps > 0:
            plain_turns = Turns("plain", args, folder=str(folders[model]))
            plain_turns.draw(timed=False)
        for backend in backends:
            if backend in results:  # a backend named twice: the second load, from caches
                backend += " again"
            try:
                ours_turns = Turns("limner", args, model=model, folder=str(folders[model]),
                                   taesd=str(taesd),
                                   options=json.dumps(_backend_options(backend, args.root)))
                ours_turns.draw(timed=False)
                for rep in range(args.reps):
                    if plain_turns is not None and rep < plain_reps:
                        plain_turns.draw()
                    ours_turns.draw()
                extras = ours_turns.extras()
                ours = {**ours_turns.end(), **extras}
            except SystemExit as exc:  # one backend failing must not lose the others
                print(f"  limner, {backend}: {exc}", flush=True)
                results[backend] = {"error": str(exc)}
                continue
            # Against all of plain's timed draws so far, every one in this run.
            ours["plain_seconds"] = statistics.median(plain_turns.times) \
                if plain_turns is not None else None
            results[backend] = _engine_row(backend, ours, peak, results)
            save()
        if plain_turns is not None:
            plain = results["plain"] = plain_turns.end()
            print(f"  plain diffusers ({plain['dtype']}, {plain['decoder']}): "
                  f"{plain['seconds']:.3f} s/image, peak RSS {plain['peak_rss_mib']:.0f} MiB"
                  f"{_gpu_memory(plain)}, load {plain['load_s']:.1f} s", flush=True)
        print()
        save()

    if "http" in parts and args.http_seconds > 0 and "sd-turbo" in folders:
        levels = http_levels(args, folders["sd-turbo"], taesd)
        report["http"] = levels
        print("HTTP, sd-turbo preset, 512x512, quality low (1 step), png, b64_json")
        for level in levels:
            print(f"  {level['clients']} clients: sent {level['sent']}, answered "
                  f"{level['answered']}, lost {level['lost']}; "
                  f"{level['images_per_s']:.3f} images/s; p50 {level['p50_s']:.2f} s, "
                  f"p99 {level['p99_s']:.2f} s; /healthz max {level['health_max_ms']:.0f} ms; "
                  f"server peak RSS {level['server_peak_rss_mib']:.0f} MiB")
        base = levels[0]["images_per_s"]
        print("  throughput vs 1 client: " + ", ".join(
            f"{lv['clients']}: {lv['images_per_s'] / base:.2f}x" for lv in levels) + "\n")
        save()
    if "overhead" in parts:
        report["overhead"] = []
        for size in ("256x256", "1024x1024"):
            overhead = server_overhead(args, size=size)
            report["overhead"].append(overhead)
            print(f"server overhead, embedded model, {size} png (b64_json), "
                  f"{overhead['requests']} requests one at a time: latency "
                  f"{overhead['latency_ms']:.1f} ms = engine {overhead['engine_ms']:.1f} + "
                  f"encode {overhead['encode_ms']:.1f} + overhead {overhead['overhead_ms']:.1f}"
                  f" ms (of which in the queue: {overhead['queue_ms']:.1f} ms)", flush=True)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
