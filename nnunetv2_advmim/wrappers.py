"""The module behind the wrappers training puts around a network (DDP, ``torch.compile``), for every layer of the
package: state dicts are saved from it, and a no-grad forward under DDP must bypass the DDP wrapper."""
from torch import nn


def unwrap_model(model: nn.Module, keep_compiled: bool = False) -> nn.Module:
    """The plain module behind DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers: what state dicts
    are saved from. ``keep_compiled`` removes only DDP (a no-grad forward that must not prepare a reduction)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif not keep_compiled and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model
