"""glibc's malloc set up so that the memory an image frees is reused by the next one.

By default glibc gives each block above its mmap threshold (32 MiB at most) a mapping of its
own and unmaps it when freed, and each thread other than the main one allocates from an arena
of its own, which it trims back to the kernel as blocks free up. A diffusers pipeline's
activations are such blocks, so every image faulted its working memory in again, page by page,
each page zeroed by the kernel, hundreds of thousands of faults per image. With one arena, no
mappings and no trimming, images after the first two or three take none (the figures are in
`docs/performance.md`).

The price: memory freed after a peak stays with the process for the next request instead of
going back to the kernel. `return_freed_memory` still hands free pages back on demand (the
weight cache calls it after converting). Set LIMNER_MALLOC=system to keep glibc's defaults.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int; freed memory up to 2 GiB stays in the heap


def keep_freed_memory() -> bool:
    """Apply the settings above to this process; returns whether they took (Linux with
    glibc, LIMNER_MALLOC not "system"). Call it before the process starts a thread: a thread
    picks its arena at its first allocation, and the arena limit is read once, then."""
    if os.environ.get("LIMNER_MALLOC", "").lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    took = all(mallopt(option, value) == 1 for option, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)))
    if not took:
        log.warning("glibc refused a malloc setting: images may fault their memory in anew")
    return took


def return_freed_memory() -> None:
    """Hand the heap's free pages back to the kernel now (`malloc_trim`), whatever the
    settings above: after a one-off peak, such as converting a model's weights (SD-Turbo's
    UNet left 0.8 GiB of freed blocks behind). A no-op without glibc."""
    if platform.system() != "Linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
