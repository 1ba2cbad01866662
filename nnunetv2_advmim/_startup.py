"""Run at interpreter start-up by ``nnunetv2_advmim.pth`` (see ``nnunetv2_advmim.env``).

A failure here must never break Python start-up, so it is reported, not raised.
"""
try:
    from nnunetv2_advmim.env import register_trainer_folder

    register_trainer_folder()
except Exception as e:  # pragma: no cover - defensive
    import sys

    print(f"nnunetv2_advmim: could not add its trainers to nnUNet_extTrainer ({e}); "
          f"run `eval \"$(nnUNetv2_advmim_env)\"` to set it explicitly.", file=sys.stderr)
