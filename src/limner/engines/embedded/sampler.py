"""Euler sampler for the x0-predicting rectified-flow net, with CFG and an SDEdit start.

`t0 = 1.0` is pure text-to-image from noise; `t0 < 1` starts from a reference picture
noised to time t0 (SDEdit), which is how the hybrid mode draws a variation of the
retrieved emoji while the model is still young.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from limner.engines.embedded.net import STYLE_ANY, EmojiUNet

StepHook = Callable[[int, int, torch.Tensor], None]
"""Called after step i (1-based) of `total` with the current x0 estimate."""


def timesteps(t0: float, steps: int) -> torch.Tensor:
    """t0 -> 0 in `steps` Euler steps, denser near 0 where the fine detail is settled."""
    u = torch.linspace(0.0, 1.0, steps + 1)
    return t0 * (1.0 - u) ** 1.5


@torch.inference_mode()
def sample(
    net: EmojiUNet,
    txt: torch.Tensor,
    style: torch.Tensor,
    noise: torch.Tensor,
    *,
    steps: int,
    cfg: float = 3.0,
    guidance_above: float = 0.0,
    x_ref: torch.Tensor | None = None,
    t0: float = 1.0,
    autocast: bool = False,
    keep: torch.Tensor | None = None,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """Premultiplied RGBA in [-1, 1], shape of `noise`.

    `txt` is the scaled MiniLM vector per image (B, 384), `style` the style index (B,).
    Classifier-free guidance runs the conditional and unconditional pass as one batch, only
    at times t > `guidance_above`: guidance fixes the layout early on, while near t = 0 it
    only amplifies the net's noise into speckle (guidance in a limited interval,
    Kynkäänniemi et al. 2024). The unguided late steps also cost half as much.

    `keep` (B, 1, H, W in [0, 1], with `x_ref`) is an edit's mask: where it is 1 the state is
    reset after every step to `x_ref` noised to the step's time, so the drawn part grows to
    fit the kept part (inpainting by replacement).
    """
    b = noise.shape[0]
    if x_ref is None:
        t0 = 1.0
        x = noise.clone()
    else:
        x = (1.0 - t0) * x_ref + t0 * noise
    ts = timesteps(t0, steps)
    txt_pair = torch.cat([txt, torch.zeros_like(txt)])
    style_pair = torch.cat([style, torch.full_like(style, STYLE_ANY)])
    x0 = x
    for i in range(steps):
        t_now, t_next = float(ts[i]), float(ts[i + 1])
        guided = cfg != 1.0 and t_now > guidance_above
        x_in = torch.cat([x, x]) if guided else x
        txt_in = txt_pair if guided else txt
        style_in = style_pair if guided else style
        t_in = torch.full((x_in.shape[0],), t_now, device=x.device)
        # The device's own autocast: the trainer draws its sample sheets on a GPU with this.
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            pred = net(x_in, t_in, txt_in, style_in)
        pred = pred.float().clamp(-1.0, 1.0)
        if guided:
            cond, uncond = pred.chunk(2)
            x0 = uncond + cfg * (cond - uncond)
            x0 = x0.clamp(-1.0, 1.0)
        else:
            x0 = pred
        # Rectified flow: x_t = (1-t) x0 + t eps, so eps = (x_t - (1-t) x0) / t.
        eps = (x - (1.0 - t_now) * x0) / max(t_now, 1e-3)
        x = (1.0 - t_next) * x0 + t_next * eps
        if keep is not None and x_ref is not None:
            x = keep * ((1.0 - t_next) * x_ref + t_next * noise) + (1.0 - keep) * x
            x0 = keep * x_ref + (1.0 - keep) * x0
        if on_step is not None:
            on_step(i + 1, steps, x0)
    del b
    return x0
