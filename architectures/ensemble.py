"""S and C of AdvMIM as one network that predicts with the mean of both softmaxes."""
from typing import List, Union

import torch
from torch import nn

Logits = Union[torch.Tensor, List[torch.Tensor]]


class AdvMIMEnsemble(nn.Module):
    """S and C in one module whose output is ``log(mean(softmax(S(x)), softmax(C(x))))``.

    nnU-Net's predictor takes logits and applies a softmax; ``softmax(log p_mean) = p_mean`` exactly, so the
    prediction is the mean of both softmaxes. State-dict keys: ``hybrid.*`` and ``cnn.*``. With deep supervision
    on, one combined map per resolution.
    """

    def __init__(self, hybrid: nn.Module, cnn: nn.Module):
        super().__init__()
        self.hybrid = hybrid
        self.cnn = cnn

    @staticmethod
    def combine(a: Logits, b: Logits) -> Logits:
        if isinstance(a, (list, tuple)):
            return [AdvMIMEnsemble.combine(i, j) for i, j in zip(a, b)]
        p = (torch.softmax(a.float(), 1) + torch.softmax(b.float(), 1)) / 2
        return torch.log(p.clamp_min(1e-12))

    def forward(self, x: torch.Tensor) -> Logits:
        return self.combine(self.hybrid(x), self.cnn(x))
