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
from nnunetv2_advmim.methods.step_modes import LABELED, MASKED_LABELED, PARTS, UNLABELED, forward_parts, passes
from nnunetv2_advmim.wrappers import unwrap_model

Logits = Union[torch.Tensor, List[torch.Tensor]]
BRANCHES = ("hybrid", "cnn")  # AdvMIM's two networks: S (CNN-Transformer hybrid) and C (the plan's CNN)

PARTNER = {"hybrid": "cnn", "cnn": "hybrid"}  # whose pseudo-labels each network learns from


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


class _Accumulator:
    """What one generator step collects: per network its unweighted terms and its loss totals, the discriminators'
    real and fake maps, and each network's partner logits on ``x_u`` (detached, float)."""

    def __init__(self, target, supervised_loss: Callable, masked_labeled_loss: Dict[str, Callable],
                 discriminators: Dict[str, nn.Module], weights: AdvMIMWeights, ddp: bool):
        self.target, self.supervised_loss, self.masked_labeled_loss = target, supervised_loss, masked_labeled_loss
        self.discriminators, self.weights, self.ddp = discriminators, weights, ddp
        self.terms = {b: {} for b in BRANCHES}
        self.totals = {b: [] for b in BRANCHES}
        self.real, self.fake, self.partner = {}, {}, {}

    def loss(self, b: str, part: str, output) -> Optional[torch.Tensor]:
        """Network ``b``'s contribution of ``part`` (:func:`part_loss`); keeps its terms and maps."""
        sup = self.masked_labeled_loss.get(b, self.supervised_loss) if part == MASKED_LABELED else self.supervised_loss
        r = part_loss(part, output, self.target, sup, self.partner.get(b), self.discriminators.get(b), self.weights,
                      self.ddp)
        self.terms[b].update(r.terms)
        if r.real is not None:
            self.real[b] = r.real
        if r.fake is not None:
            self.fake[b] = r.fake
        if r.logits_u is not None:
            self.partner[PARTNER[b]] = upcast(r.logits_u)
        return r.loss

    def add_total(self, b: str, loss: torch.Tensor) -> None:
        self.totals[b].append(loss.detach())

    def result(self) -> dict:
        terms = {b: {k: upcast(v.detach()) for k, v in self.terms[b].items()} for b in BRANCHES}
        for b in BRANCHES:
            terms[b]["total"] = torch.stack([upcast(t) for t in self.totals[b]]).sum()
        logits_u = {b: self.partner[PARTNER[b]] for b in BRANCHES if PARTNER[b] in self.partner}
        return {"terms": terms, "real": self.real, "fake": self.fake, "logits_u": logits_u}


def _all_at_once(acc: _Accumulator, nets, groups, parts, x_l, x_u, masks, autocast, backward) -> None:
    """``fast`` / ``reference``: every forward, then every loss, one backward."""
    outputs = {}
    with autocast():
        for b in BRANCHES:
            for g in groups:
                mask = None if masks is None else masks[b]
                outputs.update({(b, p): o for p, o in forward_parts(nets[b], g, x_l, x_u, mask).items()})
        for b in BRANCHES:
            acc.partner[PARTNER[b]] = upcast(full_resolution(outputs[(b, UNLABELED)]).detach())
        losses = []
        for b in BRANCHES:
            for p in parts:
                loss = acc.loss(b, p, outputs[(b, p)])
                if loss is not None:
                    acc.add_total(b, loss)
                    losses.append(loss)
    backward(sum(losses))


def _pass_by_pass(acc: _Accumulator, nets, groups, x_l, x_u, masks, autocast, backward, no_sync) -> None:
    """``balanced`` / ``memory``: C's pseudo-labels first, then pass by pass, one graph alive at a time."""
    with torch.no_grad(), autocast():
        # the module itself: a DDP wrapper would prepare a gradient reduction for this no-grad pass
        acc.partner["hybrid"] = upcast(full_resolution(unwrap_model(nets["cnn"], keep_compiled=True)(x_u)))
    for b in BRANCHES:
        for i, g in enumerate(groups):
            last = i == len(groups) - 1
            with (contextlib.nullcontext() if last else no_sync(nets[b])):
                with autocast():
                    outs = forward_parts(nets[b], g, x_l, x_u, None if masks is None else masks[b])
                    losses = [loss for p in g if (loss := acc.loss(b, p, outs[p])) is not None]
                if losses:
                    total = sum(losses)
                    acc.add_total(b, total)
                    backward(total)


def advmim_generator_step(nets: Dict[str, nn.Module], x_l: torch.Tensor, target, x_u: torch.Tensor,
                          supervised_loss: Callable, masks: Optional[Dict[str, torch.Tensor]] = None,
                          discriminators: Optional[Dict[str, nn.Module]] = None, mode: str = "balanced",
                          backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                          autocast: Callable = None, no_sync: Callable = None, ddp: bool = False,
                          weights: Optional[AdvMIMWeights] = None,
                          masked_labeled_loss: Optional[Dict[str, Callable]] = None) -> dict:
    """Losses of S and C for one iteration and their gradients (accumulated in ``.grad``), in step ``mode``
    (``methods.step_modes``).

    ``nets``: ``{"hybrid": S, "cnn": C}`` with ``forward(x, mask=None)``; ``masks``: per network the block mask of
    ``[x_l; x_u]`` (``None``: no masked domain, i.e. CTCT); ``discriminators``: per network (plain modules, used
    frozen), or ``None``/missing for no adversarial term. ``backward(loss)`` runs a backward (a trainer's scales with
    its GradScaler); ``autocast()`` returns the autocast context; ``no_sync(net)`` returns DDP's ``no_sync`` context
    for all but the last backward of a network in the pass-by-pass modes; ``ddp``: the networks are DDP-wrapped and
    the batch is this rank's share (the weighted CE is then normalised over all ranks, so the averaged gradients
    equal those of one process on the concatenated batches). ``weights``: the weights of ``L_N``.
    ``masked_labeled_loss``: per network the loss of its masked labeled part (default ``supervised_loss``; the
    official code uses CE alone for S). Returns ``terms`` (per network, unweighted, detached, plus ``total``),
    ``real`` (``p(N(x_l))``), ``fake`` (``p(N^m(x_u))``) and ``logits_u`` (``N(x_u)``), all detached, for the
    discriminators. Nothing here calls ``.item()``: no host synchronisation.
    """
    parts = PARTS if masks is not None else (LABELED, UNLABELED)
    groups = passes(mode, parts)
    autocast = autocast or contextlib.nullcontext
    acc = _Accumulator(target, supervised_loss, masked_labeled_loss or {}, discriminators or {},
                       weights or AdvMIMWeights(), ddp)
    if mode in ("fast", "reference"):
        _all_at_once(acc, nets, groups, parts, x_l, x_u, masks, autocast, backward)
    else:
        _pass_by_pass(acc, nets, groups, x_l, x_u, masks, autocast, backward,
                      no_sync or (lambda net: contextlib.nullcontext()))
    return acc.result()


def advmim_step(nets: Dict[str, nn.Module], discriminators: Dict[str, nn.Module], x_l: torch.Tensor, target,
                x_u: torch.Tensor, supervised_loss: Callable, masks: Optional[Dict[str, torch.Tensor]],
                weights: AdvMIMWeights, mode: str, disc_real: str = "labeled", disc_weight: float = 0.1,
                autocast: Callable = None, **generator_options) -> dict:
    """One AdvMIM iteration (module docstring): both networks' ``L_N`` with their gradients
    (:func:`advmim_generator_step`, which takes ``backward``, ``no_sync``, ``ddp`` and ``masked_labeled_loss`` from
    ``generator_options``), then each discriminator's ``L_D_N`` on the detached maps.

    ``discriminators`` may be DDP-wrapped (their own loss goes through the wrapper; the generator term uses the
    module, frozen). ``disc_real``: the "real" maps, ``p(N(x_l))`` (``"labeled"``, the paper's) or ``p(N(x_u))``
    (``"unlabeled"``: real and fake then differ by the mask only). Returns ``terms`` (per network, as the generator
    step's plus ``disc_loss``, ``disc_real``, ``disc_fake``) and ``disc_losses`` (per network, with graph: their
    backward and step are the caller's, after its finiteness check of the networks' step).
    """
    if disc_real not in ("labeled", "unlabeled"):
        raise ValueError(f"disc_real must be 'labeled' or 'unlabeled', got {disc_real!r}")
    autocast = autocast or contextlib.nullcontext
    out = advmim_generator_step(nets, x_l, target, x_u, supervised_loss, masks,
                                {b: unwrap_model(d) for b, d in discriminators.items()}, mode, autocast=autocast,
                                weights=weights, **generator_options)
    real = out["real"] if disc_real == "labeled" else \
        {b: torch.softmax(logits, 1) for b, logits in out["logits_u"].items()}
    disc_losses = {}
    for b, d in discriminators.items():
        with autocast():
            dl = discriminator_loss(d, real[b], out["fake"][b], disc_weight)
        disc_losses[b] = dl["loss"]
        out["terms"][b].update({"disc_loss": dl["loss"].detach().float(), "disc_real": dl["real"],
                                "disc_fake": dl["fake"]})
    return {"terms": out["terms"], "disc_losses": disc_losses}
