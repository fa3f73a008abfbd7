"""DiffusersEngine: any diffusers pipeline, from a local folder or a hub id.

What differs between families (SD, SDXL, SD3, FLUX.1, Kontext, FLUX.2, Qwen-Image and its
edit models, Z-Image, Sana, PixArt, LCM) lives in their adapters (`families`): sizes, steps,
controls, latents and previews, and how each edits; this module keeps the load, the batch
and the callbacks. Steps are reported through the pipeline's step hook; a
`GenerationCancelled` raised there propagates out of the pipeline, so a cancelled batch never
reaches the (expensive) VAE decode. Edits run through diffusers' image-to-image and
inpainting pipelines made from the loaded one's components (`AutoPipelineFor*.from_pipe`, so
they share its weights and every speed-up applied to them), through an instruction-edit
model's own call with the pictures as references, or through `generic_edit`. A draw that
fails inside a speed-up switches it off and draws again (`STEP_DOWN`).

Its options are parsed and every default settled by `options` (torch-free), before
anything loads. Fast paths (engine options): text-encoder outputs are cached per prompt; `backend =
"openvino"` runs Stable Diffusion's UNet, tiny decoder and text encoder, and the other
converting families' denoiser (at its first call) and VAE decoder, in OpenVINO on the CPU (see
`accel.openvino`, imported only then; `auto` takes it for the families it measured faster
on, `Family.openvino`), and `quantize = "int8"` quantizes the denoiser and tiny decoder once
with NNCF from a few calibration draws; `compile = true` (or a `torch.compile`
mode name) wraps the UNet and the VAE's decoder in `torch.compile`; eager torch on a CPU packs its
convolution and linear weights once for oneDNN (`prepack`) and runs the elementwise work
around them inside those calls (`fuse`, see `fusion`), each where a check on small layers
finds this CPU's oneDNN computing what torch computes (`kernel_check`); on a CPU in bf16 the
UNet and decoders run in NHWC order (`channels_last`; `layout` keeps the attention blocks'
outputs so), and the large components are saved once in bf16 under `cache_dir` and read
from there afterwards (see `weight_cache`), which halves the memory a load peaks at.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from limner.budget import device_name
from limner.engines import footprint
from limner.engines.base import EngineError, EngineInfo, split_per_request
from limner.engines.cpu import cpu_has_bf16
from limner.engines.diffusers import adapters as loras
from limner.engines.diffusers import generic_edit, memory, processors
from limner.engines.diffusers.accel import compile as compile_models
from limner.engines.diffusers.accel import fusion, kernel_check, layout, weight_cache
from limner.engines.diffusers.accel import prepack as weight_packing
from limner.engines.diffusers.families import Family, family_for
from limner.engines.diffusers.families.base import OpenVINOWay
from limner.engines.diffusers.options import (
    DiffusersOptions,
    LoadPlan,
    Platform,
    quality_steps,
    resolve,
)
from limner.errors import InvalidRequest
from limner.jobs import Adapter, GenerationParams, StepCallback, StepUpdate

log = logging.getLogger("limner.engines.diffusers")
_T = TypeVar("_T")

PREVIEW_MAX_SIDE = 160
"""Partial images are decoded from latents pooled to at most this many pixels on the long
side: a preview costs a few percent of its image (a full-size decode costs as much as a
one-step model's whole denoising), and the server scales it to the requested size."""
PROMPT_CACHE_SIZE = 256
MAX_STEPS = 100
SCHEDULER_CLASSES = {"euler": "EulerDiscreteScheduler",
                     "euler_a": "EulerAncestralDiscreteScheduler",
                     "dpm++": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler",
                     "lcm": "LCMScheduler"}
"""A request's `scheduler` (`jobs.SAMPLERS`) -> the diffusers class, made from the
pipeline's own scheduler config."""
_SD_ENCODE_PROMPT = ["self", "prompt", "device", "num_images_per_prompt",
                     "do_classifier_free_guidance", "negative_prompt"]
STEP_DOWN = ("compile", "int8", "openvino", "fuse", "prepack", "channels_last",
             "prompt_cache", "weight_cache")
"""The speed-ups switched off one at a time, in this order, when drawing fails inside
them: the newest and least general first, down to plain diffusers."""


TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def detect_platform() -> Platform:
    """This machine, as `options.resolve` needs to know it."""
    return Platform(cuda=torch.cuda.is_available(), cpu_bf16=cpu_has_bf16(),
                    onednn=weight_packing.supported(torch.float32),
                    onednn_bf16=weight_packing.supported(torch.bfloat16),
                    openvino=importlib.util.find_spec("openvino") is not None)


def sd_unet(config: Mapping[str, Any] | None) -> bool:
    """A Stable Diffusion 1.x/2.x-style UNet (no added embeddings as SDXL's), which OpenVINO
    runs through its own wrappers (`OVUNet`, with int8 tuned for it)."""
    return config is not None and config.get("addition_embed_type") is None


def _own_watermark_off(pipe: Any) -> None:
    """SDXL's pipelines mark every picture with the invisible-watermark package wherever it
    happens to be installed: limner's `watermark` setting decides instead, so a seed draws
    the same pixels whatever else is installed (the mark's cost is in docs/performance.md)."""
    if getattr(pipe, "watermark", None) is not None:
        pipe.watermark = None


def openvino_runs(model: str) -> OpenVINOWay | None:
    """How OpenVINO runs `model` (its family's `openvino`: `auto`, `decoder`, `asked` or
    None), read from its configs without loading any weights; None where they cannot be
    read."""
    kind = _pipeline_class(model)
    return family_for(kind).openvino if kind else None


def _pipeline_class(model: str) -> str:
    """`model_index.json`'s pipeline class, or "" where it cannot be read."""
    from diffusers import DiffusionPipeline

    try:
        return str(DiffusionPipeline.load_config(model).get("_class_name", ""))
    except Exception:  # the load that follows says what is wrong with the model
        return ""


def pick_dtype(device: str, requested: str = "auto") -> torch.dtype:
    """torch's dtype for the `dtype` option on `device` (`auto` as `resolve` decides it)."""
    options = DiffusersOptions.parse({"dtype": requested, "device": device})
    return TORCH_DTYPES[resolve(options, detect_platform()).dtype]


class DiffusersEngine:
    """Options are the config table's keys (`options.DiffusersOptions`); `resolve` settles
    them into `plan` at construction. `prepack` and `fuse` say what runs: a load turns them
    off where this CPU's oneDNN disagrees with torch, and the plan keeps what was chosen."""

    def __init__(self, model: str, **options: Any) -> None:
        self.model = model
        self.options = DiffusersOptions.parse(options)
        self.plan = resolve(self.options, detect_platform(),
                            model_is_folder=Path(model).is_dir())
        o = self.options
        self.threads = o.threads
        self.cache_dir = o.cache_dir
        self.compile = o.compile
        self._follow(self.plan)
        if self.quantize == "int8" and importlib.util.find_spec("nncf") is None:
            raise ValueError("quantize = 'int8' needs NNCF, which is not installed: "
                             "pip install 'limner[int8]'")
        self._ov_runtime: Any = None
        """The OpenVINO runtime of the last load, until its int8 quantization is done."""
        self._openvino_decoder = False
        """True where torch's plan runs the VAE's decoder in OpenVINO (the `decoder` way)."""
        self.cache_weights = o.cache_weights
        self.guidance = o.guidance
        self.tiny_decoder = o.tiny_decoder
        self.decoder = o.decoder
        self.scheduler = dict(o.scheduler)
        self._native = o.native_size
        self._name = o.name or Path(model.rstrip("/")).name
        self.weights_from_cache: list[str] = []
        """Components the last load found in the weight cache, and those it wrote there
        (from their weight files, or after loading where those did not allow it)."""
        self.weights_saved: list[str] = []
        self.pipe: Any = None
        self.tiny: Any = None
        self._preview_decoder: Any = None
        """The tiny decoder's eager module, when the pipeline decodes with a compiled one."""
        self._embeds: OrderedDict[tuple[str, bool, str | None],
                                  tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self._samplers: dict[str, Any] = {}
        self._negative: torch.Tensor | None = None
        self._editors: dict[str, Any] = {}
        """`redraw` and `inpaint` -> diffusers' image-to-image and inpainting pipelines,
        made from the loaded pipeline's own components; empty where it cannot edit."""
        self._cfg = False
        self._cache_prompts = False
        self._sd_encode = False
        self._cache: Path | None = None
        self._missing: list[str] = []
        self.applied: list[str] = []
        """What each step of the last load did, in order (`load`)."""
        self._controls: frozenset[str] = frozenset()
        """What the loaded pipeline honours of `jobs.CONTROLS` (`Family.controls`)."""
        self.family: Family = Family()
        """The pipeline's family adapter (`families`), known once it is loaded."""
        self._edit_ways: dict[str, str] = {}
        """`redraw` and `inpaint` -> `pipelines`, `reference` or `generic` (`families`)."""
        self._broken_previews: set[str] = set()
        self.stepped_down: list[str] = []
        """The speed-ups switched off because drawing failed inside them, with why."""
        self.loras = loras.Loras(self._name)
        """The per-request LoRAs loaded into the pipeline (`adapters`)."""

    def _follow(self, plan: LoadPlan) -> None:
        """Take the plan's choices as what the next load does."""
        self.plan = plan
        self.backend = plan.backend
        self.device = plan.device
        self.dtype = TORCH_DTYPES[plan.dtype]
        self.ov_precision = plan.openvino_precision or "f32"
        self.quantize = plan.quantize
        self.quantize_samples = plan.quantize_samples
        self.channels_last = plan.channels_last
        self.warmup = plan.warmup
        self.prepack = plan.prepack
        self.fuse = plan.fuse
        self.steps = dict(plan.steps)
        self._max_batch = plan.max_batch_images

    def _settle_backend(self) -> None:
        """`backend = "auto"` chose OpenVINO before the model's kind was known: a kind it
        cannot run, or runs no faster, goes back to torch's own plan (dtype, packing,
        fusion) before anything loads, so the pipeline is loaded as torch will run it; a
        kind whose VAE decoder alone is faster in OpenVINO keeps that (`decoder`)."""
        self._openvino_decoder = False
        if self.backend != "openvino":
            return
        way = openvino_runs(self.model)
        kind = _pipeline_class(self.model) or "this model"
        if way and self.ov_precision == "bf16" and \
                family_for(kind).name not in ("sd", "lcm"):
            # Beyond SD, what stays in torch (a text encoder OpenVINO cannot convert, the
            # VAE's encoder) is large: bf16, as torch's own plan would draw it.
            reasons = tuple(reason.replace("left in torch in float32", "left in torch in "
                                           "bfloat16 (beyond SD they are large)")
                            for reason in self.plan.reasons)
            self._follow(dataclasses.replace(self.plan, dtype="bfloat16", reasons=reasons))
        if self.options.backend != "auto" or way == "auto":
            return
        plan = resolve(dataclasses.replace(self.options, backend="torch"), detect_platform(),
                       model_is_folder=Path(self.model).is_dir())
        why = f"backend torch (auto: OpenVINO does not run {kind})" if not way else \
            f"backend torch (auto: torch is faster than OpenVINO for {kind} on a CPU)"
        if way == "decoder":
            why = (f"backend torch, the VAE decoder in OpenVINO (auto: for {kind} on a CPU "
                   "torch's denoiser is as fast, OpenVINO's decoder faster)")
        self._follow(dataclasses.replace(plan, reasons=(why, *plan.reasons[1:])))
        self._openvino_decoder = way == "decoder"

    @property
    def info(self) -> EngineInfo:
        size = self._native or 512
        loaded = self.pipe is not None
        controls = self._controls if loaded else frozenset(
            {"negative_prompt", "guidance_scale", "scheduler"})
        references = self.family.references if self._edit_ways.get("redraw") == "reference" \
            else 0
        return EngineInfo(name=self._name, native_width=size, native_height=size,
                          draws_alpha=False, max_batch_images=self._max_batch,
                          controls=controls, max_steps=MAX_STEPS, edits=bool(self._editors),
                          references=references, adapters=self._takes_loras(),
                          speedups=self._running() if loaded else ())

    def _takes_loras(self) -> bool:
        """Before a load, what the plan expects; after, what runs (`adapters.refusal`)."""
        if self.pipe is None:
            return self.plan.request_loras
        return loras.refusal(self.pipe, self.options.request_loras, self._running()) is None

    def _running(self) -> tuple[str, ...]:
        running = {"openvino": self.backend == "openvino" or self._openvino_decoder,
                   "int8": self.quantize == "int8",
                   "compile": bool(self.compile),
                   "channels_last": self.channels_last, "prepack": self.prepack,
                   "fuse": self.fuse, "prompt_cache": self._cache_prompts,
                   "weight_cache": bool(self.weights_from_cache or self.weights_saved)}
        return tuple(name for name, on in running.items() if on)

    def load(self) -> None:
        """Loads the pipeline, then runs the plan's steps in this order, each saying what it
        did (`applied`, and the log): weights are saved before packing, since packed weights
        are not in the state dict, and the kernel check decides whether packing happens."""
        if self.threads and self.device == "cpu":
            torch.set_num_threads(self.threads)
        self._settle_backend()
        self.tiny = self._load_tiny_decoder()
        pipe = self._load_pipeline()
        self.family = family_for(type(pipe).__name__)
        if self.options.native_size is None:
            self._native = self.family.native(pipe)
        if not self.options.steps:
            self.steps = quality_steps(self.family.default_steps(pipe))
        self._broken_previews = set()
        self._edit_ways = {}
        self._embeds.clear()
        self._samplers.clear()
        self._negative = None
        self._preview_decoder = None
        self._editors = {}
        self.applied = []
        steps: list[tuple[str, Callable[[Any], str | None]]] = [
            # Static LoRAs first: every speed-up after them sees plain (fused) weights.
            ("loras", lambda pipe: loras.fuse_static(pipe, self.options.loras, self._name)),
            (f"family {self.family.name}", lambda pipe: self.family.prepare(pipe, self.dtype)),
            ("layout", self._lay_out),
            ("weight cache", self._save_weights),
            ("openvino decoder", self._decoder_to_openvino),
            ("kernel check", self._check_kernels),
            ("prepack", self._pack),
            ("fuse", self._fuse),
            ("prompt cache", self._prepare_prompts),
            ("openvino", self._to_openvino),
            ("int8", self._quantize),
            ("compile", self._compile_models),
            ("edits", self._make_editors),
        ]
        for name, step in steps:
            done = step(pipe)
            if done:
                self.applied.append(f"{name}: {done}")
        self.pipe = pipe
        self._controls = self.family.controls(pipe)
        log.info("loaded %s (%s, %s, backend %s%s)", self.model, self.device, self.dtype,
                 self.backend, f", torch.compile {self.compile_mode}" if self.compile else "")
        if self.warmup:
            self._warm_up()
        log.info("%s: chosen: %s; done: %s; running: prepack %s, fuse %s", self._name,
                 self.plan.describe(), "; ".join(self.applied) or "nothing",
                 _on(self.prepack), _on(self.fuse))

    def _load_tiny_decoder(self) -> Any:
        if not self.tiny_decoder:
            return None
        from diffusers import AutoencoderTiny

        try:
            return AutoencoderTiny.from_pretrained(  # type: ignore[no-untyped-call]
                self.tiny_decoder, dtype=self.dtype
            ).to(self.device)
        except Exception as exc:
            raise EngineError(f"could not load the tiny decoder {self.tiny_decoder!r}: "
                              f"{exc}") from exc

    def _load_pipeline(self) -> Any:

        # With the tiny decoder chosen, the full VAE is never loaded (330 MB of fp32 for SD).
        replace = {"vae": self.tiny} if self.tiny is not None and self.decoder == "tiny" else {}
        self._check_gpu_memory()
        self._cache = self._weight_cache()
        cached, self._missing = self._cached_components(self._cache)
        try:
            pipe = processors.load_pipeline(self.model, dtype=self.dtype, **replace, **cached)
        except Exception as exc:
            raise EngineError(f"could not load the diffusers pipeline {self.model!r}: {exc}") \
                from exc
        if self.scheduler:
            pipe.scheduler = _scheduler(pipe.scheduler.config, self.scheduler)
        if self.plan.offload == "model":
            pipe.enable_model_cpu_offload()
        elif self.plan.offload == "sequential":
            pipe.enable_sequential_cpu_offload()
        else:
            pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        _own_watermark_off(pipe)
        return pipe

    def _check_gpu_memory(self) -> None:
        """On CUDA without offload, a model whose weights cannot fit the card's free memory
        is refused before loading, with the options that would make it fit."""
        if not self.device.startswith("cuda") or self.plan.offload != "none" \
                or not Path(self.model).is_dir():
            return
        free, total = torch.cuda.mem_get_info()
        needed = memory.needed_bytes(Path(self.model), self.dtype.itemsize)
        memory.check_fits(self._name, needed, free, total)

    def _lay_out(self, pipe: Any) -> str | None:
        """oneDNN's bf16 convolutions and group norms are fastest on NHWC tensors."""
        if not self.channels_last:
            return None
        kept = layout.apply(self._convolutional_parts(pipe))
        return f"NHWC, {kept} attention outputs kept so"

    def _save_weights(self, pipe: Any) -> str | None:
        # With static LoRAs fused in, the loaded weights are no longer the model's own, and
        # the cache is keyed by the model's files: nothing is saved from them (the copies
        # converted from the files before the load are the model's, and still used).
        if self._cache is not None and self._missing and not self.options.loras:
            self.weights_saved = sorted(self.weights_saved + weight_cache.save(
                pipe, self.model, self._cache, self.dtype, self._missing, self.channels_last))
        parts = []
        if self.weights_from_cache:
            parts.append(f"read {', '.join(self.weights_from_cache)}")
        if self.weights_saved:
            parts.append(f"saved {', '.join(self.weights_saved)}")
        return f"{'; '.join(parts)} in {self.dtype} under {self._cache}" if parts else None

    def _pack(self, pipe: Any) -> str | None:
        if not self.prepack:
            return None
        return f"{weight_packing.apply(self._packable_parts(pipe))} layers"

    def _fuse(self, pipe: Any) -> str | None:
        if not self.fuse:
            return None
        return f"{fusion.apply(self._convolutional_parts(pipe))} blocks"

    def _prepare_prompts(self, pipe: Any) -> str | None:
        """Prompt embeddings are cached where the pipeline takes them precomputed."""
        sd_encode = _has_sd_encode_prompt(pipe)
        self._sd_encode = sd_encode
        self._cfg = sd_encode and _uses_cfg(pipe, self.guidance)
        self._cache_prompts = sd_encode and (not self._cfg or "negative_prompt_embeds" in
                                             inspect.signature(type(pipe).__call__).parameters)
        return f"last {PROMPT_CACHE_SIZE} prompts" if self._cache_prompts else None

    def _check_kernels(self, pipe: Any) -> str | None:
        """Packed layers and fused blocks only where this CPU's oneDNN computes what torch
        computes, in this dtype and layout (`kernel_check`: small layers, once a process)."""
        if not self.prepack:
            return None
        check = kernel_check.verdict(self.dtype, self.channels_last)
        if check.packing:
            log.warning("oneDNN's packed layers disagree with torch on this CPU in %s (%s): "
                        "drawing with torch's own layers", self.dtype,
                        check.describe(check.packing))
            self.prepack = self.fuse = False
            return "packed layers disagree: prepack and fuse off"
        if check.fusion and self.fuse:
            log.warning("oneDNN's fused calls disagree with torch on this CPU in %s (%s): "
                        "drawing with diffusers' blocks", self.dtype,
                        check.describe(check.fusion))
            self.fuse = False
            return "fused calls disagree: fuse off"
        return "oneDNN agrees with torch"

    def _cached_components(self, cache: Path | None) -> tuple[dict[str, Any], list[str]]:
        """The large components read from the weight cache, the missing ones written there
        first from their weight files where those allow it; and the names still missing,
        which are saved after the full load."""
        self.weights_from_cache, self.weights_saved = [], []
        if cache is None:
            return {}, []
        cached, missing = weight_cache.load_cached(self.model, cache, self.dtype,
                                                   self.channels_last)
        self.weights_from_cache = sorted(cached)
        converted = weight_cache.convert(self.model, cache, self.dtype, missing,
                                         self.channels_last) if missing else []
        if converted:
            more, _ = weight_cache.load_cached(self.model, cache, self.dtype,
                                               self.channels_last, only=converted)
            cached.update(more)
            missing = [name for name in missing if name not in more]
            self.weights_saved = sorted(more)
        return cached, missing

    def _convolutional_parts(self, pipe: Any) -> list[torch.nn.Module]:
        """The UNet, the VAE and the tiny decoder: the modules made of convolutions."""
        parts = (getattr(pipe, "unet", None), getattr(pipe, "vae", None), self.tiny)
        return [part for part in parts if isinstance(part, torch.nn.Module)]

    def _packable_parts(self, pipe: Any) -> list[torch.nn.Module]:
        """The convolutional parts and the text encoders: the modules whose weights
        `prepack` packs."""
        encoders = (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None))
        return self._convolutional_parts(pipe) + [
            part for part in encoders if isinstance(part, torch.nn.Module)]

    def _warm_up(self) -> None:
        """Draw one throw-away image at the native size, with a partial image, so each
        component has met the shapes a default request brings."""
        native = self._native or 512
        started = time.perf_counter()
        # Two steps where the model's fewest are more: one step of some flow-matching
        # schedules (Qwen-Image's, with a terminal shift) divides by zero.
        params = GenerationParams(prompt="", width=native, height=native, seeds=(0,),
                                  steps=min(2, self.steps["low"]))

        def preview(update: StepUpdate) -> None:
            update.preview()

        self.generate([params], preview)
        if self._editors and self._edit_ways.get("redraw") != "reference":
            # Edits also run the VAE's encoder, which a text-to-image draw never calls: its
            # layers meet the native size here, and a fused call it turns down is found now.
            pixels = torch.zeros(1, 3, native, native, dtype=self.dtype, device=self.device)

            def encode() -> None:
                with torch.inference_mode():
                    self.family.encode(self.pipe, pixels, torch.Generator().manual_seed(0))

            self._stepping_down(encode)
        # The throw-away prompt's encodings leave with it: requests find the cache as new.
        self._embeds.clear()
        self._negative = None
        log.info("warmed up at %dx%d in %.1f s", native, native, time.perf_counter() - started)

    def _weight_cache(self) -> Path | None:
        """Where to keep converted weights (`plan.cache_weights`: on a CPU, below fp32, for a
        local folder)."""
        if not self.plan.cache_weights or self.cache_dir is None:
            return None
        return Path(self.cache_dir) / "weights"

    def _to_openvino(self, pipe: Any) -> str | None:
        """Swap the denoiser and the decoders (and SD's CLIP text encoder) for
        OpenVINO-compiled ones: a Stable Diffusion UNet through its own wrappers, any other
        family's denoiser through `OVDenoiser`, converted at its first call, with its VAE's
        decoder and its large text encoders (`Family.openvino_encoders`).

        Runs after `pipe.to(device)` (which would otherwise try to move the wrappers). The
        swaps use `object.__setattr__`: the pipeline's own `__setattr__` would record the
        wrapper's class in `pipe.config`, its model_index, naming a class diffusers cannot
        load. The wrappers are not `torch.nn.Module`s, so `pipe.device`, `pipe.dtype` and
        `_execution_device` come from the torch parts left, or fall back to the CPU.
        """
        if self.backend != "openvino":
            return None
        try:
            from limner.engines.diffusers.accel import openvino as ovb
        except ImportError as exc:
            raise EngineError("backend = 'openvino' needs OpenVINO, which is not installed: "
                              "pip install 'limner[openvino]'") from exc
        if not openvino_runs(self.model):
            raise EngineError("backend = 'openvino' runs Stable Diffusion, SDXL, SD3, FLUX.1, "
                              "FLUX.2, Sana, Qwen-Image and Z-Image pipelines; use "
                              f"backend = 'torch' for {type(pipe).__name__}")
        cache = Path(self.cache_dir) / "openvino" if self.cache_dir else None
        calibration = self._calibration() if self.quantize == "int8" else None
        runtime = ovb.OpenVINORuntime(cache, self.threads, self.ov_precision, calibration,
                                      variant=loras.static_key(self.options.loras))
        self._ov_runtime = runtime
        unet = getattr(pipe, "unet", None)
        try:
            if unet is not None and sd_unet(unet.config):
                self._sd_to_openvino(pipe, runtime)
            else:
                part = "unet" if unet is not None else "transformer"
                object.__setattr__(pipe, part, runtime.denoiser(getattr(pipe, part),
                                                                self.model, part))
                for name in self.family.openvino_encoders:
                    encoder = getattr(pipe, name, None)
                    if isinstance(encoder, torch.nn.Module):
                        object.__setattr__(pipe, name, runtime.encoder(encoder, self.model,
                                                                       name))
                self._decoders_to_openvino(pipe, runtime)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"could not convert {self.model!r} to OpenVINO: {exc}") from exc
        later = "" if unet is not None and sd_unet(unet.config) else \
            " (the denoiser at its first call, the warm-up's)"
        return (f"{self.ov_precision}; converted {', '.join(runtime.converted) or 'nothing'}, "
                f"the rest read from the IR cache{later}")

    def _decoder_to_openvino(self, pipe: Any) -> str | None:
        """The `decoder` way (`Family.openvino`): under torch's plan, the VAE's decoder (and
        a tiny decoder) swapped for OpenVINO's, in the precision torch draws in; before
        packing, which the converter cannot trace."""
        if not self._openvino_decoder:
            return None
        from limner.engines.diffusers.accel import openvino as ovb

        cache = Path(self.cache_dir) / "openvino" if self.cache_dir else None
        precision = "bf16" if self.dtype == torch.bfloat16 else "f32"
        runtime = ovb.OpenVINORuntime(cache, self.threads, precision, None)
        self._decoders_to_openvino(pipe, runtime)
        return (f"{precision}; converted {', '.join(runtime.converted) or 'nothing'}, the rest "
                "read from the IR cache")

    def _sd_to_openvino(self, pipe: Any, runtime: Any) -> None:
        """Stable Diffusion: the UNet, the tiny decoder and the CLIP text encoder."""
        object.__setattr__(pipe, "unet", runtime.unet(pipe.unet, self.model))
        if self.tiny is not None and self.tiny_decoder:
            self.tiny = runtime.tiny_decoder(self.tiny, self.tiny_decoder)
            if self.decoder == "tiny":
                object.__setattr__(pipe, "vae", self.tiny)
        vae = getattr(pipe, "vae", None)
        if type(vae).__name__ == "AutoencoderTiny":  # the model's own (SDXS ships one)
            object.__setattr__(pipe, "vae", runtime.tiny_decoder(
                vae, f"{self.model.rstrip('/')}/vae"))
        encoder = getattr(pipe, "text_encoder", None)
        tokenizer = getattr(pipe, "tokenizer", None)
        if self._sd_encode and type(encoder).__name__ == "CLIPTextModel" \
                and tokenizer is not None:
            object.__setattr__(pipe, "text_encoder", runtime.text_encoder(
                encoder, self.model, int(tokenizer.model_max_length)))

    def _decoders_to_openvino(self, pipe: Any, runtime: Any) -> None:
        """Another family: the tiny decoder where one is loaded, and the VAE's decoder (the
        one that draws the final image, unless that is the tiny one)."""
        if self.tiny is not None and self.tiny_decoder:
            self.tiny = runtime.tiny_decoder(self.tiny, self.tiny_decoder)
            if self.decoder == "tiny":
                object.__setattr__(pipe, "vae", self.tiny)
                return
        vae = getattr(pipe, "vae", None)
        if not isinstance(vae, torch.nn.Module):
            return
        # What torch's VAE still does (its encoder, or all of it where the decoder does not
        # convert) meets the denoiser's latents: float32 for a converted one, else torch's.
        dtype = self.dtype if self._openvino_decoder else torch.float32
        try:
            decoder = runtime.tiny_decoder(vae, f"{self.model.rstrip('/')}/vae") \
                if type(vae).__name__ == "AutoencoderTiny" else \
                runtime.vae_decoder(vae, self.model, dtype)
        except Exception as exc:  # a VAE the converter cannot trace: torch's still decodes
            from limner.engines.diffusers.accel.openvino_calls import conversion_error

            reason = conversion_error(exc)
            log.warning("%s: the VAE's decoder stays in torch, in %s (OpenVINO cannot "
                        "convert it: %s)", self._name, str(dtype).removeprefix("torch."),
                        reason)
            self.stepped_down.append(f"openvino VAE decoder off: {reason}")
            vae.to(dtype)
            return
        object.__setattr__(pipe, "vae", decoder)

    def _calibration_steps(self) -> list[int]:
        """The distinct step counts of the quality levels a request names by default."""
        return sorted({self.steps[quality] for quality in ("low", "medium", "high")})

    def _calibration(self) -> dict[str, Any]:
        """Everything that decides the int8 calibration's recorded inputs, for its cache
        key: the draws, the pipeline's and the tiny decoder's files (the text encoder, the
        scheduler and the tokenizer shape the UNet's inputs), the sampler and the precision
        the other components ran in."""
        folders = {"model": self.model, "tiny_decoder": self.tiny_decoder}
        return {"samples": self.quantize_samples, "steps": self._calibration_steps(),
                "size": self._native, "guidance": self.guidance, "decoder": self.decoder,
                "scheduler": self.scheduler, "precision": self.ov_precision,
                "files": {name: weight_cache.weight_files(Path(folder)) if folder else None
                          for name, folder in folders.items()}}

    def _quantize(self, pipe: Any) -> str | None:
        """`quantize = "int8"`: the components with no cached int8 IR are quantized from
        the inputs they meet in a few fixed calibration draws, drawn by this very engine
        (fp32 or bf16 OpenVINO, the native size), so that their activation ranges are those
        served images meet."""
        runtime, self._ov_runtime = self._ov_runtime, None
        if self.quantize != "int8" or runtime is None:
            return None
        if not runtime.pending and not runtime.waiting():
            return self._int8_cached(runtime) or None
        from limner.engines.diffusers.accel import openvino as ovb

        started = time.perf_counter()
        for _, runner, _ in runtime.pending:
            runner.recorded = []
        requests = ovb.calibration_requests(self.quantize_samples, self._calibration_steps(),
                                            self._native or 512)
        self.pipe = pipe
        # A family's transformer converts at its first call, the first calibration draw's:
        # its runner records from then on, or comes as cached int8 IR (nothing to draw for).
        runtime.recording = True
        try:
            for params in requests:
                self.generate([params])
                if not runtime.pending:
                    break
            runtime.quantize_pending()
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"could not quantize {self.model!r} to int8: {exc}") from exc
        finally:
            runtime.recording = False
            self.pipe = None
            for _, runner, _ in runtime.pending:
                runner.recorded = None
            # The calibration prompts' encodings leave with them.
            self._embeds.clear()
            self._negative = None
        cached = self._int8_cached(runtime)
        if not runtime.quantized:
            return cached or None
        done = (f"quantized {', '.join(runtime.quantized)} from {len(requests)} draws in "
                f"{time.perf_counter() - started:.0f} s")
        return f"{done}; {cached}" if cached else done

    @staticmethod
    def _int8_cached(runtime: Any) -> str:
        return f"int8 IR read from the cache: {', '.join(runtime.int8_cached)}" \
            if runtime.int8_cached else ""

    @property
    def compile_mode(self) -> str | None:
        """The `torch.compile` mode, or None when the UNet is not compiled."""
        if self.compile is False:
            return None
        return "default" if self.compile is True else self.compile

    def _compile_models(self, pipe: Any) -> str | None:
        mode = self.compile_mode
        if mode is None:
            return None
        compiled = compile_models.apply(pipe, mode, self.device, self.tiny)
        self._preview_decoder = compiled.preview_decoder
        return f"{', '.join(compiled.parts)} ({mode})"

    def _make_editors(self, pipe: Any) -> str | None:
        """How the family draws over a picture (`families.EditWay`), last so that edit
        pipelines made from `pipe`'s components hold them as every other step left them
        (packed, compiled, converted), sharing their weights. Where diffusers has no edit
        pipeline for the class, or one that takes no `strength`, limner's own image-to-image
        (`generic_edit`) runs on the pipeline itself; where that cannot either, or the VAE
        cannot encode, the engine does not edit."""
        way = self.family.edit_way
        if way == "reference":
            self._editors = {"redraw": pipe, "inpaint": pipe}
            self._edit_ways = {"redraw": "reference", "inpaint": "reference"}
            return f"{type(pipe).__name__} with up to {self.family.references} reference(s)"
        if not callable(getattr(getattr(pipe, "vae", None), "encode", None)):
            log.info("%s: no image edits: its VAE has no encoder", self._name)
            return None
        editors: dict[str, Any] = {}
        if way == "pipelines":
            editors = self._diffusers_editors(pipe)
        why_not = generic_edit.supported(pipe)
        for kind in ("redraw", "inpaint"):
            if kind in editors:
                self._edit_ways[kind] = "pipelines"
            elif why_not is None:
                editors[kind] = pipe
                self._edit_ways[kind] = "generic"
        if len(editors) < 2:
            log.info("%s: no image edits: %s", self._name,
                     why_not or "no image-to-image and inpainting pipelines")
            self._edit_ways = {}
            return None
        for editor in editors.values():
            editor.set_progress_bar_config(disable=True)
        self._editors = editors
        return ", ".join(f"{kind} {self._edit_ways[kind]} ({type(editor).__name__})"
                         for kind, editor in editors.items())

    def _diffusers_editors(self, pipe: Any) -> dict[str, Any]:
        """diffusers' own image-to-image and inpainting pipelines for the class, those that
        exist and take a `strength` (LCM has the first only)."""
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

        editors = {}
        needs = {"redraw": (AutoPipelineForImage2Image, {"image", "strength"}),
                 "inpaint": (AutoPipelineForInpainting, {"image", "mask_image", "strength"})}
        for kind, (auto, needed) in needs.items():
            try:
                editor = auto.from_pipe(pipe)
            except ValueError:  # AutoPipeline has no such pipeline for this class
                continue
            except Exception as exc:
                log.warning("%s: could not make the %s pipeline from %s: %s", self._name,
                            kind, type(pipe).__name__, exc)
                continue
            _own_watermark_off(editor)
            if needed <= set(_call_parameters(editor)):
                editors[kind] = editor
        return editors

    def close(self) -> None:
        """Drops every reference to the weights (the pipeline, its editors, the decoders,
        cached prompts), so that collecting them gives the memory back."""
        self.pipe = None
        self.tiny = None
        self._preview_decoder = None
        self._ov_runtime = None
        self.loras.reset()  # PEFT's layers go with the pipeline's modules
        self._editors = {}
        self._samplers.clear()
        self._embeds.clear()
        self._negative = None
        if self.device.startswith("cuda") and torch.cuda.is_available():
            import gc

            gc.collect()
            torch.cuda.empty_cache()

    def estimate_memory(self) -> dict[str, int]:
        """The weights' size in the load's dtype, from the folder's safetensors headers."""
        folder = Path(self.model)
        if not folder.is_dir():
            return {}
        device = "cpu" if self.plan.offload != "none" else self.device
        return {device_name(device): memory.parameter_count(folder)
                * self.dtype.itemsize}

    def memory(self) -> dict[str, int]:
        if self.pipe is None:
            return {}
        held = footprint.module_bytes([*self.pipe.components.values(), self.tiny,
                                       self._preview_decoder])
        if self._ov_runtime is not None:  # OpenVINO's compiled models are beyond torch's view
            for device, size in self.estimate_memory().items():
                held[device] = max(held.get(device, 0), size)
        return held

    def _draw_size(self, width: int, height: int) -> tuple[int, int]:
        """Draw at the model's native area with the requested aspect, on the family's grid."""
        native = self._native or 512
        grid = self.family.grid
        scale = math.sqrt(native * native / (width * height))
        return (max(grid, round(width * scale / grid) * grid),
                max(grid, round(height * scale / grid) * grid))

    def generate(self, batch: Sequence[GenerationParams],
                 on_step: StepCallback | None = None) -> list[list[Image.Image]]:
        """Draws the batch; where that fails inside a speed-up, the speed-up is switched off
        for the model (`STEP_DOWN`) and the batch drawn again, down to plain diffusers."""
        return self._stepping_down(lambda: self._generate(batch, on_step))

    def _stepping_down(self, work: Callable[[], _T]) -> _T:
        """`work`, again after each speed-up `_step_down` switches off for a RuntimeError
        (what oneDNN, OpenVINO and compile raise), until it runs or none is left."""
        while True:
            try:
                return work()
            except RuntimeError as exc:
                if not self._step_down(exc):
                    raise

    def _generate(self, batch: Sequence[GenerationParams],
                  on_step: StepCallback | None) -> list[list[Image.Image]]:
        if self.pipe is None:
            raise EngineError("the engine is not loaded")
        first = batch[0]
        self._switch_loras(first.adapters)
        kind = first.edit
        way = "generate" if kind == "generate" else self._edit_ways.get(kind)
        width, height = self._draw_size(first.width, first.height)
        steps = first.steps or self.steps[first.quality]
        if way == "reference" or (way == "generate" and self.family.blank_reference):
            return self._reference_edit(batch, on_step, (width, height),
                                        max(steps, first.min_steps))
        # A `generic` edit draws with the pipeline itself, which `_editors` then holds.
        pipe = self.pipe if kind == "generate" else self._editor(kind, first.strength)
        if kind == "generate":
            total = asked = max(steps, first.min_steps)
        else:
            # diffusers runs only int(asked * strength) of the steps asked for an edit.
            asked = _edit_steps(steps, first.strength, max(1, first.min_steps))
            total = min(int(asked * first.strength), asked)
        own_scheduler = pipe.scheduler
        if first.scheduler is not None:
            pipe.scheduler = self._sampler(first.scheduler)
        try:
            return self._call(pipe, batch, on_step, way, asked, total, (width, height))
        finally:
            pipe.scheduler = own_scheduler

    def _switch_loras(self, adapters: Sequence[Adapter]) -> None:
        """The batch's LoRAs (a batch shares them) made the active ones."""
        why = loras.refusal(self.pipe, self.options.request_loras, self._running()) \
            if adapters else None
        if why is not None:
            raise InvalidRequest(f"The model '{self._name}' takes no LoRAs per request: {why}",
                                 param="lora", code="lora_unsupported")
        if self.loras.activate(self.pipe, adapters):
            self._embeds.clear()  # a text encoder's LoRA went on or off
            self._negative = None

    def _call(self, pipe: Any, batch: Sequence[GenerationParams],
              on_step: StepCallback | None, way: str | None, asked: int, total: int,
              size: tuple[int, int]) -> list[list[Image.Image]]:
        """One call of the pipeline for a generation, or an edit of the `pipelines` or
        `generic` way."""
        first = batch[0]
        kind = first.edit
        width, height = size
        prompts = [p.prompt for p in batch for _ in p.seeds]
        generators = [torch.Generator("cpu").manual_seed(s) for p in batch for s in p.seeds]
        counts = [p.n for p in batch]
        kwargs: dict[str, Any] = {"prompt": prompts, "num_inference_steps": asked,
                                  "width": width, "height": height, "generator": generators,
                                  "output_type": "pil"}
        if way != "pipelines":
            kwargs.update(self.family.size_kwargs(pipe, width, height))
            kwargs.update(self.family.steps_kwargs(pipe, asked))
        blend: generic_edit.Blend | None = None
        if way == "pipelines":
            kwargs.update(_edit_inputs(batch, (width, height)), strength=first.strength)
            accepted = _call_parameters(pipe)
            for name in ("width", "height"):  # image-to-image draws at its image's size
                if name not in accepted:
                    del kwargs[name]
        elif way == "generic":
            inputs = _edit_inputs(batch, (width, height))
            edit = generic_edit.prepare(pipe, self.family, inputs["image"],
                                        inputs.get("mask_image"), generators, asked,
                                        first.strength)
            kwargs.update(edit.kwargs)
            pipe.scheduler = edit.scheduler  # the caller puts the pipeline's own back
            blend, total = edit.blend, edit.steps_run
        self._add_step_callback(kwargs, pipe, on_step, blend, total, counts, (width, height),
                                kind != "generate" and way == "pipelines")
        # A batch shares its guidance, negative prompt and sampler (the scheduler's batch key).
        guidance = self.guidance if first.guidance is None else first.guidance
        kwargs.update(self.family.guidance_kwargs(pipe, guidance, first.negative_prompt))
        if kind != "generate":
            cfg = self._sd_encode and _uses_cfg(pipe, guidance)
        else:
            cfg = self._cfg if first.guidance is None else (
                self._sd_encode and _uses_cfg(pipe, guidance))
        with torch.inference_mode():
            if self._cache_prompts:
                del kwargs["prompt"]
                kwargs.update(self._prompt_embeds(batch, cfg))
            elif first.negative_prompt is not None:
                kwargs["negative_prompt"] = [first.negative_prompt] * len(prompts)
            images = pipe(**kwargs).images
        return split_per_request([image.convert("RGB") for image in images], counts)

    def _add_step_callback(self, kwargs: dict[str, Any], pipe: Any,
                           on_step: StepCallback | None, blend: generic_edit.Blend | None,
                           total: int, counts: Sequence[int], size: tuple[int, int],
                           own_count: bool) -> None:
        """Reports each step (with its preview) through whichever step hook the pipeline
        has, and puts an edit's kept region back where `blend` says."""
        if on_step is None and blend is None:
            return
        width, height = size

        def report(pipe: Any, step: int, latents: torch.Tensor) -> None:
            if on_step is None:
                return
            # An edit's loop is the pipeline's own count where it keeps one (a sampler of a
            # higher order steps more than once per step asked).
            steps_run = getattr(pipe, "_num_timesteps", None) if own_count else None
            on_step(StepUpdate(step + 1, steps_run if isinstance(steps_run, int) else total,
                               lambda: split_per_request(
                                   self._preview(latents, width, height), counts)))

        hook = self.family.step_callback(pipe)
        if hook == "on_step_end":
            def callback(pipe: Any, step: int, timestep: Any,
                         tensors: dict[str, Any]) -> dict[str, Any]:
                if blend is not None:
                    tensors["latents"] = blend(step, tensors["latents"])
                report(pipe, step, tensors["latents"])
                return tensors

            kwargs.update(callback_on_step_end=callback,
                          callback_on_step_end_tensor_inputs=["latents"])
        elif hook == "legacy":  # PixArt: sees the latents, cannot change them
            def legacy(step: int, timestep: Any, latents: torch.Tensor) -> None:
                report(pipe, step, latents)

            kwargs.update(callback=legacy, callback_steps=1)

    def _step_down(self, exc: Exception) -> bool:
        """Switches off the first speed-up of `STEP_DOWN` still running, after `exc` came
        out of a draw (in place where it can be undone so, else by loading the model again
        without it); False where none is left, and `exc` is the model's own."""
        running = set(self._running())
        name = next((step for step in STEP_DOWN if step in running), None)
        if name is None:
            return False
        log.warning("%s: drawing failed with %s on (%s: %s); switching it off for this model "
                    "and drawing again", self._name, name, type(exc).__name__, exc)
        self.stepped_down.append(f"{name} off: {type(exc).__name__}: {exc}")
        if name == "fuse":
            for part in self._convolutional_parts(self.pipe):
                fusion.unfuse(part)
            self.fuse = False
            return True
        if name == "prompt_cache":
            self._cache_prompts = False
            return True
        switches: dict[str, dict[str, Any]] = {
            "compile": {"compile": False}, "openvino": {"backend": "torch"},
            "int8": {"quantize": "none"}, "prepack": {"prepack": False, "fuse": False},
            "channels_last": {"channels_last": False},
            "weight_cache": {"cache_weights": False}}
        self.options = dataclasses.replace(self.options, warmup=False, **switches[name])
        self.compile = self.options.compile
        self._follow(resolve(self.options, detect_platform(),
                             model_is_folder=Path(self.model).is_dir()))
        self.close()
        self.load()
        return True

    def _reference_edit(self, batch: Sequence[GenerationParams],
                        on_step: StepCallback | None, size: tuple[int, int],
                        steps: int) -> list[list[Image.Image]]:
        """An instruction-edit model's own edit: each request's pictures go in as the
        model's references, one request at a time (a call takes one set of pictures, and
        Qwen-Image-Edit-Plus one prompt); a model that needs a picture even to generate gets
        a white one. A mask is honoured by the service, which keeps the input's pixels
        outside it."""
        pipe = self.pipe
        width, height = size
        done: list[list[Image.Image]] = []
        waiting = [[_rgb_on_white(p.init_image, (width // 4, height // 4))
                    if p.init_image is not None else Image.new("RGB", (8, 8), "white")] * p.n
                   for p in batch]
        for index, params in enumerate(batch):
            pictures = [_rgb_on_white(picture, picture.size)
                        for picture in (params.references or (params.init_image,))
                        if picture is not None]
            if not pictures:  # a generation by a model that needs a picture to draw over
                pictures = [Image.new("RGB", size, "white")]
            kwargs: dict[str, Any] = {
                "prompt": params.prompt, "num_images_per_prompt": params.n,
                "image": pictures[0] if self.family.references == 1 else pictures,
                "num_inference_steps": steps, "width": width, "height": height,
                "generator": [torch.Generator("cpu").manual_seed(s) for s in params.seeds],
                "output_type": "pil", **self.family.size_kwargs(pipe, width, height),
                **self.family.steps_kwargs(pipe, steps)}
            guidance = self.guidance if params.guidance is None else params.guidance
            kwargs.update(self.family.guidance_kwargs(pipe, guidance, params.negative_prompt))
            if params.negative_prompt is not None:
                kwargs["negative_prompt"] = params.negative_prompt
            step_report = None
            if on_step is not None:
                finished = list(done)

                def step_report(update: StepUpdate, index: int = index,
                                finished: list[list[Image.Image]] = finished) -> None:
                    def preview() -> list[list[Image.Image]]:
                        return [*finished, update.preview()[0], *waiting[index + 1:]]

                    on_step(StepUpdate(index * steps + update.step, len(batch) * steps,
                                       preview))

            self._add_step_callback(kwargs, pipe, step_report, None, steps, [params.n],
                                    size, False)
            with torch.inference_mode():
                images = pipe(**kwargs).images
            done.append([image.convert("RGB") for image in images])
        return done

    def _editor(self, kind: str, strength: float) -> Any:
        """The pipeline that draws an edit of this kind (`GenerationParams.edit`)."""
        editor = self._editors.get(kind)
        if editor is None:
            raise EngineError(f"{self._name} cannot draw over a starting picture")
        if not 0.0 < strength <= 1.0:
            raise EngineError(f"an edit's strength must be in (0, 1], not {strength}")
        return editor

    def _sampler(self, name: str) -> Any:
        """The requested sampler, made from the pipeline's own scheduler config (kept)."""
        sampler = self._samplers.get(name)
        if sampler is None:
            sampler = _scheduler(self.pipe.scheduler.config, {"class": SCHEDULER_CLASSES[name]})
            self._samplers[name] = sampler
        return sampler

    def _prompt_embeds(self, batch: Sequence[GenerationParams],
                       cfg: bool) -> dict[str, torch.Tensor]:
        """`prompt_embeds` (and `negative_prompt_embeds` under CFG) for the batch, one row
        per image, with each prompt through the text encoder at most once while cached."""
        positive, negative = [], []
        for params in batch:
            embeds, uncond = self._embed(params.prompt, cfg, params.negative_prompt)
            positive.append(embeds.repeat(len(params.seeds), 1, 1))
            if uncond is not None:
                negative.append(uncond.repeat(len(params.seeds), 1, 1))
        out = {"prompt_embeds": torch.cat(positive)}
        if cfg:
            out["negative_prompt_embeds"] = torch.cat(negative)
        return out

    def _embed(self, prompt: str, cfg: bool,
               negative_prompt: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        key = (prompt, cfg, negative_prompt)
        hit = self._embeds.get(key)
        if hit is not None:
            self._embeds.move_to_end(key)
            return hit
        embeds, uncond = self.pipe.encode_prompt(prompt, self.pipe._execution_device, 1,
                                                 cfg, negative_prompt=negative_prompt)
        if uncond is not None and negative_prompt is None:
            # The empty prompt's embedding is the same for every entry: keep one copy.
            if self._negative is not None and torch.equal(uncond, self._negative):
                uncond = self._negative
            self._negative = uncond
        self._embeds[key] = (embeds, uncond)
        while len(self._embeds) > PROMPT_CACHE_SIZE:
            self._embeds.popitem(last=False)
        return embeds, uncond

    def _preview(self, latents: torch.Tensor, width: int, height: int) -> list[Image.Image]:
        """Mid-denoising latents as small pictures: through the tiny decoder where one fits
        the family's latents, else the family's linear latent-to-RGB map, else the VAE's own
        decoder on latents pooled to preview size. A way that fails is logged once and not
        tried again for this load; the next one is."""
        with torch.inference_mode():
            grid = self.family.latent_grid(self.pipe, latents, width, height)
            grid = _pool_for_preview(grid, self.family.cell_pixels(self.pipe))
            ways: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = []
            channels = grid.shape[1]
            if self.tiny is not None and grid.ndim == 4 \
                    and self.family.tiny_channels == channels:
                ways.append(("tiny decoder", self._tiny_preview))
            rgb = self.family.latent_rgb
            if rgb is not None and grid.ndim == 4 and len(rgb) == channels:
                ways.append(("latent colours", _linear_preview(rgb)))
            ways.append(("VAE", self._vae_preview))
            for name, way in ways:
                if name in self._broken_previews:
                    continue
                try:
                    pixels = way(grid)
                except Exception as exc:
                    log.warning("%s: previews through the %s failed (%s: %s); trying the "
                                "next way", self._name, name, type(exc).__name__, exc)
                    self._broken_previews.add(name)
                    continue
                rgb_pixels = ((pixels.float() + 1.0) / 2.0).clamp(0, 1)
                array = (rgb_pixels.permute(0, 2, 3, 1).cpu().numpy() * 255).astype(np.uint8)
                return [Image.fromarray(x) for x in array]
        raise EngineError(f"{self._name} cannot show previews: every way failed")

    def _tiny_preview(self, grid: torch.Tensor) -> torch.Tensor:
        """TAESD and TAESDXL take the denoiser's latents as they are; taesd3 and taef1
        declare the VAE's own scaling and shift, which their input is then brought to."""
        config = self.tiny.config
        scaling = getattr(config, "scaling_factor", None) or 1.0
        shift = getattr(config, "shift_factor", None) or 0.0
        grid = (grid.float() / scaling + shift).to(self.tiny.dtype)
        if self._preview_decoder is not None:
            decoded: torch.Tensor = self._preview_decoder(grid)
            return decoded
        decoded = self.tiny.decode(grid).sample
        return decoded

    def _vae_preview(self, grid: torch.Tensor) -> torch.Tensor:
        return self.family.decode(self.pipe, self.family.vae_input(self.pipe, grid.float()))


def _linear_preview(factors: Sequence[Sequence[float]]) -> Callable[[torch.Tensor],
                                                                     torch.Tensor]:
    table = torch.tensor(factors, dtype=torch.float32)

    def preview(grid: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cr->brhw", grid.float().cpu(), table)

    return preview


def _edit_steps(steps: int, strength: float, at_least: int = 1) -> int:
    """The steps to ask diffusers for an edit at `strength`: `steps`, raised until at least
    `at_least` of them run, since diffusers runs `int(asked * strength)` of those asked and
    fails when that is 0 (a one-step model at strength 0.5)."""
    asked = max(steps, math.ceil(at_least / strength))
    while int(asked * strength) < at_least:  # the product may round below a whole number
        asked += 1
    return asked


def _edit_inputs(batch: Sequence[GenerationParams],
                 size: tuple[int, int]) -> dict[str, list[Image.Image]]:
    """`image` (and `mask_image` for an inpainting batch) at the draw size, one per image:
    each request's pictures converted once and repeated for its seeds."""
    images, masks = [], []
    for params in batch:
        if params.init_image is None:
            raise EngineError("an edit batch holds only edits, each with its starting picture")
        image = _rgb_on_white(params.init_image, size)
        images += [image] * params.n
        if params.mask is not None:
            masks += [_draw_mask(params.mask, size)] * params.n
    if masks and len(masks) != len(images):
        raise EngineError("an inpainting batch holds only requests with a mask")
    return {"image": images, "mask_image": masks} if masks else {"image": images}


def _rgb_on_white(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """An RGB picture at `size`: transparent pixels become white, as a viewer shows them,
    rather than whatever colour their RGB channels happen to hold."""
    rgba = image.convert("RGBA")
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)),
                                rgba).convert("RGB")
    return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.LANCZOS)


def _draw_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The mask at `size`, 255 wherever any of the redrawn region falls on a pixel: the
    whole region is drawn anew, and the service keeps the input outside it."""
    grey = mask.convert("L")
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.BOX)
    return grey.point(lambda value: 255 if value > 0 else 0)


def _call_parameters(pipe: Any) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(type(pipe).__call__).parameters


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _pool_for_preview(latents: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Average-pool (B, C, h, w) or (B, C, T, h, w) latents so they decode to at most
    PREVIEW_MAX_SIDE pixels on the long side."""
    height, width = latents.shape[-2:]
    ratio = PREVIEW_MAX_SIDE / (max(height, width) * max(1, scale_factor))
    if ratio >= 1.0:
        return latents
    size = (max(1, round(height * ratio)), max(1, round(width * ratio)))
    if latents.ndim == 5:
        pooled = torch.nn.functional.adaptive_avg_pool3d(latents.float(),
                                                         (latents.shape[2], *size))
    else:
        pooled = torch.nn.functional.adaptive_avg_pool2d(latents.float(), size)
    return pooled.to(latents.dtype)


def _has_sd_encode_prompt(pipe: Any) -> bool:
    """True for pipelines whose `encode_prompt` and `__call__` are StableDiffusionPipeline's
    (SD 1.x/2.x, SD-Turbo, SDXS, LCM): those take precomputed `prompt_embeds`. SDXL and FLUX
    encode with two text encoders and keep getting `prompt=`."""
    if getattr(pipe, "encode_prompt", None) is None:
        return False
    try:
        names = list(inspect.signature(type(pipe).encode_prompt).parameters)
        call = inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return False
    return names[:len(_SD_ENCODE_PROMPT)] == _SD_ENCODE_PROMPT and "prompt_embeds" in call


def _uses_cfg(pipe: Any, guidance: float | None) -> bool:
    """The pipeline's `do_classifier_free_guidance`, decided before the call: guidance above
    1 and a UNet with no guidance embedding (LCM has one)."""
    if guidance is None:
        default = inspect.signature(type(pipe).__call__).parameters.get("guidance_scale")
        guidance = float(default.default) if default is not None \
            and isinstance(default.default, int | float) else 1.0
    unet = getattr(pipe, "unet", None)
    return guidance > 1 and getattr(getattr(unet, "config", None), "time_cond_proj_dim",
                                     None) is None


def _scheduler(config: Any, spec: Mapping[str, Any]) -> Any:
    import diffusers

    overrides = dict(spec)
    cls = getattr(diffusers, overrides.pop("class", type(config).__name__), None)
    if cls is None:
        raise EngineError(f"unknown scheduler class in {dict(spec)!r}")
    return cls.from_config(config, **overrides)
