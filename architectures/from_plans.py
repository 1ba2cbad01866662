"""Every rule that turns a plans entry into one of our networks, written once.

nnU-Net plans name a network class by dotted path plus its constructor arguments. From such an entry this
module derives:

- the *maskable* version of a CNN plan (``PlainConvUNet`` -> ``MaskablePlainConvUNet``, ``ResidualEncoderUNet``
  -> ``MaskableResidualEncoderUNet``; the hybrid is maskable already): same arguments, plus ``mask_token``;
- the *hybrid* CNN-Transformer U-Net converted from a CNN plan (:func:`hybrid_arch_kwargs`: the plan's stages,
  features, kernels and strides plus the transformer settings);
- AdvMIM's two branches (S = hybrid, C = maskable CNN) and their prediction ensemble (:func:`build_branch`);
- the pretraining network (downstream network, maskable, outputs = input channels; :func:`build_pretraining_network`)
  and AdvMIM's two networks for their joint pretraining (:func:`build_pretraining_branch`).

Classes are matched by their class name, so a plan may name them by any import path
(``nnunetv2_advmim.architectures.MaskablePlainConvUNet`` or ``...architectures.maskable.MaskablePlainConvUNet``).
"""
import copy
from typing import Sequence, Tuple

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from nnunetv2_advmim.architectures.ensemble import AdvMIMEnsemble
from nnunetv2_advmim.methods.advmim import BRANCHES

HYBRID = "nnunetv2_advmim.architectures.HybridTransformerUNet"
MASKABLE_OF = {  # stock dynamic-network-architectures class -> its maskable subclass
    "dynamic_network_architectures.architectures.unet.PlainConvUNet":
        "nnunetv2_advmim.architectures.MaskablePlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet":
        "nnunetv2_advmim.architectures.MaskableResidualEncoderUNet",
}
# ResidualEncoderUNet-only arguments that the hybrid's plain conv stages do not take
RESENC_ONLY = ("n_blocks_per_stage", "block", "bottleneck_channels", "stem_channels")
TRANSFORMER_DEFAULTS = dict(transformer_stages=2, embed_dim=None, depth=4, num_heads=8, mlp_ratio=4.0,
                            drop_path_rate=0.1)
# hybrid-only arguments, dropped when C is built from a hybrid plan
TRANSFORMER_ONLY = tuple(TRANSFORMER_DEFAULTS) + ("qkv_bias", "drop_rate", "attn_drop_rate")


def class_name(dotted: str) -> str:
    return dotted.split(".")[-1]


def is_hybrid(network_class_name: str) -> bool:
    return class_name(network_class_name) == class_name(HYBRID)


def _stock_of(network_class_name: str):
    """The stock class a plan's (stock or maskable) CNN class stands for, or None."""
    for stock, maskable in MASKABLE_OF.items():
        if class_name(network_class_name) in (class_name(stock), class_name(maskable)):
            return stock
    return None


def maskable_class_name(network_class_name: str) -> str:
    """Dotted name of the maskable version of a plans' network class (the hybrid is maskable itself)."""
    if is_hybrid(network_class_name):
        return network_class_name
    stock = _stock_of(network_class_name)
    if stock is None:
        raise ValueError(f"The network class '{network_class_name}' named in the plans (architecture."
                         f"network_class_name) has no maskable version: masked training needs a PlainConvUNet or "
                         f"ResidualEncoderUNet plan ({sorted(MASKABLE_OF)}, their maskable subclasses) or {HYBRID}. "
                         f"Use nnU-Net's default plans (nnUNetPlans or the ResEnc presets) or plans written by "
                         f"nnUNetv2_advmim_plan_hybrid.")
    return MASKABLE_OF[stock]


def hybrid_arch_kwargs(arch_kwargs: dict, **transformer_kwargs) -> dict:
    """Plan arguments of ``PlainConvUNet``/``ResidualEncoderUNet`` -> arguments of ``HybridTransformerUNet``.

    ResidualEncoderUNet plans keep stages, features, kernels and strides; their residual blocks become two
    plain convs per conv stage (``n_conv_per_stage = 2``, the default nnU-Net plan). ``transformer_kwargs``
    that are not None replace :data:`TRANSFORMER_DEFAULTS`.
    """
    kw = {k: copy.deepcopy(v) for k, v in arch_kwargs.items() if k not in RESENC_ONLY}
    if "n_conv_per_stage" not in kw:
        kw["n_conv_per_stage"] = [2] * int(arch_kwargs["n_stages"])
    settings = dict(TRANSFORMER_DEFAULTS)
    settings.update({k: v for k, v in transformer_kwargs.items() if v is not None})
    kw.update(settings)
    return kw


def _required_imports(req_import: Sequence[str], kwargs: dict) -> list:
    return [k for k in req_import if k in kwargs]


def branch_architecture(kind: str, network_class_name: str, arch_kwargs: dict, req_import: Sequence[str]):
    """(class name, kwargs, kwargs to import) of AdvMIM's branch ``kind`` ('hybrid' = S, 'cnn' = C) from a plan.

    S: ``HybridTransformerUNet`` with the plan's CNN arguments plus :data:`TRANSFORMER_DEFAULTS` (a plan that
    already names the hybrid keeps its own settings). C: the maskable subclass of the plan's CNN; for a hybrid
    plan, a ``MaskablePlainConvUNet`` with the same stages.
    """
    kw = copy.deepcopy(dict(arch_kwargs))
    if kind == "hybrid":
        if not is_hybrid(network_class_name):
            maskable_class_name(network_class_name)  # a clear error for any other network class
            kw = hybrid_arch_kwargs(kw)
        return HYBRID, kw, _required_imports(req_import, kw)
    if kind == "cnn":
        if is_hybrid(network_class_name):
            for k in TRANSFORMER_ONLY:
                kw.pop(k, None)
            return MASKABLE_OF["dynamic_network_architectures.architectures.unet.PlainConvUNet"], kw, \
                _required_imports(req_import, kw)
        return maskable_class_name(network_class_name), kw, list(req_import)
    raise ValueError(f"unknown AdvMIM branch {kind!r}; expected one of {BRANCHES}")


def pretraining_arch(network_class_name: str, arch_kwargs: dict, req_import: Sequence[str], hybrid: bool = False,
                     **transformer_kwargs) -> Tuple[str, dict, tuple]:
    """(class name, kwargs, kwargs to import) of the MIM pretraining network: the plans' downstream network,
    maskable; with ``hybrid`` the hybrid converted from a CNN plan."""
    kwargs = dict(arch_kwargs)
    if hybrid and not is_hybrid(network_class_name):
        kwargs = hybrid_arch_kwargs(kwargs, **transformer_kwargs)
        return HYBRID, kwargs, tuple(_required_imports(req_import, kwargs))
    return maskable_class_name(network_class_name), kwargs, tuple(req_import)


def build_branch(kind: str, configuration_manager, num_input_channels: int, num_output_channels: int,
                 enable_deep_supervision: bool) -> nn.Module:
    """S ('hybrid'), C ('cnn') or both ('ensemble', :class:`AdvMIMEnsemble`) from a configuration's plans entry."""
    if kind == "ensemble":
        return AdvMIMEnsemble(*(build_branch(k, configuration_manager, num_input_channels, num_output_channels,
                                             enable_deep_supervision) for k in BRANCHES))
    cm = configuration_manager
    name, kw, imp = branch_architecture(kind, cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                        cm.network_arch_init_kwargs_req_import)
    return get_network_from_plans(name, kw, imp, num_input_channels, num_output_channels, allow_init=True,
                                  deep_supervision=enable_deep_supervision)


def build_pretraining_network(configuration_manager, num_input_channels: int, hybrid: bool = False,
                              **transformer_kwargs) -> nn.Module:
    """The plans' downstream network, maskable, ``num_input_channels`` outputs, no deep supervision.

    Its state-dict keys are the stock network's plus ``mask_token``, and only ``decoder.seg_layers.*`` differ in
    shape, which nnU-Net's ``load_pretrained_weights`` skips: the checkpoint loads with ``-pretrained_weights``.
    """
    cm = configuration_manager
    name, kwargs, req = pretraining_arch(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                         cm.network_arch_init_kwargs_req_import, hybrid, **transformer_kwargs)
    return get_network_from_plans(name, kwargs, req, num_input_channels, num_input_channels, allow_init=True,
                                  deep_supervision=False)


def build_pretraining_branch(kind: str, configuration_manager, num_input_channels: int) -> nn.Module:
    """AdvMIM's network ``kind`` ('hybrid' = S, 'cnn' = C, as :func:`build_branch` builds it) for MIM pretraining:
    ``num_input_channels`` outputs, no deep supervision. Its keys are those of AdvMIM's network but for
    ``decoder.seg_layers.*``, which fine-tuning skips."""
    cm = configuration_manager
    name, kw, imp = branch_architecture(kind, cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                        cm.network_arch_init_kwargs_req_import)
    return get_network_from_plans(name, kw, imp, num_input_channels, num_input_channels, allow_init=True,
                                  deep_supervision=False)
