"""Pack the training set for the GPU machine: what `gpu_train.py` reads, small enough to carry.

Usage:  python training/pack.py [--out training/pack]

The GPU machine has no network and no MiniLM weights, and a run may carry 64 MiB with the
whole repository (about 35 MiB of it tracked files), so this precomputes and squeezes:

* `extra.xz`: the 5,225 skin-tone variants, uint8 premultiplied RGBA, lzma-compressed. The
  5,374 base pictures are not packed: they are the cells of the shipped `refs_<style>.png`,
  and re-premultiplying a cell gives the training picture back bit for bit (checked here).
* `meta.npz`: per image its style, concept, tone, group and where its pixels live; the
  captions' MiniLM vectors as int8 with a scale per vector; per concept the caption ids
  (augmented: name, "name, keywords", templates, keyword subsets; held-out names never
  stand alone, as in `train.py`); per skin-tone picture its tone caption; and the vectors of
  the prompts the run draws its sample sheet from.
* `captions.json`: the caption and sample-prompt texts, for the log.

Needs `training/data/` from `fetch_data.py` and limner's text encoder.
"""

from __future__ import annotations

import argparse
import json
import lzma
import random
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

from evaluate import PARAPHRASES  # noqa: E402
from gpu_train import base_pictures  # noqa: E402
from train import TONES, heldout_concepts  # noqa: E402

from limner.engines.embedded.assets import ASSETS  # noqa: E402

DATA = HERE / "data"
TEMPLATES = ("a {} icon", "{} emoji", "a picture of {}", "a cute {}", "{}, flat icon")
SAMPLE_HELDOUT = 16
"""How many held-out names (never a caption on their own) head the sample sheet."""


def captions_of(concept: dict[str, object], heldout: bool, rng: random.Random) -> list[str]:
    """The texts a concept's pictures are trained with: more ways of saying it than train.py."""
    label = str(concept["label"])
    tags = [str(t) for t in concept.get("tags", [])][:8]  # type: ignore[attr-defined]
    full = f"{label}, {', '.join(tags)}" if tags else f"{label} emoji"
    if heldout:
        return [full]
    caps = [full, label]
    caps += [t.format(label) for t in rng.sample(TEMPLATES, 2)]
    others = [t for t in tags if t != label]
    if len(others) >= 2:
        caps.append(f"{label}, {', '.join(rng.sample(others, 2))}")
    return caps


def int8_vectors(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors as int8 and a scale each: a quarter of fp32's bytes, ~4e-3 off per entry."""
    scale = np.abs(vectors).max(axis=1, keepdims=True) / 127.0
    return np.round(vectors / scale).astype(np.int8), scale.astype(np.float32)[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE / "pack"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with np.load(DATA / "emoji64.npz") as z:
        d = {k: z[k] for k in z.files}
    concepts = json.loads((DATA / "concepts.json").read_text())
    held = set(heldout_concepts(concepts))

    cells = base_pictures(ASSETS)
    in_refs = d["tone"] == 0
    for i in np.nonzero(in_refs)[0]:
        cell = cells.get((int(d["style"][i]), int(d["concept"][i])))
        if cell is None or not np.array_equal(cell, d["images"][i]):
            raise SystemExit(f"image {i} differs from its reference cell: refs are stale")
    extra = np.ascontiguousarray(d["images"][~in_refs])
    (out / "extra.xz").write_bytes(lzma.compress(extra.tobytes(), preset=9))
    where = np.full(len(in_refs), -1, np.int64)
    where[~in_refs] = np.arange(len(extra))

    rng = random.Random(7)
    texts: list[str] = []
    offsets = [0]
    for i, c in enumerate(concepts):
        texts += captions_of(c, i in held, rng)
        offsets.append(len(texts))
    tone_caption = np.full(len(in_refs), -1, np.int64)
    for i in np.nonzero((d["tone"] > 0) & (d["tone"] <= 5) & (d["group"] == 1))[0]:
        tone_caption[i] = len(texts)
        texts.append(f"{concepts[int(d['concept'][i])]['label']}: {TONES[int(d['tone'][i])]}")
    spread = sorted(held)[::len(held) // SAMPLE_HELDOUT][:SAMPLE_HELDOUT]  # not all faces
    names = [str(concepts[i]["label"]) for i in spread]
    samples = names + [p for p, _ in PARAPHRASES[:32 - len(names)]]

    from limner.engines.embedded.text import TextEncoder

    enc = TextEncoder()
    vectors, scales = int8_vectors(enc.encode(texts).numpy())
    np.savez_compressed(
        out / "meta.npz", style=d["style"], concept=d["concept"], tone=d["tone"],
        group=d["group"], extra_index=where, caption_vectors=vectors, caption_scales=scales,
        caption_offsets=np.asarray(offsets, np.int64), tone_caption=tone_caption,
        sample_vectors=enc.encode(samples).numpy().astype(np.float16))
    (out / "captions.json").write_text(json.dumps({"captions": texts, "samples": samples},
                                                  ensure_ascii=False))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{len(extra)} packed pictures + {int(in_refs.sum())} from the refs, "
          f"{len(texts)} captions, {len(samples)} sample prompts: {size / 2**20:.1f} MiB "
          f"in {out}")


if __name__ == "__main__":
    main()
