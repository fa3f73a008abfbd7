"""`torch.compile` for the diffusers engine: the denoiser (a UNet or a family's transformer)
and the VAE's decoder.

The first call of each shape compiles (slow), later calls run fused kernels. On a CPU,
freezing folds the weights into the graph, so oneDNN gets them pre-packed once instead of per
call. Partial images keep the eager decoder: their small shape would compile too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from limner.engines.base import EngineError


@dataclass(frozen=True)
class Compiled:
    """What `apply` compiled, and the eager decoder that previews keep using (if any)."""

    parts: tuple[str, ...]
    preview_decoder: torch.nn.Module | None


def apply(pipe: Any, mode: str, device: str, tiny: Any = None) -> Compiled:
    """Compiles the pipeline's denoiser (`unet` or `transformer`) and its VAE's decoder in
    place with `torch.compile(mode=mode)`; the compiled module answers for the original's
    attributes (`config`, `dtype`, `cache_context`), which pipelines read."""
    part = next((name for name in ("unet", "transformer")
                 if isinstance(getattr(pipe, name, None), torch.nn.Module)), None)
    if part is None:
        raise EngineError(f"compile = true needs a UNet or a transformer; "
                          f"{type(pipe).__name__} has neither")
    if device == "cpu":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    setattr(pipe, part, torch.compile(getattr(pipe, part), mode=mode))
    parts = [part]
    preview_decoder = None
    decoder = getattr(getattr(pipe, "vae", None), "decoder", None)
    if isinstance(decoder, torch.nn.Module):
        if tiny is not None and pipe.vae is tiny:
            preview_decoder = decoder
        pipe.vae.decoder = torch.compile(decoder, mode=mode)
        parts.append("vae decoder")
    return Compiled(tuple(parts), preview_decoder)
