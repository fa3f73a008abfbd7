"""Export a training run into the package's assets folder.

Usage:  python training/export.py --run m64p4 [--out src/limner/engines/embedded/assets]

Writes the EMA weights as fp16 safetensors (with the net config and training stats in the
metadata), the reference sprite sheets (base emoji, one sheet per style), the MiniLM
embeddings of each emoji's CLDR name and "name, keywords" for retrieval, and concepts.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent

from limner.engines.embedded.assets import CELL, SHEET_COLUMNS  # noqa: E402
from limner.engines.embedded.net import STYLES  # noqa: E402

DATA = HERE / "data"


def export_weights(run: Path, out: Path) -> None:
    ck = torch.load(run / "ckpt.pt", weights_only=False)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in ck["ema"].items()}
    meta = {"config": json.dumps(ck["config"]), "step": str(ck["step"]),
            "images_seen": str(ck["seen"]), "train_seconds": f"{ck['seconds']:.0f}"}
    save_file(state, str(out / "unet.safetensors"), metadata=meta)
    print(f"weights: step {ck['step']}, {ck['seen']} images, {ck['seconds'] / 3600:.2f} h")


def export_refs(out: Path) -> None:
    from limner.engines.embedded.text import TextEncoder

    with np.load(DATA / "emoji64.npz") as z:
        d = {k: z[k] for k in z.files}  # npz members decompress on every access
    concepts = json.loads((DATA / "concepts.json").read_text())
    n = len(concepts)
    rows = (n + SHEET_COLUMNS - 1) // SHEET_COLUMNS
    styles: list[list[int]] = [[] for _ in range(n)]
    for sid, name in enumerate(STYLES):
        sheet = np.zeros((rows * CELL, SHEET_COLUMNS * CELL, 4), np.uint8)
        pick = np.nonzero((d["style"] == sid) & (d["tone"] == 0))[0]
        for i in pick:
            c = int(d["concept"][i])
            if sid in styles[c]:
                continue
            styles[c].append(sid)
            premul = d["images"][i].astype(np.float32)
            a = premul[..., 3:4]
            rgb = np.where(a > 0, premul[..., :3] * 255.0 / np.maximum(a, 1), 0)
            cell = np.concatenate([np.clip(np.round(rgb), 0, 255), a], -1).astype(np.uint8)
            r, col = divmod(c, SHEET_COLUMNS)
            sheet[r * CELL:(r + 1) * CELL, col * CELL:(col + 1) * CELL] = cell
        Image.fromarray(sheet, "RGBA").save(out / f"refs_{name}.png", compress_level=9)
    enc = TextEncoder()
    labels = [str(c["label"]) for c in concepts]
    full = [f"{c['label']}, {', '.join(c.get('tags', [])[:8])}" for c in concepts]
    save_file({"label": enc.encode(labels).half(), "full": enc.encode(full).half()},
              str(out / "retrieval.safetensors"))
    slim = [{"label": c["label"], "hexcode": c["hexcode"], "styles": s}
            for c, s in zip(concepts, styles, strict=True)]
    (out / "concepts.json").write_text(json.dumps(slim, ensure_ascii=False, separators=(",", ":")))
    print(f"refs: {n} concepts")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="m64p4")
    ap.add_argument("--out", default=str(HERE.parent / "src/limner/engines/embedded/assets"))
    ap.add_argument("--skip-refs", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export_weights(HERE / "runs" / args.run, out)
    if not args.skip_refs:
        export_refs(out)
    for f in sorted(out.iterdir()):
        print(f"  {f.name}: {f.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
