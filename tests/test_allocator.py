"""The malloc set-up `limner serve` makes: a tensor freed in the engine's thread is reused
by the next one, without the kernel faulting its pages in again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the set-up is glibc's")

# A fresh process: the settings are process-wide, and the arena limit counts only before
# the first thread allocates. The tensors (64 MiB each, as large as a tiny decoder's at
# 512x512 in fp32) are made in a thread, as the scheduler's engine thread makes them.
SCRIPT = """
import json, resource, threading
from limner.allocator import keep_freed_memory
took = keep_freed_memory()
import torch
faults = []
def draw():
    for _ in range(12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        hidden = torch.ones(2**24)
        for _ in range(4):
            hidden = hidden * 2.0  # each op's output a new tensor, the last one freed
        del hidden
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=draw)
thread.start()
thread.join()
print(json.dumps({"took": took, "faults": faults}))
"""
PAGES = 5 * 2**24 * 4 // 4096  # five tensors' worth of 4 KiB pages


def run(malloc: str | None) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if key != "LIMNER_MALLOC"}
    if malloc is not None:
        env["LIMNER_MALLOC"] = malloc
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_memory_freed_in_a_thread_is_reused_without_page_faults() -> None:
    result = run(None)
    assert result["took"] is True
    faults: list[int] = result["faults"]  # type: ignore[assignment]
    # The first round faults its memory in (what the heap did not hold already) ...
    assert faults[0] >= PAGES * 0.5, faults
    # ... later rounds reuse it: most fault nothing. The heap may still grow by a few
    # tensors (16,384 pages each; glibc's memalign holes) up to the fourth round (seen on an
    # AMX Xeon: 49,153 and 16,384 pages in rounds three and four, none after), so the rounds
    # after the fourth together stay below half of what each round faults with glibc's
    # defaults.
    later = faults[4:]
    assert sorted(later)[len(later) // 2] < 200, faults
    assert sum(later) < PAGES // 2, faults


def test_system_malloc_faults_every_round_in_again() -> None:
    # What this replaces, and the opt-out: the check above can fail.
    result = run("system")
    assert result["took"] is False
    faults: list[int] = result["faults"]  # type: ignore[assignment]
    assert min(faults) >= PAGES * 0.9
