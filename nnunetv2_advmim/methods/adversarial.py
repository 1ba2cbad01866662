"""AdvMIM's adversarial parts: patch-GAN discriminator and least-squares GAN losses.

``D_N`` sees softmax maps. "Real" = ``p(N(x_l))`` (original domain, labeled), "fake" = ``p(N^m(x_u))``
(masked domain, unlabeled)::

    generator (network N):   lambda_adv * mean((D_N(p(N^m(x_u))) - 1)^2)
    discriminator D_N:       0.1 * [mean((D_N(p(N(x_l))) - 1)^2) + mean(D_N(p(N^m(x_u)))^2)]   (detached maps)

Order of a training step with two optimizers: backward the network loss (its generator term also writes
gradients into D's parameters), step the network optimizer, then ``d_optimizer.zero_grad()`` before
backwarding the discriminator loss on detached maps and stepping ``d_optimizer``; or wrap the generator
term in ``frozen(discriminator)`` so D collects no gradients at all.
"""
import pydoc
from contextlib import contextmanager
from typing import Sequence, Type, Union

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from torch import nn

__all__ = ["PatchDiscriminator", "lsgan_generator_loss", "lsgan_discriminator_loss", "frozen"]


class PatchDiscriminator(nn.Module):
    """Fully convolutional patch-GAN discriminator on softmax maps, 2D or 3D from ``conv_op``.

    Four stride-2 convolutions with ``features`` channels (default 64, 128, 256, 512), each followed by
    LeakyReLU(``negative_slope``), then a stride-1 convolution to one output channel; the output is a
    patch map ``(B, 1, *reduced)`` of raw scores (no sigmoid: the losses are least squares).

    Kernel/stride/padding: the AdvEnt-style discriminator uses 4x4 kernels, stride 2, padding 1, which
    floors each size to ``n // 2`` and reaches 0 on an axis of size 1 (e.g. a 3D patch with few slices,
    or a 2D patch of 16 px, after four halvings). We use kernel 3, stride 2, padding 1: the size becomes
    ``ceil(n / 2)``, which is >= 1 for every ``n >= 1``, so any patch (odd, anisotropic, tiny) works.
    The output conv is kernel 3, stride 1, padding 1 (size kept). ``kernel_size=4, head_stride=2`` gives the
    official AdvMIM discriminator (4x4 kernels, a 4x4 stride-2 head, padding 1); it needs every patch axis to stay
    at least 1 after five halvings and says so otherwise.

    Args mirror dynamic_network_architectures: ``conv_op`` is ``nn.Conv2d``/``nn.Conv3d`` (or its dotted
    name as stored in nnU-Net plans, e.g. ``"torch.nn.modules.conv.Conv3d"``).
    """

    def __init__(self, input_channels: int, conv_op: Union[Type[nn.Module], str],
                 features: Sequence[int] = (64, 128, 256, 512), negative_slope: float = 0.2,
                 kernel_size: int = 3, head_stride: int = 1):
        super().__init__()
        if isinstance(conv_op, str):
            resolved = pydoc.locate(conv_op)
            if resolved is None:
                raise ValueError(f"PatchDiscriminator: conv_op '{conv_op}' cannot be imported; pass "
                                 f"torch.nn.Conv2d / torch.nn.Conv3d or their dotted names")
            conv_op = resolved
        if conv_op not in (nn.Conv2d, nn.Conv3d):
            raise ValueError(f"PatchDiscriminator: conv_op must be nn.Conv2d or nn.Conv3d, got {conv_op}")
        if input_channels < 1 or len(features) == 0:
            raise ValueError("PatchDiscriminator: input_channels must be >= 1 and features non-empty")
        self.conv_op = conv_op
        if kernel_size not in (3, 4) or head_stride not in (1, 2):
            raise ValueError(f"PatchDiscriminator: kernel_size must be 3 or 4 and head_stride 1 or 2, got "
                             f"{kernel_size}, {head_stride}")
        self.dim = 2 if conv_op is nn.Conv2d else 3
        self.kernel_size, self.head_stride, self.num_downsamplings = kernel_size, head_stride, len(features)
        layers = []
        c_in = input_channels
        for c_out in features:
            layers += [conv_op(c_in, c_out, kernel_size=kernel_size, stride=2, padding=1),
                       nn.LeakyReLU(negative_slope, inplace=True)]
            c_in = c_out
        layers.append(conv_op(c_in, 1, kernel_size=kernel_size, stride=head_stride, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.dim + 2:
            raise ValueError(f"PatchDiscriminator({self.dim}D) expects (B, C, *{self.dim} spatial), "
                             f"got shape {tuple(x.shape)}")
        if self.kernel_size == 4 and min(self.output_size(x.shape[2:], self.num_downsamplings, 4,
                                                          self.head_stride)) < 1:
            raise ValueError(f"PatchDiscriminator with 4x4 kernels: the patch {tuple(x.shape[2:])} is too small "
                             f"for {self.num_downsamplings} halvings and the head; use kernel_size=3 (the default) "
                             f"or a larger patch")
        return self.layers(x)

    @staticmethod
    def output_size(patch_size: Sequence[int], num_downsamplings: int = 4, kernel_size: int = 3,
                    head_stride: int = 1):
        """Spatial size of the score map for an input patch (padding 1): ``floor((n + 2 - k) / s) + 1`` per conv,
        i.e. ``ceil(n / 2)`` per halving with 3x3 kernels and ``floor(n / 2)`` with 4x4 kernels."""
        size = [int(s) for s in patch_size]
        for _ in range(num_downsamplings):
            size = [(s + 2 - kernel_size) // 2 + 1 for s in size]
        return tuple((s + 2 - kernel_size) // head_stride + 1 for s in size)


def lsgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss ``mean((D(p) - 1)^2)`` (Mao et al. 2017), float32."""
    return ((d_fake.float() - 1) ** 2).mean()


def lsgan_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor, weight: float = 0.1) -> torch.Tensor:
    """Least-squares discriminator loss ``weight * [mean((D(real) - 1)^2) + mean(D(fake)^2)]``.

    Pass scores of *detached* maps: real = ``D(p(N(x_l)).detach())``, fake = ``D(p(N^m(x_u)).detach())``.
    """
    return weight * (((d_real.float() - 1) ** 2).mean() + (d_fake.float() ** 2).mean())


@contextmanager
def frozen(module: nn.Module):
    """Temporarily set ``requires_grad=False`` on all parameters of ``module`` (restored afterwards).

    Use around the generator term so the discriminator collects no gradients from the network's loss.
    """
    params = list(module.parameters())
    previous = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield module
    finally:
        for p, flag in zip(params, previous):
            p.requires_grad_(flag)


DISCRIMINATOR_OPTIMIZERS = ("adam", "sgd")


def discriminator_optimizer(params, kind: str, lr: float, num_epochs: int, betas=(0.9, 0.99), momentum: float = 0.9,
                            weight_decay: float = 0.0):
    """``(optimizer, scheduler or None)`` for one discriminator.

    ``adam``: Adam at a constant ``lr`` (the usual GAN choice). ``sgd``: SGD with ``momentum`` and nnU-Net's poly
    decay of ``lr`` over ``num_epochs`` (``PolyLRScheduler``, stepped once per epoch by the trainer).
    """
    if kind == "adam":
        return torch.optim.Adam(params, lr, betas=betas, weight_decay=weight_decay), None
    if kind == "sgd":
        opt = torch.optim.SGD(params, lr, momentum=momentum, weight_decay=weight_decay)
        return opt, PolyLRScheduler(opt, lr, num_epochs)
    raise ValueError(f"unknown discriminator optimizer {kind!r}; expected one of {DISCRIMINATOR_OPTIMIZERS}")
