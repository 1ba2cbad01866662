"""``nnUNetv2_advmim_benchmark``: speed and memory of the AdvMIM step next to its floor and to stock nnU-Net.

One process measures, at the same plans, configuration and batch size (``docs/benchmark.md`` explains how to
read the figures):

(a) ``stock``: the stock ``nnUNetTrainer.train_step`` (AMP and ``torch.compile`` as nnU-Net sets them);
(b) ``S`` / ``C``: one forward + backward of the hybrid S alone and of the CNN C alone (the AdvMIM trainer's own
    branches) on the labeled batch, nnU-Net's DC+CE loss with deep supervision, AMP as the AdvMIM trainer uses it;
(c) ``advmim_<mode>``: ``nnUNetTrainerAdvMIM_withAdv.train_step`` (the full method, with the discriminators that
    ``nnUNetTrainerAdvMIM`` leaves out by default) in every execution mode of
    ``nnunetv2_advmim.methods.step_modes.STEP_MODES`` (``trainer.step_mode``);
(d) the MIM pretraining steps (random, AnatoMask, MPS-AMS) through :func:`nnunetv2_advmim.benchmark.mim_steps.step_times`
    (its own interleaved run on real pretraining batches);
(e) the data pipeline alone: labeled + unlabeled batches per second from
    :func:`nnunetv2_advmim.data.semisup_loader.get_semisup_dataloaders` (nnU-Net's augmentation, nnU-Net's default
    worker count ``get_allowed_n_proc_DA()``), after the step timings so workers do not compete with them.

(a)-(c) are timed on random tensors of the plan's patch (or ``--patch``) already on the device, round-robin
(one step of each item per round, ``--warmup`` rounds dropped), device-synchronised around every step; the
figure is the median. Peak memory of an item = the bytes its trainer keeps between steps (parameters, buffers,
optimizer states) + the most its step allocates on top (CUDA: ``max_memory_allocated`` after
``reset_peak_memory_stats``, minus ``memory_allocated`` before; CPU: the process's peak resident size ``VmHWM``,
reset through ``/proc/self/clear_refs`` after ``malloc_trim``, minus the resident size before), so items that
share the process are measured alike.

Efficiency: ``E = 4 (t_S + t_C) / t_step``: per iteration each network does four passes over a
batch of B (original and masked, labeled and unlabeled), so ``4 (t_S + t_C)`` is the step's floor.

Without ``-d`` the built-in synthetic dataset (:mod:`nnunetv2_advmim.data.synthetic`, ``imagesUnlabeled`` included)
is written, planned (``nnUNetv2_plan_and_preprocess``) and its unlabeled images preprocessed
(``nnUNetv2_advmim_preprocess_unlabeled``) in a temporary nnU-Net folder (or ``--workdir``).
"""
import copy
import ctypes
import os
import platform
import statistics
import time
from importlib.metadata import version
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunetv2_advmim.benchmark.mim_steps import STRATEGIES, step_times
from nnunetv2_advmim.data.semisup_loader import get_semisup_dataloaders
from nnunetv2_advmim.methods.step_modes import STEP_MODES
from nnunetv2_advmim.runtime.atomic import write_json_atomic
from nnunetv2_advmim.runtime.memory import reset_peak_rss, status_bytes
from nnunetv2_advmim.runtime.precision import amp_dtype
from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM_withAdv

# performance targets: (key, description, threshold, comparison, where the target applies)
TARGETS = (
    ("E_fast_gpu", "fast mode E >= 0.9 (GPU)", 0.9, ">=", "cuda"),
    ("E_fast_cpu", "fast mode E >= 0.85 (CPU)", 0.85, ">=", "cpu"),
    ("memory_mode_vs_stock", "memory mode peak <= 1.5x stock step (GPU)", 1.5, "<=", "cuda"),
    ("data_vs_step", "data batches/s >= 1.5x step/s (GPU, default workers)", 1.5, ">=", "cuda"),
    ("anatomask_vs_random", "AnatoMask step <= 1.4x random-MIM step", 1.4, "<=", "any"),
)
MIB = 2 ** 20


# ---------------------------------------------------------------------------------------------- figures
def efficiency(t_s: float, t_c: float, t_step: float) -> float:
    """Efficiency ``E = floor / step`` with ``floor = 4 (t_S + t_C)`` (module docstring)."""
    if t_step <= 0:
        raise ValueError(f"step time must be positive, got {t_step}")
    return 4.0 * (t_s + t_c) / t_step


def evaluate_targets(figures: Dict[str, Optional[float]], device_type: str) -> List[dict]:
    """Each target of :data:`TARGETS` with its measured figure and pass/fail (``None``: not measured here;
    a GPU target measured on the CPU is reported with ``applies: False``)."""
    out = []
    for key, text, threshold, op, where in TARGETS:
        value = figures.get(key)
        passed = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        out.append({"key": key, "target": text, "value": value, "threshold": threshold, "op": op,
                    "applies": where in ("any", device_type), "passed": passed})
    return out


# ---------------------------------------------------------------------------------------------- plans
def override_plans(plans: dict, configuration: str, patch_size: Optional[Sequence[int]] = None,
                   batch_size: Optional[int] = None) -> dict:
    """Copy of ``plans`` with another patch and/or batch size for ``configuration``.

    A new patch size gets the network topology nnU-Net's ``ExperimentPlanner`` would give it (same rule:
    ``get_pool_and_conv_props`` at the configuration's spacing, feature map edge >= 4, 32 base features doubling
    per stage up to 320 (3D) / 512 (2D), two convolutions per stage); the patch is rounded the planner's way to a
    multiple of the total stride."""

    plans = copy.deepcopy(plans)
    if configuration not in plans["configurations"]:
        raise ValueError(f"configuration {configuration} is not in the plans (available: "
                         f"{', '.join(plans['configurations'])})")
    cfg = plans["configurations"][configuration]
    if "inherits_from" in cfg:  # resolve inheritance so the override is complete
        base = override_plans(plans, cfg["inherits_from"])["configurations"][cfg["inherits_from"]]
        cfg = {**base, **{k: v for k, v in cfg.items() if k != "inherits_from"}}
        plans["configurations"][configuration] = cfg
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        cfg["batch_size"] = int(batch_size)
    if patch_size is not None:
        spacing = cfg["spacing"]
        if len(patch_size) != len(spacing):
            raise ValueError(f"--patch needs {len(spacing)} numbers for {configuration}, got {list(patch_size)}")
        _, strides, kernels, patch, _ = get_pool_and_conv_props(spacing, list(patch_size), 4, 999999)
        n = len(strides)
        max_features = 512 if len(spacing) == 2 else 320
        arch = cfg["architecture"]["arch_kwargs"]
        arch.update(n_stages=n, features_per_stage=[min(max_features, 32 * 2 ** i) for i in range(n)],
                    kernel_sizes=[list(k) for k in kernels], strides=[list(s) for s in strides],
                    n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1))
        cfg["patch_size"] = [int(p) for p in patch]
    return plans


# ---------------------------------------------------------------------------------------------- memory
class MemoryProbe:
    """Bytes a step allocates on top of what is there before it (module docstring: CUDA allocator / CPU VmHWM)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self._libc = None
        if not self.cuda:
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = None
        self.available = self.cuda or status_bytes("VmHWM") is not None

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._before = torch.cuda.memory_allocated()
            return
        if self._libc is not None:
            self._libc.malloc_trim(0)  # return freed heap pages, so the baseline is what is really in use
        reset_peak_rss()
        self._before = status_bytes("VmRSS")

    def stop(self) -> Optional[int]:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self._before
        peak = status_bytes("VmHWM")
        return None if peak is None or self._before is None else max(0, peak - self._before)


def resident_bytes(modules: Sequence, optimizers: Sequence = ()) -> int:
    """Bytes of the distinct parameters, buffers and optimizer-state tensors (what a trainer keeps between steps)."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()

    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            add(t)
    for opt in optimizers:
        for state in opt.state.values():
            for v in state.values():
                add(v)
    return total


# ---------------------------------------------------------------------------------------------- inputs
def random_batch(trainer, device, seed: int = 0, unlabeled: bool = True) -> dict:
    """Random labeled (+ unlabeled) batch of the trainer's patch and batch size with deep-supervision targets."""
    g = torch.Generator().manual_seed(seed)
    patch, b = list(trainer.configuration_manager.patch_size), trainer.batch_size
    k = len(trainer.label_manager.foreground_labels) + 1
    batch = {"data": torch.randn((b, trainer.num_input_channels, *patch), generator=g).to(device)}
    if unlabeled:
        batch["data_unlabeled"] = torch.randn((b, trainer.num_input_channels, *patch), generator=g).to(device)
    scales = trainer._get_deep_supervision_scales() or [[1.0] * len(patch)]
    batch["target"] = [torch.randint(0, k, (b, 1, *[int(round(p * s)) for p, s in zip(patch, scale)]),
                                     generator=g).float().to(device) for scale in scales]
    return batch


def forward_backward(network, loss_fn, batch: dict, dtype) -> Callable[[], None]:
    """(b): one forward + backward of one network on the labeled batch with nnU-Net's loss (fp16 with a scaler)."""
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    device_type = batch["data"].device.type

    def step():
        network.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(network(batch["data"]), batch["target"])
        (scaler.scale(loss) if scaler is not None else loss).backward()

    return step


# ---------------------------------------------------------------------------------------------- timing
def run_round_robin(items: Dict[str, Callable[[], None]], n: int, warmup: int, device,
                    after: Optional[Dict[str, Callable[[], None]]] = None) -> Dict[str, dict]:
    """Call every item once per round, ``warmup + n`` rounds; per item the ``n`` timed seconds and the most
    memory one step allocated on top of what was there (:class:`MemoryProbe`). ``after[name]`` runs untimed
    after the item's step (e.g. freeing gradients a lone forward/backward leaves)."""
    probe = MemoryProbe(device)
    cuda = device.type == "cuda"
    out = {name: {"times_s": [], "step_bytes": None} for name in items}
    for r in range(warmup + n):
        for name, fn in items.items():
            probe.start()
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            extra = probe.stop()
            if after and name in after:
                after[name]()
            if r >= warmup:
                out[name]["times_s"].append(dt)
                if extra is not None:
                    out[name]["step_bytes"] = max(out[name]["step_bytes"] or 0, extra)
    for v in out.values():
        v["median_s"] = statistics.median(v["times_s"])
    return out


def data_pipeline_rate(trainer, n_batches: int = 20, warmup: int = 3) -> dict:
    """(e): labeled + unlabeled batches per second from the semi-supervised loader (nnU-Net's augmenter and
    worker count: ``get_allowed_n_proc_DA()``, split between the two streams as the loader does)."""

    workers = get_allowed_n_proc_DA()
    loader, val_loader = get_semisup_dataloaders(trainer, unlabeled_batch_size=trainer.batch_size)
    try:
        for _ in range(warmup):  # starts the worker processes and fills their queues once
            next(loader)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            next(loader)
        dt = time.perf_counter() - t0
    finally:
        loader.finish()
        if hasattr(val_loader, "_finish"):  # batchgenerators' augmenter (none without worker processes)
            val_loader._finish()
    return {"workers": workers, "batches": n_batches, "seconds": dt, "batches_per_s": n_batches / dt}


# ---------------------------------------------------------------------------------------------- main work
def _step_modes(requested: Optional[Sequence[str]]):
    modes = list(requested or STEP_MODES)
    unknown = [m for m in modes if m not in STEP_MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; STEP_MODES = {list(STEP_MODES)}")
    return modes


def _build(cls, plans: dict, configuration: str, dataset_json: dict, device, fold):
    t = cls(copy.deepcopy(dict(plans, continue_training=False)), configuration, fold, dataset_json, device=device)
    t.initialize()
    t.set_deep_supervision_enabled(True)
    t.network.train()
    return t


def _machine(device) -> dict:
    info = {"host_cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    try:
        info["nnunetv2"] = version("nnunetv2")
    except Exception:
        pass
    return info


def load_benchmark_plans(dataset: str, configuration: str, plans_name: str, patch_size, batch_size):
    """(dataset name, its preprocessed folder, the plans with ``--patch`` / ``--batch`` applied, dataset.json). A
    dataset or plans file that is not there fails with the command that makes it."""
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError:
        raise FileNotFoundError(f"dataset {dataset} is in neither nnUNet_raw nor nnUNet_preprocessed "
                                f"({nnUNet_preprocessed}): check the ID and the nnUNet_* variables, run "
                                f"nnUNetv2_plan_and_preprocess -d {dataset} -c {configuration}, or leave out -d to "
                                f"benchmark the built-in synthetic dataset") from None
    folder = join(nnUNet_preprocessed, name)
    plans_file = join(folder, plans_name + ".json")
    if not os.path.isfile(plans_file):
        raise FileNotFoundError(f"{plans_file} does not exist: run nnUNetv2_plan_and_preprocess -d {dataset} "
                                f"-c {configuration} first (or pass -p with the plans identifier)")
    plans = override_plans(load_json(plans_file), configuration, patch_size, batch_size)
    return name, folder, plans, load_json(join(folder, "dataset.json"))


def step_items(stock, adv, step_modes: Sequence[str], amp: str, dev):
    """(items, untimed clean-up after S and C, autocast dtype): the timed steps (a)-(c) on fixed random batches. S
    and C alone run with the dtype the AdvMIM step autocasts to, so the floor compares like with like."""
    if hasattr(adv, "amp"):
        adv.amp = amp
    adv.on_train_epoch_start()
    dtype = adv.autocast_dtype() if hasattr(adv, "autocast_dtype") else amp_dtype(amp, dev)
    b_stock, b_adv = random_batch(stock, dev, 0, unlabeled=False), random_batch(adv, dev, 1)
    S, C = adv.branches["hybrid"], adv.branches["cnn"]

    def adv_step(mode):
        def step():
            if mode is not None:
                adv.step_mode = mode
            adv.train_step(b_adv)
        return step

    items = {"stock": lambda: stock.train_step(b_stock),
             "S": forward_backward(S, adv.loss, b_adv, dtype),
             "C": forward_backward(C, adv.loss, b_adv, dtype)}
    for m in step_modes:
        items[f"advmim_{m or 'step'}"] = adv_step(m)
    free_grads = {"S": lambda: S.zero_grad(set_to_none=True), "C": lambda: C.zero_grad(set_to_none=True)}
    return items, free_grads, dtype


def add_memory(timed: Dict[str, dict], stock, adv, step_modes: Sequence[str]) -> None:
    """Replace each item's ``step_bytes`` by MiB figures: resident (what its trainer keeps between steps: networks,
    optimizer states; every AdvMIM mode keeps both branches and discriminators), step and peak = resident + step."""
    S, C = adv.branches["hybrid"], adv.branches["cnn"]
    adv_modules = list(adv.branches.values()) + list(getattr(adv, "discriminators", {}).values())
    adv_opts = list(adv.branch_optimizers.values()) + list((getattr(adv, "disc_optimizers", None) or {}).values())
    resident = {"stock": resident_bytes([stock.network], [stock.optimizer]),
                "S": resident_bytes([S]), "C": resident_bytes([C])}
    for m in step_modes:
        resident[f"advmim_{m or 'step'}"] = resident_bytes(adv_modules, adv_opts)
    for k, v in timed.items():
        v["resident_mib"] = resident[k] / MIB
        v["step_mib"] = None if v["step_bytes"] is None else v["step_bytes"] / MIB
        v["peak_mib"] = None if v["step_bytes"] is None else (resident[k] + v["step_bytes"]) / MIB
        del v["step_bytes"]


def mode_rows(timed: Dict[str, dict], step_modes: Sequence[str]) -> Dict[str, dict]:
    """Per AdvMIM step mode: median seconds, E against the floor 4 (t_S + t_C), and its time and peak memory
    relative to the stock step."""
    t_s, t_c, t_stock = timed["S"]["median_s"], timed["C"]["median_s"], timed["stock"]["median_s"]
    rows = {}
    for m in step_modes:
        v = timed[f"advmim_{m or 'step'}"]
        rows[m or "step"] = {
            "median_s": v["median_s"], "E": efficiency(t_s, t_c, v["median_s"]),
            "ratio_to_stock": v["median_s"] / t_stock,
            "memory_ratio_to_stock": (v["peak_mib"] / timed["stock"]["peak_mib"])
            if v["peak_mib"] is not None and timed["stock"]["peak_mib"] else None}
    return rows


def mim_timings(name: str, folder: str, plans: dict, plans_name: str, overridden: bool, configuration: str, fold,
                n: int, warmup: int, device: str) -> dict:
    """(d): median step seconds of the MIM strategies from mim_steps' own interleaved run on real pretraining
    batches. step_times reads its plans from a file, so plans changed by ``--patch`` / ``--batch`` go to a
    temporary plans file next to the real one, removed afterwards."""
    tmp_plans, n_proc_da = None, os.environ.get("nnUNet_n_proc_DA")  # step_times sets it to 0 if unset
    try:
        use = plans_name
        if overridden:
            use = f"{plans_name}__advmim_benchmark_{os.getpid()}"
            tmp_plans = join(folder, use + ".json")
            if os.path.exists(tmp_plans):
                raise FileExistsError(f"{tmp_plans} exists; remove it (left by an interrupted benchmark)")
            write_json_atomic(tmp_plans, dict(plans, plans_name=use), indent=None)
        mim = step_times(name, configuration, str(fold), n_steps=n, plans=use, device=device, warmup=warmup, n_val=1)
    finally:
        if tmp_plans and os.path.exists(tmp_plans):
            os.remove(tmp_plans)
        if n_proc_da is None:
            os.environ.pop("nnUNet_n_proc_DA", None)
    med = {s: float(np.median(v)) for s, v in mim["times"].items()}
    short = dict(zip(STRATEGIES, ("random", "anatomask", "mpsams")))
    out = {short[s]: {"median_s": med[s], "ratio_to_random": med[s] / med[STRATEGIES[0]]} for s in STRATEGIES}
    out["note"] = "mim_benchmark.step_times: interleaved among the MIM strategies, real batches"
    return out


def data_timing(adv, data_batches: int, rows: Dict[str, dict]) -> dict:
    """(e) with its rate relative to the fastest AdvMIM step's; a fold the loader cannot serve (e.g. no unlabeled
    pool) is reported as skipped rather than ending the benchmark."""
    fastest = min(rows.values(), key=lambda r: r["median_s"])["median_s"]
    try:
        data = data_pipeline_rate(adv, data_batches)
    except (RuntimeError, FileNotFoundError) as e:
        return {"skipped": str(e)}
    data["ratio_to_fastest_step"] = data["batches_per_s"] * fastest
    return data


def target_figures(rows: Dict[str, dict], result: dict, device_type: str) -> Dict[str, Optional[float]]:
    """The measured figure of every :data:`TARGETS` key. E and memory come from the ``fast`` and ``memory`` modes,
    or from the fastest / leanest mode measured when ``--modes`` left those out."""
    fast = rows.get("fast") or min(rows.values(), key=lambda r: r["median_s"])
    mem = rows.get("memory") or min(rows.values(), key=lambda r: r["memory_ratio_to_stock"] or 1e9)
    return {"E_fast_gpu": fast["E"] if device_type == "cuda" else None,
            "E_fast_cpu": fast["E"] if device_type == "cpu" else None,
            "memory_mode_vs_stock": mem["memory_ratio_to_stock"],
            "data_vs_step": result.get("data", {}).get("ratio_to_fastest_step"),
            "anatomask_vs_random": result["mim"]["anatomask"]["ratio_to_random"] if "mim" in result else None}


def run_benchmark(dataset: str, configuration: str, plans_name: str = "nnUNetPlans", device: str = "cpu",
                  n: int = 5, warmup: int = 2, patch_size=None, batch_size=None, modes=None, amp: str = "auto",
                  skip_data: bool = False, skip_mim: bool = False, data_batches: int = 20, fold="0") -> dict:
    """Every measurement of the module docstring; returns the JSON-able result (see ``docs/benchmark.md``)."""

    dev = torch.device(device)
    phases, t_phase = {}, time.perf_counter()
    name, folder, plans, dataset_json = load_benchmark_plans(dataset, configuration, plans_name, patch_size,
                                                             batch_size)
    fold = fold if fold == "all" else int(fold)
    step_modes = _step_modes(modes)

    stock = _build(nnUNetTrainer, plans, configuration, dataset_json, dev, fold)
    adv = _build(nnUNetTrainerAdvMIM_withAdv, plans, configuration, dataset_json, dev, fold)
    items, free_grads, dtype = step_items(stock, adv, step_modes, amp, dev)
    phases["build"], t_phase = time.perf_counter() - t_phase, time.perf_counter()
    timed = run_round_robin(items, n, warmup, dev, after=free_grads)
    phases["steps"], t_phase = time.perf_counter() - t_phase, time.perf_counter()
    add_memory(timed, stock, adv, step_modes)
    rows = mode_rows(timed, step_modes)

    result = {"settings": {"dataset": name, "configuration": configuration, "plans": plans_name, "fold": fold,
                           "patch_size": list(adv.configuration_manager.patch_size), "batch_size": adv.batch_size,
                           "unlabeled_batch_size": adv.batch_size, "amp": amp,
                           "amp_dtype": str(dtype).replace("torch.", "") if dtype else "off",
                           "nnUNet_compile": os.environ.get("nnUNet_compile", "unset (nnU-Net: on for CUDA)"),
                           "stock_compiled": bool(stock._do_i_compile()),
                           "advmim_compiled": bool(adv.compiles_networks() if hasattr(adv, "compiles_networks")
                                                   else adv._do_i_compile()), "n": n, "warmup": warmup,
                           "memory": "CUDA max_memory_allocated" if dev.type == "cuda" else
                           "CPU VmHWM reset per step (in-process) + resident tensors",
                           "steps": "random tensors on the device"},
              "machine": _machine(dev), "items": timed,
              "floor_s": 4 * (timed["S"]["median_s"] + timed["C"]["median_s"]), "modes": rows}
    if not skip_mim:
        result["mim"] = mim_timings(name, folder, plans, plans_name, patch_size is not None or batch_size is not None,
                                    configuration, fold, n, warmup, device)
        phases["mim"], t_phase = time.perf_counter() - t_phase, time.perf_counter()
    if not skip_data:  # after the steps, so worker processes do not compete with them
        result["data"] = data_timing(adv, data_batches, rows)
        phases["data"] = time.perf_counter() - t_phase
    result["phases_s"] = phases
    result["targets"] = evaluate_targets(target_figures(rows, result, dev.type), dev.type)
    return result
