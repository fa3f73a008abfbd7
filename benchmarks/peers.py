"""Seconds per image of limner against the other ways to draw on a CPU, in turns, in one run.

Usage:
    python benchmarks/peers.py [--model sd-turbo] [--threads 2] [--reps 3]
        [--root /tmp/limner-bench] [--optimum-site DIR] [--peers plain,optimum,...]
        [--json out.json]

Builds the random-weight pipeline of `benchmarks/random_pipelines.py` once (a diffusers
folder under --root, and the tiny decoder), then times 512x512 images at 1 step, guidance 0,
a new prompt each, for each of:

- `plain`: a plain diffusers pipeline with its defaults (fp32, the model's own VAE);
- `limner-torch`, `limner-openvino`, `limner-int8`: limner's engine with the model's preset
  (tiny decoder) on each backend (`backend = "openvino"`, and with `quantize = "int8"`),
  `dtype = "auto"` (bf16 where the CPU has it, else fp32);
- `optimum`, `optimum-tiny`: optimum-intel's `OVStableDiffusionPipeline`, exported once from
  the same folder without weight compression (`load_in_8bit=False`), reshaped to 512x512 and
  compiled as FastSD CPU drives it, with the model's own VAE decoder and with the tiny
  decoder converted to OpenVINO in its place (what FastSD CPU runs);
- `sdcpp`, `sdcpp-q8`: stable-diffusion.cpp through `stable-diffusion-cpp-python`, reading a
  copy of the folder whose text encoder is saved under `text_model.` (its version detection
  looks for it), with the tiny decoder, in the files' f32 and quantized to q8_0 at load.

Each runs in a process of its own (its peak RSS is its own: VmHWM, loading included). limner
on torch is the yardstick: it stays loaded, and every other one, loaded in turn, draws call
by call in turns with it (one warm-up each, then --reps timed), so each ratio is against the
yardstick's own draws in the same minutes (a shared VM's speed drifts by tens of percent).
A peer that is not installed or fails is listed with the reason and skipped. Peers are
optional installs for this script only, never dependencies of limner: optimum-intel's pins
(transformers < 5.6, huggingface-hub < 2) clash with limner's environment, so it is
installed into a folder of its own and put first on its worker's path (--optimum-site; see
`results/2026-11-30-peers/README.md` for the exact install).

The last line is `limner/best_peer`: limner's fastest lossless path (torch or OpenVINO, not
int8) against the fastest peer at full precision (plain, optimum, sdcpp: not q8_0), as the
ratio of their speeds against the yardstick; above 1, limner is faster. The line before it
says the same of limner's int8 against every peer, lossy ones included.
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

import diffusers_speed  # noqa: E402

PROMPT = diffusers_speed.PROMPT
SIZE = 512
LIMNER = {"limner-torch": {"backend": "torch"}, "limner-openvino": {"backend": "openvino"},
          "limner-int8": {"backend": "openvino", "quantize": "int8"}}
"""limner's paths: engine options over the model's preset (`dtype` left to `auto`)."""
PEERS = ("plain", "limner-openvino", "limner-int8", "optimum", "optimum-tiny", "sdcpp",
         "sdcpp-q8")
LOSSY = {"limner-int8", "sdcpp-q8"}
"""Quantized paths: shown, but left out of `limner/best_peer`."""
YARDSTICK = "limner-torch"


# Workers: each runs in its own process and draws on demand (diffusers_speed._take_turns).
def worker_optimum(args: argparse.Namespace) -> None:
    """optimum-intel's pipeline as FastSD CPU drives it: loaded from the exported IR,
    reshaped to the draw size (batch left dynamic), compiled; with --taesd, the tiny
    decoder's IR in place of the VAE decoder."""
    import torch
    from optimum.intel import OVStableDiffusionPipeline

    t0 = time.perf_counter()
    pipe = OVStableDiffusionPipeline.from_pretrained(
        args.folder, compile=False, ov_config={"INFERENCE_NUM_THREADS": str(args.threads)})
    if args.taesd:
        _tiny_decoder_into(pipe, Path(args.taesd))
    pipe.reshape(batch_size=-1, height=SIZE, width=SIZE, num_images_per_prompt=1)
    pipe.compile()
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    hint = pipe.unet.request.get_property("INFERENCE_PRECISION_HINT")
    precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    takes = iter(range(1_000_000))

    def draw() -> None:
        take = next(takes)
        pipe(f"{PROMPT}, take {take}", num_inference_steps=1, guidance_scale=0.0,
             height=SIZE, width=SIZE, generator=torch.Generator().manual_seed(take))

    diffusers_speed._take_turns(draw, {"load_s": load_s, "precision": str(precision),
                                       "decoder": "tiny" if args.taesd else "full"})


def _tiny_decoder_into(pipe: Any, folder: Path) -> None:
    """Replace the pipeline's VAE decoder by the tiny decoder's IR in `folder`
    (vae_decoder/openvino_model.xml and config.json, as FastSD CPU's taesd-openvino)."""
    import openvino as ov
    from optimum.intel.openvino.modeling_diffusion import OVModelVae, OVModelVaeDecoder

    # OVPipelinePart reads its config from its parent's save folder: give it one whose
    # folder is the tiny decoder's, sharing the pipeline's OpenVINO settings.
    class Parent:
        _compile_only = False
        model_save_dir = folder
        ov_config = pipe.ov_config
        _device = pipe._device
        device = torch_cpu()

    decoder = OVModelVaeDecoder(ov.Core().read_model(folder / "vae_decoder/openvino_model.xml"),
                                Parent(), "vae_decoder")  # type: ignore[arg-type]
    object.__setattr__(pipe, "vae_decoder", decoder)
    object.__setattr__(pipe, "vae", OVModelVae(decoder=decoder, encoder=pipe.vae_encoder))


def torch_cpu() -> Any:
    import torch

    return torch.device("cpu")


def worker_sdcpp(args: argparse.Namespace) -> None:
    """stable-diffusion.cpp on the prepared folder, with the tiny decoder; --wtype picks the
    weights' type (`default`: as in the files; `q8_0`: quantized at load)."""
    from stable_diffusion_cpp import StableDiffusion

    t0 = time.perf_counter()
    sd = StableDiffusion(model_path=args.folder, taesd_path=args.taesd, n_threads=args.threads,
                         wtype=args.wtype, verbose=False)
    load_s = time.perf_counter() - t0
    takes = iter(range(1_000_000))

    def draw() -> None:
        take = next(takes)
        sd.generate_image(f"{PROMPT}, take {take}", width=SIZE, height=SIZE, cfg_scale=1.0,
                          sample_method="euler_a", sample_steps=1, seed=take)

    weights = "f32 weights (as in the files)" if args.wtype == "default" else args.wtype
    diffusers_speed._take_turns(draw, {"load_s": load_s, "precision": weights,
                                       "decoder": "tiny"})


def worker_optimum_export(args: argparse.Namespace) -> dict[str, Any]:
    """Export the folder to optimum's IR (no weight compression) into --out, and the tiny
    decoder's IR beside it; once per --root."""
    import openvino as ov
    import torch
    from diffusers import AutoencoderTiny
    from optimum.intel import OVStableDiffusionPipeline

    t0 = time.perf_counter()
    out = Path(args.out)
    pipe = OVStableDiffusionPipeline.from_pretrained(args.folder, export=True, compile=False,
                                                     load_in_8bit=False)
    pipe.save_pretrained(out / "pipeline")
    tiny = AutoencoderTiny.from_pretrained(args.taesd)

    class Decode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = tiny.decoder

        def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
            return self.decoder(latent_sample)  # type: ignore[no-any-return]

    with torch.no_grad():
        model = ov.convert_model(Decode().eval(),
                                 example_input={"latent_sample": torch.randn(1, 4, 64, 64)})
    model.outputs[0].get_tensor().set_names({"sample"})
    target = out / "taesd" / "vae_decoder"
    target.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, target / "openvino_model.xml")
    tiny.save_config(target)  # scaling_factor 1.0: the pipeline hands it latents as they are
    return {"export_s": time.perf_counter() - t0}


WORKERS: dict[str, Any] = {"optimum": worker_optimum, "sdcpp": worker_sdcpp,
                           "optimum-export": worker_optimum_export}


# Preparing the peers' inputs. ----------------------------------------------------------
def sdcpp_folder(folder: Path, target: Path) -> Path:
    """A copy of the diffusers folder (hard links) whose text encoder is saved under the
    `text_model.` prefix, which stable-diffusion.cpp's version detection looks for."""
    from safetensors.torch import load_file, save_file

    if (target / "model_index.json").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if path.is_dir():
            (staging / relative).mkdir(parents=True, exist_ok=True)
            continue
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        if relative == Path("text_encoder/model.safetensors"):
            state = load_file(path)
            save_file({key if key.startswith("text_model.") else f"text_model.{key}": value
                       for key, value in state.items()}, staging / relative,
                      metadata={"format": "pt"})
        else:
            os.link(path, staging / relative)
    staging.rename(target)
    return target


def optimum_env(site: Path | None) -> dict[str, str] | None:
    """The optimum worker's PYTHONPATH: its own folder first (its pinned transformers,
    huggingface-hub and diffusers), then this repository's src."""
    if site is None:
        return None
    paths = [str(site), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _command(kind: str, args: argparse.Namespace, extra: dict[str, str]) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--threads",
               str(args.threads)]
    for key, value in extra.items():
        command += [f"--{key}", value]
    return command


def _env(args: argparse.Namespace, more: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", **(more or {})}


class PeerTurns(diffusers_speed.Turns):
    """A worker of this script (or of diffusers_speed.py, for `plain` and `limner`),
    drawing on demand in turns with the yardstick."""

    def __init__(self, kind: str, args: argparse.Namespace, env: dict[str, str] | None = None,
                 **extra: str) -> None:
        if kind in diffusers_speed.WORKERS:
            command, base = diffusers_speed._worker_command(kind, args, extra)
            full = {**base, **(env or {})}
        else:
            command, full = _command(kind, args, extra), _env(args, env)
        self.kind = kind
        self.process = subprocess.Popen(command, env=full, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.info: dict[str, Any] = self._wait("READY")
        self.times: list[float] = []


def run_once(kind: str, args: argparse.Namespace, env: dict[str, str] | None = None,
             **extra: str) -> dict[str, Any]:
    """A worker of this script that runs once and prints its RESULT."""
    done = subprocess.run(_command(kind, args, extra), env=_env(args, env), capture_output=True,
                          text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")


def start(name: str, args: argparse.Namespace, folder: Path, taesd: Path) -> PeerTurns:
    """The worker for `name`, loaded; SystemExit with the reason where it cannot run."""
    if name in LIMNER:
        options = {"cache_dir": str(args.root / "cache"), **LIMNER[name]}
        return PeerTurns("limner", args, model=args.model, folder=str(folder),
                         taesd=str(taesd), options=json.dumps(options))
    if name == "plain":
        return PeerTurns("plain", args, folder=str(folder))
    if name.startswith("optimum"):
        if args.optimum_site is None:
            raise SystemExit("not run: --optimum-site not given (optimum-intel's pins clash "
                             "with limner's environment; see this script's docstring)")
        env = optimum_env(args.optimum_site)
        exported = args.root / "optimum" / args.model
        if not (exported / "taesd" / "vae_decoder" / "openvino_model.xml").is_file():
            print(f"  exporting {args.model} with optimum-intel (once) ...", flush=True)
            result = run_once("optimum-export", args, env, folder=str(folder),
                              taesd=str(taesd), out=str(exported))
            print(f"  exported in {result['export_s']:.0f} s", flush=True)
        tiny = str(exported / "taesd") if name == "optimum-tiny" else ""
        return PeerTurns("optimum", args, env, folder=str(exported / "pipeline"), taesd=tiny)
    if name.startswith("sdcpp"):
        try:
            import stable_diffusion_cpp  # noqa: F401
        except ImportError as exc:
            raise SystemExit(f"not run: stable-diffusion-cpp-python is not installed ({exc})"
                             ) from exc
        prepared = sdcpp_folder(folder, args.root / "sdcpp" / args.model)
        weights = next(taesd.glob("*.safetensors"))
        return PeerTurns("sdcpp", args, folder=str(prepared), taesd=str(weights),
                         wtype="q8_0" if name == "sdcpp-q8" else "default")
    raise SystemExit(f"unknown peer {name!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sd-turbo")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "limner-bench")
    ap.add_argument("--optimum-site", type=Path, default=None,
                    help="a folder holding optimum-intel and its pinned dependencies")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help=f"which to time against {YARDSTICK}, comma-separated")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    for hidden in ("folder", "taesd", "out", "wtype"):
        ap.add_argument(f"--{hidden}", default="", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)  # diffusers_speed's
    args = ap.parse_args()
    if args.worker:
        result = WORKERS[args.worker](args)
        if result is not None:
            print("RESULT " + json.dumps(result), flush=True)
        return 0

    from random_pipelines import build_pipeline, build_taesd

    cpu, bf16 = diffusers_speed._cpu()
    print(f"CPU: {cpu}; bf16 fast path: {'yes' if bf16 else 'no'}; {args.threads} threads; "
          f"{args.model}, {SIZE}x{SIZE}, 1 step; median of {args.reps} after a warm-up, each "
          f"in turns with {YARDSTICK}", flush=True)
    folder = build_pipeline(args.model, args.root)
    taesd = build_taesd(args.root / "taesd")
    report: dict[str, Any] = {"cpu": cpu, "bf16_fast_path": bf16, "threads": args.threads,
                              "model": args.model, "peers": {}}
    yardstick = start(YARDSTICK, args, folder, taesd)
    yardstick.draw(timed=False)
    for name in [p for p in args.peers.split(",") if p]:
        try:
            peer = start(name, args, folder, taesd)
            peer.draw(timed=False)
            ours: list[float] = []
            for _ in range(args.reps):
                yardstick.draw()
                ours.append(yardstick.times[-1])
                peer.draw()
            result = peer.end()
        except SystemExit as exc:  # one peer failing must not lose the others
            print(f"  {name}: {exc}", flush=True)
            report["peers"][name] = {"error": str(exc)}
            continue
        result["yardstick_s"] = statistics.median(ours)
        result["vs_yardstick"] = result["yardstick_s"] / result["seconds"]
        report["peers"][name] = result
        print(f"  {name}: {result['seconds']:.3f} s/image, {result['vs_yardstick']:.2f}x "
              f"{YARDSTICK} ({result['yardstick_s']:.3f} s in the same turns); peak RSS "
              f"{result['peak_rss_mib']:.0f} MiB; load {result['load_s']:.1f} s", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2))
    own = yardstick.end()
    own["vs_yardstick"] = 1.0
    report["peers"][YARDSTICK] = own
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return _table(report["peers"])


def _precision(name: str, result: dict[str, Any]) -> str:
    """What a row computed in: OpenVINO's precision for limner's OpenVINO paths (plus int8),
    torch's dtype for the torch ones, the peer's own word for the rest."""
    if "precision" in result:
        return str(result["precision"]).lower()
    if name in ("limner-openvino", "limner-int8"):
        return str(result["ov_precision"]) + (" + int8" if name == "limner-int8" else "")
    return str(result.get("dtype", "?"))


def _table(results: dict[str, dict[str, Any]]) -> int:
    print(f"\n| engine | s/image | vs {YARDSTICK} (same turns) | peak RSS | precision, decoder |")
    print("|---|---|---|---|---|")
    ran = {name: r for name, r in results.items() if "error" not in r}
    for name, r in sorted(ran.items(), key=lambda item: -item[1]["vs_yardstick"]):
        print(f"| {name} | {r['seconds']:.3f} | {r['vs_yardstick']:.2f}x | "
              f"{r['peak_rss_mib'] / 1024:.2f} GiB | {_precision(name, r)}, {r.get('decoder')} |")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | - | - | - | {r['error'].splitlines()[0][:80]} |")
    ours = {n: r["vs_yardstick"] for n, r in ran.items() if n.startswith("limner")}
    theirs = {n: r["vs_yardstick"] for n, r in ran.items() if not n.startswith("limner")}
    lossless_ours = {n: v for n, v in ours.items() if n not in LOSSY}
    lossless_theirs = {n: v for n, v in theirs.items() if n not in LOSSY}
    if "limner-int8" in ours and theirs:
        peer = max(theirs, key=theirs.__getitem__)
        print(f"limner-int8/best_peer (lossy included): "
              f"{ours['limner-int8'] / theirs[peer]:.2f}x ({peer})")
    if not lossless_ours or not lossless_theirs:
        print("limner/best_peer: n/a (no peer ran)")
        return 1
    mine = max(lossless_ours, key=lossless_ours.__getitem__)
    peer = max(lossless_theirs, key=lossless_theirs.__getitem__)
    print(f"limner/best_peer: {lossless_ours[mine] / lossless_theirs[peer]:.2f}x "
          f"({mine} against {peer})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
