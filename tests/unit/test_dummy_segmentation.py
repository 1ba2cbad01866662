"""The dummy segmentation of an unlabeled batch carries the image geometry only, never labels."""

import numpy as np
import torch

from nnunetv2_advmim.data.semisup_loader import nnUNetUnlabeledDataLoader


def test_dummy_segmentation_is_geometry_only():
    dl = nnUNetUnlabeledDataLoader.__new__(nnUNetUnlabeledDataLoader)
    dl.mask_from_image = True
    image = torch.ones((2, 4, 6))
    image[:, 3, 5] = 0  # every channel exactly 0: outside a masked normalisation
    seg = dl._dummy_seg(image, data_shape=(10, 8), bbox_lbs=[-1, 4], bbox_ubs=[3, 10])
    expected = np.zeros((1, 4, 6), dtype=np.int16)
    expected[0, 0, :] = -1  # row -1 is padding
    expected[0, :, 4:] = -1  # columns 8, 9 are padding
    expected[0, 3, 5] = -1
    np.testing.assert_array_equal(seg.numpy(), expected)
