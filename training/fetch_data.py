"""Fetch the openly licensed emoji artwork from npm and build the 64x64 training set.

Usage:  python training/fetch_data.py [--verify-only]

* `npm pack` downloads the pinned tarballs into training/data/npm/ (gitignored).
* Their SHA-256 must match training/data.lock.json (written on first run, committed).
* Output: training/data/emoji64.npz with
    images   uint8 (N, 64, 64, 4), *premultiplied* RGBA
    style    int64 (N,)   0 = noto, 1 = twemoji, 2 = fluent
    concept  int64 (N,)   index into `concepts` (one per base emoji, skin tones share it)
    tone     int64 (N,)   0 = none, 1..5 = skin tone variant
    group    int64 (N,)   emojibase group (1 = people-body)
  and training/data/concepts.json: per concept hexcode, CLDR label, tags, group.

Captions are the CLDR names and keywords from `emojibase-data` (MIT), never the Unicode
names (the red heart is "HEAVY BLACK HEART" there) or Slack short names (`cat` is the cat
face). OpenMoji (CC BY-SA), Apple and Facebook artwork are deliberately not used.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
NPM = DATA / "npm"
LOCK = HERE / "data.lock.json"

PACKAGES = {
    "emoji-datasource-google": "16.0.0",  # Noto Emoji, Apache-2.0
    "emoji-datasource-twitter": "16.0.0",  # Twemoji, CC-BY 4.0
    "fluentui-emoji": "1.3.0",  # Microsoft Fluent Emoji (flat SVG), MIT
    "emojibase-data": "17.0.0",  # CLDR names + keywords, MIT
}
STYLES = ("noto", "twemoji", "fluent")
FLUENT_TONES = (("-default", 0), ("-medium-light", 2), ("-medium-dark", 4), ("-light", 1),
                ("-medium", 3), ("-dark", 5))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch() -> dict[str, Path]:
    """npm pack every pinned package (skipped when present) and check the lock file."""
    NPM.mkdir(parents=True, exist_ok=True)
    lock = json.loads(LOCK.read_text()) if LOCK.exists() else {}
    out: dict[str, Path] = {}
    for name, ver in PACKAGES.items():
        tgz = NPM / f"{name}-{ver}.tgz"
        if not tgz.exists():
            subprocess.run(["npm", "pack", f"{name}@{ver}", "--silent"], cwd=NPM, check=True)
        digest = sha256(tgz)
        key = f"{name}@{ver}"
        if key in lock and lock[key] != digest:
            raise SystemExit(f"checksum mismatch for {key}: {digest} != {lock[key]}")
        lock[key] = digest
        out[name] = tgz
    LOCK.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return out


def members(tgz: Path) -> dict[str, bytes]:
    with tarfile.open(tgz) as tf:
        return {
            m.name: tf.extractfile(m).read()  # type: ignore[union-attr]
            for m in tf.getmembers()
            if m.isfile()
        }


def key(hexcode: str) -> str:
    """Join key: upper-case code points without the FE0F variation selector."""
    return "-".join(p for p in hexcode.upper().split("-") if p != "FE0F")


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower().replace("’", "").replace("'", "")).strip("-")


def premultiply(img: Image.Image) -> np.ndarray:
    a = np.asarray(img.convert("RGBA").resize((64, 64), Image.Resampling.LANCZOS), np.float32)
    a[..., :3] *= a[..., 3:4] / 255.0
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def build(tars: dict[str, Path]) -> None:
    import cairosvg  # only needed here; rasterises the Fluent SVGs

    base = members(tars["emojibase-data"])
    emojibase = json.loads(base["package/en/data.json"])
    concepts: list[dict[str, object]] = []
    by_key: dict[str, tuple[int, int]] = {}  # key -> (concept, tone)
    for e in emojibase:
        if e.get("group") in (None, 2):  # components (skin tone swatches, hair) and regionals
            continue
        cid = len(concepts)
        concepts.append(
            {"hexcode": e["hexcode"], "label": e["label"], "tags": e.get("tags", []),
             "group": e["group"], "subgroup": e.get("subgroup", -1)}
        )
        by_key[key(e["hexcode"])] = (cid, 0)
        for s in e.get("skins", []) or []:
            tone = s.get("tone", 1)
            by_key[key(s["hexcode"])] = (cid, tone if isinstance(tone, int) else 6)

    imgs: list[np.ndarray] = []
    meta: list[tuple[int, int, int]] = []  # style, concept, tone
    for style, pkg, folder in ((0, "emoji-datasource-google", "google"),
                               (1, "emoji-datasource-twitter", "twitter")):
        files = members(tars[pkg])
        table = json.loads(files["package/emoji.json"])
        for e in table:
            entries = [e, *(e.get("skin_variations") or {}).values()]
            for v in entries:
                k = key(v["unified"])
                path = f"package/img/{folder}/64/{v['image']}"
                if k not in by_key or path not in files or not v.get(f"has_img_{folder}", True):
                    continue
                imgs.append(premultiply(Image.open(io.BytesIO(files[path]))))
                cid, tone = by_key[k]
                meta.append((style, cid, tone))
    fluent = members(tars["fluentui-emoji"])
    label_to_cid = {slug(str(c["label"])): i for i, c in enumerate(concepts)}
    matched = 0
    for path in sorted(fluent):
        if not (path.startswith("package/icons/flat/") and path.endswith(".svg")):
            continue
        name, tone = Path(path).stem, 0
        if name not in label_to_cid:
            for suffix, t in FLUENT_TONES:
                if name.endswith(suffix):
                    name, tone = name[: -len(suffix)], t
                    break
        cid_opt = label_to_cid.get(name)
        if cid_opt is None:
            continue
        png = cairosvg.svg2png(bytestring=fluent[path], output_width=256, output_height=256)
        imgs.append(premultiply(Image.open(io.BytesIO(png))))
        meta.append((2, cid_opt, tone))
        matched += 1
    arr = np.stack(imgs)
    m = np.array(meta, dtype=np.int64)
    group = np.array([int(concepts[c]["group"]) for c in m[:, 1]], dtype=np.int64)  # type: ignore[call-overload]
    np.savez_compressed(DATA / "emoji64.npz", images=arr, style=m[:, 0], concept=m[:, 1],
                        tone=m[:, 2], group=group)
    (DATA / "concepts.json").write_text(json.dumps(concepts, ensure_ascii=False))
    digest = hashlib.sha256(arr.tobytes()).hexdigest()
    print(f"{len(arr)} images ({np.bincount(m[:, 0]).tolist()} noto/twemoji/fluent), "
          f"{len(concepts)} concepts, fluent matched {matched}; pixels sha256 {digest}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--verify-only", action="store_true")
    args = ap.parse_args()
    tars = fetch()
    if not args.verify_only:
        build(tars)


if __name__ == "__main__":
    main()
