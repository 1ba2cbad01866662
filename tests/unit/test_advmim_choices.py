"""AdvMIM's switchable choices on tensors: ramp-ups of lambda_u and lambda_adv, batch Dice on unlabeled crops,
the mask block size, the discriminator's optimizer and its source of "real" maps."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunetv2_advmim.env import find_trainer
from nnunetv2_advmim.methods.adversarial import PatchDiscriminator, discriminator_optimizer
from nnunetv2_advmim.methods.advmim import AdvMIMWeights, part_loss
from nnunetv2_advmim.methods.step_modes import MASKED_LABELED, MASKED_UNLABELED
from nnunetv2_advmim.methods.losses import cross_teaching_dice
from nnunetv2_advmim.methods.masking import chosen_block_size


def _logits(p1):
    """Two-class logits whose softmax gives foreground probability ``p1`` (shape (B, X, Y))."""
    p1 = torch.as_tensor(p1, dtype=torch.float64)
    return torch.stack([torch.log(1 - p1), torch.log(p1)], 1)


def test_unlabeled_dice_per_sample_and_over_the_batch_hand_values():
    # sample 0 holds foreground, sample 1 none (a random unlabeled crop): per sample, the absent class of sample 1
    # scores 0 (its prediction is not empty) and pulls the mean down; over the batch it does not exist on its own
    logits = _logits([[[0.9, 0.9, 0.1, 0.1]], [[0.2, 0.2, 0.2, 0.2]]])
    labels = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])[:, None]
    # per sample: fg 2*1.8/4 = 0.9 and 0/0.8 = 0; bg 2*1.8/4 = 0.9 and 2*3.2/7.2 = 0.8889
    per_sample = 1 - (0.9 + 0.0 + 0.9 + 6.4 / 7.2) / 4
    # batch: fg 2*1.8/(2.8+2) = 0.75; bg 2*5.0/(5.2+6) = 0.892857
    batch = 1 - (0.75 + 10 / 11.2) / 2
    assert float(cross_teaching_dice(logits, labels)) == pytest.approx(per_sample, abs=1e-4)
    assert float(cross_teaching_dice(logits, labels, batch_dice=True)) == pytest.approx(batch, abs=1e-4)


def test_rampups_scale_the_masked_unlabeled_loss_and_the_adversarial_term():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    partner = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    disc = PatchDiscriminator(3, torch.nn.Conv2d, features=(4, 4, 4, 4)).double()
    full = part_loss(MASKED_UNLABELED, logits, None, None, partner, disc, AdvMIMWeights(lambda_u=2.0, lambda_adv=0.5))
    t = full.terms
    assert float(full.loss) == pytest.approx(float(2.0 * (t["masked_ce"] + t["masked_dice"]) + 0.5 * t["adversarial"]))
    ramped = part_loss(MASKED_UNLABELED, logits, None, None, partner, disc,
                       AdvMIMWeights(lambda_u=2.0, lambda_adv=0.5, rampup_u=0.25, rampup_adv=0.1))
    expected = 2.0 * 0.25 * (t["masked_ce"] + t["masked_dice"]) + 0.5 * 0.1 * t["adversarial"]
    assert float(ramped.loss) == pytest.approx(float(expected))
    for k, v in ramped.terms.items():  # the logged terms stay unweighted
        assert float(v) == pytest.approx(float(t[k]))
    batch = part_loss(MASKED_UNLABELED, logits, None, None, partner, None, AdvMIMWeights(batch_dice=True))
    assert float(batch.terms["masked_dice"]) != pytest.approx(float(t["masked_dice"]))


def test_mask_block_size_override():
    assert chosen_block_size((64, 64), (8, 8)) == (8, 8)
    assert chosen_block_size((64, 64), (8, 8), 4) == (4, 4)
    assert chosen_block_size((8, 40, 40), (1, 8, 8), (2, 16, 64)) == (2, 16, 40)  # capped at the patch
    with pytest.raises(ValueError, match="axes"):
        chosen_block_size((64, 64), (8, 8), (4, 4, 4))
    with pytest.raises(ValueError, match=">= 1"):
        chosen_block_size((64, 64), (8, 8), 0)


def test_trainer_masks_follow_the_block_size_choice():
    trainer = find_trainer("nnUNetTrainerAdvMIM")
    net = SimpleNamespace(mask_grid=lambda s: (s[0] // 8, s[1] // 8), mask_block_size=lambda s: (8, 8))
    fake = SimpleNamespace(branches={"hybrid": net, "cnn": net}, mask_ratio=0.5, device=torch.device("cpu"),
                           mask_block_size=None)
    masks = trainer._masks(fake, (3, 1, 32, 32))
    assert masks["cnn"].shape == (3, 4, 4) and int(masks["cnn"][0].sum()) == 8  # block mask on the network's grid
    fake.mask_block_size = 16
    masks = trainer._masks(fake, (3, 1, 32, 32))
    m = masks["hybrid"]
    assert m.shape == (3, 1, 32, 32) and m.dtype == torch.bool  # voxel mask, 2 x 2 blocks of 16, half masked
    blocks = m[:, 0].reshape(3, 2, 16, 2, 16)
    assert bool((blocks.all(2).all(3) | ~blocks.any(2).any(3)).all())  # constant within each block
    assert [int(b.any(1).any(2).sum()) for b in blocks] == [2, 2, 2]


def test_masked_labeled_weight_scales_that_term_only():
    """lambda_ml multiplies the masked labeled term (nnU-Net's loss on masked x_l); the logged term stays unweighted."""
    output, target = torch.tensor(3.0), torch.tensor(1.0)
    supervised = lambda o, t: (o - t) ** 2  # 4.0
    default = part_loss(MASKED_LABELED, output, target, supervised, None, None, AdvMIMWeights())
    assert float(default.loss) == 4.0 and float(default.terms["masked_sup"]) == 4.0
    quarter = part_loss(MASKED_LABELED, output, target, supervised, None, None, AdvMIMWeights(lambda_ml=0.25))
    assert float(quarter.loss) == 1.0 and float(quarter.terms["masked_sup"]) == 4.0


def test_trainer_loss_weights_ramp_each_term_over_its_own_fraction():
    trainer = find_trainer("nnUNetTrainerAdvMIM")
    fake = SimpleNamespace(lambda_u=1.0, lambda_masked_labeled=0.5, lambda_ct=0.1, lambda_adv=0.001,
                           ct_rampup_fraction=0.4, u_rampup_fraction=0.2, adv_rampup_fraction=0.0,
                           unlabeled_batch_dice=None, masked_unlabeled_dice=False,
                           configuration_manager=SimpleNamespace(batch_dice=True), num_epochs=10,
                           num_iterations_per_epoch=10, current_epoch=1, _epoch_iteration=0)
    fake._rampup = lambda fraction=None: trainer._rampup(fake, fraction)
    fake._unlabeled_batch_dice = lambda: trainer._unlabeled_batch_dice(fake)
    w = trainer._loss_weights(fake)  # iteration 10 of 100
    assert w.rampup == pytest.approx(np.exp(-5 * (1 - 10 / 40) ** 2))
    assert w.rampup_u == pytest.approx(np.exp(-5 * (1 - 10 / 20) ** 2))
    assert w.rampup_adv == 1.0 and w.batch_dice is True  # no ramp; None follows the plan's batch_dice
    assert w.lambda_ml == 0.5 and w.masked_unlabeled_dice is False
    fake.unlabeled_batch_dice, fake.current_epoch = False, 2
    w = trainer._loss_weights(fake)
    assert w.rampup_u == 1.0 and w.batch_dice is False


def test_discriminator_optimizers():
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt, sched = discriminator_optimizer(params, "adam", 1e-4, 10)
    assert isinstance(opt, torch.optim.Adam) and sched is None and opt.param_groups[0]["lr"] == 1e-4
    opt, sched = discriminator_optimizer(params, "sgd", 1e-2, 10)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    sched.step(5)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * (1 - 5 / 10) ** 0.9)
    with pytest.raises(ValueError, match="sgd"):
        discriminator_optimizer(params, "rmsprop", 1e-4, 10)


def test_resume_refuses_a_checkpoint_of_another_training():
    """A checkpoint resumes only where the trainer trains what it trained: inference network, adversarial loss on or
    off, discriminator optimizer; each refusal names the file and the trainer that wrote it."""
    trainer = find_trainer("nnUNetTrainerAdvMIM")
    fake = SimpleNamespace(predict_with="cnn", disc_optimizer="adam", disc_lr=1e-4, disc_grad_clip=None,
                           discriminators={"cnn": object()})
    fake._disc_settings = lambda: trainer._disc_settings(fake)
    same = {"predict_with": "cnn", "disc": {"optimizer": "adam", "lr": 1e-4, "grad_clip": None}}
    trainer._check_same_training(fake, "ckpt.pth", same, "nnUNetTrainerAdvMIM_withAdv")  # the same: no error
    for extra, match in (({**same, "predict_with": "hybrid"}, "ckpt.pth.*predicting with hybrid"),
                         ({**same, "disc": None}, "ckpt.pth was trained without the adversarial loss"),
                         ({**same, "disc": {"optimizer": "sgd", "lr": 0.05, "grad_clip": 5.0}}, "'sgd'")):
        with pytest.raises(RuntimeError, match=match) as e:
            trainer._check_same_training(fake, "ckpt.pth", extra, "nnUNetTrainerAdvMIM_withAdv")
        assert "nnUNetTrainerAdvMIM_withAdv" in str(e.value)
    fake.discriminators = {}
    with pytest.raises(RuntimeError, match="trained with the adversarial loss"):
        trainer._check_same_training(fake, "ckpt.pth", same, "nnUNetTrainerAdvMIM_withAdv")


def test_inference_network_of_each_variant():
    """C is the default inference network of the whole AdvMIM family (measured ahead of S); `_Hybrid` keeps the
    paper's S, `_Ensemble` averages both."""
    expected = {"nnUNetTrainerAdvMIM": "cnn", "nnUNetTrainerCTCT": "cnn", "nnUNetTrainerAdvMIM_withAdv": "cnn",
                "nnUNetTrainerAdvMIM_Hybrid": "hybrid",
                "nnUNetTrainerAdvMIM_Ensemble": "ensemble", "nnUNetTrainerAdvMIM_paper": "hybrid",
                "nnUNetTrainerAdvMIM_maskedCEOnly": "cnn"}
    assert {name: find_trainer(name).predict_with for name in expected} == expected
