"""Hybrid CNN-Transformer U-Net that follows nnU-Net plans.

``HybridTransformerUNet`` takes the arguments nnU-Net plans hold for ``PlainConvUNet`` (``n_stages``,
``features_per_stage``, ``conv_op``, ``kernel_sizes``, ``strides``, ``n_conv_per_stage``,
``n_conv_per_stage_decoder``, norm / dropout / nonlin ops and kwargs, ``deep_supervision``) plus timm-named
transformer settings. Layout:

- encoder stages that are not transformer stages: nnU-Net's ``StackedConvBlocks`` (as in ``PlainConvEncoder``);
  the high-resolution stages stay convolutional;
- transformer stages (default: the last two, the deepest and cheapest in tokens): a strided conv block with
  the plan's kernel and stride embeds the previous stage's features into ``embed_dim`` channels; a depthwise
  conv with the plan's kernel adds position information (conditional position encoding, Chu et al. 2021,
  "Conditional Positional Encodings for Vision Transformers"), which fits 2D and 3D, anisotropic kernels
  and any patch size without interpolation; ``depth`` pre-norm transformer blocks (timm's ``Block``:
  LayerNorm -> multi-head self-attention -> DropPath residual, LayerNorm -> Mlp -> DropPath residual) run
  on the flattened tokens; a final LayerNorm, then a 1x1 conv back to ``features_per_stage[s]`` when
  ``embed_dim`` differs from it;
- nnU-Net's ``UNetDecoder`` with skips and deep supervision (``decoder.deep_supervision`` toggles it as in
  nnU-Net's trainer).

Masking: ``forward(x, mask=None)``; with a block mask the input is zeroed in masked
blocks and the stem output (first encoder stage) is replaced by ``mask_token`` at masked positions. We use
one shared per-channel token (as the CNNs), not the per-position tokens of the
official AdvMIM transformer: a per-position token would tie the weights to one patch size.
"""
from functools import partial
from typing import List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim, maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU, StackedConvBlocks
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

from nnunetv2_advmim.architectures.maskable import MaskTokenMixin

IntOrSeq = Union[int, List[int], Tuple[int, ...]]


def _per_stage(value, n: int, name: str) -> list:
    """Broadcast an int (or None/float) to ``n`` entries or check a list has ``n`` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"HybridTransformerUNet: {name} has {len(value)} entries, expected {n} "
                             f"(one per transformer stage) or a single value")
        return list(value)
    return [value] * n


class TransformerStage(nn.Module):
    """Strided conv token embedding -> conv position encoding -> pre-norm transformer blocks -> LayerNorm."""

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, output_channels: int, kernel_size, stride,
                 embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_rate: float,
                 attn_drop_rate: float, drop_path: Sequence[float], conv_bias: bool, norm_op, norm_op_kwargs,
                 dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, nonlin_first: bool = False):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"HybridTransformerUNet: embed_dim {embed_dim} is not divisible by num_heads {num_heads}; "
                             f"choose num_heads dividing the stage width (features_per_stage or embed_dim)")
        kernel_size = maybe_convert_scalar_to_list(conv_op, kernel_size)
        self.embed = ConvDropoutNormReLU(conv_op, input_channels, embed_dim, kernel_size, stride, conv_bias, norm_op,
                                         norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
                                         nonlin_first)
        self.pos = conv_op(embed_dim, embed_dim, kernel_size, 1, [(k - 1) // 2 for k in kernel_size],
                           groups=embed_dim, bias=True)
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate,
                  attn_drop=attn_drop_rate, drop_path=drop_path[i], norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = conv_op(embed_dim, output_channels, 1, 1, 0, bias=True) if embed_dim != output_channels \
            else nn.Identity()
        self.output_channels = output_channels
        self.initial_stride = maybe_convert_scalar_to_list(conv_op, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.pos(x)
        b, c, *spatial = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, N, C)
        t = self.norm(self.blocks(t))
        x = t.transpose(1, 2).reshape(b, c, *spatial)
        return self.proj(x)

    def compute_conv_feature_map_size(self, input_size):
        size = [i // j for i, j in zip(input_size, self.initial_stride)]
        n = np.prod(size, dtype=np.int64)
        embed = self.embed.output_channels
        # activations kept per block (norms, qkv, attention output, mlp hidden); a rough count for VRAM estimates
        per_block = n * embed * (6 + 2 * 4)
        return self.embed.compute_conv_feature_map_size(input_size) + 2 * n * embed + len(self.blocks) * per_block


class HybridEncoder(nn.Module):
    """Encoder with conv stages and transformer stages; exposes what ``UNetDecoder`` reads from an encoder."""

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq, conv_op: Type[_ConvNd],
                 kernel_sizes, strides, n_conv_per_stage: IntOrSeq, transformer_stages: Sequence[int],
                 embed_dim: Sequence[int], depth: Sequence[int], num_heads: Sequence[int], mlp_ratio: float,
                 qkv_bias: bool, drop_rate: float, attn_drop_rate: float, drop_path_rate: float,
                 conv_bias: bool = False, norm_op=None, norm_op_kwargs=None, dropout_op=None, dropout_op_kwargs=None,
                 nonlin=None, nonlin_kwargs=None, nonlin_first: bool = False):
        super().__init__()
        if isinstance(kernel_sizes, int):
            kernel_sizes = [kernel_sizes] * n_stages
        if isinstance(features_per_stage, int):
            features_per_stage = [features_per_stage] * n_stages
        if isinstance(n_conv_per_stage, int):
            n_conv_per_stage = [n_conv_per_stage] * n_stages
        if isinstance(strides, int):
            strides = [strides] * n_stages
        for name, v in (("kernel_sizes", kernel_sizes), ("features_per_stage", features_per_stage),
                        ("n_conv_per_stage", n_conv_per_stage), ("strides", strides)):
            if len(v) != n_stages:
                raise ValueError(f"HybridTransformerUNet: {name} has {len(v)} entries, expected n_stages={n_stages}")

        total_blocks = sum(depth)
        rates = [float(r) for r in np.linspace(0, drop_path_rate, total_blocks)] if total_blocks else []
        stages = []
        t_index, block_index = 0, 0
        for s in range(n_stages):
            if s in transformer_stages:
                d = depth[t_index]
                stages.append(TransformerStage(
                    conv_op, input_channels, features_per_stage[s], kernel_sizes[s], strides[s], embed_dim[t_index],
                    d, num_heads[t_index], mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                    rates[block_index:block_index + d], conv_bias, norm_op, norm_op_kwargs, dropout_op,
                    dropout_op_kwargs, nonlin, nonlin_kwargs, nonlin_first))
                t_index += 1
                block_index += d
            else:
                stages.append(StackedConvBlocks(
                    n_conv_per_stage[s], conv_op, input_channels, features_per_stage[s], kernel_sizes[s], strides[s],
                    conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
                    nonlin_first))
            input_channels = features_per_stage[s]

        self.stages = nn.Sequential(*stages)
        self.transformer_stages = list(transformer_stages)
        self.output_channels = list(features_per_stage)
        self.strides = [maybe_convert_scalar_to_list(conv_op, i) for i in strides]
        self.return_skips = True
        # what UNetDecoder reads from an encoder
        self.conv_op = conv_op
        self.norm_op = norm_op
        self.norm_op_kwargs = norm_op_kwargs
        self.nonlin = nonlin
        self.nonlin_kwargs = nonlin_kwargs
        self.dropout_op = dropout_op
        self.dropout_op_kwargs = dropout_op_kwargs
        self.conv_bias = conv_bias
        self.kernel_sizes = kernel_sizes

    def forward(self, x):
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips

    def compute_conv_feature_map_size(self, input_size):
        output = np.int64(0)
        for s, stage in enumerate(self.stages):
            output += stage.compute_conv_feature_map_size(input_size)
            input_size = [i // j for i, j in zip(input_size, self.strides[s])]
        return output


class HybridTransformerUNet(MaskTokenMixin, AbstractDynamicNetworkArchitectures):
    """Hybrid CNN-Transformer U-Net built from nnU-Net plan arguments (see module docstring).

    Transformer arguments (timm names):

    - ``transformer_stages``: int k = the last k encoder stages (default 2), or a list of stage indices
      (>= 1; stage 0 is the convolutional stem);
    - ``embed_dim``: transformer width; None (default) = ``features_per_stage`` of each transformer stage;
      int or one value per transformer stage;
    - ``depth``: transformer blocks per transformer stage (int or list, default 4);
    - ``num_heads``: attention heads (int or list, default 8; must divide the width);
    - ``mlp_ratio`` (4.0), ``qkv_bias`` (True), ``drop_rate`` (0.0), ``attn_drop_rate`` (0.0),
      ``drop_path_rate`` (0.1, stochastic depth rising linearly over all blocks).

    ``n_conv_per_stage`` entries of transformer stages are ignored (their embedding is a single conv block).
    """

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: IntOrSeq, conv_op: Type[_ConvNd],
                 kernel_sizes: IntOrSeq, strides: IntOrSeq, n_conv_per_stage: IntOrSeq, num_classes: int,
                 n_conv_per_stage_decoder: IntOrSeq, conv_bias: bool = False,
                 norm_op: Union[None, Type[nn.Module]] = None, norm_op_kwargs: dict = None,
                 dropout_op: Union[None, Type[_DropoutNd]] = None, dropout_op_kwargs: dict = None,
                 nonlin: Union[None, Type[nn.Module]] = None, nonlin_kwargs: dict = None,
                 deep_supervision: bool = False, nonlin_first: bool = False,
                 transformer_stages: Union[int, Sequence[int]] = 2, embed_dim: Union[None, int, Sequence[int]] = None,
                 depth: IntOrSeq = 4, num_heads: IntOrSeq = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1):
        super().__init__()
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stages.0"
        self.keys_to_in_proj = ("encoder.stages.0.convs.0.conv", "encoder.stages.0.convs.0.all_modules.0")

        if n_stages < 2:
            raise ValueError(f"HybridTransformerUNet needs n_stages >= 2 (a conv stem plus at least one transformer "
                             f"stage), got {n_stages}")
        if isinstance(transformer_stages, int):
            if not 1 <= transformer_stages <= n_stages - 1:
                raise ValueError(f"HybridTransformerUNet: transformer_stages={transformer_stages} must lie in "
                                 f"[1, n_stages - 1 = {n_stages - 1}] (stage 0 stays convolutional)")
            transformer_stages = list(range(n_stages - transformer_stages, n_stages))
        transformer_stages = sorted(int(s) for s in transformer_stages)
        if not transformer_stages or len(set(transformer_stages)) != len(transformer_stages) \
                or transformer_stages[0] < 1 or transformer_stages[-1] > n_stages - 1:
            raise ValueError(f"HybridTransformerUNet: transformer_stages {transformer_stages} must be distinct stage "
                             f"indices in [1, {n_stages - 1}] (stage 0 stays convolutional)")
        n_t = len(transformer_stages)
        fps = [features_per_stage] * n_stages if isinstance(features_per_stage, int) else list(features_per_stage)
        embed_dim = [fps[s] if e is None else int(e)
                     for s, e in zip(transformer_stages, _per_stage(embed_dim, n_t, "embed_dim"))]
        depth = [int(d) for d in _per_stage(depth, n_t, "depth")]
        num_heads = [int(h) for h in _per_stage(num_heads, n_t, "num_heads")]
        if isinstance(n_conv_per_stage_decoder, int):
            n_conv_per_stage_decoder = [n_conv_per_stage_decoder] * (n_stages - 1)
        if len(n_conv_per_stage_decoder) != n_stages - 1:
            raise ValueError(f"HybridTransformerUNet: n_conv_per_stage_decoder needs n_stages - 1 = {n_stages - 1} "
                             f"entries, got {n_conv_per_stage_decoder}")

        self.encoder = HybridEncoder(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                                     n_conv_per_stage, transformer_stages, embed_dim, depth, num_heads, mlp_ratio,
                                     qkv_bias, drop_rate, attn_drop_rate, drop_path_rate, conv_bias, norm_op,
                                     norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
                                     nonlin_first)
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_per_stage_decoder, deep_supervision,
                                   nonlin_first=nonlin_first)
        self._init_mask_token(self.encoder.output_channels[0], conv_op)
        self.apply(self._init_transformer)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
        """Segmentation logits (a list, full resolution first, when ``decoder.deep_supervision``).

        ``mask``: block mask ``(B, *grid)`` (:mod:`nnunetv2_advmim.methods.masking`) or voxel mask ``(B, 1, *spatial)``.
        """
        m = None
        if mask is not None:
            x, m = self._mask_input(x, mask)
        return self.decoder(self._stage_skips(x, m))

    def compute_conv_feature_map_size(self, input_size):
        if len(input_size) != convert_conv_op_to_dim(self.encoder.conv_op):
            raise ValueError("give the spatial input size only, e.g. (x, y, z)")
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def _init_transformer(module):
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @staticmethod
    def initialize(module):
        """What ``get_network_from_plans`` applies: He init for convs (as nnU-Net), ViT init for the transformer."""
        InitWeights_He(1e-2)(module)
        HybridTransformerUNet._init_transformer(module)
