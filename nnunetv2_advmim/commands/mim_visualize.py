"""``nnUNetv2_advmim_mim_visualize``: the visual check of a trained MIM pretraining run
(:mod:`nnunetv2_advmim.evaluation.mim_examples`) for any of its checkpoints::

    nnUNetv2_advmim_mim_visualize -d D -c C -f F -tr nnUNetTrainerAnatoMask -o examples.png
"""
import argparse
import os

import torch
from nnunetv2.run.run_training import get_trainer_from_args
from nnunetv2_advmim.cli import DefaultsHelpFormatter


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_mim_visualize",
        description="Save a PNG of masked validation images, their masks (AnatoMask's hard / MPS-AMS's lesion-like "
                    "blocks in red), targets and reconstructions from a trained MIM pretraining run.")
    parser.add_argument("-d", required=True, help="dataset ID or name")
    parser.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument("-f", required=True, help="fold (0-4 or all)")
    parser.add_argument("-tr", required=True, help="MIM trainer, e.g. nnUNetTrainerAnatoMask")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file in the fold folder")
    parser.add_argument("-n", type=int, default=4, help="number of images (default 4)")
    parser.add_argument("-o", default=None, help="output PNG (default: <fold folder>/mim_examples_<chk>.png)")
    parser.add_argument("-device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    fold = args.f if args.f == "all" else int(args.f)
    trainer = get_trainer_from_args(args.d, args.c, fold, args.tr, args.p, device=torch.device(args.device))
    if not hasattr(trainer, "save_mim_examples"):
        parser.exit(1, f"nnUNetv2_advmim_mim_visualize: error: {args.tr} is not a MIM pretraining trainer "
                       f"(nnUNetTrainerMIM, nnUNetTrainerAnatoMask, nnUNetTrainerMPSAMS and their variants)\n")
    chk = os.path.join(trainer.output_folder, args.chk)
    if not os.path.isfile(chk):
        parser.exit(1, f"nnUNetv2_advmim_mim_visualize: error: {chk} does not exist; train first with "
                       f"`nnUNetv2_train {args.d} {args.c} {args.f} -tr {args.tr}` or pass -chk\n")
    trainer.load_checkpoint(chk)
    out = args.o or os.path.join(trainer.output_folder, f"mim_examples_{os.path.splitext(args.chk)[0]}.png")
    trainer.save_mim_examples(out, args.n, args.seed)
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
