"""The official AdvMIM code's choices as switches, and ``-pretrained_weights`` into both AdvMIM networks.

Each switch is pinned on tensors with hand-computed values; the loading through nnU-Net's own
``maybe_load_checkpoint`` is checked weight by weight.
"""
import math
import re
from types import SimpleNamespace


import pytest
import torch
from torch import nn

from nnunetv2_advmim.architectures.from_plans import build_branch
from nnunetv2_advmim.methods.adversarial import PatchDiscriminator
from nnunetv2_advmim.methods.advmim import AdvMIMWeights, advmim_generator_step, part_loss
from nnunetv2_advmim.methods.step_modes import MASKED_UNLABELED
from nnunetv2_advmim.methods.masking import block_mask
from nnunetv2_advmim.runtime.weights import load_pretrained_branches, route_pretrained_weights

from helpers import TINY_2D_PLAN as PLAN

# ------------------------------------------------------------------------------------------ loss switches
def test_masked_unlabeled_term_without_dice_is_lambda_u_times_wce():
    # own logits: voxel 1 (0, 0) -> p = (1/2, 1/2); voxel 2 (ln 3, 0) -> p = (3/4, 1/4)
    own = torch.tensor([[[[0.0, math.log(3)]], [[0.0, 0.0]]]])
    # partner: voxel 1 (ln 3, 0) -> label 0, certainty 3/4; voxel 2 (0, 0) -> label 0 (first maximum), certainty 1/2
    partner = torch.tensor([[[[math.log(3), 0.0]], [[0.0, 0.0]]]])
    wce = (0.75 * math.log(2) + 0.5 * math.log(4 / 3)) / 1.25
    r = part_loss(MASKED_UNLABELED, own, None, None, partner, None,
                  AdvMIMWeights(lambda_u=2.0, masked_unlabeled_dice=False))
    assert r.terms["masked_ce"].item() == pytest.approx(wce, rel=1e-6)
    assert r.terms["masked_dice"].item() == 0.0
    assert r.loss.item() == pytest.approx(2 * wce, rel=1e-6)
    with_dice = part_loss(MASKED_UNLABELED, own, None, None, partner, None, AdvMIMWeights(lambda_u=2.0))
    assert with_dice.loss.item() == pytest.approx(2 * (wce + with_dice.terms["masked_dice"].item()), rel=1e-6)
    assert with_dice.terms["masked_dice"].item() > 0


def test_masked_labeled_loss_per_network():
    """S's masked labeled term takes its own loss (the official CE alone); C's and every other term keep the
    supervised loss."""
    torch.manual_seed(0)
    nets = {b: build_branch(b, PLAN, 1, 3, False).eval() for b in ("hybrid", "cnn")}
    x_l, x_u = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    masks = {b: block_mask(4, nets[b].mask_grid((16, 16)), 0.5) for b in nets}
    ones = lambda out, target: out.sum() * 0 + 1.0
    fives = lambda out, target: out.sum() * 0 + 5.0
    for mode in ("memory", "fast"):
        out = advmim_generator_step(nets, x_l, None, x_u, ones, masks, None, mode, masked_labeled_loss={"hybrid": fives})
        assert out["terms"]["hybrid"]["masked_sup"].item() == 5.0 and out["terms"]["cnn"]["masked_sup"].item() == 1.0
        assert out["terms"]["hybrid"]["sup"].item() == 1.0


def test_official_discriminator_shapes_and_size_check():
    d = PatchDiscriminator(4, nn.Conv2d, kernel_size=4, head_stride=2)
    assert [m.kernel_size for m in d.layers if isinstance(m, nn.Conv2d)] == [(4, 4)] * 5
    assert [m.stride for m in d.layers if isinstance(m, nn.Conv2d)] == [(2, 2)] * 5
    # 224 -> 112 -> 56 -> 28 -> 14 (floor halvings) -> head: (14 + 2 - 4) // 2 + 1 = 7
    assert d(torch.zeros(1, 4, 224, 224)).shape == (1, 1, 7, 7)
    assert PatchDiscriminator.output_size((224, 224), 4, 4, 2) == (7, 7)
    assert PatchDiscriminator.output_size((64, 40), 4) == (4, 3)  # the default: ceil halvings, stride-1 head
    with pytest.raises(ValueError, match="too small"):
        d(torch.zeros(1, 4, 16, 16))  # 16 -> 1 after four halvings, 0 after the head
    with pytest.raises(ValueError, match="kernel_size must be 3 or 4"):
        PatchDiscriminator(4, nn.Conv2d, kernel_size=5)


def test_masked_input_is_left_as_it_is_when_told():
    net = build_branch("cnn", PLAN, 1, 3, False)
    x = torch.randn(1, 1, 16, 16)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    zeroed, m = net._mask_input(x, mask)
    assert (zeroed[0, 0, :4, :4] == 0).all() and torch.equal(zeroed[0, 0, 4:], x[0, 0, 4:])
    net.zero_masked_input = False
    kept, m2 = net._mask_input(x, mask)
    assert torch.equal(kept, x) and torch.equal(m, m2)


# ------------------------------------------------------------------------------------------ pretrained weights
def _nets(seed):
    torch.manual_seed(seed)
    return {b: build_branch(b, PLAN, 1, 3, True) for b in ("hybrid", "cnn")}


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _equal_but_seg(net, source):
    return all(torch.equal(v, source[k]) for k, v in net.state_dict().items() if ".seg_layers." not in k)


def _joint_checkpoint(path, seed=1):
    """The layout the joint pretraining writes: C as network_weights, S under branch_weights (other output
    channels: pretraining reconstructs the image)."""
    torch.manual_seed(seed)
    pre = {b: build_branch(b, PLAN, 1, 1, False) for b in ("hybrid", "cnn")}
    torch.save({"network_weights": _state(pre["cnn"]), "branch_weights": {"hybrid": _state(pre["hybrid"])}}, path)
    return {b: _state(n) for b, n in pre.items()}


def test_joint_checkpoint_loads_every_weight_of_both_networks(tmp_path):
    path = str(tmp_path / "joint.pth")
    pre = _joint_checkpoint(path)
    nets = _nets(0)
    seg_before = {b: {k: v for k, v in _state(n).items() if ".seg_layers." in k} for b, n in nets.items()}
    assert load_pretrained_branches(nets, path, "cnn") == ["hybrid", "cnn"]
    for b, net in nets.items():
        assert _equal_but_seg(net, pre[b]), b
        assert all(torch.equal(net.state_dict()[k], v) for k, v in seg_before[b].items())  # output layers kept


def test_one_network_checkpoint_loads_into_the_network_it_fits(tmp_path):
    c_only, s_only = str(tmp_path / "c.pth"), str(tmp_path / "s.pth")
    src = _nets(5)
    torch.save({"network_weights": _state(src["cnn"])}, c_only)
    torch.save({"network_weights": _state(src["hybrid"])}, s_only)
    nets = _nets(0)
    s_before = _state(nets["hybrid"])
    assert load_pretrained_branches(nets, c_only, "cnn") == ["cnn"]
    assert _equal_but_seg(nets["cnn"], _state(src["cnn"]))
    assert all(torch.equal(v, s_before[k]) for k, v in nets["hybrid"].state_dict().items())  # S untouched
    nets = _nets(0)
    assert load_pretrained_branches(nets, s_only, "cnn") == ["hybrid"]  # does not fit C: into S
    assert _equal_but_seg(nets["hybrid"], _state(src["hybrid"]))


def test_nothing_is_loaded_when_one_network_does_not_fit(tmp_path):
    path = str(tmp_path / "joint.pth")
    _joint_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    key = next(k for k in ckpt["branch_weights"]["hybrid"] if k.startswith("encoder."))
    del ckpt["branch_weights"]["hybrid"][key]
    torch.save(ckpt, path)
    nets = _nets(0)
    before = {b: _state(n) for b, n in nets.items()}
    with pytest.raises(ValueError, match=f"joint.pth does not fit the AdvMIM hybrid network(.|\\n)*missing: {re.escape(key)}"):
        load_pretrained_branches(nets, path, "cnn")
    assert all(_equal_but_seg(n, before[b]) for b, n in nets.items())


def test_stock_maybe_load_checkpoint_reaches_both_networks(tmp_path):
    """nnU-Net's own run_training.maybe_load_checkpoint hands -pretrained_weights to the registered trainer method;
    any other network still goes through nnU-Net's load_pretrained_weights."""
    from nnunetv2.run.run_training import maybe_load_checkpoint

    path = str(tmp_path / "joint.pth")
    pre = _joint_checkpoint(path)

    class Trainer:
        was_initialized = True

        def __init__(self):
            self.branches = _nets(0)
            self.network = self.branches["cnn"]
            route_pretrained_weights(self.network, self.load)

        def load(self, filename):
            load_pretrained_branches(self.branches, filename, "cnn")

    t = Trainer()
    maybe_load_checkpoint(t, False, False, path)
    assert _equal_but_seg(t.branches["cnn"], pre["cnn"]) and _equal_but_seg(t.branches["hybrid"], pre["hybrid"])
    # a network nobody registered: nnU-Net's own loading (C's weights into a plain C)
    other = SimpleNamespace(was_initialized=True, network=_nets(3)["cnn"])
    maybe_load_checkpoint(other, False, False, path)
    assert _equal_but_seg(other.network, pre["cnn"])
