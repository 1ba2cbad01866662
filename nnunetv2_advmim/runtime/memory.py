"""Process memory from Linux's ``/proc``: resident size now (``VmRSS``), its peak (``VmHWM``) and a peak reset.

Used by the benchmarks to measure what one training step allocates on the CPU; on other systems the probes
return None and the figures are reported as not measured.
"""
from typing import Optional


def status_bytes(field: str) -> Optional[int]:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident of this process image) from /proc, in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current resident size (Linux >= 4.0); without it the peak also covers imports and
    set-up."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
