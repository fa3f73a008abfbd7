"""Resumable training of the embedded emoji model (m64p4, rectified flow, x0-prediction).

Usage (one thread, in the background, resumes from training/runs/NAME/ckpt.pt):
    OMP_NUM_THREADS=1 nohup python training/train.py --run m64p4 --until 22:00 \
        > training/runs/m64p4.log 2>&1 &

Needs training/data/emoji64.npz from fetch_data.py. Writes a checkpoint (model, EMA,
optimizer, step, RNG) every --ckpt-min minutes and at the end, atomically.

With no checkpoint, `--init DIR` starts from exported weights (e.g. the shipped
src/limner/engines/embedded/assets) instead of from scratch: the optimizer state is not exported, so
the run warms up its learning rate again. bf16 autocast is used only where the CPU has a bf16
fast path (AMX or AVX512-BF16); elsewhere torch emulates bf16 far slower than fp32.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent

from limner.engines.cpu import cpu_has_bf16  # noqa: E402
from limner.engines.embedded.net import STYLE_ANY, EmojiUNet, NetConfig  # noqa: E402

DATA = HERE / "data"
RUNS = HERE / "runs"
TONES = ("", "light skin tone", "medium-light skin tone", "medium skin tone",
         "medium-dark skin tone", "dark skin tone", "skin tone")
N_HELDOUT = 200


def heldout_concepts(concepts: list[dict[str, object]]) -> list[int]:
    """200 concepts (no flags) whose bare CLDR name is never a training caption: eval prompts."""
    rng = random.Random(5)
    pool = [i for i, c in enumerate(concepts) if c["group"] != 9]
    return sorted(rng.sample(pool, N_HELDOUT))


def captions_for(c: dict[str, object], heldout: bool) -> list[str]:
    label = str(c["label"])
    tags = [str(t) for t in c.get("tags", [])][:8]  # type: ignore[attr-defined]
    caps = [f"{label}, {', '.join(tags)}" if tags else f"{label} emoji"]
    if not heldout:
        caps += [label, f"a {label} icon"]
    return caps


def build_captions() -> tuple[list[str], list[list[int]], list[list[int]]]:
    """All caption strings; per concept the caption ids per tone (tone 0 = base)."""
    concepts = json.loads((DATA / "concepts.json").read_text())
    held = set(heldout_concepts(concepts))
    texts: list[str] = []
    per_concept: list[list[int]] = []
    per_tone: list[list[int]] = []
    for i, c in enumerate(concepts):
        ids = []
        for cap in captions_for(c, i in held):
            ids.append(len(texts))
            texts.append(cap)
        per_concept.append(ids)
        tone_ids = []
        if c["group"] == 1:  # people: an extra caption per skin tone
            for tone in TONES[1:6]:
                tone_ids.append(len(texts))
                texts.append(f"{c['label']}: {tone}")
        per_tone.append(tone_ids)
    return texts, per_concept, per_tone


def caption_embeddings(texts: list[str]) -> torch.Tensor:
    cache = DATA / "caption_emb.pt"
    if cache.exists():
        saved = torch.load(cache)
        if saved["texts"] == texts:
            return saved["emb"]  # type: ignore[no-any-return]
    from limner.engines.embedded.text import TextEncoder

    emb = TextEncoder().encode(texts)
    torch.save({"texts": texts, "emb": emb}, cache)
    return emb


def sample_weights(group: np.ndarray, tone: np.ndarray) -> np.ndarray:
    """Down-weight skin-tone variants and the people/body group (59 % of raw images)."""
    w = np.ones(len(group))
    w[tone > 0] = 0.15
    w[group == 1] *= 0.4
    w[group == 9] *= 0.5  # flags: 270 near-identical rectangles
    return w / w.sum()


def sample_t(n: int, gen: torch.Generator) -> torch.Tensor:
    """Half logit-normal (the mid-noise range that matters) and half uniform (both ends)."""
    ln = torch.sigmoid(torch.randn(n, generator=gen))
    un = torch.rand(n, generator=gen)
    pick = torch.rand(n, generator=gen) < 0.5
    return torch.where(pick, ln, un).clamp(1e-4, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="m64p4")
    ap.add_argument("--until", default=None, help="UTC HH:MM to stop at")
    ap.add_argument("--hours", type=float, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-min", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default=None, help="assets folder to start from (no checkpoint)")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto")
    args = ap.parse_args()
    bf16 = cpu_has_bf16() if args.bf16 == "auto" else args.bf16 == "on"
    torch.set_num_threads(args.threads)
    run = RUNS / args.run
    run.mkdir(parents=True, exist_ok=True)

    start = time.time()
    if args.until:
        hh, mm = (int(x) for x in args.until.split(":"))
        now = dt.datetime.now(dt.UTC)
        stop_at = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if stop_at <= now:
            stop_at += dt.timedelta(days=1)
        deadline = stop_at.timestamp()
    else:
        deadline = start + 3600 * (args.hours or 3.0)

    d = np.load(DATA / "emoji64.npz")
    images = torch.from_numpy(d["images"]).permute(0, 3, 1, 2).contiguous()  # uint8 N,4,64,64
    style = torch.from_numpy(d["style"])
    concept, tone, group = d["concept"], d["tone"], d["group"]
    texts, per_concept, per_tone = build_captions()
    emb = caption_embeddings(texts) * math.sqrt(384)  # unit vector -> ~unit std per dim
    weights = torch.from_numpy(sample_weights(group, tone))
    print(f"{len(images)} images, {len(texts)} captions, bf16 autocast: {bf16}", flush=True)

    cfg = NetConfig()
    net = EmojiUNet(cfg)
    step, seen, seconds, warm_from = 0, 0, 0.0, 0
    ckpt_path = run / "ckpt.pt"
    if args.init and not ckpt_path.exists():
        from safetensors import safe_open

        from limner.engines.embedded.assets import load_unet

        net = load_unet(Path(args.init)).train().requires_grad_(True)
        cfg = net.cfg
        with safe_open(str(Path(args.init) / "unet.safetensors"), framework="pt") as f:
            meta = f.metadata() or {}
        step = warm_from = int(meta.get("step", 0))
        seen = int(meta.get("images_seen", 0))
        seconds = float(meta.get("train_seconds", 0))
        print(f"initialised from {args.init} (step {step}, {seen} images)", flush=True)
    net = net.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        net.load_state_dict(ck["net"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        step, seen, seconds = ck["step"], ck["seen"], ck["seconds"]
        warm_from = ck.get("warm_from", 0)
        print(f"resumed at step {step} ({seen} images, {seconds / 3600:.2f} h)", flush=True)
    (run / "config.json").write_text(json.dumps(cfg.to_json()))

    def save() -> None:
        tmp = run / "ckpt.tmp"
        torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                    "gen": gen.get_state(), "step": step, "seen": seen,
                    "seconds": seconds + time.time() - t_sess, "config": cfg.to_json(),
                    "warm_from": warm_from}, tmp)
        tmp.replace(ckpt_path)

    t_sess = time.time()
    last_ckpt = time.time()
    last_log, loss_acc, n_acc = time.time(), 0.0, 0
    b = args.batch
    while time.time() < deadline:
        idx = torch.multinomial(weights, b, replacement=True, generator=gen)
        x0 = images[idx].float() / 127.5 - 1.0
        cap = []
        for i in idx.tolist():
            ids = per_tone[concept[i]] if tone[i] > 0 and per_tone[concept[i]] else []
            if ids and tone[i] <= 5:
                cap.append(ids[tone[i] - 1])
            else:
                opts = per_concept[concept[i]]
                cap.append(opts[int(torch.randint(len(opts), (1,), generator=gen))])
        txt = emb[torch.tensor(cap)]
        drop_txt = torch.rand(b, generator=gen) < 0.1
        txt = torch.where(drop_txt[:, None], torch.zeros_like(txt), txt)
        sty = style[idx].clone()
        sty[torch.rand(b, generator=gen) < 0.2] = STYLE_ANY
        t = sample_t(b, gen)
        eps = torch.randn(x0.shape, generator=gen)
        tb = t[:, None, None, None]
        xt = ((1 - tb) * x0 + tb * eps).contiguous(memory_format=torch.channels_last)
        lr = args.lr * min(1.0, (step - warm_from + 1) / 500)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            x0_hat = net(xt, t, txt, sty)
        x0_hat = x0_hat.float()
        denom = tb.clamp(min=0.05)
        v_hat = (xt - x0_hat) / denom
        loss = (v_hat - (eps - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pn in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(pn, 1 - decay)
        step += 1
        seen += b
        loss_acc += float(loss.detach())
        n_acc += 1
        if time.time() - last_log > 60:
            rate = n_acc * b / (time.time() - last_log)
            print(f"{dt.datetime.now(dt.UTC):%H:%M:%S} step {step} seen {seen} "
                  f"ep {seen / len(images):.1f} loss {loss_acc / n_acc:.4f} {rate:.0f} img/s",
                  flush=True)
            last_log, loss_acc, n_acc = time.time(), 0.0, 0
        if time.time() - last_ckpt > 60 * args.ckpt_min:
            save()
            last_ckpt = time.time()
    save()
    print(f"stopped at step {step}, {seen} images", flush=True)


if __name__ == "__main__":
    main()
