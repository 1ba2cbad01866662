"""Network classes referenced from nnU-Net plans by dotted path (``nnunetv2_advmim.architectures.<Class>``)."""
from nnunetv2_advmim.architectures.hybrid_unet import HybridTransformerUNet
from nnunetv2_advmim.architectures.maskable import MaskablePlainConvUNet, MaskableResidualEncoderUNet

__all__ = ["HybridTransformerUNet", "MaskablePlainConvUNet", "MaskableResidualEncoderUNet"]
