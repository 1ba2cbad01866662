"""Time one training iteration of AdvMIM trainers next to the stock ``nnUNetTrainer`` at the same plans and batch.

    python benchmarks/advmim_step.py -d 950 -c 3d_fullres [-tr nnUNetTrainerAdvMIM nnUNetTrainerCTCT]
        [-n 5] [-device cpu|cuda]

Each trainer is built exactly as ``nnUNetv2_train`` builds it (plans, batch size, deep supervision, AMP on CUDA);
the batch is random tensors of the plan's patch size (data loading is not timed, it runs in worker processes
during training). Steps of the trainers are interleaved (one warm-up step each, then ``n`` rounds) so a busy
machine slows them alike; the median per trainer and its ratio to the stock step are printed, plus the peak GPU
memory of one step on CUDA. Needs a planned dataset; AdvMIM trainers also need its unlabeled pool (label budget
or ``imagesUnlabeled``) only for training, not here.
"""
import argparse
import json
import os
import time

import numpy as np
import torch


def _trainer(cls, preprocessed: str, configuration: str, device: torch.device):
    with open(os.path.join(preprocessed, "nnUNetPlans.json")) as f:
        plans = json.load(f)
    with open(os.path.join(preprocessed, "dataset.json")) as f:
        dataset_json = json.load(f)
    plans["continue_training"] = False
    t = cls(plans, configuration, 0, dataset_json, device=device)
    t.initialize()
    t.set_deep_supervision_enabled(True)
    t.network.train()
    return t


def _batch(trainer, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    patch = trainer.configuration_manager.patch_size
    b, n_in = trainer.batch_size, trainer.num_input_channels
    k = len(trainer.label_manager.foreground_labels) + 1
    batch = {"data": torch.randn((b, n_in, *patch), generator=g),
             "data_unlabeled": torch.randn((b, n_in, *patch), generator=g)}
    target = []
    for scale in trainer._get_deep_supervision_scales():
        shape = [int(round(p * s)) for p, s in zip(patch, scale)]
        target.append(torch.randint(0, k, (b, 1, *shape), generator=g).float())
    batch["target"] = target
    return batch


def benchmark(dataset: str, configuration: str, trainers, n: int = 5, device: str = "cpu") -> dict:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2_advmim.unlabeled import preprocessed_dataset_folder
    import nnunetv2
    dev = torch.device(device)
    folder = preprocessed_dataset_folder(dataset)
    classes = {"nnUNetTrainer": nnUNetTrainer}
    from nnunetv2_advmim.trainers import nnUNetTrainerAdvMIM as module
    for name in trainers:
        cls = getattr(module, name, None) or recursive_find_python_class(
            os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer"), name, "nnunetv2.training.nnUNetTrainer")
        if cls is None:
            raise ValueError(f"trainer {name} not found")
        classes[name] = cls
    built = {name: _trainer(cls, folder, configuration, dev) for name, cls in classes.items()}
    for t in built.values():
        if hasattr(t, "on_train_epoch_start"):
            t.on_train_epoch_start()
    times = {name: [] for name in built}
    peak = {}
    for r in range(n + 1):
        for name, t in built.items():
            batch = _batch(t, seed=r)
            if dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            t.train_step(batch)
            if dev.type == "cuda":
                torch.cuda.synchronize()
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated())
            if r > 0:  # round 0 warms up
                times[name].append(time.perf_counter() - t0)
    base = float(np.median(times["nnUNetTrainer"]))
    t = built["nnUNetTrainer"]
    result = {"patch_size": list(t.configuration_manager.patch_size), "batch_size": t.batch_size,
              "device": str(dev), "threads": torch.get_num_threads(), "trainers": {}}
    for name, ts in times.items():
        result["trainers"][name] = {"median_s": float(np.median(ts)), "ratio": float(np.median(ts)) / base,
                                    "peak_gpu_memory_gib": peak[name] / 2 ** 30 if name in peak else None}
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/advmim_step.py", description=__doc__.split("\n")[0])
    parser.add_argument("-d", required=True, help="dataset ID or name (planned)")
    parser.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres or 2d")
    parser.add_argument("-tr", nargs="+", default=["nnUNetTrainerAdvMIM"], help="trainers next to nnUNetTrainer")
    parser.add_argument("-n", type=int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument("-device", default="cpu")
    args = parser.parse_args(argv)
    from nnunetv2_advmim.input_checks import require_planned
    try:  # a clear error naming the command to run first, not a traceback (issue 9)
        require_planned(args.d, args.c, command="the benchmark")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    r = benchmark(args.d, args.c, args.tr, args.n, args.device)
    print(f"patch {r['patch_size']}, batch {r['batch_size']} (+ the same unlabeled), device {r['device']}, "
          f"{r['threads']} threads, median of {args.n} steps:")
    for name, v in r["trainers"].items():
        mem = f", peak GPU memory {v['peak_gpu_memory_gib']:.2f} GiB" if v["peak_gpu_memory_gib"] is not None else ""
        print(f"  {name:<32s} {v['median_s']:8.3f} s/step  x{v['ratio']:.2f}{mem}")


if __name__ == "__main__":
    main()
