"""The embedded model: a small patchified pixel-space UNet for 64x64 premultiplied RGBA.

The 64x64x4 input is pixel-unshuffled into 16x16x64 so the UNet runs at 16/8/4: that is
what makes it train and sample fast on a CPU. It predicts x0 (the clean image) for a
rectified-flow path x_t = (1-t) x0 + t eps; x0-prediction is what keeps 4x4 patches from
turning into speckle. Conditioning is FiLM (adaptive GroupNorm) from the time, the pooled
MiniLM sentence vector and a style embedding; there is only one text vector, so
cross-attention would add nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

TEXT_DIM = 384
STYLES = ("noto", "twemoji", "fluent")
STYLE_ANY = len(STYLES)
"""Index of the "any style" / unconditional style token."""


@dataclass(frozen=True)
class NetConfig:
    """Hyper-parameters; stored next to the weights so the loader rebuilds the same net."""

    ch: int = 64
    mults: tuple[int, ...] = (1, 2, 2)
    blocks: int = 2
    patch: int = 4
    emb: int = 256
    groups: int = 16

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, object]) -> NetConfig:
        mults = d.get("mults", (1, 2, 2))
        assert isinstance(mults, list | tuple)
        return NetConfig(
            ch=int(str(d.get("ch", 64))),
            mults=tuple(int(m) for m in mults),
            blocks=int(str(d.get("blocks", 2))),
            patch=int(str(d.get("patch", 4))),
            emb=int(str(d.get("emb", 256))),
            groups=int(str(d.get("groups", 16))),
        )


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000 like the usual diffusion nets)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with FiLM scale/shift from the conditioning vector."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int) -> None:
        super().__init__()
        self.n1 = nn.GroupNorm(groups, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.n2 = nn.GroupNorm(groups, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.c2.weight)
        if self.c2.bias is not None:
            nn.init.zeros_(self.c2.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        h = self.n2(h) * (1 + scale) + shift
        h = self.c2(F.silu(h))
        out: torch.Tensor = self.skip(x) + h
        return out


class Attention(nn.Module):
    """Self-attention over the 4x4 bottleneck: lets distant parts of the icon agree."""

    def __init__(self, ch: int, groups: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)
        self.heads = heads
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        a = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        out: torch.Tensor = x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))
        return out


class EmojiUNet(nn.Module):
    """x0-predicting UNet: (x_t, t, text vector, style index) -> x0 estimate."""

    def __init__(self, cfg: NetConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or NetConfig()
        self.cfg = cfg
        e, g, p = cfg.emb, cfg.groups, cfg.patch
        self.t_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.txt_mlp = nn.Sequential(nn.Linear(TEXT_DIM, e), nn.SiLU(), nn.Linear(e, e))
        self.style = nn.Embedding(len(STYLES) + 1, e)
        nn.init.normal_(self.style.weight, std=0.02)  # small, so the text is not drowned out
        self.cond_out = nn.Sequential(nn.SiLU(), nn.Linear(e, e))
        self.inp = nn.Conv2d(4 * p * p, cfg.ch, 3, padding=1)
        chans = [cfg.ch * m for m in cfg.mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [cfg.ch]
        cur = cfg.ch
        for i, c in enumerate(chans):
            level = nn.ModuleList()
            for _ in range(cfg.blocks):
                level.append(ResBlock(cur, c, e, g))
                cur = c
                skips.append(cur)
            self.down.append(level)
            last = i == len(chans) - 1
            self.downsample.append(
                nn.Identity() if last else nn.Conv2d(cur, cur, 3, stride=2, padding=1)
            )
            if not last:
                skips.append(cur)
        self.mid1 = ResBlock(cur, cur, e, g)
        self.mid_attn = Attention(cur, g)
        self.mid2 = ResBlock(cur, cur, e, g)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, c in reversed(list(enumerate(chans))):
            level = nn.ModuleList()
            for _ in range(cfg.blocks + 1):
                level.append(ResBlock(cur + skips.pop(), c, e, g))
                cur = c
            self.up.append(level)
            self.upsample.append(nn.Identity() if i == 0 else nn.Conv2d(cur, cur, 3, padding=1))
        self.out_norm = nn.GroupNorm(g, cur)
        self.out = nn.Conv2d(cur, 4 * p * p, 3, padding=1)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, txt: torch.Tensor, style: torch.Tensor
    ) -> torch.Tensor:
        """`txt` is the unit MiniLM vector times sqrt(384) (zeros = unconditional)."""
        e = self.t_mlp(timestep_embedding(t, self.cfg.emb).to(x.dtype))
        e = self.cond_out(e + self.txt_mlp(txt.to(x.dtype)) + self.style(style))
        h = self.inp(F.pixel_unshuffle(x, self.cfg.patch))
        hs = [h]
        for level, ds in zip(self.down, self.downsample, strict=True):
            assert isinstance(level, nn.ModuleList)
            for blk in level:
                h = blk(h, e)
                hs.append(h)
            if not isinstance(ds, nn.Identity):
                h = ds(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, e)), e)
        for level, us in zip(self.up, self.upsample, strict=True):
            assert isinstance(level, nn.ModuleList)
            for blk in level:
                h = blk(torch.cat([h, hs.pop()], dim=1), e)
            if not isinstance(us, nn.Identity):
                h = us(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.out(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(h, self.cfg.patch)
