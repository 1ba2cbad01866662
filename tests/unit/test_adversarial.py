"""Patch-GAN discriminator and least-squares GAN losses (nnunetv2_advmim.methods.adversarial)."""
import pytest
import torch
from torch import nn

from nnunetv2_advmim.methods.adversarial import PatchDiscriminator, frozen, lsgan_discriminator_loss, lsgan_generator_loss


def test_architecture_four_stride2_convs_and_one_channel_output():
    d = PatchDiscriminator(3, nn.Conv3d)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride for c in convs] == [(2, 2, 2)] * 4 + [(1, 1, 1)]
    acts = [m for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4 and all(a.negative_slope == 0.2 for a in acts)
    assert convs[0].in_channels == 3


@pytest.mark.parametrize("conv_op, shape, expected", [
    (nn.Conv3d, (2, 3, 24, 32, 32), (2, 2, 2)),     # the test suite's anisotropic 3D patch
    (nn.Conv3d, (1, 2, 2, 64, 48), (1, 4, 3)),      # very few slices
    (nn.Conv3d, (1, 2, 1, 1, 1), (1, 1, 1)),
    (nn.Conv2d, (2, 4, 64, 64), (4, 4)),
    (nn.Conv2d, (1, 2, 5, 7), (1, 1)),              # odd and smaller than 2^4
    ("torch.nn.modules.conv.Conv2d", (1, 2, 33, 17), (3, 2)),
])
def test_any_patch_size_gives_a_nonempty_score_map(conv_op, shape, expected):
    d = PatchDiscriminator(shape[1], conv_op, features=(4, 4, 4, 4))
    out = d(torch.rand(shape))
    assert out.shape == (shape[0], 1, *expected)
    assert PatchDiscriminator.output_size(shape[2:]) == expected


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="cannot be imported"):
        PatchDiscriminator(2, "torch.nn.NoSuchConv")
    with pytest.raises(ValueError, match="nn.Conv2d or nn.Conv3d"):
        PatchDiscriminator(2, nn.Linear)
    with pytest.raises(ValueError, match="expects"):
        PatchDiscriminator(2, nn.Conv2d, features=(4,))(torch.rand(1, 2, 4, 4, 4))


def test_lsgan_losses_hand_values():
    assert lsgan_generator_loss(torch.tensor([0.0, 1.0, 2.0, 0.5])).item() == pytest.approx(2.25 / 4)
    # real (1, 0): mean((r-1)^2) = 0.5 ; fake (0, 2): mean(f^2) = 2 -> 0.1 * 2.5
    assert lsgan_discriminator_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])).item() == pytest.approx(0.25)
    assert lsgan_discriminator_loss(torch.ones(3), torch.zeros(5)).item() == 0.0
    assert lsgan_generator_loss(torch.ones(2, 1, 3, 3, dtype=torch.float16)).dtype == torch.float32


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(module, snap):
    return [not torch.equal(p.detach(), s) for p, s in zip(module.parameters(), snap)]


def test_each_optimizer_changes_only_its_own_parameters():
    torch.manual_seed(0)
    net = nn.Conv2d(1, 3, 3, padding=1)  # stands in for a segmentation network (3 classes)
    disc = PatchDiscriminator(3, nn.Conv2d, features=(8, 8, 8, 8))
    opt_g = torch.optim.SGD(net.parameters(), lr=0.1)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    x_l, x_u = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)

    # network (generator) step
    net0, disc0 = _snapshot(net), _snapshot(disc)
    opt_g.zero_grad()
    p_fake = torch.softmax(net(x_u), 1)
    lsgan_generator_loss(disc(p_fake)).backward()
    opt_g.step()
    assert all(_changed(net, net0)) and not any(_changed(disc, disc0))

    # discriminator step on detached maps (zero its stale generator-step gradients first)
    net1, disc1 = _snapshot(net), _snapshot(disc)
    opt_d.zero_grad()
    opt_g.zero_grad()  # set_to_none: the network's grads are None now
    p_real = torch.softmax(net(x_l), 1).detach()
    p_fake = torch.softmax(net(x_u), 1).detach()
    lsgan_discriminator_loss(disc(p_real), disc(p_fake)).backward()
    assert all(p.grad is None for p in net.parameters())  # detached maps: no gradient reaches the network
    opt_d.step()
    assert all(_changed(disc, disc1)) and not any(_changed(net, net1))


def test_frozen_keeps_generator_gradients_out_of_the_discriminator():
    net = nn.Conv2d(1, 2, 3, padding=1)
    disc = PatchDiscriminator(2, nn.Conv2d, features=(4, 4, 4, 4))
    with frozen(disc):
        loss = lsgan_generator_loss(disc(torch.softmax(net(torch.randn(1, 1, 8, 8)), 1)))
    loss.backward()
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(p.requires_grad for p in disc.parameters())  # restored
