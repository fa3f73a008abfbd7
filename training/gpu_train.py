"""One prepared training run of the embedded model, for a lent GPU machine (issue 22).

Usage (what `training/gpu_train.sh` runs; on a CPU the same command rehearses it):
    python training/gpu_train.py --pack training/pack --out $OUT --minutes 8 [--init DIR]

It reads only what travels with the working tree: the pack from `pack.py` and the shipped
reference sheets (the base pictures), so it needs no network and no text encoder. The whole
training set lives on the device and batches are drawn there, so the GPU never waits for a
loader. Every `--ckpt-min` minutes and at the end it writes to `--out`, each file atomically:

* `unet.safetensors`: the EMA weights in fp16, in the shipped assets' format (config and
  training counters in the metadata), so `load_unet`, `evaluate.py --weights` and the next
  run's `--init` read it as they are; a run cut short still returns its last one;
* `samples.png`: the sample prompts (held-out names, then paraphrases) drawn from pure noise
  by those weights, 8 steps, guidance 3, one row per style;
* `log.jsonl`: loss, learning rate and pictures per second, a line every 15 s.

A run resumes from the weights alone (`--init` a folder holding such a `unet.safetensors`):
the optimizer's moments would triple what comes back and must travel again, so the learning
rate warms up anew instead. The schedule is by wall time (cosine to a tenth over
`--minutes`), because the machine is lent for minutes, not for a number of steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import lzma
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent

from train import sample_weights  # noqa: E402

from limner.engines.cpu import cpu_has_bf16  # noqa: E402
from limner.engines.embedded.assets import ASSETS, CELL, SHEET_COLUMNS, load_unet  # noqa: E402
from limner.engines.embedded.net import STYLE_ANY, STYLES, EmojiUNet, NetConfig  # noqa: E402
from limner.engines.embedded.sampler import sample  # noqa: E402

TEXT_SCALE = math.sqrt(384)
"""The net takes the unit MiniLM vector times sqrt(384): about unit spread per entry."""


def base_pictures(assets: Path) -> dict[tuple[int, int], np.ndarray]:
    """(style, concept) -> premultiplied 64x64 RGBA, rebuilt from the shipped sheets.

    The sheets hold un-premultiplied colour rounded from the premultiplied training picture;
    multiplying back and rounding gives that picture exactly (`pack.py` checks it)."""
    from PIL import Image

    cells = {}
    for sid, name in enumerate(STYLES):
        with Image.open(assets / f"refs_{name}.png") as im:
            sheet = np.asarray(im.convert("RGBA")).astype(np.float32)
        for c in range((sheet.shape[0] // CELL) * SHEET_COLUMNS):
            r, k = divmod(c, SHEET_COLUMNS)
            x = sheet[r * CELL:(r + 1) * CELL, k * CELL:(k + 1) * CELL]
            if x[..., 3].any():
                a = x[..., 3:4]
                cells[(sid, c)] = np.concatenate([np.round(x[..., :3] * a / 255.0), a],
                                                 -1).astype(np.uint8)
    return cells


@dataclass
class Pack:
    """The training set on one device."""

    images: torch.Tensor  # uint8 (N, 4, 64, 64), premultiplied
    style: torch.Tensor
    concept: torch.Tensor
    tone_caption: torch.Tensor  # caption id, or -1 where the concept's captions apply
    weights: torch.Tensor  # sampling weight per picture
    captions: torch.Tensor  # (C, 384), scaled unit vectors
    offsets: torch.Tensor  # concept i's captions are offsets[i]:offsets[i + 1]
    samples: torch.Tensor  # (S, 384), scaled unit vectors of the sample prompts
    sample_texts: list[str]


def load_pack(folder: Path, assets: Path, device: torch.device) -> Pack:
    with np.load(folder / "meta.npz") as z:
        meta = {k: z[k] for k in z.files}
    extra = np.frombuffer(lzma.decompress((folder / "extra.xz").read_bytes()), np.uint8)
    extra = extra.reshape(-1, CELL, CELL, 4)
    cells = base_pictures(assets)
    images = np.empty((len(meta["style"]), CELL, CELL, 4), np.uint8)
    for i, (s, c, e) in enumerate(zip(meta["style"], meta["concept"], meta["extra_index"],
                                      strict=True)):
        images[i] = extra[e] if e >= 0 else cells[(int(s), int(c))]
    vectors = meta["caption_vectors"].astype(np.float32) * meta["caption_scales"][:, None]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = json.loads((folder / "captions.json").read_text())

    def put(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return Pack(
        images=put(images).permute(0, 3, 1, 2).contiguous(),
        style=put(meta["style"]), concept=put(meta["concept"]),
        tone_caption=put(meta["tone_caption"]),
        weights=put(sample_weights(meta["group"], meta["tone"])).float(),
        captions=put(vectors) * TEXT_SCALE, offsets=put(meta["caption_offsets"]),
        samples=put(meta["sample_vectors"].astype(np.float32)) * TEXT_SCALE,
        sample_texts=list(texts["samples"]))


def sample_t(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Half logit-normal (the mid-noise range that matters) and half uniform (both ends)."""
    ln = torch.sigmoid(torch.randn(n, generator=gen, device=device))
    un = torch.rand(n, generator=gen, device=device)
    pick = torch.rand(n, generator=gen, device=device) < 0.5
    return torch.where(pick, ln, un).clamp(1e-4, 1.0)


def zoom_out(x: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """Shrink a `share` of the pictures to 80-100 % at a random place on the canvas.

    Transparent margins are zeros in premultiplied RGBA, so the grid's zero padding is right;
    it teaches placement and size without ever cutting an icon, against memorising framing."""
    b, dev = x.shape[0], x.device
    chosen = torch.rand(b, generator=gen, device=dev) < share
    inv = torch.where(chosen, 1.0 / (0.8 + 0.2 * torch.rand(b, generator=gen, device=dev)), 1.0)
    room = inv - 1.0
    shift = (torch.rand(b, 2, generator=gen, device=dev) * 2 - 1) * room[:, None]
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = theta[:, 1, 1] = inv
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.where(chosen[:, None, None, None], moved, x)


def draw_batch(pack: Pack, b: int, gen: torch.Generator, augment: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pictures in [-1, 1], their caption vectors (10 % dropped) and styles (20 % "any")."""
    dev = pack.images.device
    idx = torch.multinomial(pack.weights, b, replacement=True, generator=gen)
    x0 = pack.images[idx].float() / 127.5 - 1.0
    if augment > 0:
        x0 = zoom_out(x0, augment, gen)
    c = pack.concept[idx]
    start, count = pack.offsets[c], pack.offsets[c + 1] - pack.offsets[c]
    own = start + (torch.rand(b, generator=gen, device=dev) * count).long().clamp(max=count - 1)
    tone = pack.tone_caption[idx]
    txt = pack.captions[torch.where(tone >= 0, tone, own)]
    txt = torch.where(torch.rand(b, 1, generator=gen, device=dev) < 0.1, 0.0, txt)
    sty = torch.where(torch.rand(b, generator=gen, device=dev) < 0.2, STYLE_ANY, pack.style[idx])
    return x0.contiguous(memory_format=torch.channels_last), txt, sty


def save_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write` fills a temporary file, which then replaces `path`: a run cut off mid-write
    leaves the last complete file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def export(ema: EmojiUNet, pack: Pack, out: Path, counters: dict[str, float],
           autocast: bool) -> None:
    """The shippable weights, then the sample sheet drawn by them from pure noise."""
    from PIL import Image
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).cpu().contiguous()
             for k, v in ema.state_dict().items()}
    meta = {"config": json.dumps(ema.cfg.to_json()), "step": str(int(counters["step"])),
            "images_seen": str(int(counters["seen"])),
            "train_seconds": f"{counters['seconds']:.0f}", "trainer": "gpu_train.py"}
    save_atomically(out / "unet.safetensors",
                    lambda p: save_file(state, str(p), metadata=meta))
    n, dev = len(pack.samples), pack.samples.device
    gen = torch.Generator(device=dev).manual_seed(11)
    rows = []
    for sid in range(len(STYLES)):
        noise = torch.randn(n, 4, CELL, CELL, generator=gen, device=dev)
        x0 = sample(ema, pack.samples, torch.full((n,), sid, device=dev), noise, steps=8,
                    cfg=3.0, guidance_above=0.3, autocast=autocast)
        rows.append(x0)
    premul = ((torch.stack(rows) + 1) * 127.5).round().clamp(0, 255) / 255.0  # S,N,4,H,W
    on_white = premul[:, :, :3] + (1 - premul[:, :, 3:])  # premultiplied "over" white
    grid = on_white.permute(0, 3, 1, 4, 2).reshape(len(STYLES) * CELL, n * CELL, 3)
    picture = Image.fromarray((grid * 255).round().byte().cpu().numpy(), "RGB")
    save_atomically(out / "samples.png", lambda p: picture.save(p, format="PNG"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pack", default=str(HERE / "pack"))
    ap.add_argument("--assets", default=str(ASSETS), help="where the reference sheets are")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="training time, loading aside")
    ap.add_argument("--init", default=None, help="a folder with unet.safetensors to go on from")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=300, help="steps")
    ap.add_argument("--ema", type=float, default=0.9995)
    ap.add_argument("--augment", type=float, default=0.25, help="share of pictures zoomed out")
    ap.add_argument("--ckpt-min", type=float, default=2.5)
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--threads", type=int, default=2, help="on a CPU")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(args.threads)
    autocast = cuda or cpu_has_bf16()  # bf16 where the hardware has it, fp32 elsewhere
    log_file = (out / "log.jsonl").open("a")

    def log(**fields: object) -> None:
        fields = {"t": round(time.time() - t_start, 1), **fields}
        log_file.write(json.dumps(fields) + "\n")
        log_file.flush()
        print(json.dumps(fields), flush=True)

    pack = load_pack(Path(args.pack), Path(args.assets), device)
    counters = {"step": 0.0, "seen": 0.0, "seconds": 0.0}
    if args.init:
        from safetensors import safe_open

        net = load_unet(Path(args.init)).train().requires_grad_(True)
        with safe_open(str(Path(args.init) / "unet.safetensors"), framework="pt") as f:
            meta = f.metadata() or {}
        counters = {"step": float(meta.get("step", 0)), "seen": float(meta.get("images_seen", 0)),
                    "seconds": float(meta.get("train_seconds", 0))}
    else:
        net = EmojiUNet(NetConfig())
    net = net.to(device, memory_format=torch.channels_last)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01,
                            fused=cuda)
    forward = net
    if args.compile == "on" or (args.compile == "auto" and cuda):
        forward = torch.compile(net)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    log(event="start", device=torch.cuda.get_device_name() if cuda else "cpu",
        torch=torch.__version__, pictures=len(pack.images), captions=len(pack.captions),
        params=sum(p.numel() for p in net.parameters()), config=net.cfg.to_json(),
        init=args.init, from_step=counters["step"], batch=args.batch, lr=args.lr,
        autocast_bf16=autocast, compiled=forward is not net, load_s=round(time.time() - t_start, 1))

    b, step0, t_train = args.batch, counters["step"], time.time()
    budget = 60 * args.minutes
    last_log = last_ckpt = t_train
    loss_sum, n_sum, seen_at_log = torch.zeros((), device=device), 0, counters["seen"]
    while True:
        elapsed = time.time() - t_train
        if elapsed >= budget:
            break
        done = int(counters["step"] - step0)
        warm = min(1.0, (done + 1) / args.warmup)
        lr = args.lr * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * elapsed / budget)))
        for g in opt.param_groups:
            g["lr"] = lr
        x0, txt, sty = draw_batch(pack, b, gen, args.augment)
        t = sample_t(b, gen, device)
        eps = torch.randn(x0.shape, generator=gen, device=device)
        tb = t[:, None, None, None]
        xt = ((1 - tb) * x0 + tb * eps).contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        try:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                x0_hat = forward(xt, t, txt, sty)
            v_hat = (xt - x0_hat.float()) / tb.clamp(min=0.05)
            loss = (v_hat - (eps - x0)).pow(2).mean()
            loss.backward()  # the compiled backward is built here, on the first step
        except Exception as e:  # a compiler that fails on this machine costs the speed only
            if forward is net:
                raise
            log(event="compile failed, running eager", error=repr(e)[:500])
            forward = net
            continue
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + done) / (10 + done))
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1 - decay)
        counters["step"] += 1
        counters["seen"] += b
        loss_sum += loss.detach()
        n_sum += 1
        now = time.time()
        if now - last_log >= 15:
            log(step=int(counters["step"]), seen=int(counters["seen"]),
                loss=round(float(loss_sum) / n_sum, 5), lr=round(lr, 7),
                img_s=round((counters["seen"] - seen_at_log) / (now - last_log)))
            loss_sum, n_sum, seen_at_log, last_log = loss_sum * 0, 0, counters["seen"], now
        if now - last_ckpt >= 60 * args.ckpt_min:
            export(ema, pack, out, {**counters, "seconds": counters["seconds"] + now - t_train},
                   autocast)
            log(event="checkpoint", step=int(counters["step"]))
            last_ckpt = time.time()
    counters["seconds"] += time.time() - t_train
    export(ema, pack, out, counters, autocast)
    log(event="end", step=int(counters["step"]), seen=int(counters["seen"]),
        train_seconds=round(counters["seconds"]), wall_s=round(time.time() - t_start, 1))


if __name__ == "__main__":
    main()
