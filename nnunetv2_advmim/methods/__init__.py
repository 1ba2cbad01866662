"""The methods on tensors: AdvMIM's loss and step, its loss terms and adversarial parts, block masks, masked image
modeling (AnatoMask, MPS-AMS), the EMA teacher and the schedules. Nothing here needs a dataset or a trainer."""
