"""What this machine's CPU can do fast, for engines choosing a dtype."""

from __future__ import annotations

from pathlib import Path


def cpu_has_bf16() -> bool:
    """True where the CPU has a bf16 fast path (AMX or AVX512-BF16); elsewhere torch emulates
    bf16, far slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
