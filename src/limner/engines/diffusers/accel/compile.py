"""`torch.compile` for the diffusers engine: the UNet and the VAE's decoder.

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
    """Compiles `pipe.unet` and its VAE's decoder in place with `torch.compile(mode=mode)`."""
    if getattr(pipe, "unet", None) is None:
        raise EngineError(f"compile = true needs a UNet; {type(pipe).__name__} has none")
    if device == "cpu":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    pipe.unet = torch.compile(pipe.unet, mode=mode)
    parts = ["unet"]
    preview_decoder = None
    decoder = getattr(getattr(pipe, "vae", None), "decoder", None)
    if isinstance(decoder, torch.nn.Module):
        if tiny is not None and pipe.vae is tiny:
            preview_decoder = decoder
        pipe.vae.decoder = torch.compile(decoder, mode=mode)
        parts.append("vae decoder")
    return Compiled(tuple(parts), preview_decoder)
