"""Every served family at real size on one GPU: plain diffusers against limner, in one run.

Usage:
    python benchmarks/families_gpu.py [--families sd-turbo,flux1-schnell,...] [--budget 500]
        [--device cuda] [--compile reduce-overhead|none] [--torchao fp8-dq,int8-wo]
        [--reps 3] [--batches 4,8] [--http-clients 16] [--http-seconds 20]
        [--parts plain,limner,batches,http,torchao] [--json out.json] [--tiny]

For each family (random weights from the published configs, built on the device in bf16 by
`family_pipelines`; its distilled step count at its native size, see `pipeline.json`), in
one process, so both sides see the same card and the same weights:

1. plain: the diffusers pipeline as it is (bf16, eager, its own VAE, the model card's
   guidance), seconds per image at batch 1;
2. limner: `DiffusersEngine` over the same modules (bf16, `compile`, the family adapter, the
   prompt cache), seconds per image at batch 1 through `engine.generate`. Where the engine
   refuses `compile` (its compile step wraps UNets only), the benchmark compiles the
   transformer itself with the same mode and says so: what compile would give there;
3. batches: images/s at batch 4 and 8 through limner's `Scheduler` (that many requests
   submitted together, gathered into one batch; the batch sizes run are recorded);
4. http: images/s of the HTTP server (`create_app` with this engine, in this process, as
   `limner serve` runs it) under 16 concurrent clients (`limner.testing.load.run_load`,
   in a process of its own), after a warm-up at that load;
5. torchao: the denoiser rebuilt, quantized with torchao (`fp8-dq`: fp8 weights and
   activations, H100's fp8 matmuls; `fp8-wo`: fp8 weights; `int8-wo`: int8 weights) and run
   through the engine again at batch 1 and at the largest batch; skipped with its reason
   where torchao is not installed or the GPU has no fp8.

Each family runs in a process of its own (the GPU's memory is whole again for the next one)
with whatever is left of --budget; the process writes its JSON after every part, so a family
cut at the budget still leaves what it measured. Families run in the order given: put the
important ones first. `--tiny --device cpu` is the CPU rehearsal: the same code on tiny
configs (`family_pipelines.TINY`) at 128 px.

Each figure is the median of --reps timed calls after one untimed call (which compiles).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import family_pipelines as fp

PROMPT = "a red fox in the snow"
PARTS = ("plain", "limner", "batches", "http", "torchao")
TORCHAO = ("fp8-dq", "fp8-wo", "int8-wo")
MIN_PART_S = 15.0
"""A part starts only with at least this much of the budget left."""


# --------------------------------------------------------------------------- the worker


class Worker:
    """One family's measurements, in this process; `result` is saved after each part."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.torch = torch
        self.family: str = args.worker
        self.spec = fp.FamilySpec.load(self.family)
        self.size = fp.TINY_SIZE.get(self.family, 128) if args.tiny else self.spec.size
        self.steps = self.spec.steps
        self.cuda = args.device.startswith("cuda")
        self.deadline = float(args.deadline)
        self.takes = iter(range(1_000_000))
        self.result: dict[str, Any] = {
            "family": self.family, "pipeline": self.spec.pipeline, "steps": self.steps,
            "size": self.size, "device": args.device, "tiny": args.tiny, "parts": {}}
        self.components: dict[str, Any] = {}

    # -- plumbing ---------------------------------------------------------------------
    def save(self) -> None:
        Path(self.args.out).write_text(json.dumps(self.result, indent=2, default=str))

    def left(self) -> float:
        return self.deadline - time.time()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def gpu_peak_reset(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def gpu_peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2 ** 30 if self.cuda else None

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def timed(self, call: Callable[[], Any], reps: int) -> dict[str, Any]:
        """One untimed call (it compiles), then `reps` timed ones: median and all."""
        t0 = time.perf_counter()
        call()
        self.sync()
        first = time.perf_counter() - t0
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            call()
            self.sync()
            times.append(time.perf_counter() - t0)
        return {"seconds": statistics.median(times), "times": times, "first_s": first}

    def part(self, name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Run a part unless the budget is spent; its figures, or its error, are kept."""
        if self.left() < MIN_PART_S:
            self.result["parts"][name] = {"skipped": "budget spent"}
            self.save()
            print(f"  {name}: skipped, budget spent", flush=True)
            return None
        self.gpu_peak_reset()
        t0 = time.perf_counter()
        try:
            out = run()
        except Exception as exc:  # one part failing must not lose the others
            import traceback

            where = traceback.extract_tb(exc.__traceback__)[-4:]
            out = {"error": f"{type(exc).__name__}: {exc}"[:2000],
                   "where": [f"{f.filename}:{f.lineno} {f.name}" for f in where]}
            self.free()
        out["part_s"] = time.perf_counter() - t0
        if self.cuda:
            out.setdefault("gpu_peak_gib", self.gpu_peak_gib())
        self.result["parts"][name] = out
        self.save()
        print(f"  {name}: {_summary(name, out)}", flush=True)
        return out

    # -- requests ---------------------------------------------------------------------
    def plain_kwargs(self) -> dict[str, Any]:
        return {**self.spec.call, "num_inference_steps": self.steps, "height": self.size,
                "width": self.size}

    def params(self) -> Any:
        """A request of one image; a new prompt each take, so the prompt cache never
        answers (the HTTP part's clients all send one prompt: there it does)."""
        from limner.jobs import GenerationParams

        take = next(self.takes)
        return GenerationParams(prompt=f"{PROMPT}, take {take}", seeds=(take,),
                                width=self.size, height=self.size, quality="low")

    # -- the engine -------------------------------------------------------------------
    def guidance(self) -> float | None:
        call = self.spec.call
        value = call.get("guidance_scale", call.get("true_cfg_scale"))
        return None if value is None else float(value)

    def engine(self, compile_mode: str | None, extra: Mapping[str, Any] | None = None
               ) -> tuple[Any, dict[str, Any]]:
        """limner's engine over this process's modules, loaded. The pipeline is handed over
        instead of read from a folder (the one thing that differs from serving a saved
        model); every step after the load (family adapter, prompt cache, compile, warm-up,
        editors) is the engine's own. Where the engine refuses to compile this pipeline, it
        is loaded without and the benchmark compiles the transformer with the same mode."""
        from limner.engines.base import EngineError

        info: dict[str, Any] = {"compile": compile_mode or "none"}
        try:
            engine = _prebuilt_engine(self, compile_mode, None, extra)
            t0 = time.perf_counter()
            engine.load()
        except EngineError as exc:
            if compile_mode is None or "compile" not in str(exc):
                raise
            info["compile"] = f"{compile_mode}, of the transformer by the benchmark"
            info["engine_refused_compile"] = str(exc)
            self.free()
            engine = _prebuilt_engine(self, None, compile_mode, extra)
            t0 = time.perf_counter()
            engine.load()
        info["load_s"] = time.perf_counter() - t0
        info["applied"] = list(engine.applied)
        info["plan"] = engine.plan.describe()
        return engine, info

    def denoiser(self) -> str:
        return "unet" if "unet" in self.spec.components else "transformer"

    # -- parts ------------------------------------------------------------------------
    def build(self) -> dict[str, Any]:
        import torch

        t0 = time.perf_counter()
        self.components = fp.build_components(self.family, self.args.device, torch.bfloat16,
                                              tiny=self.args.tiny)
        self.sync()
        counts = fp.parameter_counts(self.components)
        return {"build_s": time.perf_counter() - t0, "parameters": counts,
                "parameters_b": sum(counts.values()) / 1e9}

    def plain(self) -> dict[str, Any]:
        import torch

        pipe = fp.make_pipeline(self.family, self.components)
        kwargs = self.plain_kwargs()

        def draw() -> None:
            take = next(self.takes)
            with torch.inference_mode():
                pipe(prompt=f"{PROMPT}, take {take}", generator=torch.Generator().manual_seed(take),
                     **kwargs)

        return {**self.timed(draw, self.args.reps), "dtype": "bfloat16", "call": kwargs}

    def limner_parts(self, parts: set[str]) -> None:
        """limner at batch 1, then through the scheduler, then over HTTP: one engine, so one
        load and one compile serve all three."""
        holder: dict[str, Any] = {}

        def load_and_draw() -> dict[str, Any]:
            engine, info = self.engine(self.args.compile)
            holder["engine"] = engine
            timing = self.timed(lambda: engine.generate([self.params()]), self.args.reps)
            return {**info, **timing}

        if "limner" in parts or "batches" in parts or "http" in parts:
            self.part("limner", load_and_draw)
        engine = holder.get("engine")
        if engine is None:
            return
        try:
            if "batches" in parts:
                for batch in self.args.batches:
                    self.part(f"scheduler-b{batch}",
                              lambda batch=batch: self.scheduler_rate(engine, batch))
            if "http" in parts:
                self.part(f"http-{self.args.http_clients}", lambda: self.http_rate(engine))
        finally:
            engine.close()
            holder.clear()
            self.free()

    def scheduler_rate(self, engine: Any, batch: int) -> dict[str, Any]:
        """`batch` requests submitted together, `reps` times after one untimed round."""
        from limner.scheduler import Scheduler

        seen: list[int] = []
        generate = engine.generate

        def counting(requests: Any, on_step: Any = None) -> Any:
            seen.append(sum(len(r.seeds) for r in requests))
            return generate(requests, on_step)

        async def run() -> dict[str, Any]:
            scheduler = Scheduler(engine, max_queue=max(64, 2 * batch), max_batch_images=batch,
                                  batch_wait_s=0.05)
            scheduler.start()

            async def one_round() -> None:
                jobs = [scheduler.submit(self.params()) for _ in range(batch)]
                await asyncio.gather(*(job.result for job in jobs))

            try:
                t0 = time.perf_counter()
                await one_round()
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                for _ in range(self.args.reps):
                    await one_round()
                elapsed = time.perf_counter() - t0
            finally:
                await scheduler.stop(grace_s=5)
            return {"images_per_s": batch * self.args.reps / elapsed,
                    "seconds_per_batch": elapsed / self.args.reps, "first_s": first}

        engine.generate = counting
        try:
            out = asyncio.run(run())
        finally:
            del engine.generate  # the class's own method again
        return {**out, "batches_run": seen}

    def http_rate(self, engine: Any) -> dict[str, Any]:
        """The server with this engine, in this process (as `limner serve` runs it: the
        scheduler, the encoders, provenance, PNG); the clients in a process of their own.
        Requests ask for 1024x1024: the engine draws at its native area whatever the size."""
        from limner.config import Settings
        from limner.server.app import create_app
        from limner.server.runner import LimnerServer, uvicorn_config

        clients = self.args.http_clients
        with tempfile.TemporaryDirectory(prefix="limner-families-") as tmp:
            port = _free_port()
            settings = Settings(port=port, data_dir=Path(tmp) / "data",
                                default_engine=self.family, max_queue=max(64, 4 * clients))
            app = create_app(settings, engines={self.family: engine})
            server = LimnerServer(uvicorn_config(app, settings), app)
            thread = threading.Thread(target=server.run, daemon=True, name="limner-http")
            thread.start()
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_healthy(url, 60)
                body = {"prompt": PROMPT, "model": self.family,
                        "size": "1024x1024", "quality": "low",
                        "output_format": "png"}
                seconds = min(self.args.http_seconds, max(2.0, (self.left() - 10) / 2))
                command = [sys.executable, __file__, "--client", url, "--http-clients",
                           str(clients), "--http-seconds", str(seconds), "--body",
                           json.dumps(body)]
                done = subprocess.run(command, capture_output=True, text=True, check=False,
                                      timeout=4 * seconds + 120)
                lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
                if not lines:
                    raise RuntimeError(f"load client failed: {done.stderr[-1500:]}")
                report: dict[str, Any] = json.loads(lines[-1][7:])
            finally:
                server.should_exit = True
                thread.join(timeout=60)
        return {**report, "prompt_cache": "one prompt for all requests: the cache answers"}

    def torchao_part(self, variant: str) -> dict[str, Any]:
        """The denoiser rebuilt in bf16, quantized in place, then drawn through the engine
        (its compile as above) at batch 1 and at the largest batch."""
        import importlib.util

        if importlib.util.find_spec("torchao") is None:
            return {"skipped": "torchao is not installed (carry its wheel in .whl/)"}
        if variant.startswith("fp8"):
            if not self.cuda:
                return {"skipped": "fp8 needs a CUDA GPU"}
            if self.torch.cuda.get_device_capability() < (8, 9):
                return {"skipped": "fp8 needs compute capability 8.9 or newer"}
        from torchao.quantization import quantize_

        name = self.denoiser()
        self.components[name] = None
        self.free()
        self.components.update(fp.build_components(self.family, self.args.device,
                                                   self.torch.bfloat16, tiny=self.args.tiny,
                                                   only={name}))
        t0 = time.perf_counter()
        quantize_(self.components[name], _torchao_config(variant))
        self.sync()
        quantize_s = time.perf_counter() - t0
        # On a CPU the engine packs linear weights for oneDNN, which quantized tensors refuse.
        engine, info = self.engine(self.args.compile,
                                   None if self.cuda else {"prepack": False, "fuse": False})
        try:
            batch1 = self.timed(lambda: engine.generate([self.params()]), self.args.reps)
            out = {**info, **batch1, "quantize_s": quantize_s}
            biggest = max(self.args.batches, default=0)
            if biggest > 1 and self.left() > MIN_PART_S:
                out[f"scheduler-b{biggest}"] = self.scheduler_rate(engine, biggest)
        finally:
            engine.close()
            self.free()
        return out

    def run(self) -> None:
        parts = set(self.args.parts)
        print(f"{self.family} ({self.spec.pipeline}): {self.size}x{self.size}, "
              f"{self.steps} steps, on {self.args.device}", flush=True)
        if self.cuda:
            self.result["gpu"] = self.torch.cuda.get_device_name()
        self.result["versions"] = _versions()
        if self.part("build", self.build) is None or "error" in self.result["parts"]["build"]:
            return
        if "plain" in parts:
            self.part("plain", self.plain)
        self.limner_parts(parts)
        if "torchao" in parts:
            for variant in self.args.torchao:
                self.part(f"torchao-{variant}", lambda v=variant: self.torchao_part(v))


def _prebuilt_engine(worker: Worker, compile_mode: str | None, bench_compile: str | None,
                     extra: Mapping[str, Any] | None = None) -> Any:
    """A `DiffusersEngine` whose load takes the worker's modules instead of a folder."""
    import torch

    from limner.engines.diffusers import DiffusersEngine

    family, components = worker.family, worker.components

    class Prebuilt(DiffusersEngine):
        def _load_pipeline(self) -> Any:
            pipe = fp.make_pipeline(family, components)
            if bench_compile is not None:
                pipe.transformer = torch.compile(pipe.transformer, mode=bench_compile)
            return pipe

        def load(self) -> None:
            if self.pipe is None:  # the server's own load finds it loaded already
                super().load()

    steps = {"low": worker.steps, "medium": worker.steps, "high": worker.steps}
    options: dict[str, Any] = {
        "name": family, "device": worker.args.device, "dtype": "bfloat16", "backend": "torch",
        "steps": steps, "native_size": worker.size, "cache_weights": False,
        "max_batch_images": max([1, *worker.args.batches]),
        "compile": compile_mode or False, "guidance": worker.guidance(), **(extra or {}),
    }
    return Prebuilt(f"random:{family}", **options)


def _torchao_config(variant: str) -> Any:
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Float8WeightOnlyConfig,
        Int8WeightOnlyConfig,
    )

    configs: dict[str, Callable[[], Any]] = {
        "fp8-dq": Float8DynamicActivationFloat8WeightConfig, "fp8-wo": Float8WeightOnlyConfig,
        "int8-wo": Int8WeightOnlyConfig}
    return configs[variant]()


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "diffusers", "transformers", "torchao"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_healthy(url: str, timeout_s: float) -> None:
    import httpx

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the server at {url} never became healthy")


def _summary(name: str, out: Mapping[str, Any]) -> str:
    if "error" in out or "skipped" in out:
        return out.get("error") or f"skipped: {out['skipped']}"
    if name == "build":
        billions = out["parameters_b"]
        count = f"{billions:.2f} B" if billions >= 0.1 else f"{billions * 1000:.2f} M"
        return f"{count} parameters in {out['build_s']:.1f} s"
    memory = f", GPU peak {out['gpu_peak_gib']:.1f} GiB" if out.get("gpu_peak_gib") else ""
    if "images_per_s" in out:
        return (f"{out['images_per_s']:.3f} images/s{memory}"
                + (f" (batches run {sorted(set(out['batches_run']))})"
                   if out.get("batches_run") else "")
                + (f", answered {out['answered']}, p50 {out['p50_s']:.2f} s"
                   if "answered" in out else ""))
    text = f"{out['seconds']:.3f} s/image (first call {out['first_s']:.1f} s){memory}"
    if "compile" in out:
        text += f"; compile {out['compile']}, load {out['load_s']:.1f} s"
    return text


# --------------------------------------------------------------------------- the client


def client(args: argparse.Namespace) -> int:
    """16 clients (or --http-clients) against the server: a warm-up at that load (batch
    sizes not yet seen compile), then the measured run."""
    from limner.testing.load import run_load

    body = json.loads(args.body)
    clients = args.http_clients
    asyncio.run(run_load(args.client, clients=clients, seconds=max(2.0, args.http_seconds / 2),
                         body=body))
    report = asyncio.run(run_load(args.client, clients=clients, seconds=args.http_seconds,
                                  body=body))
    ok = report.answered.get("200", 0)
    failure = None
    if ok == 0:  # say why, from one more request
        import httpx

        answer = httpx.post(args.client + "/v1/images/generations", json=body, timeout=600)
        failure = f"{answer.status_code}: {answer.text[:500]}"
    print("RESULT " + json.dumps({"failure": failure,
        "clients": clients, "seconds": args.http_seconds, "sent": report.sent,
        "answered": report.answered, "lost": report.lost,
        "images_per_s": ok / report.elapsed_s, "p50_s": (report.p50_ms or 0) / 1000,
        "p99_s": (report.p99_ms or 0) / 1000}), flush=True)
    return 0


# --------------------------------------------------------------------------- the parent


def _print_family(result: Mapping[str, Any]) -> None:
    parts = result.get("parts", {})
    plain = parts.get("plain", {}).get("seconds")
    ours = parts.get("limner", {}).get("seconds")
    if plain and ours:
        print(f"  => limner {plain / ours:.2f}x plain at batch 1 ({plain:.3f} -> {ours:.3f} "
              "s/image)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(fp.FAMILIES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true",
                    help="tiny configs at 128 px: the CPU rehearsal of every code path")
    ap.add_argument("--budget", type=float, default=500.0,
                    help="seconds for all families together; each gets what is left")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batches", default="4,8")
    ap.add_argument("--compile", default="reduce-overhead",
                    help="limner's compile mode, or none")
    ap.add_argument("--torchao", default="fp8-dq,int8-wo",
                    help=f"torchao variants in order ({', '.join(TORCHAO)}), or none")
    ap.add_argument("--http-clients", type=int, default=16)
    ap.add_argument("--http-seconds", type=float, default=20.0)
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--body", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.parts = [p for p in args.parts.split(",") if p]
    args.torchao = [] if args.torchao == "none" else args.torchao.split(",")
    args.compile = None if args.compile == "none" else args.compile
    unknown = set(args.parts) - set(PARTS) | set(args.torchao) - set(TORCHAO)
    if unknown:
        raise SystemExit(f"unknown parts or torchao variants: {sorted(unknown)}")
    warnings.filterwarnings("ignore")
    if args.client:
        return client(args)
    if args.worker:
        Worker(args).run()
        return 0

    families = [f for f in args.families.split(",") if f]
    unknown = set(families) - set(fp.FAMILIES)
    if unknown:
        raise SystemExit(f"unknown families {sorted(unknown)}; known: {', '.join(fp.FAMILIES)}")
    deadline = time.time() + args.budget
    report: dict[str, Any] = {"budget_s": args.budget, "device": args.device,
                              "tiny": args.tiny, "compile": args.compile or "none",
                              "torchao": args.torchao, "families": {}}

    def save() -> None:
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2, default=str))

    for family in families:
        left = deadline - time.time()
        if left < 2 * MIN_PART_S:
            report["families"][family] = {"skipped": "budget spent"}
            print(f"{family}: skipped, budget spent", flush=True)
            continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            out = Path(handle.name)
        command = [sys.executable, __file__, "--worker", family, "--deadline", str(deadline),
                   "--out", str(out), *_passed_on(args)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TQDM_DISABLE": "1"}
        report["families"][family] = {"running": True}
        save()  # what is done so far survives a cut of this whole run
        status: str | int
        try:
            status = subprocess.run(command, env=env, timeout=left, check=False).returncode
        except subprocess.TimeoutExpired:
            status = "cut at the budget"
        result: dict[str, Any] = {"family": family}
        with contextlib.suppress(OSError, ValueError):
            result = json.loads(out.read_text())
        out.unlink(missing_ok=True)
        result["exit"] = status
        report["families"][family] = result
        _print_family(result)
        save()
    save()
    print(f"done after {args.budget - (deadline - time.time()):.0f} s", flush=True)
    return 0


def _passed_on(args: argparse.Namespace) -> Iterator[str]:
    yield from ("--device", args.device, "--reps", str(args.reps),
                "--batches", ",".join(map(str, args.batches)),
                "--compile", args.compile or "none",
                "--torchao", ",".join(args.torchao) or "none",
                "--http-clients", str(args.http_clients),
                "--http-seconds", str(args.http_seconds), "--parts", ",".join(args.parts))
    if args.tiny:
        yield "--tiny"


if __name__ == "__main__":
    raise SystemExit(main())
