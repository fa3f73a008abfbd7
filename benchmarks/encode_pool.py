"""Whether the encoder pool bounds a fast server: images/s of `limner serve` with 1 and with
N encoder threads, the pictures coming from a fake engine that draws in no time (as a GPU
nearly does), in turns.

Usage:
    python benchmarks/encode_pool.py [--encoders 1,2] [--clients 16] [--seconds 15]
        [--rounds 2] [--format png] [--size 1024x1024]

Each round starts one server per encoder count (`LIMNER_ENCODERS`), loads it with
`--clients` clients for `--seconds` (loopback only, `limner.testing.load.run_load`) and
counts the answered images; each picture is encoded and signed (C2PA) as in any answer.
Printed: images/s per setting per round, their medians, and the ratio to the first setting.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from limner.testing.load import launch_server, run_load, stop_server

CONFIG = """default_engine = "fake"
max_queue = 256

[engines.fake]
kind = "fake"
step_s = 0.0
"""


def images_per_s(encoders: int, args: argparse.Namespace) -> float:
    workdir = Path(tempfile.mkdtemp(prefix=f"limner-encoders-{encoders}-"))
    process, base = launch_server(CONFIG, workdir, ("--threads", "1"),
                                  {"LIMNER_ENCODERS": str(encoders)})
    try:
        body = {"prompt": "an otter", "model": "gpt-image-1", "quality": "low",
                "size": args.size, "output_format": args.format}
        report = asyncio.run(run_load(base, clients=args.clients,
                                      seconds=args.seconds, body=body, pid=process.pid))
    finally:
        stop_server(process)
    if set(report.answered) - {"200"} or report.lost:
        raise SystemExit(f"not every answer was a picture: {report.summary()}")
    return report.answered.get("200", 0) / report.elapsed_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", default="1,2")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--format", default="png")
    parser.add_argument("--size", default="1024x1024")
    args = parser.parse_args()
    counts = [int(n) for n in args.encoders.split(",")]
    rates: dict[int, list[float]] = {n: [] for n in counts}
    for round_ in range(1, args.rounds + 1):
        for n in counts:
            rate = images_per_s(n, args)
            rates[n].append(rate)
            print(f"round {round_}: {n} encoder(s): {rate:.1f} images/s", flush=True)
    first = statistics.median(rates[counts[0]])
    for n in counts:
        median = statistics.median(rates[n])
        print(f"{n} encoder(s): median {median:.1f} images/s ({median / first:.2f}x "
              f"{counts[0]}), {args.format} {args.size}, {args.clients} clients")


if __name__ == "__main__":
    main()
