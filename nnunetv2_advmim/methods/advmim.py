"""AdvMIM's loss and training step on tensors (Zhu et al., MICCAI 2025).

Per network N with partner O, ``p`` = softmax, ``N^m`` = masked forward, pseudo-labels ``y_O = argmax p(O(x_u))``
and certainty ``w_O = max p(O(x_u))`` (both detached, from O's *unmasked* logits on ``x_u``)::

    L_N =   DCCE(N(x_l), y_l)                                      labeled            (nnU-Net's loss)
          + lambda_ct * r(t) * Dice(N(x_u), y_O)                   unlabeled          (cross teaching)
          + lambda_ml * DCCE(N^m(x_l), y_l)                        masked_labeled     (lambda_ml = 1: the paper)
          + lambda_u * r_u(t) * [wCE + wDice](N^m(x_u), y_O; w_O)  masked_unlabeled   (wDice off: the official code)
          + lambda_adv * r_adv(t) * mean((D_N(p(N^m(x_u))) - 1)^2) masked_unlabeled   (least-squares GAN)
    L_D_N = 0.1 * [mean((D_N(p(N(x_l))) - 1)^2) + mean(D_N(p(N^m(x_u)))^2)]   on detached maps

``r``, ``r_u``, ``r_adv`` are ramp-up factors in [0, 1] (:class:`AdvMIMWeights`; the paper ramps ``lambda_ct`` only,
so ``r_u = r_adv = 1`` by default). The official code differs in two terms, each a switch here: its masked
unlabeled term is wCE only (``masked_unlabeled_dice=False``), and S's masked labeled term is CE only (a per-network
``masked_labeled_loss`` of :func:`advmim_generator_step`). The Dice terms on ``x_u`` are per sample unless ``batch_dice`` (then the sums
run over the batch too, as nnU-Net's supervised Dice where the plan says ``batch_dice``). The discriminator's
"real" maps are ``p(N(x_l))`` as in the paper; the step also returns ``N(x_u)`` so a trainer can take "real"
from the same unlabeled crops as "fake" (then real and fake differ by the mask only).

Each line belongs to one *part* of the batch a network sees (:data:`PARTS`); :func:`part_loss` computes a part's
contribution, and the training step (:func:`advmim_generator_step`) is built from it. Labels of unlabeled cases never
enter (there are none in the batch).
"""
import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

import torch
from torch import nn

from nnunetv2_advmim.methods.adversarial import frozen, lsgan_discriminator_loss, lsgan_generator_loss
from nnunetv2_advmim.methods.losses import (certainty_weighted_ce, certainty_weighted_dice, cross_teaching_dice,
                                            pseudo_labels_and_certainty)
from nnunetv2_advmim.runtime.checkpointing import unwrap_model

Logits = Union[torch.Tensor, List[torch.Tensor]]
BRANCHES = ("hybrid", "cnn")  # AdvMIM's two networks: S (CNN-Transformer hybrid) and C (the plan's CNN)

# the four parts of one network's iteration: x_l or x_u, original or masked domain
LABELED, UNLABELED, MASKED_LABELED, MASKED_UNLABELED = "labeled", "unlabeled", "masked_labeled", "masked_unlabeled"
PARTS = (LABELED, UNLABELED, MASKED_LABELED, MASKED_UNLABELED)


def is_masked(part: str) -> bool:
    return part in (MASKED_LABELED, MASKED_UNLABELED)


def is_unlabeled(part: str) -> bool:
    return part in (UNLABELED, MASKED_UNLABELED)


# ----------------------------------------------------------------------------------------------- outputs
def full_resolution(logits: Logits) -> torch.Tensor:
    """The full-resolution output of a network (the first one when deep supervision returns a list)."""
    return logits[0] if isinstance(logits, (list, tuple)) else logits


def split_batch(logits: Logits, n_labeled: int):
    """Outputs of a forward on ``[x_l; x_u]`` -> (labeled part, same structure; unlabeled full-resolution logits)."""
    if isinstance(logits, (list, tuple)):
        labeled = [o[:n_labeled] for o in logits]
    else:
        labeled = logits[:n_labeled]
    return labeled, full_resolution(logits)[n_labeled:]


def upcast(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 (softmax maps, pseudo-labels and logged terms); float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_partner(logits_u: torch.Tensor, partner_logits_u: torch.Tensor) -> None:
    if tuple(logits_u.shape) != tuple(partner_logits_u.shape):
        raise ValueError(f"unlabeled logits {tuple(logits_u.shape)} and the partner's logits "
                         f"{tuple(partner_logits_u.shape)} differ in shape: both networks must see the same x_u")


# ----------------------------------------------------------------------------------------------- losses
@dataclass
class AdvMIMWeights:
    """The weights of ``L_N``. ``rampup``, ``rampup_u`` and ``rampup_adv`` multiply ``lambda_ct``, ``lambda_u`` and
    ``lambda_adv`` (ramp-ups of the training progress); ``batch_dice`` computes the Dice terms on ``x_u`` over the
    whole batch instead of per sample; ``lambda_ml`` weights the masked labeled term (1 in the paper);
    ``masked_unlabeled_dice`` keeps wDice in the masked unlabeled term (the paper's equation; the official code
    trains wCE only)."""
    lambda_u: float = 1.0
    lambda_ct: float = 0.1
    lambda_adv: float = 0.001
    rampup: float = 1.0
    rampup_u: float = 1.0
    rampup_adv: float = 1.0
    batch_dice: bool = False
    lambda_ml: float = 1.0
    masked_unlabeled_dice: bool = True


@dataclass
class PartLoss:
    """One part's contribution to ``L_N``.

    ``loss``: the weighted contribution (None: the part adds nothing to backward); ``terms``: its unweighted terms
    for logging; ``real``: detached ``p(N(x_l))`` (labeled part: the discriminator's "real"); ``fake``: detached
    ``p(N^m(x_u))`` (masked unlabeled part: the discriminator's "fake"); ``logits_u``: detached ``N(x_u)``
    (unlabeled part: the partner's pseudo-labels; its softmax is the alternative "real" of the discriminator).
    """
    loss: Optional[torch.Tensor]
    terms: Dict[str, torch.Tensor] = field(default_factory=dict)
    real: Optional[torch.Tensor] = None
    fake: Optional[torch.Tensor] = None
    logits_u: Optional[torch.Tensor] = None


def part_loss(part: str, output: Logits, target, supervised_loss: Callable,
              partner_logits_u: Optional[torch.Tensor], discriminator: Optional[nn.Module],
              weights: AdvMIMWeights, ddp: bool = False) -> PartLoss:
    """Contribution of one part (:data:`PARTS`) of N's batch to ``L_N`` (module docstring).

    ``output``: N's output on that part (a list with deep supervision, full resolution first); ``target``: the
    labeled target (nnU-Net's deep-supervision list); ``supervised_loss(output, target)``: nnU-Net's DCCE;
    ``partner_logits_u``: O's unmasked full-resolution logits on ``x_u`` (unlabeled parts only). The generator
    term runs D inside :func:`frozen`, so D collects no gradient from it; ``discriminator=None`` or
    ``lambda_adv == 0`` drops the adversarial term. ``ddp``: normalise wCE over the batches of all DDP ranks
    (:func:`certainty_weighted_ce`); every other term is a mean over samples already.
    """
    if part == LABELED:
        sup = supervised_loss(output, target)
        return PartLoss(sup, {"sup": sup}, real=torch.softmax(upcast(full_resolution(output).detach()), 1))
    if part == MASKED_LABELED:
        masked_sup = supervised_loss(output, target)
        return PartLoss(weights.lambda_ml * masked_sup, {"masked_sup": masked_sup})
    if part not in PARTS:
        raise ValueError(f"unknown AdvMIM part {part!r}; expected one of {PARTS}")
    logits_u = full_resolution(output)
    _check_partner(logits_u, partner_logits_u)
    labels, certainty = pseudo_labels_and_certainty(partner_logits_u)
    if part == UNLABELED:
        terms = {"certainty": certainty.mean(), "cross_teaching": logits_u.new_zeros((), dtype=torch.float32)}
        loss = None
        if weights.lambda_ct != 0:
            terms["cross_teaching"] = cross_teaching_dice(logits_u, labels, batch_dice=weights.batch_dice)
            loss = weights.lambda_ct * weights.rampup * terms["cross_teaching"]
        return PartLoss(loss, terms, logits_u=logits_u.detach())
    ce = certainty_weighted_ce(logits_u, labels, certainty, ddp=ddp)
    if weights.masked_unlabeled_dice:
        dice = certainty_weighted_dice(logits_u, labels, certainty, batch_dice=weights.batch_dice)
        loss = weights.lambda_u * weights.rampup_u * (ce + dice)
    else:
        dice = ce.new_zeros((), dtype=torch.float32)
        loss = weights.lambda_u * weights.rampup_u * ce
    probs_u = torch.softmax(upcast(logits_u), 1)
    adv = ce.new_zeros((), dtype=torch.float32)
    if discriminator is not None and weights.lambda_adv != 0:
        with frozen(discriminator):
            adv = lsgan_generator_loss(discriminator(probs_u))
        loss = loss + weights.lambda_adv * weights.rampup_adv * adv
    return PartLoss(loss, {"masked_ce": ce, "masked_dice": dice, "adversarial": adv}, fake=probs_u.detach())


def discriminator_loss(discriminator: Callable[[torch.Tensor], torch.Tensor], probs_real: torch.Tensor,
                       probs_fake: torch.Tensor, weight: float = 0.1) -> Dict[str, torch.Tensor]:
    """``L_D_N = 0.1 [mean((D(real) - 1)^2) + mean(D(fake)^2)]`` on detached softmax maps.

    Real and fake go through D in one call (one forward per step, as DDP wants). Returns ``loss`` and the mean
    scores ``real``/``fake`` (detached, for logging).
    """
    real, fake = probs_real.detach(), probs_fake.detach()
    scores = discriminator(torch.cat([real, fake]))
    d_real, d_fake = scores[:real.shape[0]], scores[real.shape[0]:]
    return {"loss": lsgan_discriminator_loss(d_real, d_fake, weight), "real": d_real.detach().float().mean(),
            "fake": d_fake.detach().float().mean()}


# ----------------------------------------------------------------------------------------------- execution modes
STEP_MODES = ("fast", "balanced", "memory", "reference")
"""How :func:`advmim_generator_step` schedules the passes of one iteration. All four compute the same loss, hence
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
# Peak GPU memory of one AdvMIM step relative to one stock nnU-Net step at the same plans and batch: the largest
# "x stock" peak of each mode over the three H100 runs of nnUNetv2_advmim_benchmark in docs/benchmark.md
# (3d_fullres 128^3 batch 2 with and without torch.compile, 2d 512^2 batch 12)
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
    if mode not in STEP_MODES:
        raise ValueError(f"unknown AdvMIM step mode {mode!r}; expected one of {STEP_MODES}")
    return mode == "memory" or not masked_domain


_PASSES = {  # per network: the parts forwarded together in one call, in this order
    "fast": [PARTS], "balanced": [PARTS], "reference": [(p,) for p in PARTS],
    "memory": [(UNLABELED,), (LABELED,), (MASKED_LABELED,), (MASKED_UNLABELED,)],
}


def _forward_parts(net, parts, x_l: torch.Tensor, x_u: torch.Tensor, mask: Optional[torch.Tensor]):
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


def advmim_generator_step(nets: Dict[str, nn.Module], x_l: torch.Tensor, target, x_u: torch.Tensor,
                          supervised_loss: Callable, masks: Optional[Dict[str, torch.Tensor]] = None,
                          discriminators: Optional[Dict[str, nn.Module]] = None, mode: str = "balanced",
                          backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                          autocast: Callable = None, no_sync: Callable = None, ddp: bool = False,
                          weights: Optional[AdvMIMWeights] = None,
                          masked_labeled_loss: Optional[Dict[str, Callable]] = None) -> dict:
    """Losses of S and C for one iteration and their gradients (accumulated in ``.grad``), in execution ``mode``.

    ``nets``: ``{"hybrid": S, "cnn": C}`` with ``forward(x, mask=None)``; ``masks``: per network the block mask of
    ``[x_l; x_u]`` (``None``: no masked domain, i.e. CTCT); ``discriminators``: per network, or ``None``/missing for
    no adversarial term. ``backward(loss)`` runs a backward (the trainer's scales with its GradScaler);
    ``autocast()`` returns the autocast context; ``no_sync(net)`` returns DDP's ``no_sync`` context for all but the
    last backward of a network in ``memory`` mode; ``ddp``: the networks are DDP-wrapped and the batch is this
    rank's share (the weighted CE is then normalised over all ranks, so the averaged gradients equal those of one
    process on the concatenated batches). ``weights``: the weights of ``L_N`` (default :class:`AdvMIMWeights`). ``masked_labeled_loss``: per network the loss of its
    masked labeled part (default ``supervised_loss``; the official code uses CE alone for S). Returns ``terms`` (per network, unweighted, detached,
    plus ``total``), ``real`` (``p(N(x_l))``), ``fake`` (``p(N^m(x_u))``) and ``logits_u`` (``N(x_u)``, the partners' pseudo-label source), all
    detached, for the discriminators. Nothing here calls ``.item()``: no host synchronisation.
    """
    if mode not in STEP_MODES:
        raise ValueError(f"unknown AdvMIM step mode {mode!r}; expected one of {STEP_MODES}")
    autocast = autocast or contextlib.nullcontext
    no_sync = no_sync or (lambda net: contextlib.nullcontext())
    discriminators = discriminators or {}
    weights = weights or AdvMIMWeights()
    parts = PARTS if masks is not None else (LABELED, UNLABELED)
    passes = [g for g in (tuple(p for p in g if p in parts) for g in _PASSES[mode]) if g]
    partner_of = {"hybrid": "cnn", "cnn": "hybrid"}
    partner = {}  # network -> partner's unmasked logits on x_u (detached, float)
    terms = {b: {} for b in BRANCHES}
    totals = {b: [] for b in BRANCHES}
    real, fake = {}, {}

    masked_labeled_loss = masked_labeled_loss or {}

    def loss_of(b, part, output):
        sup = masked_labeled_loss.get(b, supervised_loss) if part == MASKED_LABELED else supervised_loss
        r = part_loss(part, output, target, sup, partner.get(b), discriminators.get(b), weights, ddp)
        terms[b].update(r.terms)
        if r.real is not None:
            real[b] = r.real
        if r.fake is not None:
            fake[b] = r.fake
        if r.logits_u is not None:
            partner[partner_of[b]] = upcast(r.logits_u)
        return r.loss

    if mode in ("fast", "reference"):  # forward everything, then losses, one backward
        outputs = {}
        with autocast():
            for b in BRANCHES:
                for g in passes:
                    mask = None if masks is None else masks[b]
                    outputs.update({(b, p): o for p, o in _forward_parts(nets[b], g, x_l, x_u, mask).items()})
            for b in BRANCHES:
                partner[partner_of[b]] = upcast(full_resolution(outputs[(b, UNLABELED)]).detach())
            losses = []
            for b in BRANCHES:
                for p in parts:
                    loss = loss_of(b, p, outputs[(b, p)])
                    if loss is not None:
                        totals[b].append(loss.detach())
                        losses.append(loss)
        backward(sum(losses))
    else:  # balanced / memory: C's pseudo-labels first, then pass by pass, one graph at a time
        with torch.no_grad(), autocast():
            # the module itself: a DDP wrapper would prepare a gradient reduction for this no-grad pass
            partner["hybrid"] = upcast(full_resolution(unwrap_model(nets["cnn"], keep_compiled=True)(x_u)))
        for b in BRANCHES:
            for i, g in enumerate(passes):
                last = i == len(passes) - 1
                with (contextlib.nullcontext() if last else no_sync(nets[b])):
                    with autocast():
                        outs = _forward_parts(nets[b], g, x_l, x_u, None if masks is None else masks[b])
                        losses = [loss for p in g if (loss := loss_of(b, p, outs[p])) is not None]
                    if losses:
                        total = sum(losses)
                        totals[b].append(total.detach())
                        backward(total)
    for b in BRANCHES:
        terms[b] = {k: upcast(v.detach()) for k, v in terms[b].items()}
        terms[b]["total"] = torch.stack([upcast(t) for t in totals[b]]).sum()
    logits_u = {b: partner[partner_of[b]] for b in BRANCHES if partner_of[b] in partner}
    return {"terms": terms, "real": real, "fake": fake, "logits_u": logits_u}
