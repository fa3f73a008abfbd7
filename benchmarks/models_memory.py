"""What several models and LoRA adapters cost on one server: load, unload and adapter-switch
times, and the server's memory before and after, in one run.

Usage:
    python benchmarks/models_memory.py [--root /tmp/limner-bench] [--threads 2]
        [--cycles 3] [--switches 4] [--json out.json]

A `limner serve` process (the CLI, as an operator starts it) holds two random-weight models
of real architectures (`random_pipelines.py`): SD-Turbo, the default, taking adapters per
request (`request_loras = true`, so the torch path in its default dtype), and SDXS-512, on
the torch path's default plan, under a `max_model_memory` that fits one of them and not
both. Two rank-16 LoRAs of SD-Turbo's attention (made with PEFT) lie in `DATA_DIR/loras/`.
Printed, each from this one run: the start (SD-Turbo preloaded), a plain 512x512 one-step
draw, the first draw with each adapter (its load), in turns draws with no adapter, the same
adapter again and another one (the switch), the request for SDXS that unloads SD-Turbo
under the budget, and `--cycles` load/draw/unload rounds through the admin routes with
the server's RSS after each (a leak would grow it; weights are read in lazily, so the first
draw after a load pays for it). Memory is the server's VmRSS and the models' own figures
from `/healthz`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import random_pipelines

from limner.testing.load import launch_server, memory_mib

GIB = 1024 ** 3


def build(root: Path) -> dict[str, Path]:
    from limner.testing.loras import make_lora

    models = root / "models"
    turbo = random_pipelines.build_pipeline("sd-turbo", models)
    sdxs = random_pipelines.build_pipeline("sdxs-512", models)
    return {"turbo": turbo, "sdxs": sdxs,
            "ink": make_lora(turbo, root / "loras-src" / "ink", 1, rank=16),
            "paper": make_lora(turbo, root / "loras-src" / "paper", 2, rank=16)}


def config(paths: dict[str, Path], budget: str) -> str:
    return "\n".join([
        'default_engine = "turbo"', f'max_model_memory = "{budget}"', "",
        "[engines.turbo]", 'kind = "diffusers"', f"path = {json.dumps(str(paths['turbo']))}",
        "request_loras = true", "steps = { low = 1, medium = 1, high = 1 }", "",
        "[engines.sdxs]", 'kind = "diffusers"', f"path = {json.dumps(str(paths['sdxs']))}",
        'backend = "torch"', "steps = { low = 1, medium = 1, high = 1 }", ""])


class Server:
    def __init__(self, base: str, pid: int) -> None:
        self.http = httpx.Client(base_url=base, timeout=900)
        self.pid = pid

    def rss_mib(self) -> float:
        return memory_mib(self.pid) or float("nan")

    def models(self) -> dict[str, Any]:
        found: dict[str, Any] = self.http.get("/healthz").json()["models"]
        return found

    def held_gib(self, name: str) -> float:
        return float(sum((self.models()[name].get("memory") or {}).values())) / GIB

    def draw(self, model: str, lora: list[dict[str, Any]] | None = None) -> float:
        body: dict[str, Any] = {"model": model, "prompt": "a lighthouse at dusk",
                                "size": "512x512", "seed": 1, "response_format": "b64_json"}
        if lora:
            body["lora"] = lora
        start = time.perf_counter()
        answer = self.http.post("/v1/images/generations", json=body)
        elapsed = time.perf_counter() - start
        answer.raise_for_status()
        return elapsed

    def admin(self, model: str, action: str) -> float:
        start = time.perf_counter()
        answer = self.http.post(f"/v1/models/{model}/{action}")
        elapsed = time.perf_counter() - start
        answer.raise_for_status()
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/limner-bench"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--switches", type=int, default=4)
    parser.add_argument("--budget", default="3GiB",
                        help="max_model_memory: fits one of the two models, not both")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    paths = build(args.root)
    work = args.root / "models-memory"
    shutil.rmtree(work / "data" / "loras", ignore_errors=True)
    for name in ("ink", "paper"):
        shutil.copytree(paths[name], work / "data" / "loras" / name)
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    start = time.perf_counter()
    process, base = launch_server(
        config(paths, args.budget), work, ("--threads", str(args.threads)),
        {"OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
         "TRANSFORMERS_OFFLINE": "1"}, timeout_s=900)
    try:
        server = Server(base, process.pid)
        while server.models()["turbo"]["status"] != "ready":
            time.sleep(0.2)
        figures["start_s"] = time.perf_counter() - start
        figures["rss_start_mib"] = server.rss_mib()
        figures["turbo_held_gib"] = server.held_gib("turbo")
        server.draw("turbo")  # the first draw at a size pays for its warm-up
        figures["draw_s"] = server.draw("turbo")
        ink, paper = [{"name": "ink", "scale": 0.8}], [{"name": "paper", "scale": 0.8}]
        figures["first_ink_s"] = server.draw("turbo", ink)
        figures["first_paper_s"] = server.draw("turbo", paper)
        figures["rss_with_loras_mib"] = server.rss_mib()
        plain, again, switched = [], [], []
        for _ in range(args.switches):  # in turns: none, ink, ink again, paper
            plain.append(server.draw("turbo"))
            server.draw("turbo", ink)
            again.append(server.draw("turbo", ink))
            switched.append(server.draw("turbo", paper))
        figures["plain_draw_s"] = statistics.median(plain)
        figures["same_adapter_s"] = statistics.median(again)
        figures["switched_draw_s"] = statistics.median(switched)
        figures["sdxs_first_s"] = server.draw("sdxs")  # unloads turbo, loads sdxs, draws
        states = server.models()
        figures["after_sdxs"] = {name: states[name]["status"] for name in ("turbo", "sdxs")}
        figures["sdxs_held_gib"] = server.held_gib("sdxs")
        figures["rss_sdxs_mib"] = server.rss_mib()
        figures["unload_sdxs_s"] = server.admin("sdxs", "unload")
        figures["rss_empty_mib"] = server.rss_mib()
        rounds = []
        for _ in range(args.cycles):
            load_s = server.admin("turbo", "load")
            loaded = server.rss_mib()
            first_s = server.draw("turbo")  # pays for reading the weights' pages in
            drawn = server.rss_mib()
            unload_s = server.admin("turbo", "unload")
            rounds.append({"load_s": load_s, "rss_loaded_mib": loaded, "first_draw_s": first_s,
                           "rss_drawn_mib": drawn, "unload_s": unload_s,
                           "rss_unloaded_mib": server.rss_mib()})
        figures["cycles"] = rounds
    finally:
        process.terminate()
        process.wait(timeout=120)
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def report(f: dict[str, Any]) -> None:
    print(f"start (SD-Turbo preloaded):         {f['start_s']:6.1f} s   RSS "
          f"{f['rss_start_mib']:6.0f} MiB   SD-Turbo holds {f['turbo_held_gib']:.2f} GiB")
    print(f"plain draw, 512x512, 1 step:        {f['draw_s']:6.2f} s")
    print(f"first draw with 'ink' (its load):   {f['first_ink_s']:6.2f} s   "
          f"(+{f['first_ink_s'] - f['draw_s']:.2f} s)")
    print(f"first draw with 'paper':            {f['first_paper_s']:6.2f} s   "
          f"(+{f['first_paper_s'] - f['draw_s']:.2f} s)   RSS {f['rss_with_loras_mib']:.0f} MiB")
    print(f"in turns, medians: no adapter {f['plain_draw_s']:.2f} s, the same adapter again "
          f"{f['same_adapter_s']:.2f} s ({f['same_adapter_s'] / f['plain_draw_s']:.2f}x), "
          f"switched to another {f['switched_draw_s']:.2f} s "
          f"({f['switched_draw_s'] / f['same_adapter_s']:.2f}x the same one)")
    print(f"first SDXS request (unloads SD-Turbo under the budget, loads, draws): "
          f"{f['sdxs_first_s']:.1f} s -> {f['after_sdxs']}, SDXS holds "
          f"{f['sdxs_held_gib']:.2f} GiB, RSS {f['rss_sdxs_mib']:.0f} MiB")
    print(f"unload SDXS: {f['unload_sdxs_s']:.2f} s, RSS {f['rss_empty_mib']:.0f} MiB")
    for index, cycle in enumerate(f["cycles"], 1):
        print(f"cycle {index}: load SD-Turbo {cycle['load_s']:5.1f} s (RSS "
              f"{cycle['rss_loaded_mib']:6.0f} MiB), first draw {cycle['first_draw_s']:.2f} s "
              f"(RSS {cycle['rss_drawn_mib']:6.0f} MiB), unload {cycle['unload_s']:.2f} s (RSS "
              f"{cycle['rss_unloaded_mib']:6.0f} MiB)")


if __name__ == "__main__":
    main()
