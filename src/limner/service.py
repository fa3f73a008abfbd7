"""ImageService: plan -> moderation -> scheduler -> imaging -> delivery. No HTTP types.

Routes hand it a validated `GenerationPlan` (a generation, an edit or a variation: an edit
is a generation from a starting picture); it answers with protocol objects: an
`ImagesResponse`, or the stream events of `stream=true`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from limner import imaging
from limner.catalogue import Catalogue
from limner.engines.base import EngineInfo
from limner.errors import (
    GenerationFailed,
    ImageModerationBlocked,
    InvalidRequest,
    ModelUnavailable,
    ModerationBlocked,
)
from limner.loras import LoraLibrary
from limner.metrics import Metrics
from limner.moderation import PromptPolicy
from limner.planning import GenerationPlan
from limner.protocol.events import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
)
from limner.protocol.images import Image as ImageData
from limner.protocol.images import ImageGenUsage, ImagesResponse, SvgUsage
from limner.provenance.policy import Provenance
from limner.scheduler import EngineQueue, Job, PartialImage
from limner.store.local import LocalImageStore, StoredFile
from limner.store.signing import Signer
from limner.usage import generation_usage, stream_usage

BACKDROP_HINT = ", isolated on a plain white background"
"""Added to the prompt when an RGB-only model must draw something we then key out."""

StreamEvent = (ImageGenPartialImageEvent | ImageGenCompletedEvent | ImageEditPartialImageEvent
               | ImageEditCompletedEvent)
LONG_PROMPT = 4096
"""Characters beyond which moderation runs in a worker thread rather than on the loop."""
MAX_EVENT_B64 = 32 * 1024 * 1024 - 4096
"""The Go SDK and the official CLI refuse SSE lines over 32 MiB."""


def encoder_threads(gpu: bool | None = None) -> int:
    """The encoder pool's size where the config names none. Beside a model on the CPU, few:
    more of them starve the event loop and the model on a small machine, and one core in
    four is plenty. Where the models draw on a GPU the cores have nothing else to do, and at
    its rates PNG encoding would bound the server: all cores but one (for the event loop)."""
    cores = os.cpu_count() or 2
    if gpu is None:
        gpu = _cuda_available()
    return max(1, cores - 1) if gpu else max(1, cores // 4)


def _cuda_available() -> bool:
    """Whether a CUDA device is there, asked of torch only if something loaded it already
    (this module stays free of torch)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())


def _stream_b64(blob: bytes) -> str:
    text = base64.b64encode(blob).decode()
    if len(text) > MAX_EVENT_B64:
        raise GenerationFailed(
            f"The encoded image ({len(blob):,} bytes) is too large for one stream event "
            "(32 MiB per line); ask for output_format 'jpeg' or 'webp', or stream=false.",
            code="image_too_large_for_stream",
        )
    return text


def _remove_stored(store: LocalImageStore) -> Callable[[asyncio.Future[list[StoredFile]]], None]:
    def remove(storing: asyncio.Future[list[StoredFile]]) -> None:
        if not storing.cancelled() and storing.exception() is None:
            store.remove([s.name for s in storing.result()])
    return remove


@dataclass(frozen=True)
class Delivery:
    """Where `url` responses point: the public base URL and the signed file route."""

    store: LocalImageStore
    signer: Signer
    public_base_url: str
    route: str = "/v1/files/images"

    def url_for(self, name: str, expires: int) -> str:
        path = f"{self.route}/{name}"
        signature = self.signer.sign(path, expires)
        return f"{self.public_base_url.rstrip('/')}{path}?expires={expires}&signature={signature}"


class ImageService:
    def __init__(self, catalogue: Catalogue, schedulers: Mapping[str, EngineQueue],
                 delivery: Delivery, policy: PromptPolicy,
                 clock: Callable[[], float] = time.time,
                 metrics: Metrics | None = None, loras: LoraLibrary | None = None,
                 provenance: Provenance | None = None, encoders: int | None = None) -> None:
        self.metrics = metrics or Metrics()
        self.provenance = provenance
        self.loras = loras
        self.catalogue = catalogue
        self.schedulers = schedulers
        self.delivery = delivery
        self.policy = policy
        self.clock = clock
        self.encoders = encoders or encoder_threads()
        self._encoders = ThreadPoolExecutor(self.encoders, thread_name_prefix="limner-encode")

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._encoders, fn, *args)

    def close(self) -> None:
        """Let the encoder threads go once the work already handed to them is done."""
        self._encoders.shutdown(wait=False)

    # 1. Admission: every refusal is raised here, before any response starts ---------------
    async def start(self, plan: GenerationPlan, request_id: str) -> Generation:
        """Moderation, then the engine's queue (429 when full). The generation is then read
        either as one response or as stream events: both ways go through here."""
        if len(plan.params.prompt) > LONG_PROMPT:
            await self._off_loop(self._moderate, plan, request_id)
        else:
            self._moderate(plan, request_id)
        scheduler = self.schedulers[plan.entry.engine]
        info = scheduler.info
        _check_controls(plan, info)
        if plan.params.init_image is not None and not info.edits:
            raise InvalidRequest(
                f"The model '{plan.model}' cannot edit images: the engine that draws it has "
                "no image-to-image pipeline.", param="model", code="model_cannot_edit")
        if info.references and len(plan.params.references) > info.references:
            raise InvalidRequest(
                f"Invalid 'image': the model '{plan.model}' takes at most "
                f"{info.references} picture{'s' if info.references > 1 else ''} per edit, but "
                f"got {len(plan.params.references)}.", param="image", code="invalid_value")
        background = _background(plan, info.draws_alpha)
        params = plan.params
        if plan.lora:
            if self.loras is None:
                raise InvalidRequest("Unsupported parameter: 'lora': this server offers no "
                                     "adapters.", param="lora", code="unsupported_parameter")
            params = dataclasses.replace(params, adapters=self.loras.resolve(
                plan.lora, plan.model, plan.entry.engine, info))
        if background == "key_out":
            params = dataclasses.replace(params, prompt=params.prompt + BACKDROP_HINT)
        partials = plan.partial_images if plan.stream else 0
        if plan.frame_count:
            # A GIF shows the denoising as it goes: a preview at evenly spaced steps, then the
            # picture, so the engine takes at least one step per frame.
            params = dataclasses.replace(params, min_steps=plan.frame_count)
            partials = plan.frame_count - 1
        job = scheduler.submit(params, partials)
        return Generation(self, plan, job, background)

    def _moderate(self, plan: GenerationPlan, request_id: str) -> None:
        if not plan.params.prompt:  # a variation has no prompt
            return
        categories = self.policy.violations(plan.params.prompt, plan.moderation)
        if not categories:
            return
        if plan.is_gpt:
            raise ImageModerationBlocked(
                "Your request was rejected by the safety system. If you believe this is an "
                f"error, include the request ID {request_id}. "
                f"safety_violations=[{', '.join(categories)}].",
                code="moderation_blocked",
                extra={"moderation_details": {"moderation_stage": "input",
                                              "categories": categories}},
            )
        raise ModerationBlocked(
            "Your request was rejected as a result of our safety system. Your prompt may "
            "contain text that is not allowed by our safety system.",
            code="content_policy_violation",
        )

    # 2. One response ------------------------------------------------------------------------
    async def _response(self, generation: Generation) -> ImagesResponse:
        plan, job = generation.plan, generation.job
        try:
            images = await _drawn(generation)
        finally:
            job.cancel()
        renders = [[picture] for picture in images]
        if plan.frame_count:
            previews = [job.partials.get_nowait() for _ in range(job.partials.qsize())]
            renders = [[p.images[k] for p in previews] + [picture]
                       for k, picture in enumerate(images)]
        blobs = await self._off_loop(self._encode_all, generation, renders)
        data = await self._deliver(generation, blobs)
        self.metrics.images.inc(len(data), model=plan.model)
        response = ImagesResponse(created=int(self.clock()), data=data,
                                  safety_identifier=plan.safety_identifier)
        if plan.is_gpt:
            response.background = plan.background
            response.output_format = plan.output_format
            response.size = plan.size
            response.quality = plan.quality
            response.usage = self._usage(plan, plan.params.n)
        if plan.output_format == "svg":
            response.svg_usage = svg_usage(plan.prompt_tokens, plan.svg_model, blobs)
        return response

    # 3. Stream events -----------------------------------------------------------------------
    async def _events(self, generation: Generation,
                      heartbeat_s: float) -> AsyncIterator[StreamEvent | None]:
        plan, job = generation.plan, generation.job
        try:
            counters: dict[int, int] = {}
            while not job.result.done():
                getter: asyncio.Future[Any] = asyncio.ensure_future(job.partials.get())
                waiting: set[asyncio.Future[Any]] = {getter, job.result}
                try:
                    done, _ = await asyncio.wait(waiting, timeout=heartbeat_s,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:  # also when the consumer goes away meanwhile: no task left pending
                    if not getter.done():
                        getter.cancel()
                if getter not in done:
                    if not done:
                        yield None
                    continue
                async for event in self._partial_events(generation, getter.result(),
                                                        counters):
                    yield event
            while not job.partials.empty():
                async for event in self._partial_events(generation, job.partials.get_nowait(),
                                                        counters):
                    yield event
            images = await _drawn(generation)
            per_image = stream_usage(self._usage(plan, 1))
            self.metrics.images.inc(len(images), model=plan.model)
            completed = (ImageEditCompletedEvent if plan.endpoint == "edits"
                         else ImageGenCompletedEvent)
            for picture in images:
                text = await self._off_loop(self._encode_b64, generation, picture)
                yield completed(
                    b64_json=text, created_at=int(self.clock()),
                    size=plan.size, quality=plan.quality, background=plan.background,
                    output_format=plan.output_format, usage=per_image,
                    safety_identifier=plan.safety_identifier,
                )
        finally:
            job.cancel()

    # Helpers ----------------------------------------------------------------------------
    async def _partial_events(self, generation: Generation, partial: PartialImage,
                              counters: dict[int, int]) -> AsyncIterator[StreamEvent]:
        plan = generation.plan
        event = (ImageEditPartialImageEvent if plan.endpoint == "edits"
                 else ImageGenPartialImageEvent)
        for position, picture in enumerate(partial.images):
            text = await self._off_loop(self._encode_b64, generation, picture, False)
            index = counters.get(position, 0)
            counters[position] = index + 1
            yield event(
                b64_json=text, created_at=int(self.clock()),
                size=plan.size, quality=plan.quality, background=plan.background,
                output_format=plan.output_format, partial_image_index=index,
            )

    def _encode(self, generation: Generation, frames: list[Image.Image],
                final: bool = True) -> bytes:
        """One image's file: its last frame in a still format, all of them in a GIF; a final
        picture (not a preview) with its content credentials, signed in this same thread."""
        plan = generation.plan
        p = plan.params
        started = time.perf_counter()
        if plan.output_format == "gif":
            blob = imaging.finish_animation(frames, p.width, p.height, generation.background,
                                            plan.frame_duration_ms)
        else:
            keep = None if p.init_image is None or p.mask is None else (p.init_image, p.mask)
            mark = self.provenance.watermarker(plan, self._engine_model(plan)) \
                if final and self.provenance is not None else None
            blob = imaging.finish(frames[-1], p.width, p.height, generation.background,
                                  plan.output_format, plan.output_compression, keep, mark)
        if final and self.provenance is not None:
            blob = self.provenance.mark(blob, plan, self._engine_model(plan))
        self.metrics.encode_seconds.observe(time.perf_counter() - started, model=plan.model)
        return blob

    def _engine_model(self, plan: GenerationPlan) -> str:
        return self.schedulers[plan.entry.engine].info.name

    def _encode_b64(self, generation: Generation, picture: Image.Image,
                    final: bool = True) -> str:
        """One stream event's image: base64 too grows with the picture, so not on the loop."""
        return _stream_b64(self._encode(generation, [picture], final))

    def _encode_all(self, generation: Generation,
                    renders: list[list[Image.Image]]) -> list[bytes]:
        return [self._encode(generation, frames) for frames in renders]

    async def _deliver(self, generation: Generation, blobs: list[bytes]) -> list[ImageData]:
        """As base64, or stored all together: a request that fails keeps no file."""
        plan = generation.plan
        revised = plan.params.prompt if plan.entry.rules.family == "dall-e-3" else None
        if plan.response_format == "b64_json":
            texts = await self._off_loop(_base64_all, blobs)
            return [ImageData(b64_json=text, revised_prompt=revised) for text in texts]
        store = self.delivery.store
        storing = asyncio.ensure_future(asyncio.to_thread(store.put_all, blobs,
                                                          plan.output_format))
        try:
            stored = await asyncio.shield(storing)
        except asyncio.CancelledError:
            # The client went away while the files were written: nobody will get their URLs.
            storing.add_done_callback(_remove_stored(store))
            raise
        generation.stored.extend(s.name for s in stored)
        return [ImageData(url=self.delivery.url_for(s.name, s.expires), revised_prompt=revised)
                for s in stored]

    def _usage(self, plan: GenerationPlan, n: int) -> ImageGenUsage:
        p = plan.params
        partials = plan.partial_images if plan.stream else 0
        return generation_usage(plan.prompt_tokens, p.width, p.height, plan.quality, n, partials,
                                plan.input_image_tokens)


@dataclass(frozen=True)
class Generation:
    """An admitted request: read it as one `response()` or as `events()`, not both."""

    service: ImageService
    plan: GenerationPlan
    job: Job
    background: imaging.Background
    """How the picture gets its background, decided once at admission (`_background`)."""
    stored: list[str] = field(default_factory=list)
    """The files its answer's URLs point at, once stored."""

    async def response(self) -> ImagesResponse:
        return await self.service._response(self)

    def discard(self) -> None:
        """The answer could not be delivered (its client left): its files go too."""
        self.service.delivery.store.remove(self.stored)
        self.stored.clear()

    def events(self, heartbeat_s: float = 10.0) -> AsyncIterator[StreamEvent | None]:
        """Partial events as the engine reports them, then one completed event per image.

        Yields `None` when nothing happened for `heartbeat_s`, so the caller can send a
        keep-alive comment. The job is cancelled if the consumer stops early.
        """
        return self.service._events(self, heartbeat_s)


async def _drawn(generation: Generation) -> list[Image.Image]:
    try:
        return await generation.job.result
    except ModelUnavailable as exc:  # the residency names the engine; say the asked name
        raise exc.named(generation.plan.model) from None


def _check_controls(plan: GenerationPlan, info: EngineInfo) -> None:
    """The sampling extensions this engine honours: any other is refused, never ignored."""
    p = plan.params
    asked = {"negative_prompt": p.negative_prompt, "guidance_scale": p.guidance,
             "scheduler": p.scheduler}
    for name, value in asked.items():
        if value is not None and name not in info.controls:
            raise InvalidRequest(
                f"Unsupported parameter: '{name}' is not supported by the engine that draws "
                f"'{plan.model}'.", param=name, code="unsupported_parameter")
    if p.steps is not None and p.steps > info.max_steps:
        raise InvalidRequest(
            f"Invalid 'steps': integer above maximum value. Expected a value <= "
            f"{info.max_steps} for '{plan.model}', but got {p.steps} instead.",
            param="steps", code="integer_above_max_value")


def _base64_all(blobs: list[bytes]) -> list[str]:
    return [base64.b64encode(blob).decode() for blob in blobs]


def svg_usage(prompt_tokens: int, author: str | None, blobs: list[bytes]) -> SvgUsage:
    """An estimate, as `usage` is: no model authors the SVG here (`imaging.trace_svg` traces
    the picture), so its output is counted as the SVG's bytes over 4, with no reasoning."""
    output = sum(len(blob) for blob in blobs) // 4
    return SvgUsage(input_tokens=prompt_tokens, model=author or "vtracer",
                    output_tokens=output, reasoning_tokens=0,
                    total_tokens=prompt_tokens + output)


def _background(plan: GenerationPlan, draws_alpha: bool) -> imaging.Background:
    """The one place transparency is decided: the engine's own alpha where it draws one;
    otherwise a plain backdrop, asked for in the prompt and keyed out afterwards."""
    if plan.background != "transparent":
        return "opaque"
    return "alpha" if draws_alpha else "key_out"
