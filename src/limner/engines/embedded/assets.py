"""The shipped files: UNet weights, the reference sprite pack and its caption embeddings.

Layout of an assets folder (the package's `assets/` by default):
    unet.safetensors        fp16 weights; metadata "config" (NetConfig JSON)
    retrieval.safetensors   "label" and "full" (C, 384) fp16 unit MiniLM vectors per emoji
    concepts.json           [{"label", "hexcode", "styles": [style ids with a picture]}]
    refs_<style>.png        64-px cells, SHEET_COLUMNS per row, cell i = concept i
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from limner.engines.embedded.net import STYLES, EmojiUNet, NetConfig

ASSETS = Path(__file__).resolve().parent / "assets"
SHEET_COLUMNS = 48
CELL = 64


def load_unet(folder: Path) -> EmojiUNet:
    """Rebuild the net from its stored config and load the fp16 weights as float32."""
    path = folder / "unet.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    cfg = NetConfig.from_json(json.loads(meta.get("config", "{}")))
    net = EmojiUNet(cfg)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


@dataclass
class Match:
    """The nearest emoji to a prompt and how close it is (cosine similarity)."""

    concept: int
    label: str
    score: float


class ReferencePack:
    """Nearest-emoji retrieval over the shipped caption embeddings, and its pictures."""

    def __init__(self, folder: Path) -> None:
        self.concepts: list[dict[str, object]] = json.loads(
            (folder / "concepts.json").read_text(encoding="utf-8")
        )
        emb = load_file(str(folder / "retrieval.safetensors"))
        self.label_emb = emb["label"].float()
        self.full_emb = emb["full"].float()
        self.sheets: dict[int, np.ndarray] = {}
        for sid, name in enumerate(STYLES):
            sheet = folder / f"refs_{name}.png"
            if sheet.exists():
                with Image.open(sheet) as im:
                    self.sheets[sid] = np.asarray(im.convert("RGBA"))

    def nearest(self, vec: torch.Tensor, k: int = 1) -> list[Match]:
        """Top-k emoji for one unit prompt vector: best of name and name+keywords scores."""
        scores = torch.maximum(self.label_emb @ vec, self.full_emb @ vec)
        top = torch.topk(scores, k)
        return [
            Match(int(i), str(self.concepts[int(i)]["label"]), float(s))
            for s, i in zip(top.values, top.indices, strict=True)
        ]

    def styles_of(self, concept: int) -> list[int]:
        styles = self.concepts[concept].get("styles", [])
        assert isinstance(styles, list)
        return [int(s) for s in styles if int(s) in self.sheets]

    def picture(self, concept: int, style: int) -> torch.Tensor:
        """(4, 64, 64) premultiplied RGBA in [-1, 1]."""
        row, col = divmod(concept, SHEET_COLUMNS)
        cell = self.sheets[style][row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL]
        x = torch.from_numpy(cell.astype(np.float32) / 255.0).permute(2, 0, 1)
        x = torch.cat([x[:3] * x[3:], x[3:]])
        return x * 2.0 - 1.0
