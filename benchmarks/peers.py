"""Seconds per image of limner against the other ways to draw on a CPU, in turns, in one run.

Usage:
    python benchmarks/peers.py [--family sd-turbo|sdxl|sd3|flux|flux2-klein|sana|sana-sprint|
        z-image|qwen-image[,...]] [--scale tiny|small] [--size 512] [--steps N] [--guidance G]
        [--threads 2] [--reps 3] [--root /tmp/limner-bench] [--optimum-site DIR]
        [--genai-site DIR] [--peers plain,optimum,...] [--json out.json]

For each --family, builds a random-weight pipeline once under --root, then times images of
--size, --steps and --guidance (the family's defaults: `SETTINGS`, its fast checkpoint's
model card), a new prompt each, for each peer. SD-Turbo (the default) is the real
architecture (`random_pipelines.build_pipeline`, with the tiny decoder), its peers:

- `plain`: a plain diffusers pipeline with its defaults (fp32, the model's own VAE);
- `limner-torch`, `limner-openvino`, `limner-int8`: limner's engine with the model's preset
  (tiny decoder) on each backend (`backend = "openvino"`, and with `quantize = "int8"`),
  `dtype = "auto"` (bf16 where the CPU has it, else fp32);
- `optimum`, `optimum-tiny`: optimum-intel's `OVStableDiffusionPipeline`, exported once from
  the same folder without weight compression, reshaped to the draw size and compiled as
  FastSD CPU drives it, with the model's own VAE decoder and with the tiny decoder converted
  to OpenVINO in its place (what FastSD CPU runs);
- `genai`: OpenVINO GenAI's `Text2ImagePipeline` (C++ end to end) on that export, its VAE;
- `sdcpp`, `sdcpp-q8`: stable-diffusion.cpp through `stable-diffusion-cpp-python`, reading a
  copy of the folder whose text encoder is saved under `text_model.` (its version detection
  looks for it), with the tiny decoder, in the files' f32 and quantized to q8_0 at load.

Every other family is a random-weight pipeline of --scale (`random_pipelines.
build_family_pipeline`): `tiny`, limner's test pipelines (`limner.testing.families`; hidden
sizes of 16 to 64: a rehearsal, whose ratios measure overheads), or `small`, the same with a
mid-size denoiser (hidden 384, six blocks: `random_pipelines.SMALL_DENOISERS`), which does
most of the work as on the real models yet draws in seconds. Sana-Sprint, which
`build_family` lacks, is built from the tiny Sana. Their peers, each with the model's own VAE:
`limner` (the engine's defaults: `backend = "auto"`, OpenVINO where it measured faster;
for Qwen-Image and Z-Image torch with OpenVINO's VAE decoder; `limner-openvino`, all in
OpenVINO, where --peers names it), `plain`, `optimum` (`OVDiffusionPipeline`: optimum-intel's
class for the family, exported and reshaped as above) and `genai` (where GenAI has the
pipeline: SD, SDXL, SD3, FLUX.1, FLUX.2 [klein], Z-Image, Qwen-Image; not Sana).

Precision is the same for all but `plain`, whose point is diffusers' fp32 defaults: limner's
`dtype = "auto"` and OpenVINO's default `INFERENCE_PRECISION_HINT` are both bf16 on a CPU
with AVX512-BF16 or AMX (f32 without); the last column of the table says what each row ran.
Every worker checks that it drew --size exactly (limner's engine is given `native_size`).

Each runs in a process of its own (its peak RSS is its own: VmHWM, loading included; its
stderr in --root/logs). limner on torch is the yardstick: it stays loaded, and every other
one, loaded in turn, draws call by call in turns with it (one warm-up each, then --reps
timed), so each ratio is against the yardstick's own draws in the same minutes (a shared VM's
speed drifts by tens of percent). A peer that is not installed, cannot run the family or
fails is listed with the reason and skipped. Peers are optional installs for this script
only, never dependencies of limner: optimum-intel's pins (transformers < 5.6,
huggingface-hub < 2) clash with limner's environment, so it is installed into a folder of its
own and put first on its workers' path (--optimum-site), as GenAI and openvino-tokenizers
are (--genai-site; the export puts it second, so that the tokenizers are converted); see
`results/2026-11-30-peers/README.md` and benchmarks/README.md for the exact installs.

Per family, the last line is `limner/best_peer`: limner's fastest lossless path against the
fastest peer at full precision (plain, optimum, genai, sdcpp: not q8_0), as the ratio of
their speeds against the yardstick; above 1, limner is faster. On SD-Turbo the line before it
says the same of limner's int8 against every peer, lossy ones included.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

import bench_engine  # noqa: E402
import diffusers_speed  # noqa: E402

PROMPT = diffusers_speed.PROMPT


@dataclass(frozen=True)
class Setting:
    """A family's default draw: steps and guidance as its fast released checkpoint is run
    (the turbo, schnell, lightning or distilled one), so that what is timed is what a CPU
    user would draw; `--steps` and `--guidance` override them. Guidance above 1 doubles the
    denoiser's batch (classifier-free guidance) where the model does not embed it, in every
    engine alike."""

    steps: int
    guidance: float
    why: str
    size: int = 512


SETTINGS: dict[str, Setting] = {
    "sd-turbo": Setting(1, 0.0, "SD-Turbo's model card"),
    "sdxl": Setting(1, 0.0, "SDXL-Turbo's model card"),
    "sd3": Setting(4, 0.0, "SD3.5 Large Turbo's model card: 4 steps, no CFG"),
    "flux": Setting(4, 3.5, "FLUX.1-schnell's 4 steps; the tiny one embeds guidance (dev's)"),
    "flux2-klein": Setting(4, 1.0, "FLUX.2 [klein]'s distilled 4 steps"),
    "sana": Setting(4, 4.5, "Sana's guidance 4.5 (CFG: two passes a step); 4 steps, not 20"),
    "sana-sprint": Setting(2, 4.5, "Sana-Sprint's model card: 2 steps, guidance embedded; "
                           "1024: its binning draws that whatever is asked", 1024),
    "z-image": Setting(8, 0.0, "Z-Image-Turbo's model card: 8 steps, no CFG"),
    "qwen-image": Setting(4, 1.0, "Qwen-Image-Lightning's 4 steps, no true CFG"),
}
"""The families this script times (`--family`): SD-Turbo at its real size (random weights,
`random_pipelines.build_pipeline`), every other one as a random-weight pipeline of `--scale`
(`random_pipelines.build_family_pipeline`)."""
LIMNER = {"limner-torch": {"backend": "torch"}, "limner": {},
          "limner-openvino": {"backend": "openvino"},
          "limner-int8": {"backend": "openvino", "quantize": "int8"}}
"""limner's paths: engine options (over SD-Turbo's preset there; `dtype` left to `auto`).
`limner` is the default (`backend = "auto"`: OpenVINO on a CPU for what it converts)."""
SD_TURBO_PEERS = ("plain", "limner-openvino", "limner-int8", "optimum", "optimum-tiny",
                  "genai", "sdcpp", "sdcpp-q8")
FAMILY_PEERS = ("limner", "plain", "optimum", "genai")
LOSSY = {"limner-int8", "sdcpp-q8"}
"""Quantized paths: shown, but left out of `limner/best_peer`."""
YARDSTICK = "limner-torch"


# Workers: each runs in its own process and draws on demand (diffusers_speed._take_turns).
def _check_size(width: int, height: int, args: argparse.Namespace) -> None:
    """Every engine must draw the size asked for (limner's engine otherwise draws at the
    model's native size, a pipeline's binning at its own): the same pixels, or no ratio."""
    if (width, height) != (args.size, args.size):
        raise SystemExit(f"drew {width}x{height}, not {args.size}x{args.size}")


def _hide_kernels() -> None:
    """optimum-intel's pinned transformers (5.5.4) imports the `kernels` package where it is
    installed, and this environment's (0.19) refuses the layer repositories that version
    declares (no revision): hidden, transformers falls back to its no-kernels stubs, as
    where `kernels` is not installed (it is only for CUDA kernels from the hub anyway)."""
    sys.modules["kernels"] = None  # type: ignore[assignment]


def worker_plain(args: argparse.Namespace) -> None:
    """Plain diffusers: `DiffusionPipeline.from_pretrained(folder)` with its defaults (fp32,
    the model's own VAE), called with the run's size, steps and guidance."""
    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(args.folder)
    load_s = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    takes = iter(range(1_000_000))

    def draw() -> None:
        take = next(takes)
        image = pipe(prompt=f"{PROMPT}, take {take}", num_inference_steps=args.steps,
                     guidance_scale=args.guidance, height=args.size, width=args.size,
                     generator=torch.Generator().manual_seed(take)).images[0]
        _check_size(*image.size, args)

    diffusers_speed._take_turns(draw, {"load_s": load_s,
                                       "dtype": str(denoiser.dtype).removeprefix("torch."),
                                       "decoder": type(pipe.vae).__name__})


def worker_limner(args: argparse.Namespace) -> None:
    """limner's DiffusersEngine as `limner serve` runs it (glibc's malloc set up first, the
    draws in a thread of their own: see diffusers_speed.worker_limner), with --options,
    drawing at --size (`native_size`: the engine otherwise draws at the model's own size
    and leaves the resize to the server)."""
    options = bench_engine.malloc_as_server(json.loads(args.options))
    from limner.engines.diffusers import DiffusersEngine
    from limner.jobs import GenerationParams

    engine = DiffusersEngine(args.folder, threads=args.threads,
                             **{**options, "native_size": args.size})
    t0 = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - t0
    takes = iter(range(1_000_000))

    def draw() -> None:
        # A new prompt each time: the engine's prompt cache must not flatter the figures.
        take = next(takes)
        image = engine.generate([GenerationParams(
            prompt=f"{PROMPT}, take {take}", width=args.size, height=args.size, seeds=(take,),
            steps=args.steps, guidance=args.guidance)])[0][0]
        _check_size(*image.size, args)

    def extras() -> dict[str, Any]:
        # After the draws: a speed-up that failed mid-draw was switched off (`STEP_DOWN`).
        return {"backend": engine.backend, "stepped_down": list(engine.stepped_down)}

    diffusers_speed._take_turns_in_thread(draw, {
        "load_s": load_s, "backend": engine.backend,
        "dtype": str(engine.dtype).removeprefix("torch."), "ov_precision": engine.ov_precision,
        "decoder": type(engine.pipe.vae).__name__, "applied": engine.applied}, extras)


def worker_optimum(args: argparse.Namespace) -> None:
    """optimum-intel's pipeline (`OVDiffusionPipeline` picks the family's class) as FastSD
    CPU drives it: loaded from the exported IR, reshaped to the draw size (batch left
    dynamic; where a family's reshape fails, its shapes stay dynamic and the row says so),
    compiled; with --taesd (SD-Turbo), the tiny decoder's IR in place of the VAE decoder."""
    _hide_kernels()
    import torch
    from optimum.intel import OVDiffusionPipeline

    t0 = time.perf_counter()
    pipe = OVDiffusionPipeline.from_pretrained(
        args.folder, compile=False, ov_config={"INFERENCE_NUM_THREADS": str(args.threads)})
    if args.taesd:
        _tiny_decoder_into(pipe, Path(args.taesd))
    shapes = "static"
    try:
        pipe.reshape(batch_size=-1, height=args.size, width=args.size, num_images_per_prompt=1)
    except Exception as exc:  # reported, not fatal: the pipeline still draws
        shapes = f"dynamic (reshape: {type(exc).__name__}: {str(exc)[:80]})"
    pipe.compile()
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    hint = getattr(getattr(denoiser, "request", None), "get_property", lambda _: "?")(
        "INFERENCE_PRECISION_HINT")
    precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    takes = iter(range(1_000_000))

    def draw() -> None:
        take = next(takes)
        image = pipe(prompt=f"{PROMPT}, take {take}", num_inference_steps=args.steps,
                     guidance_scale=args.guidance, height=args.size, width=args.size,
                     generator=torch.Generator().manual_seed(take)).images[0]
        _check_size(*image.size, args)

    diffusers_speed._take_turns(draw, {"load_s": load_s, "precision": precision,
                                       "class": type(pipe).__name__, "shapes": shapes,
                                       "decoder": "tiny" if args.taesd else "full"})


def worker_genai(args: argparse.Namespace) -> None:
    """OpenVINO GenAI's `Text2ImagePipeline` (C++ throughout, tokenizers included) on
    optimum-intel's export, reshaped to the draw size and guidance and compiled for the CPU
    as its docs advise for speed (where the reshape fails, compiled as loaded)."""
    import openvino as ov
    import openvino_genai

    t0 = time.perf_counter()
    pipe = openvino_genai.Text2ImagePipeline(args.folder)
    shapes = "static"
    try:
        pipe.reshape(1, args.size, args.size, args.guidance)
    except Exception as exc:
        shapes = f"dynamic (reshape: {type(exc).__name__}: {str(exc)[:80]})"
    pipe.compile("CPU", INFERENCE_NUM_THREADS=args.threads)
    load_s = time.perf_counter() - t0
    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")  # what it compiles in
    config = pipe.get_generation_config()
    takes = iter(range(1_000_000))

    def draw() -> None:
        take = next(takes)
        image = pipe.generate(f"{PROMPT}, take {take}", width=args.size, height=args.size,
                              num_inference_steps=args.steps, guidance_scale=args.guidance,
                              rng_seed=take)
        _check_size(image.shape[2], image.shape[1], args)  # (batch, height, width, 3)

    diffusers_speed._take_turns(draw, {
        "load_s": load_s, "precision": hint.to_string() if hasattr(hint, "to_string")
        else str(hint), "shapes": shapes, "decoder": "full",
        "max_sequence_length": config.max_sequence_length})


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
        sd.generate_image(f"{PROMPT}, take {take}", width=args.size, height=args.size,
                          cfg_scale=max(1.0, args.guidance), sample_method="euler_a",
                          sample_steps=args.steps, seed=take)

    weights = "f32 weights (as in the files)" if args.wtype == "default" else args.wtype
    diffusers_speed._take_turns(draw, {"load_s": load_s, "precision": weights,
                                       "decoder": "tiny"})


def worker_export(args: argparse.Namespace) -> dict[str, Any]:
    """Export the folder with optimum-intel into --out/pipeline as `optimum-cli export
    openvino --weight-format fp32` does (`main_export`: no weight compression; the
    tokenizers converted to OpenVINO where openvino-tokenizers is on the path, which GenAI
    needs), and with --taesd the tiny decoder's IR into --out/taesd; once per --root."""
    _hide_kernels()
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    t0 = time.perf_counter()
    out = Path(args.out)
    main_export(args.folder, out / "pipeline", task="text-to-image",
                ov_config=OVConfig(dtype="fp32"), convert_tokenizer=True)
    if args.taesd:
        _tiny_decoder_ir(Path(args.taesd), out / "taesd" / "vae_decoder", args.size)
    tokenizers = sorted(path.parent.name
                        for path in (out / "pipeline").glob("*/openvino_tokenizer.xml"))
    return {"export_s": time.perf_counter() - t0, "openvino_tokenizers": tokenizers}


def _tiny_decoder_ir(taesd: Path, target: Path, size: int) -> None:
    """The tiny decoder converted to OpenVINO as FastSD CPU's taesd-openvino lays it out."""
    import openvino as ov
    import torch
    from diffusers import AutoencoderTiny

    tiny = AutoencoderTiny.from_pretrained(taesd)

    class Decode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = tiny.decoder

        def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
            return self.decoder(latent_sample)  # type: ignore[no-any-return]

    latent = size // 8
    with torch.no_grad():
        model = ov.convert_model(Decode().eval(), example_input={
            "latent_sample": torch.randn(1, 4, latent, latent)})
    model.outputs[0].get_tensor().set_names({"sample"})
    target.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, target / "openvino_model.xml")
    tiny.save_config(target)  # scaling_factor 1.0: the pipeline hands it latents as they are


WORKERS: dict[str, Any] = {"plain": worker_plain, "limner": worker_limner,
                           "optimum": worker_optimum, "genai": worker_genai,
                           "sdcpp": worker_sdcpp, "export": worker_export}


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


def site_env(*sites: Path | None) -> dict[str, str]:
    """A worker's PYTHONPATH: the peer's own folders first (optimum-intel's pinned
    transformers, huggingface-hub and diffusers; GenAI's and its tokenizers'), then
    whatever the environment had; limner itself comes from its installation."""
    paths = [str(site) for site in sites if site is not None]
    paths.append(os.environ.get("PYTHONPATH", ""))
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _command(kind: str, args: argparse.Namespace, extra: dict[str, str]) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--threads",
               str(args.threads), "--size", str(args.size), "--steps", str(args.steps),
               "--guidance", str(args.guidance)]
    for key, value in extra.items():
        command += [f"--{key}", value]
    return command


def _env(args: argparse.Namespace, more: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", **(more or {})}


def _reason(stderr: str) -> str:
    """What a worker died of: its last traceback's closing lines (the exception), without
    progress bars, warnings and OpenVINO's source locations."""
    lines = stderr.splitlines()
    if any(line.startswith("Traceback") for line in lines):
        last = max(i for i, line in enumerate(lines) if line.startswith("Traceback"))
        lines = [line for line in lines[last + 1:] if line and not line.startswith(" ")]
    else:
        lines = [line for line in lines if line.strip() and "Warning" not in line
                 and "it/s]" not in line][-3:]
    text = " ".join(line.strip() for line in lines)
    return re.sub(r"Exception from \S+:\d+:\s*", "", text)


def _log_tail(log: Path) -> str:
    try:
        return _reason(log.read_text(errors="replace"))
    except OSError:
        return ""


class PeerTurns(diffusers_speed.Turns):
    """A worker of this script drawing on demand in turns with the yardstick; its stderr
    goes to a log under --root/logs, whose last lines are the reason where it dies."""

    def __init__(self, kind: str, args: argparse.Namespace, env: dict[str, str] | None = None,
                 log_name: str | None = None, **extra: str) -> None:
        self.kind = kind
        logs = args.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log = logs / f"{log_name or kind}.log"
        with self.log.open("w") as stderr:
            self.process = subprocess.Popen(_command(kind, args, extra), env=_env(args, env),
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=stderr, text=True)
        self.info: dict[str, Any] = self._wait("READY")
        self.times: list[float] = []

    def _wait(self, tag: str) -> Any:
        try:
            return super()._wait(tag)
        except SystemExit as exc:
            raise SystemExit(f"{exc}: {_log_tail(self.log)} ({self.log})") from None

    def end(self) -> dict[str, Any]:
        extras = self.extras() if self.kind == "limner" else {}
        return {**super().end(), **extras}


def run_once(kind: str, args: argparse.Namespace, env: dict[str, str] | None = None,
             **extra: str) -> dict[str, Any]:
    """A worker of this script that runs once and prints its RESULT."""
    done = subprocess.run(_command(kind, args, extra), env=_env(args, env), capture_output=True,
                          text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise SystemExit(f"{kind} failed: {_reason(done.stderr)}")


@dataclass
class Inputs:
    """What the peers of one family draw from: the diffusers folder, the tiny decoder
    (SD-Turbo only), and where the exports and logs go."""

    family: str
    folder: Path
    taesd: Path | None
    key: str
    """The folder's name under --root/optimum and --root/sdcpp, and its logs' prefix."""


def exported(inputs: Inputs, args: argparse.Namespace) -> Path:
    """optimum-intel's export of the family's folder (once per --root), for the `optimum`
    and `genai` workers; SystemExit with the reason where it cannot be made."""
    if args.optimum_site is None:
        raise SystemExit("not run: --optimum-site not given (optimum-intel exports the IR "
                         "that optimum and GenAI draw with; its pins clash with limner's "
                         "environment; see this script's docstring)")
    out = args.root / "optimum" / inputs.key
    done = out / "export.json"
    if not done.is_file():
        print(f"  exporting {inputs.key} with optimum-intel (once) ...", flush=True)
        # GenAI's folder comes second: its openvino-tokenizers converts the tokenizers.
        result = run_once("export", args, site_env(args.optimum_site, args.genai_site),
                          folder=str(inputs.folder), out=str(out),
                          taesd=str(inputs.taesd or ""))
        done.write_text(json.dumps(result))
        print(f"  exported in {result['export_s']:.0f} s; OpenVINO tokenizers: "
              f"{', '.join(result['openvino_tokenizers']) or 'none'}", flush=True)
    return out


def start(name: str, args: argparse.Namespace, inputs: Inputs) -> PeerTurns:
    """The worker for `name`, loaded; SystemExit with the reason where it cannot run."""
    log = f"{inputs.key.replace('/', '-')}-{name}"
    if name in LIMNER:
        options: dict[str, Any] = {"cache_dir": str(args.root / "cache"), **LIMNER[name]}
        if inputs.family == "sd-turbo":
            from limner.engines.diffusers.presets import PRESETS

            options = {**PRESETS["sd-turbo"].engine_options(), "tiny_decoder": str(inputs.taesd),
                       **options}
        return PeerTurns("limner", args, log_name=log, folder=str(inputs.folder),
                         options=json.dumps(options))
    if name == "plain":
        return PeerTurns("plain", args, log_name=log, folder=str(inputs.folder))
    if name.startswith("optimum"):
        out = exported(inputs, args)
        tiny = str(out / "taesd") if name == "optimum-tiny" else ""
        return PeerTurns("optimum", args, site_env(args.optimum_site), log_name=log,
                         folder=str(out / "pipeline"), taesd=tiny)
    if name == "genai":
        if args.genai_site is None:
            raise SystemExit("not run: --genai-site not given (a folder holding "
                             "openvino-genai and openvino-tokenizers; see the docstring)")
        out = exported(inputs, args) / "pipeline"
        if not any(out.glob("*/openvino_tokenizer.xml")):
            raise SystemExit(f"not run: the export {out} has no OpenVINO tokenizers (exported "
                             "without openvino-tokenizers on the path: remove it to redo it)")
        return PeerTurns("genai", args, site_env(args.genai_site), log_name=log,
                         folder=str(out))
    if name.startswith("sdcpp"):
        if inputs.taesd is None:
            raise SystemExit("not run: stable-diffusion.cpp is timed on SD-Turbo only")
        try:
            import stable_diffusion_cpp  # noqa: F401
        except ImportError as exc:
            raise SystemExit(f"not run: stable-diffusion-cpp-python is not installed ({exc})"
                             ) from exc
        prepared = sdcpp_folder(inputs.folder, args.root / "sdcpp" / inputs.key)
        weights = next(inputs.taesd.glob("*.safetensors"))
        return PeerTurns("sdcpp", args, log_name=log, folder=str(prepared),
                         taesd=str(weights), wtype="q8_0" if name == "sdcpp-q8" else "default")
    raise SystemExit(f"unknown peer {name!r}")


def prepare(family: str, args: argparse.Namespace) -> Inputs:
    """The family's random-weight pipeline (built once under --root)."""
    from random_pipelines import build_family_pipeline, build_pipeline, build_taesd

    if family == "sd-turbo":
        return Inputs(family, build_pipeline("sd-turbo", args.root),
                      build_taesd(args.root / "taesd"), "sd-turbo")
    folder = build_family_pipeline(family, args.scale, args.size, args.root)
    return Inputs(family, folder, None, f"{args.scale}/{folder.name}")


def run_family(family: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every peer of the family in turns with the yardstick; the family's report."""
    inputs = prepare(family, args)
    report: dict[str, Any] = {"size": args.size, "steps": args.steps,
                              "guidance": args.guidance, "folder": str(inputs.folder),
                              "scale": None if family == "sd-turbo" else args.scale,
                              "peers": {}}
    print(f"\n{family} ({inputs.folder}), {args.size}x{args.size}, {args.steps} step(s), "
          f"guidance {args.guidance:g}; median of {args.reps} after a warm-up, each in turns "
          f"with {YARDSTICK}", flush=True)
    peers = args.peers or ",".join(SD_TURBO_PEERS if family == "sd-turbo" else FAMILY_PEERS)
    try:
        yardstick = start(YARDSTICK, args, inputs)
        yardstick.draw(timed=False)
    except SystemExit as exc:
        print(f"  {YARDSTICK}: {exc}", flush=True)
        report["peers"][YARDSTICK] = {"error": str(exc)}
        return report
    for name in [p for p in peers.split(",") if p and p != YARDSTICK]:
        try:
            peer = start(name, args, inputs)
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
              f"{result['peak_rss_mib']:.0f} MiB; load {result['load_s']:.1f} s; "
              f"{_precision(name, result)}"
              + (f"; shapes {result['shapes']}" if result.get("shapes", "static") != "static"
                 else ""), flush=True)
    own = yardstick.end()
    own["vs_yardstick"] = 1.0
    report["peers"][YARDSTICK] = own
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="sd-turbo",
                    help=f"comma-separated, of {', '.join(SETTINGS)} (default: sd-turbo)")
    ap.add_argument("--scale", choices=("tiny", "small"), default="tiny",
                    help="the other families' random pipelines: tiny (limner's test ones: "
                         "a rehearsal) or small (a mid-size denoiser; see random_pipelines)")
    ap.add_argument("--size", type=int, default=None,
                    help="square side in pixels (default: the family's, 512 but Sana-Sprint)")
    ap.add_argument("--steps", type=int, default=None,
                    help="denoising steps (default: the family's, see SETTINGS)")
    ap.add_argument("--guidance", type=float, default=None,
                    help="guidance scale (default: the family's, see SETTINGS)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "limner-bench")
    ap.add_argument("--optimum-site", type=Path, default=None,
                    help="a folder holding optimum-intel and its pinned dependencies")
    ap.add_argument("--genai-site", type=Path, default=None,
                    help="a folder holding openvino-genai and openvino-tokenizers")
    ap.add_argument("--peers", default=None,
                    help=f"which to time against {YARDSTICK}, comma-separated (default: "
                         f"{','.join(SD_TURBO_PEERS)} for sd-turbo, "
                         f"{','.join(FAMILY_PEERS)} for the others)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    for hidden in ("folder", "taesd", "out", "wtype"):
        ap.add_argument(f"--{hidden}", default="", help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        result = WORKERS[args.worker](args)
        if result is not None:
            print("RESULT " + json.dumps(result), flush=True)
        return 0

    families = [f for f in args.family.split(",") if f]
    unknown = sorted(set(families) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"unknown families {unknown}; known: {', '.join(SETTINGS)}")
    cpu, bf16 = diffusers_speed._cpu()
    print(f"CPU: {cpu}; bf16 fast path: {'yes' if bf16 else 'no'}; {args.threads} threads",
          flush=True)
    report: dict[str, Any] = {"cpu": cpu, "bf16_fast_path": bf16, "threads": args.threads,
                              "families": {}}
    size, steps, guidance = args.size, args.steps, args.guidance
    failed = 0
    for family in families:
        args.size = size if size is not None else SETTINGS[family].size
        args.steps = steps if steps is not None else SETTINGS[family].steps
        args.guidance = guidance if guidance is not None else SETTINGS[family].guidance
        report["families"][family] = run_family(family, args)
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2))
        failed += _table(family, report["families"][family]["peers"])
    return 1 if failed else 0


def _precision(name: str, result: dict[str, Any]) -> str:
    """What a row computed in: OpenVINO's precision for limner's OpenVINO paths (plus int8),
    torch's dtype for the torch ones, the peer's own word for the rest."""
    if "precision" in result:
        return str(result["precision"]).lower()
    if result.get("backend") == "openvino":
        return f"OpenVINO {result['ov_precision']}" + (" + int8" if name == "limner-int8"
                                                        else "")
    return str(result.get("dtype", "?"))


def _table(family: str, results: dict[str, dict[str, Any]]) -> int:
    """The family's table and its `limner/best_peer` line; 1 where no pair ran."""
    print(f"\n{family}:\n| engine | s/image | vs {YARDSTICK} (same turns) | peak RSS | "
          "precision, decoder |")
    print("|---|---|---|---|---|")
    ran = {name: r for name, r in results.items() if "error" not in r}
    for name, r in sorted(ran.items(), key=lambda item: -item[1]["vs_yardstick"]):
        print(f"| {name} | {r['seconds']:.3f} | {r['vs_yardstick']:.2f}x | "
              f"{r['peak_rss_mib'] / 1024:.2f} GiB | {_precision(name, r)}, {r.get('decoder')} |")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | - | - | - | {r['error'].splitlines()[0][:160]} |")
    ours = {n: r["vs_yardstick"] for n, r in ran.items() if n.startswith("limner")}
    theirs = {n: r["vs_yardstick"] for n, r in ran.items() if not n.startswith("limner")}
    lossless_ours = {n: v for n, v in ours.items() if n not in LOSSY}
    lossless_theirs = {n: v for n, v in theirs.items() if n not in LOSSY}
    if "limner-int8" in ours and theirs:
        peer = max(theirs, key=theirs.__getitem__)
        print(f"limner-int8/best_peer (lossy included): "
              f"{ours['limner-int8'] / theirs[peer]:.2f}x ({peer})")
    if not lossless_ours or not lossless_theirs:
        print(f"limner/best_peer ({family}): n/a (no peer ran)")
        return 1
    mine = max(lossless_ours, key=lossless_ours.__getitem__)
    peer = max(lossless_theirs, key=lossless_theirs.__getitem__)
    print(f"limner/best_peer ({family}): {lossless_ours[mine] / lossless_theirs[peer]:.2f}x "
          f"({mine} against {peer})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
