"""Process memory from Linux's ``/proc``: resident size now (``VmRSS``), its peak (``VmHWM``) and a peak reset;
and the CUDA peak of one forward + backward.

The ``/proc`` probes are used by the benchmarks to measure what one training step allocates on the CPU; on other
systems they return None and the figures are reported as not measured. :func:`cuda_step_peak_bytes` is the AdvMIM
trainer's estimate of the stock step's memory for ``step_mode = "auto"``.
"""
import contextlib
from typing import Callable, Optional

import torch


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


def cuda_step_peak_bytes(net: torch.nn.Module, example: torch.Tensor,
                         autocast: Optional[Callable] = None) -> Optional[int]:
    """Peak CUDA memory (bytes, ``max_memory_allocated``) of one forward + backward of ``net`` on ``example``,
    including what the process held before (weights), as the benchmark's peak figures count it. With the plan's CNN
    at the plan's batch and patch this is about one stock nnU-Net step (activations dominate; optimizer states that
    do not exist yet are left out). The gradients are freed afterwards. None off CUDA."""
    if example.device.type != "cuda":
        return None
    device = example.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    with (autocast or contextlib.nullcontext)():
        out = net(example)
        outs = out if isinstance(out, (list, tuple)) else [out]
        loss = sum(o.float().mean() for o in outs)
    loss.backward()
    torch.cuda.synchronize(device)
    peak = int(torch.cuda.max_memory_allocated(device))
    del out, outs, loss
    for p in net.parameters():
        p.grad = None
    return peak
