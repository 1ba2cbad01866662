"""Network classes referenced from nnU-Net plans by dotted path (``nnunetv2_advmim.architectures.<Class>``)."""
