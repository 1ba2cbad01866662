"""AdvMIM training step on tensors: the two networks, their losses per domain, the schedules (DESIGN.md section 6).

The trainer (``nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM``) is glue around these functions. Per network N
with partner O, the loss of DESIGN.md section 6 is split into the two forward passes it needs, so each pass
can be backwarded on its own (the terms are a sum; peak memory is one network's graph on one 2B batch)::

    original domain, N([x_l; x_u]):  DCCE(N(x_l), y_l) + lambda_ct * r(t) * Dice(N(x_u), y_O)     plain_domain_loss
    masked domain, N^m([x_l; x_u]):  DCCE(N^m(x_l), y_l)
                                     + lambda_u * [wCE + wDice](N^m(x_u), y_O; w_O)
                                     + lambda_adv * mean((D_N(p(N^m(x_u))) - 1)^2)                  masked_domain_loss
    discriminator D_N:               0.1 * [mean((D_N(p(N(x_l))) - 1)^2) + mean(D_N(p(N^m(x_u)))^2)]  discriminator_loss

``y_O, w_O`` come from the partner's *unmasked* logits on ``x_u`` only (``losses.pseudo_labels_and_certainty``);
labels of unlabeled cases never enter (there are none in the batch). Also here: the networks S and C built from
a plan (:func:`build_branch`), the ensemble used for prediction by ``nnUNetTrainerAdvMIM_Ensemble``, the
warm-up + poly learning-rate schedule of the hybrid branch and the second progress plot.
"""
import copy
import os
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from nnunetv2_advmim.adversarial import frozen, lsgan_discriminator_loss, lsgan_generator_loss
from nnunetv2_advmim.losses import (certainty_weighted_ce, certainty_weighted_dice, cross_teaching_dice,
                                    pseudo_labels_and_certainty)

HYBRID = "nnunetv2_advmim.architectures.HybridTransformerUNet"
MASKABLE = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet":
        "nnunetv2_advmim.architectures.MaskablePlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet":
        "nnunetv2_advmim.architectures.MaskableResidualEncoderUNet",
}
BRANCHES = ("hybrid", "cnn")
Logits = Union[torch.Tensor, List[torch.Tensor]]


# ----------------------------------------------------------------------------------------------- networks
def _is_hybrid(class_name: str) -> bool:
    return class_name.split(".")[-1] == "HybridTransformerUNet"


def branch_architecture(kind: str, class_name: str, arch_kwargs: dict, req_import: Sequence[str]):
    """(class name, kwargs, kwargs to import) of branch ``kind`` ('hybrid' = S, 'cnn' = C) from a plan's architecture.

    S: ``HybridTransformerUNet`` with the plan's CNN arguments plus the transformer defaults of
    ``plan_hybrid.TRANSFORMER_DEFAULTS`` (a plan that already names the hybrid keeps its own settings).
    C: the maskable subclass of the plan's ``PlainConvUNet``/``ResidualEncoderUNet``; for a hybrid plan, a
    ``MaskablePlainConvUNet`` with the same stages.
    """
    from nnunetv2_advmim.plan_hybrid import TRANSFORMER_DEFAULTS, hybrid_arch_kwargs
    kw = copy.deepcopy(dict(arch_kwargs))
    if kind == "hybrid":
        if not _is_hybrid(class_name):
            if class_name not in MASKABLE and class_name.split(".")[-1] not in ("PlainConvUNet", "ResidualEncoderUNet"):
                raise ValueError(f"AdvMIM builds its hybrid network from a PlainConvUNet or ResidualEncoderUNet plan; "
                                 f"the plan names {class_name}. Use nnU-Net's default plans (nnUNetPlans or the ResEnc "
                                 f"presets) or plans written by nnUNetv2_advmim_plan_hybrid.")
            kw = hybrid_arch_kwargs(kw)
        return HYBRID, kw, [k for k in req_import if k in kw]
    if kind == "cnn":
        if _is_hybrid(class_name):
            for k in list(TRANSFORMER_DEFAULTS) + ["qkv_bias", "drop_rate", "attn_drop_rate"]:
                kw.pop(k, None)
            return MASKABLE["dynamic_network_architectures.architectures.unet.PlainConvUNet"], kw, \
                [k for k in req_import if k in kw]
        for stock, maskable in MASKABLE.items():
            if class_name == stock or class_name == maskable or class_name.split(".")[-1] == stock.split(".")[-1]:
                return maskable, kw, list(req_import)
        if class_name.split(".")[-1].startswith("Maskable"):
            return class_name, kw, list(req_import)
        raise ValueError(f"AdvMIM's CNN branch needs a PlainConvUNet or ResidualEncoderUNet plan; the plan names "
                         f"{class_name}. Use nnU-Net's default plans or the ResEnc presets.")
    raise ValueError(f"unknown AdvMIM branch {kind!r}; expected one of {BRANCHES}")


def build_branch(kind: str, class_name: str, arch_kwargs: dict, req_import: Sequence[str], num_input_channels: int,
                 num_output_channels: int, enable_deep_supervision: bool) -> nn.Module:
    """S ('hybrid'), C ('cnn') or both ('ensemble', :class:`AdvMIMEnsemble`) from a plan's architecture entry."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    if kind == "ensemble":
        return AdvMIMEnsemble(*(build_branch(k, class_name, arch_kwargs, req_import, num_input_channels,
                                             num_output_channels, enable_deep_supervision) for k in BRANCHES))
    name, kw, imp = branch_architecture(kind, class_name, arch_kwargs, req_import)
    return get_network_from_plans(name, kw, imp, num_input_channels, num_output_channels, allow_init=True,
                                  deep_supervision=enable_deep_supervision)


class AdvMIMEnsemble(nn.Module):
    """S and C in one module whose output is ``log(mean(softmax(S(x)), softmax(C(x))))`` (DESIGN.md section 6).

    nnU-Net's predictor takes logits and applies a softmax; ``softmax(log p_mean) = p_mean`` exactly, so the
    prediction is the mean of both softmaxes. State-dict keys: ``hybrid.*`` and ``cnn.*``. With deep supervision
    on, one combined map per resolution.
    """

    def __init__(self, hybrid: nn.Module, cnn: nn.Module):
        super().__init__()
        self.hybrid = hybrid
        self.cnn = cnn

    @staticmethod
    def combine(a: Logits, b: Logits) -> Logits:
        if isinstance(a, (list, tuple)):
            return [AdvMIMEnsemble.combine(i, j) for i, j in zip(a, b)]
        p = (torch.softmax(a.float(), 1) + torch.softmax(b.float(), 1)) / 2
        return torch.log(p.clamp_min(1e-12))

    def forward(self, x: torch.Tensor) -> Logits:
        return self.combine(self.hybrid(x), self.cnn(x))


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


# ----------------------------------------------------------------------------------------------- losses
def plain_domain_loss(logits: Logits, target, n_labeled: int, supervised_loss: Callable, partner_logits_u: torch.Tensor,
                      lambda_ct: float = 0.1, rampup: float = 1.0) -> Dict[str, torch.Tensor]:
    """Original-domain part of ``L_N`` for a forward of N on ``[x_l; x_u]`` (DESIGN.md section 6).

    ``logits``: N's output (a list with deep supervision, full resolution first); the first ``n_labeled`` samples
    are ``x_l``, the rest ``x_u``. ``supervised_loss(output_l, target)`` is nnU-Net's DCCE (with its deep-supervision
    wrapper). ``partner_logits_u``: O's unmasked full-resolution logits on ``x_u`` (pseudo-labels, detached here).
    Returns ``sup``, ``cross_teaching`` (unweighted), ``certainty`` (mean ``w_O``), ``total``, ``probs_l`` (detached
    ``p(N(x_l))``, the discriminator's "real") and ``logits_u`` (detached ``N(x_u)``, the partner's pseudo-labels).
    """
    out_l, logits_u = split_batch(logits, n_labeled)
    _check_partner(logits_u, partner_logits_u)
    labels, certainty = pseudo_labels_and_certainty(partner_logits_u)
    sup = supervised_loss(out_l, target)
    total = sup
    ct = sup.new_zeros((), dtype=torch.float32)
    if lambda_ct != 0:
        ct = cross_teaching_dice(logits_u, labels)
        total = total + lambda_ct * rampup * ct
    return {"sup": sup, "cross_teaching": ct, "certainty": certainty.mean(), "total": total,
            "probs_l": torch.softmax(full_resolution(out_l).detach().float(), 1), "logits_u": logits_u.detach()}


def masked_domain_loss(logits_masked: Logits, target, n_labeled: int, supervised_loss: Callable,
                       partner_logits_u: torch.Tensor, discriminator: Optional[nn.Module] = None,
                       lambda_u: float = 1.0, lambda_adv: float = 0.001) -> Dict[str, torch.Tensor]:
    """Masked-domain part of ``L_N`` for a masked forward of N on ``[x_l; x_u]`` (DESIGN.md section 6).

    ``DCCE(N^m(x_l), y_l) + lambda_u [wCE + wDice](N^m(x_u), y_O; w_O) + lambda_adv * LSGAN_G(D_N(p(N^m(x_u))))``.
    The generator term runs D inside :func:`frozen`, so D collects no gradient from it. ``discriminator=None``
    or ``lambda_adv == 0`` drops the adversarial term (``nnUNetTrainerAdvMIM_noAdv``). Returns the unweighted
    terms ``masked_sup``, ``masked_ce``, ``masked_dice``, ``adversarial``, ``total`` and ``probs_u`` (detached
    ``p(N^m(x_u))``, the discriminator's "fake").
    """
    out_l, logits_u = split_batch(logits_masked, n_labeled)
    _check_partner(logits_u, partner_logits_u)
    labels, certainty = pseudo_labels_and_certainty(partner_logits_u)
    masked_sup = supervised_loss(out_l, target)
    masked_ce = certainty_weighted_ce(logits_u, labels, certainty)
    masked_dice = certainty_weighted_dice(logits_u, labels, certainty)
    total = masked_sup + lambda_u * (masked_ce + masked_dice)
    probs_u = torch.softmax(logits_u.float(), 1)
    adv = masked_sup.new_zeros((), dtype=torch.float32)
    if discriminator is not None and lambda_adv != 0:
        with frozen(discriminator):
            adv = lsgan_generator_loss(discriminator(probs_u))
        total = total + lambda_adv * adv
    return {"masked_sup": masked_sup, "masked_ce": masked_ce, "masked_dice": masked_dice, "adversarial": adv,
            "total": total, "probs_u": probs_u.detach()}


def discriminator_loss(discriminator: Callable[[torch.Tensor], torch.Tensor], probs_real: torch.Tensor,
                       probs_fake: torch.Tensor, weight: float = 0.1) -> Dict[str, torch.Tensor]:
    """``L_D_N = 0.1 [mean((D(real) - 1)^2) + mean(D(fake)^2)]`` on detached softmax maps (DESIGN.md section 6).

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
the same gradients up to float rounding (``tests/test_advmim_step_modes.py``); they differ in time and memory:

- ``fast``: one forward per network on ``[x_l; x_u; x_l; x_u]`` with the mask on the second half (original and
  masked domain batched; instance norm is per sample, and an all-False mask row leaves a sample exactly
  unmasked), both networks' graphs alive, one backward. No extra pass: the time floor plus batching gains.
- ``balanced``: C's pseudo-labels first (a no-grad forward of C on ``x_u``), then per network one forward on the
  4-part batch and its backward; one network's graph alive at a time.
- ``memory``: C's pseudo-labels first (no grad), then every (network, part) pass on its own batch of B with its
  own backward, so the peak is one network's single pass at the plan's batch size (S's own pseudo-labels for C
  come from its unlabeled pass, detached, before that pass's graph is freed). Under DDP the gradients of a
  network are all-reduced once, at its last pass.
- ``reference``: the straightforward version (what the official code does): every term its own forward, all
  eight graphs alive, one backward. For tests and benchmarks; not supported under DDP.
"""
PARTS = (("l", False), ("u", False), ("l", True), ("u", True))  # (x_l | x_u, masked?)
_GROUPS = {  # passes per network: parts forwarded together in one call, in this order
    "fast": [PARTS], "balanced": [PARTS], "reference": [(p,) for p in PARTS],
    "memory": [(("u", False),), (("l", False),), (("l", True),), (("u", True),)],
}


def _forward_parts(net, parts, x_l: torch.Tensor, x_u: torch.Tensor, mask: Optional[torch.Tensor]):
    """One forward of ``net`` on the parts concatenated along the batch -> {part: output (list with deep sup.)}.

    ``mask``: block mask of ``[x_l; x_u]`` (``(2B, *grid)``); unmasked parts of a mixed batch get all-False rows."""
    n_l = x_l.shape[0]
    xs = [x_l if p == "l" else x_u for p, _ in parts]
    masked = any(m for _, m in parts)
    m = None
    if masked:
        rows = {"l": mask[:n_l], "u": mask[n_l:]}
        m = torch.cat([rows[p] if is_m else torch.zeros_like(rows[p]) for p, is_m in parts])
    out = net(torch.cat(xs) if len(xs) > 1 else xs[0], mask=m) if masked else net(torch.cat(xs) if len(xs) > 1 else xs[0])
    sizes = [x.shape[0] for x in xs]
    result, start = {}, 0
    for part, size in zip(parts, sizes):
        sl = slice(start, start + size)
        result[part] = [o[sl] for o in out] if isinstance(out, (list, tuple)) else out[sl]
        start += size
    return result


def _part_loss(part, output, target, supervised_loss: Callable, partner_logits_u: Optional[torch.Tensor],
               discriminator, lambda_ct: float, rampup: float, lambda_u: float, lambda_adv: float):
    """(weighted contribution to L_N, unweighted terms, side outputs) of one part of DESIGN.md section 6's L_N."""
    side = {}
    if part == ("l", False):
        sup = supervised_loss(output, target)
        side["real"] = torch.softmax(_upcast(full_resolution(output).detach()), 1)
        return sup, {"sup": sup}, side
    logits_u = full_resolution(output)
    _check_partner(logits_u, partner_logits_u)
    labels, certainty = pseudo_labels_and_certainty(partner_logits_u)
    if part == ("u", False):
        side["logits_u"] = logits_u.detach()
        terms = {"certainty": certainty.mean()}
        if lambda_ct == 0:
            terms["cross_teaching"] = logits_u.new_zeros((), dtype=torch.float32)
            return None, terms, side
        ct = cross_teaching_dice(logits_u, labels)
        terms["cross_teaching"] = ct
        return lambda_ct * rampup * ct, terms, side
    if part == ("l", True):
        masked_sup = supervised_loss(output, target)
        return masked_sup, {"masked_sup": masked_sup}, side
    ce = certainty_weighted_ce(logits_u, labels, certainty)
    dice = certainty_weighted_dice(logits_u, labels, certainty)
    total = lambda_u * (ce + dice)
    probs_u = torch.softmax(_upcast(logits_u), 1)
    adv = ce.new_zeros((), dtype=torch.float32)
    if discriminator is not None and lambda_adv != 0:
        with frozen(discriminator):
            adv = lsgan_generator_loss(discriminator(probs_u))
        total = total + lambda_adv * adv
    side["fake"] = probs_u.detach()
    return total, {"masked_ce": ce, "masked_dice": dice, "adversarial": adv}, side


def advmim_generator_step(nets: Dict[str, nn.Module], x_l: torch.Tensor, target, x_u: torch.Tensor,
                          supervised_loss: Callable, masks: Optional[Dict[str, torch.Tensor]] = None,
                          discriminators: Optional[Dict[str, nn.Module]] = None, mode: str = "balanced",
                          lambda_ct: float = 0.1, rampup: float = 1.0, lambda_u: float = 1.0,
                          lambda_adv: float = 0.001, backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                          autocast: Callable = None, no_sync: Callable = None) -> dict:
    """Losses of S and C for one iteration and their gradients (accumulated in ``.grad``), in execution ``mode``.

    ``nets``: ``{"hybrid": S, "cnn": C}`` with ``forward(x, mask=None)``; ``masks``: per network the block mask of
    ``[x_l; x_u]`` (``None``: no masked domain, i.e. CTCT); ``discriminators``: per network, or ``None``/missing for
    no adversarial term. ``backward(loss)`` runs a backward (the trainer's scales with its GradScaler);
    ``autocast()`` returns the autocast context; ``no_sync(net)`` returns DDP's ``no_sync`` context for all but the
    last backward of a network in ``memory`` mode. C's pseudo-labels (for S) and S's (for C) are the argmax of
    the *unmasked* logits on ``x_u`` (DESIGN.md section 6). Returns ``terms`` (per network, unweighted, detached,
    plus ``total``), ``real`` (``p(N(x_l))``) and ``fake`` (``p(N^m(x_u))``), both detached, for the discriminators.
    Nothing here calls ``.item()``: no host synchronisation.
    """
    import contextlib
    if mode not in STEP_MODES:
        raise ValueError(f"unknown AdvMIM step mode {mode!r}; expected one of {STEP_MODES}")
    autocast = autocast or contextlib.nullcontext
    no_sync = no_sync or (lambda net: contextlib.nullcontext())
    discriminators = discriminators or {}
    parts = PARTS if masks is not None else PARTS[:2]
    groups = [tuple(p for p in g if p in parts) for g in _GROUPS[mode]]
    groups = [g for g in groups if g]
    order = ("hybrid", "cnn")
    partner = {}  # network -> partner's unmasked logits on x_u (detached, float)
    terms = {b: {} for b in order}
    totals = {b: [] for b in order}
    real, fake = {}, {}

    def collect(b, part, output):
        loss, t, side = _part_loss(part, output, target, supervised_loss, partner.get(b), discriminators.get(b),
                                   lambda_ct, rampup, lambda_u, lambda_adv)
        terms[b].update(t)
        if "real" in side:
            real[b] = side["real"]
        if "fake" in side:
            fake[b] = side["fake"]
        if "logits_u" in side:
            partner[order[1 - order.index(b)]] = _upcast(side["logits_u"])
        return loss

    if mode in ("fast", "reference"):  # forward everything, then losses, one backward
        outputs = {}
        with autocast():
            for b in order:
                for g in groups:
                    outputs.update({(b, p): o for p, o in _forward_parts(nets[b], g, x_l, x_u, _m(masks, b)).items()})
            for b in order:
                partner[order[1 - order.index(b)]] = _upcast(full_resolution(outputs[(b, ("u", False))]).detach())
            losses = []
            for b in order:
                for p in parts:
                    loss = collect(b, p, outputs[(b, p)])
                    if loss is not None:
                        totals[b].append(loss.detach())
                        losses.append(loss)
        backward(sum(losses))
    else:  # balanced / memory: C's pseudo-labels first, then pass by pass, one graph at a time
        with torch.no_grad(), autocast():
            partner["hybrid"] = _upcast(full_resolution(_plain(nets["cnn"])(x_u)))
        for b in order:
            for i, g in enumerate(groups):
                last = i == len(groups) - 1
                with (contextlib.nullcontext() if last else no_sync(nets[b])):
                    with autocast():
                        outs = _forward_parts(nets[b], g, x_l, x_u, _m(masks, b))
                        losses = [loss for p in g if (loss := collect(b, p, outs[p])) is not None]
                    if losses:
                        total = sum(losses)
                        totals[b].append(total.detach())
                        backward(total)
    for b in order:
        terms[b] = {k: _upcast(v.detach()) for k, v in terms[b].items()}
        terms[b]["total"] = torch.stack([_upcast(t) for t in totals[b]]).sum()
    return {"terms": terms, "real": real, "fake": fake}


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 (softmax maps, pseudo-labels and logged terms); float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _m(masks, b):
    return None if masks is None else masks[b]


def _plain(net):
    """The module itself for the no-grad pseudo-label pass (a DDP wrapper would prepare a reduction)."""
    return net.module if hasattr(net, "module") and isinstance(net, nn.parallel.DistributedDataParallel) else net


def _check_partner(logits_u: torch.Tensor, partner_logits_u: torch.Tensor) -> None:
    if tuple(logits_u.shape) != tuple(partner_logits_u.shape):
        raise ValueError(f"unlabeled logits {tuple(logits_u.shape)} and the partner's logits "
                         f"{tuple(partner_logits_u.shape)} differ in shape: both networks must see the same x_u")


# ----------------------------------------------------------------------------------------------- schedules
def warmup_poly_lr(epoch: int, num_epochs: int, initial_lr: float, warmup_epochs: int, exponent: float = 0.9) -> float:
    """Linear warm-up to ``initial_lr`` over ``warmup_epochs`` then nnU-Net's poly decay to 0 (hybrid branch S).

    ``lr = initial_lr * (epoch + 1) / warmup_epochs`` for ``epoch < warmup_epochs``, then
    ``initial_lr * (1 - (epoch - warmup) / (num_epochs - warmup)) ** exponent`` (nnU-Net's
    ``Lin_incr_LRScheduler`` followed by ``PolyLRScheduler_offset``, as its Primus transformer trainers use).
    A pure function of the epoch, so a resumed run continues the same schedule.
    """
    if epoch < warmup_epochs:
        return initial_lr * (epoch + 1) / warmup_epochs
    span = max(1, num_epochs - warmup_epochs)
    return initial_lr * max(0.0, 1 - (epoch - warmup_epochs) / span) ** exponent


class EpochLR:
    """Sets the learning rate of an optimizer from ``fn(epoch)`` at ``step(epoch)`` (nnU-Net's scheduler protocol)."""

    def __init__(self, optimizer: torch.optim.Optimizer, fn: Callable[[int], float]):
        self.optimizer = optimizer
        self.fn = fn
        self.step(0)

    def step(self, current_step: int = 0) -> None:
        lr = self.fn(int(current_step))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]


# ----------------------------------------------------------------------------------------------- plot
def plot_advmim_progress(logging: Dict[str, list], keys: Dict[str, Sequence[str]], filename: str) -> None:
    """Second progress plot next to nnU-Net's ``progress.png``: one panel per group of logged per-epoch values."""
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    n_epochs = min(len(logging[k]) for group in keys.values() for k in group if k in logging)
    if n_epochs == 0:
        return
    fig, axes = plt.subplots(len(keys), 1, figsize=(12, 4 * len(keys)))
    for ax, (title, group) in zip(np.atleast_1d(axes), keys.items()):
        for k in group:
            if k in logging:
                ax.plot(range(n_epochs), logging[k][:n_epochs], label=k, linewidth=2, marker="o", markersize=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(filename)
    plt.close(fig)


def load_branch_weights(module: nn.Module, filename: str, branch: str) -> None:
    """Load a checkpoint into one branch with nnU-Net's pretrained-weights rule (DESIGN.md section 3).

    Takes ``checkpoint['network_weights']``, or, for an AdvMIM checkpoint, its stored weights of ``branch``
    (``checkpoint['advmim']['weights'][branch]``). Every key of the branch except ``.seg_layers.`` must exist with
    the same shape; extra keys (e.g. ``mask_token``) are ignored; loads onto the CPU first (any saving device).
    """
    from nnunetv2_advmim.check_weights import compare_state_dicts
    from nnunetv2_advmim.checkpointing import safe_load
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"pretrained weights for the AdvMIM {branch} branch: {filename} does not exist")
    ckpt = safe_load(filename, map_location="cpu")  # weights_only: a checkpoint cannot run code
    if isinstance(ckpt, dict) and "advmim" in ckpt and branch in ckpt["advmim"].get("weights", {}):
        source = ckpt["advmim"]["weights"][branch]
    elif isinstance(ckpt, dict) and "network_weights" in ckpt:
        source = ckpt["network_weights"]
    else:
        raise ValueError(f"{filename} is not an nnU-Net checkpoint (no 'network_weights'); pass a checkpoint_*.pth")
    own = module.state_dict()
    report = compare_state_dicts(own, source, skip=(".seg_layers.", "mask_token"))
    if not report["loadable"]:
        lines = [f"  missing: {k}" for k in report["missing"]] + \
                [f"  {k}: expected {exp}, checkpoint has {got}" for k, exp, got in report["shape_mismatch"]]
        raise ValueError(f"{filename} does not fit the AdvMIM {branch} branch ({type(module).__name__}): "
                         f"{len(report['missing'])} tensors missing, {len(report['shape_mismatch'])} of another shape:\n"
                         + "\n".join(lines[:50]) + ("\n  ..." if len(lines) > 50 else "") +
                         f"\nTrain the checkpoint with the same plans and network class; the full list: "
                         f"nnUNetv2_advmim_check_weights {filename} -d DATASET -c CONFIGURATION -tr "
                         f"{'nnUNetTrainerAdvMIM' if branch == 'hybrid' else 'nnUNetTrainer'}")
    own.update({k: v for k, v in source.items() if k in own and ".seg_layers." not in k})
    module.load_state_dict(own)
