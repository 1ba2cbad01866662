"""nnU-Net's ``PlainConvUNet`` and ``ResidualEncoderUNet`` with ``forward(x, mask=None)``.

Each class is a subclass of the dynamic-network-architectures class with the same constructor, so a plans
entry can name it instead of the stock class. It adds one parameter, ``mask_token`` (one learnable value
per stem channel, shared by every masked position, shape ``(1, C_stem, 1, 1[, 1])``); all other
state-dict keys are those of the stock network. Hence:

- weights of a maskable network load into the stock network (``load_pretrained_weights`` ignores the
  extra ``mask_token`` key) and ``nnUNetv2_predict`` runs them;
- ``forward(x)`` / ``forward(x, mask=None)`` runs exactly the stock forward.

With a mask, the input is zeroed in masked blocks (unless ``zero_masked_input`` is False: the official AdvMIM
code leaves the input as it is and relies on the token alone) and the stem output (``PlainConvUNet``: first encoder
stage; ``ResidualEncoderUNet``: ``encoder.stem``) is replaced by the token at masked positions.
"""
from typing import Optional

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from torch import nn

from nnunetv2_advmim.methods.masking import apply_mask_token, block_size, mask_grid, upsample_mask


class MaskTokenMixin:
    """Shared mask handling for networks whose encoder exposes ``strides`` (and ``conv_op``).

    ``mask`` is either the block mask ``(B, *grid)`` of :mod:`nnunetv2_advmim.methods.masking` (block size from
    the encoder's total downsampling, capped at the input size) or an already voxel-level bool mask
    ``(B, 1, *spatial)``. ``zero_masked_input`` (default True) zeroes the input in masked blocks before the stem; with
    False only the stem features are replaced.
    """

    zero_masked_input = True

    def _init_mask_token(self, channels: int, conv_op) -> None:
        dim = convert_conv_op_to_dim(conv_op)
        self.mask_token = nn.Parameter(torch.zeros((1, channels) + (1,) * dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def mask_block_size(self, spatial_shape) -> tuple:
        """Block edge per axis for inputs of ``spatial_shape``."""
        return block_size(self.encoder.strides, spatial_shape)

    def mask_grid(self, spatial_shape) -> tuple:
        """Block grid for inputs of ``spatial_shape``: what ``block_mask`` needs as ``grid``."""
        return mask_grid(spatial_shape, self.mask_block_size(spatial_shape))

    def _voxel_mask(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        spatial = tuple(x.shape[2:])
        if mask.dim() == x.dim():
            if mask.shape[0] != x.shape[0] or mask.shape[1] != 1 or tuple(mask.shape[2:]) != spatial:
                raise ValueError(f"voxel mask of shape {tuple(mask.shape)} does not fit input {tuple(x.shape)}: "
                                 f"expected ({x.shape[0]}, 1, {', '.join(map(str, spatial))})")
            return mask.bool().to(x.device)
        if mask.shape[0] != x.shape[0]:
            raise ValueError(f"mask batch size {mask.shape[0]} differs from input batch size {x.shape[0]}")
        return upsample_mask(mask.to(x.device), spatial, self.mask_block_size(spatial))

    def _mask_input(self, x: torch.Tensor, mask: torch.Tensor):
        """Return (input, zeroed in masked blocks when ``zero_masked_input``; voxel mask)."""
        m = self._voxel_mask(x, mask)
        return (x.masked_fill(m, 0) if self.zero_masked_input else x), m

    def _mask_stem(self, features: torch.Tensor, voxel_mask: torch.Tensor) -> torch.Tensor:
        return apply_mask_token(features, voxel_mask, self.mask_token)

    def _stage_skips(self, x: torch.Tensor, voxel_mask: Optional[torch.Tensor]) -> list:
        """The encoder stages' outputs; with ``voxel_mask``, the first stage's output is the stem's and gets the
        token at masked positions."""
        skips = []
        for i, stage in enumerate(self.encoder.stages):
            x = stage(x)
            if i == 0 and voxel_mask is not None:
                x = self._mask_stem(x, voxel_mask)
            skips.append(x)
        return skips


class MaskablePlainConvUNet(MaskTokenMixin, PlainConvUNet):
    """``PlainConvUNet`` (same constructor) with ``forward(x, mask=None)``; stem = ``encoder.stages[0]``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask_token(self.encoder.output_channels[0], self.encoder.conv_op)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
        if mask is None:
            return super().forward(x)
        x, m = self._mask_input(x, mask)
        return self.decoder(self._stage_skips(x, m))


class MaskableResidualEncoderUNet(MaskTokenMixin, ResidualEncoderUNet):
    """``ResidualEncoderUNet`` (same constructor) with ``forward(x, mask=None)``; stem = ``encoder.stem``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        stem = self.encoder.stem
        channels = stem.output_channels if stem is not None else self.encoder.output_channels[0]
        self._init_mask_token(channels, self.encoder.conv_op)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
        if mask is None:
            return super().forward(x)
        x, m = self._mask_input(x, mask)
        if self.encoder.stem is not None:
            return self.decoder(self._stage_skips(self._mask_stem(self.encoder.stem(x), m), None))
        return self.decoder(self._stage_skips(x, m))  # no stem: the first stage's output is the stem output
