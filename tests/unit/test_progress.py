"""What the AdvMIM trainers log: the packed step terms, the log keys, the per-network pseudo Dice (hand values)."""
import math

import numpy as np
import pytest
import torch

from nnunetv2_advmim.evaluation.progress import (STEP_KEYS, advmim_log_keys, advmim_plot_groups, pack_terms,
                                                 pseudo_dice, step_keys)


def test_pack_terms_orders_networks_then_terms_and_fills_missing_with_zero():
    terms = {"hybrid": {"sup": torch.tensor(1.0), "total": torch.tensor(2.0)}, "cnn": {"disc_fake": torch.tensor(3.0)}}
    packed = pack_terms(terms, torch.zeros(()))
    assert packed.shape == (2 * len(STEP_KEYS),)
    values = dict(zip(step_keys(), packed.tolist()))
    assert values["hybrid_sup"] == 1.0 and values["hybrid_total"] == 2.0 and values["cnn_disc_fake"] == 3.0
    assert sum(values.values()) == 6.0


def test_log_keys_and_plot_groups_name_the_same_values():
    keys = advmim_log_keys()
    assert len(keys) == len(set(keys)) == 2 * len(STEP_KEYS) + 1 + 2
    plotted = {k for group in advmim_plot_groups().values() for k in group} - {"mean_fg_dice"}
    assert plotted <= set(keys)


def test_pseudo_dice_hand_values():
    # class 1: 2 tp, 1 fp, 1 fn -> 4 / 6; class 2 never present nor predicted -> left out
    assert pseudo_dice(np.array([2, 0]), np.array([1, 0]), np.array([1, 0])) == pytest.approx(4 / 6)
    assert math.isnan(pseudo_dice(np.array([0]), np.array([0]), np.array([0])))
