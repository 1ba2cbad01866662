"""Benchmark (not a test): HybridTransformerUNet next to the plan's CNN, same plans, same run.

For a 3D and a 2D synthetic dataset (``nnunetv2_advmim.data.synthetic``) this script runs nnU-Net's real
fingerprint extraction and experiment planning in a temporary folder, builds the plan's network
(``PlainConvUNet``) and the hybrid derived from the same plan (``nnUNetv2_advmim_plan_hybrid`` logic), and
prints for each: parameters, the time of one training step's forward + backward (deep supervision on,
cross-entropy on every scale, the plan's batch and patch size; median over ``--iters`` after
``--warmup``; wall time, and on the CPU also the process CPU time, which a loaded machine disturbs less)
and the peak memory of that step. Every network is measured in its own fresh process:

- CUDA: ``torch.cuda.max_memory_allocated`` (autocast fp16 as nnU-Net trains);
- CPU: peak resident set size of that process during the steps (``VmHWM`` after resetting it), and the
  increase over the resident size just before the first step (interpreter, network and data are in the
  first number only).

Usage::

    python -m nnunetv2_advmim.benchmark.architectures     # 3D 48^3 and 2D 96x96 synthetic plans, GPU if any
    python -m nnunetv2_advmim.benchmark.architectures --shape3d 160 160 160 --shape2d 512 512 --device cuda
        # realistic plans
"""
import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

from nnunetv2_advmim.runtime.atomic import write_json_atomic
from nnunetv2_advmim.runtime.memory import reset_peak_rss, status_bytes


MIB = 2 ** 20


def _status_mib(field: str) -> float:
    value = status_bytes(field)
    return float("nan") if value is None else value / MIB


def _measure(arch: dict, in_ch: int, n_classes: int, batch: int, patch, device: str, warmup: int, iters: int,
             threads: int, queue) -> None:
    """Child process: build one network and time forward + backward of a deep-supervised CE step."""
    import torch
    import torch.nn.functional as F
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 in_ch, n_classes, deep_supervision=True).to(device)
    net.train()
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(batch, in_ch, *patch, device=device)
    y = torch.randint(0, n_classes, (batch, *patch), device=device)
    cuda = device.startswith("cuda")

    def step():
        with torch.autocast("cuda", enabled=cuda, dtype=torch.float16):
            out = net(x)
            loss = 0
            for o in out:
                t = F.interpolate(y[:, None].float(), size=o.shape[2:], mode="nearest")[:, 0].long()
                loss = loss + F.cross_entropy(o.float(), t)
        loss.backward()
        net.zero_grad(set_to_none=True)

    rss_before = _status_mib("VmRSS")
    reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    times, cpu_times = [], []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    result = {"params": params, "ms": 1000 * statistics.median(times), "ms_min": 1000 * min(times),
              "cpu_ms": 1000 * statistics.median(cpu_times)}
    if cuda:
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = _status_mib("VmHWM")  # per process image: not inherited from the parent like ru_maxrss
        result["peak_mib"] = peak
        result["step_mib"] = peak - rss_before
    queue.put(result)


def _plan(tmp: str, dataset_id: int, dim: int, shape, spacing) -> dict:
    """Synthetic dataset -> nnU-Net fingerprint + experiment planning (in this process); return the plans."""
    from nnunetv2_advmim.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(os.environ["nnUNet_raw"], dataset_id, f"Bench{dim}D", dim=dim, n_train=2, n_unlabeled=0,
                           n_test=0, shape=shape, spacing=spacing, seed=dataset_id)
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=False, clean=True, verbose=False)
    plans_identifier = plan_experiments([dataset_id])
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    with open(os.path.join(os.environ["nnUNet_preprocessed"], convert_id_to_dataset_name(dataset_id),
                           f"{plans_identifier}.json")) as f:
        return json.load(f)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape3d", type=int, nargs=3, default=[48, 48, 48], help="3D image shape (z y x)")
    parser.add_argument("--spacing3d", type=float, nargs=3, default=[1.0, 1.0, 1.0])
    parser.add_argument("--shape2d", type=int, nargs=2, default=[96, 96], help="2D image shape (y x)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--depth", type=int, default=None, help="hybrid transformer depth (default 4)")
    parser.add_argument("--transformer-stages", type=int, default=None, help="last k stages (default 2)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            os.environ[k] = os.path.join(tmp, k)
            os.makedirs(os.environ[k])
        import torch  # after the nnU-Net paths are set (nnunetv2.paths reads them at import)

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        threads = args.threads or os.cpu_count()
        from nnunetv2_advmim.commands.plan_hybrid import make_hybrid_plans

        cases = [("3d_fullres", _plan(tmp, 981, 3, args.shape3d, args.spacing3d)),
                 ("2d", _plan(tmp, 982, 2, args.shape2d, None))]
        ctx = mp.get_context("spawn")
        rows = []
        for configuration, plans in cases:
            conf = plans["configurations"][configuration]
            hybrid = make_hybrid_plans(plans, "bench_hybrid", [configuration], depth=args.depth,
                                       transformer_stages=args.transformer_stages)
            for label, arch in (("CNN (plan)", conf["architecture"]),
                                ("HybridTransformerUNet", hybrid["configurations"][configuration]["architecture"])):
                queue = ctx.Queue()
                proc = ctx.Process(target=_measure, args=(arch, 1, 4, conf["batch_size"], conf["patch_size"], device,
                                                          args.warmup, args.iters, threads, queue))
                proc.start()
                result = queue.get()
                proc.join()
                rows.append(dict(configuration=configuration, network=label, batch=conf["batch_size"],
                                 patch=conf["patch_size"], **result))

        gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
        print(f"\ndevice: {device}{' (' + gpu + ')' if gpu else ''}, torch {torch.__version__}, threads {threads}, "
              f"median of {args.iters} steps after {args.warmup} warm-up")
        mem = "peak alloc MiB" if device.startswith("cuda") else "peak RSS MiB (step delta)"
        print(f"{'configuration':<12} {'batch x patch':<20} {'network':<22} {'params':>11} {'fwd+bwd ms':>11} "
              f"{'ratio':>6} {'CPU-time ms':>11} {'ratio':>6}  {mem}")
        for i, r in enumerate(rows):
            base, cpu_base = rows[i - i % 2]["ms"], rows[i - i % 2]["cpu_ms"]
            memory = f"{r['peak_mib']:.0f}" + (f" ({r['step_mib']:+.0f})" if "step_mib" in r else "")
            print(f"{r['configuration']:<12} {str(r['batch']) + ' x ' + 'x'.join(map(str, r['patch'])):<20} "
                  f"{r['network']:<22} {r['params']:>11,} {r['ms']:>11.1f} {r['ms'] / base:>6.2f} "
                  f"{r['cpu_ms']:>11.1f} {r['cpu_ms'] / cpu_base:>6.2f}  {memory}")
        if args.json:
            write_json_atomic(args.json, {"device": device, "gpu": gpu, "rows": rows}, indent=2)


if __name__ == "__main__":
    sys.exit(main())
