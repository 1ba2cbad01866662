"""How one AdvMIM iteration schedules its forward and backward passes, and what each schedule costs in memory.

A network's iteration has four *parts* (:data:`PARTS`): ``x_l`` or ``x_u``, original or masked domain. A step mode
(:data:`STEP_MODES`) says which parts go through the network together (:data:`PASSES`, :func:`forward_parts`) and
when the backward runs; every mode computes the same loss (``methods.advmim``). :func:`choose_step_mode` picks
one from the memory a GPU has free, with the peak estimates of :data:`STEP_MODE_MEMORY_RATIO`.
"""
from typing import Optional

import torch

# the four parts of one network's iteration: x_l or x_u, original or masked domain
LABELED, UNLABELED, MASKED_LABELED, MASKED_UNLABELED = "labeled", "unlabeled", "masked_labeled", "masked_unlabeled"
PARTS = (LABELED, UNLABELED, MASKED_LABELED, MASKED_UNLABELED)


def is_masked(part: str) -> bool:
    return part in (MASKED_LABELED, MASKED_UNLABELED)


def is_unlabeled(part: str) -> bool:
    return part in (UNLABELED, MASKED_UNLABELED)


STEP_MODES = ("fast", "balanced", "memory", "reference")
"""How ``methods.advmim.advmim_generator_step`` schedules the passes of one iteration. All four compute the same loss, hence
the same gradients up to float rounding; they differ in time and memory:

- ``fast``: one forward per network on ``[x_l; x_u; x_l; x_u]`` with the mask on the second half (original and
  masked domain batched; instance norm is per sample, and an all-False mask row leaves a sample exactly
  unmasked), both networks' graphs alive, one backward. No extra pass: the time floor plus batching gains.
- ``balanced``: C's pseudo-labels first (a no-grad forward of C on ``x_u``), then per network one forward on the
  4-part batch and its backward; one network's graph alive at a time.
- ``memory``: C's pseudo-labels first (no grad), then every (network, part) pass on its own batch of B with its
  own backward, so the peak is one network's single pass at the plan's batch size (S's own pseudo-labels for C
  come from its unlabeled pass, detached, before that pass's graph is freed). Under DDP the gradients of a
  network are all-reduced once, at its last pass.
- ``reference``: the straightforward version: every term its own forward, all eight graphs alive, one backward.
  For tests and benchmarks; not supported under DDP.
"""
# Peak GPU memory of one AdvMIM step relative to one stock nnU-Net step at the same plans and batch, per mode: the
# largest ratio nnUNetv2_advmim_benchmark measured (docs/benchmark.md lists the runs)
STEP_MODE_MEMORY_RATIO = {"fast": 7.65, "balanced": 4.29, "memory": 1.30}
STEP_MODE_MEMORY_MARGIN = 1.15  # head room for allocator fragmentation and plans unlike the benchmarked ones


def choose_step_mode(free_bytes: Optional[int], stock_step_bytes: Optional[int], device_type: str,
                     margin: float = STEP_MODE_MEMORY_MARGIN):
    """``(mode, reason)`` for ``step_mode = "auto"``: the fastest mode whose estimated peak fits.

    On a GPU the estimate of a mode is ``STEP_MODE_MEMORY_RATIO[mode] * stock_step_bytes * margin``; ``fast`` if it
    fits into ``free_bytes`` (the memory this process can use), else ``balanced``, else ``memory`` (the mode that
    needs about the stock step's memory; chosen also when nothing is known). Off the GPU the passes are
    compute-bound, batching gains nothing and ``memory``, with the smallest working set, is the fastest mode.
    """
    if device_type != "cuda":
        return "memory", (f"on {device_type} the passes are compute-bound and 'memory' (smallest working set) is "
                          f"the fastest mode")
    if not free_bytes or not stock_step_bytes or free_bytes <= 0 or stock_step_bytes <= 0:
        return "memory", "the GPU memory could not be measured; 'memory' needs about the stock step's memory"
    gib = 2 ** 30
    for mode in ("fast", "balanced"):
        need = STEP_MODE_MEMORY_RATIO[mode] * stock_step_bytes * margin
        if need <= free_bytes:
            return mode, (f"its estimated peak {need / gib:.1f} GiB ({STEP_MODE_MEMORY_RATIO[mode]}x the stock "
                          f"step's {stock_step_bytes / gib:.2f} GiB, x{margin} margin) fits into "
                          f"{free_bytes / gib:.1f} GiB available")
    need = STEP_MODE_MEMORY_RATIO["balanced"] * stock_step_bytes * margin
    return "memory", (f"'balanced' would need about {need / gib:.1f} GiB ({STEP_MODE_MEMORY_RATIO['balanced']}x the "
                      f"stock step's {stock_step_bytes / gib:.2f} GiB, x{margin} margin), more than the "
                      f"{free_bytes / gib:.1f} GiB available")


def most_memory_saving(modes) -> str:
    """The mode of ``modes`` with the smallest estimated peak (DDP ranks must all run the same mode)."""
    return min(modes, key=lambda m: STEP_MODE_MEMORY_RATIO.get(m, float("inf")))


def ddp_find_unused_parameters(mode: str, masked_domain: bool = True) -> bool:
    """Whether the DDP wrappers of S and C need ``find_unused_parameters=True`` for this step.

    DDP all-reduces a gradient bucket when every parameter in it has received its gradient in the synchronised
    backward; a parameter without one leaves its bucket un-reduced, so the ranks' weights drift apart (and the next
    forward raises). In ``memory`` mode the synchronised backward of a network is its last pass (the masked
    unlabeled one), which leaves the deep-supervision heads without gradient; without the masked domain (CTCT) the
    mask token never gets one. DDP then has to find those parameters itself (their gradients accumulated in the
    earlier ``no_sync`` passes are reduced with the rest). ``fast`` and ``balanced`` with the masked domain use every
    parameter in their one backward per network, so they skip that search."""
    check_mode(mode)
    if mode == "reference":
        raise ValueError("step_mode 'reference' (every term its own forward, for tests and benchmarks) does not run "
                         "under DDP; set step_mode to 'fast', 'balanced', 'memory' or 'auto'")
    return mode == "memory" or not masked_domain


PASSES = {  # per network: the parts forwarded together in one call, in this order
    "fast": [PARTS], "balanced": [PARTS], "reference": [(p,) for p in PARTS],
    "memory": [(UNLABELED,), (LABELED,), (MASKED_LABELED,), (MASKED_UNLABELED,)],
}


def forward_parts(net, parts, x_l: torch.Tensor, x_u: torch.Tensor, mask: Optional[torch.Tensor]):
    """One forward of ``net`` on the parts concatenated along the batch -> {part: output (list with deep sup.)}.

    ``mask``: block mask of ``[x_l; x_u]`` (``(2B, *grid)``); unmasked parts of a mixed batch get all-False rows."""
    n_l = x_l.shape[0]
    xs = [x_u if is_unlabeled(p) else x_l for p in parts]
    x = torch.cat(xs) if len(xs) > 1 else xs[0]
    if any(is_masked(p) for p in parts):
        rows = [mask[n_l:] if is_unlabeled(p) else mask[:n_l] for p in parts]
        out = net(x, mask=torch.cat([r if is_masked(p) else torch.zeros_like(r) for p, r in zip(parts, rows)]))
    else:
        out = net(x)
    result, start = {}, 0
    for part, xp in zip(parts, xs):
        sl = slice(start, start + xp.shape[0])
        result[part] = [o[sl] for o in out] if isinstance(out, (list, tuple)) else out[sl]
        start += xp.shape[0]
    return result


def passes(mode: str, parts=PARTS) -> list:
    """The groups of ``parts`` that mode ``mode`` forwards together, per network, in order."""
    check_mode(mode)
    return [g for g in (tuple(p for p in g if p in parts) for g in PASSES[mode]) if g]


def check_mode(mode: str) -> None:
    if mode not in STEP_MODES:
        raise ValueError(f"unknown AdvMIM step mode {mode!r}; expected one of {STEP_MODES}")
