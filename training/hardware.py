"""What this machine's CPU is and can do, read from /proc/cpuinfo."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    match = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    return frozenset(match.group(1).split()) if match else frozenset()


def cpu_has_bf16() -> bool:
    """True where bf16 arithmetic runs natively (AVX512-BF16 or AMX); elsewhere it is emulated and slow."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_name() -> str:
    """Model name, family and model number, as the README quotes figures with."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    info = dict(re.findall(r"^(model name|cpu family|model)\s*:\s*(.+)$", text, re.M))
    return f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"
