"""Seconds per image of each family at its real size on this CPU, per part, torch against
OpenVINO, without holding the real model.

Usage:
    python benchmarks/families_cpu.py [--families sana-sprint,flux1-schnell,...]
        [--threads 2] [--openvino] [--steps N] [--json out.json]

FLUX.1 (17 B parameters with its encoders), Qwen-Image (29 B) and Z-Image (10 B) do not fit
a 24 GiB machine in bf16, and drawing one image of them takes minutes on two cores, so each
component's time is measured on copies cut in depth and extrapolated: a transformer's (or a
text encoder's) blocks all have the same width and sequence, so its time is linear in how
many there are. Every component is built at its real width from `benchmarks/configs/`
(`family_pipelines`) with one block of each kind, then once more with two of one kind at a
time; the difference is that kind's cost per block, and the real depth's time is the
one-block time plus the per-block cost times the blocks added. UNets and VAEs are built
whole. The pipeline is drawn at the family's own size, steps and call (`pipeline.json`), and
each component's share is timed at its call (`forward`, or the VAE's `decode`); the rest
(scheduler, latents, Python) is `other`.

Torch runs in bf16 where the CPU has it (else float32), as limner's default plan does for
these families; with --openvino the denoiser and the VAE's decoder are then converted as
limner's OpenVINO backend converts them (`OVDenoiser`, `OVDecoder`: the first call converts)
and timed in the same builds, so each family's line says which is faster at the real width.
The text encoders stay in torch either way (limner caches their output per prompt).
One warm-up draw and one timed draw per build; a new prompt each.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import family_pipelines as fp

DEPTH_KEYS = ("num_layers", "num_single_layers", "n_layers", "num_hidden_layers")
"""Config keys that count a component's repeated blocks (T5's `num_layers`, CLIP's, Gemma's
and Qwen's `num_hidden_layers`, the transformers' block counts)."""
DUAL = "dual_attention_layers"
"""SD3.5's MMDiT-X lists the blocks that add a second self-attention over the image tokens
(SD3.5 Medium: 13 of its 24): a block kind of its own, `DUAL` counting those and
`num_layers` the plain ones (`overrides` makes the first `DUAL` blocks the dual ones, as
the release does, so the last block, context-pre-only, is plain in a cut as in the real)."""
FAMILIES = ("sana-sprint", "sd-turbo", "sdxl-turbo", "sd35-medium", "flux2-klein",
            "z-image-turbo", "flux1-schnell", "qwen-image")
PROMPT = "a lighthouse on a cliff at dusk, oil painting, take {}"


def depth_keys(family: str) -> dict[str, dict[str, int]]:
    """component -> {depth key: real count} for every cut-able component of `family`."""
    spec = fp.FamilySpec.load(family)
    out: dict[str, dict[str, int]] = {}
    for name, entry in spec.components.items():
        if entry is None or name == "scheduler" or (isinstance(entry, Mapping)
                                                    and "tokenizer" in entry):
            continue
        config = fp.component_config(family, name)
        if str(config.get("_class_name", "")).startswith(("UNet", "Autoencoder")):
            continue
        text = config.get("text_config")
        found = {key: int(config[key]) for key in DEPTH_KEYS
                 if isinstance(config.get(key), int) and config[key] > 1}
        if isinstance(text, dict) and isinstance(text.get("num_hidden_layers"), int):
            found["num_hidden_layers"] = int(text["num_hidden_layers"])
        dual = config.get(DUAL)
        if dual and isinstance(config.get("num_layers"), int):
            total = int(config["num_layers"])
            found.pop("num_layers", None)
            found[DUAL] = sum(1 for i in set(dual) if 0 <= int(i) < total)
            if total > found[DUAL]:
                found["num_layers"] = total - found[DUAL]
        if found:
            out[name] = found
    return out


def overrides(family: str, cut: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, Any]]:
    """Config values for a cut: T5 counts its decoder too, Qwen its sliding-window layers and
    Qwen2.5-VL its text tower in `text_config`; set them alike so the config stays whole.
    MMDiT-X's `DUAL` count becomes the list of its first blocks, `num_layers` the sum."""
    out: dict[str, dict[str, Any]] = {}
    for component, keys in cut.items():
        values: dict[str, Any] = dict(keys)
        if DUAL in keys:
            values[DUAL] = list(range(keys[DUAL]))
            values["num_layers"] = keys[DUAL] + keys.get("num_layers", 0)
        if "num_layers" in keys and component.startswith("text_encoder"):
            values["num_decoder_layers"] = keys["num_layers"]
        config = fp.component_config(family, component)
        if "num_hidden_layers" in keys and "max_window_layers" in config:
            values["max_window_layers"] = keys["num_hidden_layers"]
        if "num_hidden_layers" in keys and isinstance(config.get("text_config"), dict):
            values["text_config"] = {"num_hidden_layers": keys["num_hidden_layers"],
                                     "max_window_layers": keys["num_hidden_layers"]}
        out[component] = values
    return out


@contextmanager
def timed_parts(pipe: Any, times: dict[str, float]) -> Iterator[None]:
    """Adds each model component's seconds in the calls made inside the block to `times`
    (a VAE through `decode`, every other module through `forward`)."""
    undo: list[Callable[[], None]] = []
    for name, part in pipe.components.items():
        method = "decode" if name == "vae" else "forward"
        real = getattr(part, method, None)
        if real is None or not callable(real) or isinstance(part, (str, type(None))) \
                or name.startswith(("tokenizer", "scheduler")):
            continue

        def timer(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _real(*args, **kwargs)
            finally:
                times[_name] += time.perf_counter() - started

        object.__setattr__(part, method, timer)
        undo.append(lambda part=part, method=method: object.__delattr__(part, method))
    try:
        yield
    finally:
        for step in undo:
            step()


def draw(pipe: Any, spec: fp.FamilySpec, take: int, steps: int) -> dict[str, float]:
    """One image at the family's size in `steps`; seconds per component and in all."""
    times: dict[str, float] = defaultdict(float)
    generator = torch.Generator().manual_seed(take)
    started = time.perf_counter()
    with timed_parts(pipe, times), torch.inference_mode():
        pipe(prompt=PROMPT.format(take), num_inference_steps=steps, height=spec.size,
             width=spec.size, generator=generator, output_type="pil",
             **{**spec.call, **out_layers(pipe)})
    total = time.perf_counter() - started
    times["other"] = total - sum(times.values())
    times["total"] = total
    return dict(times)


def out_layers(pipe: Any) -> dict[str, tuple[int, ...]]:
    """FLUX.2's pipelines stack the text encoder's hidden states of fixed layers (9, 18, 27 of
    Qwen3's 36): a cut encoder has fewer, so the stack takes its last ones in their place
    (the encoder runs every layer either way, so the cost is the cut's)."""
    default = inspect.signature(type(pipe).__call__).parameters.get("text_encoder_out_layers")
    if default is None:
        return {}
    depth = int(pipe.text_encoder.config.num_hidden_layers)
    return {"text_encoder_out_layers": tuple(min(k, depth) for k in default.default)}


def openvino_parts(family: str) -> list[str]:
    """What limner's OpenVINO backend converts of `family`: the denoiser, the family's large
    text encoders (`Family.openvino_encoders`) and the VAE's decoder; nothing for a family
    it does not run (`Family.openvino` None)."""
    from limner.engines.diffusers.families import family_for

    spec = fp.FamilySpec.load(family)
    if family_for(spec.pipeline).openvino is None:
        return []
    denoiser = "unet" if "unet" in spec.components else "transformer"
    return [denoiser, *family_for(spec.pipeline).openvino_encoders, "vae"]


def to_openvino(pipe: Any, threads: int, precision: str, parts: list[str]) -> None:
    """`parts` of the pipeline as limner's OpenVINO backend runs them (each converted at its
    first call, the VAE's decoder at once)."""
    from limner.engines.diffusers.accel import openvino as ovb

    runtime = ovb.OpenVINORuntime(None, threads, precision)
    if "vae" not in parts and isinstance(getattr(pipe, "vae", None), torch.nn.Module):
        pipe.vae.float()  # the converted denoiser hands it float32 latents (as in limner)
    for name in parts:
        module = getattr(pipe, name)
        wrapped = runtime.vae_decoder(module.float(), "bench") if name == "vae" else \
            runtime.denoiser(module, "bench", name) if name in ("unet", "transformer") else \
            runtime.encoder(module, "bench", name)
        object.__setattr__(pipe, name, wrapped)


def measure_build(family: str, cut: Mapping[str, Mapping[str, int]], dtype: torch.dtype,
                  args: argparse.Namespace, takes: Iterator[int],
                  convert: list[str]) -> dict[str, Any]:
    """One build drawn in torch, then with `convert`'s parts in OpenVINO (none: torch only;
    a depth build converts only the part whose depth it changes)."""
    spec = fp.FamilySpec.load(family)
    steps = args.steps or spec.steps
    components = fp.build_components(family, "cpu", dtype, overrides=overrides(family, cut))
    pipe = fp.make_pipeline(family, components)
    draw(pipe, spec, next(takes), steps)  # warm-up
    result: dict[str, Any] = {"torch": draw(pipe, spec, next(takes), steps)}
    if convert:
        precision = "bf16" if dtype == torch.bfloat16 else "f32"
        result["openvino_parts"] = convert
        try:
            to_openvino(pipe, args.threads, precision, convert)
            started = time.perf_counter()
            draw(pipe, spec, next(takes), steps)  # converts at the first call
            result["openvino_convert_s"] = time.perf_counter() - started
            result["openvino"] = draw(pipe, spec, next(takes), steps)
        except Exception as exc:  # a family OpenVINO cannot convert: say so, go on
            result["openvino_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    del pipe, components
    gc.collect()
    return result


def extrapolate(base: Mapping[str, float], slopes: Mapping[str, Mapping[str, float]],
                real: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Each component's time at the real depth from the one-block build and the per-block
    costs (`slopes[component][key]`); other parts as measured."""
    out = dict(base)
    for component, keys in real.items():
        for key, count in keys.items():
            out[component] = out.get(component, 0.0) + \
                slopes.get(component, {}).get(key, 0.0) * (count - 1)
    out["total"] = sum(v for k, v in out.items() if k != "total")
    return out


def measure_family(family: str, args: argparse.Namespace) -> dict[str, Any]:
    from limner.engines.cpu import cpu_has_bf16

    dtype = torch.bfloat16 if cpu_has_bf16() else torch.float32
    real = depth_keys(family)
    base_cut = {component: dict.fromkeys(keys, 1) for component, keys in real.items()}
    takes = iter(range(1_000_000))
    print(f"{family}: real depths {real}", flush=True)
    parts = openvino_parts(family) if args.openvino else []
    base = measure_build(family, base_cut, dtype, args, takes, parts)
    print(f"  one block of each: {summary(base)}", flush=True)
    slopes: dict[str, dict[str, dict[str, float]]] = {"torch": {}, "openvino": {}}
    for component, keys in real.items():
        for key, count in keys.items():
            if count < 2:
                continue  # no block beyond the one-block build's: no slope needed
            cut = {c: dict(k) for c, k in base_cut.items()}
            cut[component][key] = 2
            more = measure_build(family, cut, dtype, args, takes,
                                 [component] if component in parts else [])
            print(f"  {component}.{key} = 2: {summary(more)}", flush=True)
            for backend in ("torch", "openvino"):
                if backend not in more or backend not in base:
                    continue
                if backend == "openvino" and component not in more.get("openvino_parts", ()):
                    continue  # left in torch there: torch's slope stands
                slope = max(0.0, more[backend][component] - base[backend][component])
                slopes[backend].setdefault(component, {})[key] = slope
    torch_real = extrapolate(base["torch"], slopes["torch"], real)
    result: dict[str, Any] = {"family": family, "dtype": str(dtype), "real_depths": real,
                              "size": fp.FamilySpec.load(family).size,
                              "steps": args.steps or fp.FamilySpec.load(family).steps,
                              "one_block": base, "slopes": slopes, "torch": torch_real}
    if "openvino" in base:
        ov_slopes = {**slopes["torch"], **slopes["openvino"]}
        ov_real = extrapolate(base["openvino"], ov_slopes, real)
        result["openvino"] = ov_real
        denoiser = "transformer" if "transformer" in torch_real else "unet"
        result["openvino_vs_torch_denoiser"] = torch_real[denoiser] / ov_real[denoiser]
        result["openvino_vs_torch_vae"] = torch_real["vae"] / ov_real["vae"]
    elif "openvino_error" in base:
        result["openvino_error"] = base["openvino_error"]
    return result


def summary(result: Mapping[str, Any]) -> str:
    parts = []
    for backend in ("torch", "openvino"):
        if backend in result:
            parts.append(backend + " " + ", ".join(f"{k} {v:.2f}"
                                                   for k, v in result[backend].items()))
    if "openvino_error" in result:
        parts.append("openvino failed: " + result["openvino_error"][:120])
    return "; ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--openvino", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--steps", type=int, help="draw this many steps instead of the family's "
                    "own (a 40-step family's per-step cost in less time)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = []
    for family in args.families.split(","):
        started = time.perf_counter()
        try:
            result = measure_family(family, args)
        except Exception as exc:  # one family failing leaves the others' figures
            result = {"family": family, "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = time.perf_counter() - started
        results.append(result)
        line = f"{family}: " + (result.get("error") or (
            f"torch {result['torch']['total']:.1f} s/image ("
            + ", ".join(f"{k} {v:.1f}" for k, v in result["torch"].items() if k != "total")
            + ")"))
        if "openvino" in result:
            line += (f"; openvino {result['openvino']['total']:.1f} s/image, denoiser "
                     f"{result['openvino_vs_torch_denoiser']:.2f}x torch's, VAE decoder "
                     f"{result['openvino_vs_torch_vae']:.2f}x")
        print(line, flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
