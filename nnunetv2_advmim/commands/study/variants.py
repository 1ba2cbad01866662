"""The study's trainer variants: the source of the module ``study_trainers`` the study writes into its folder (one
``OneChoice`` variant per trainer with the study's schedule), importable in a fresh ``nnUNetv2_train`` process."""
import importlib.util
import inspect
import os
from typing import Optional, Sequence

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

VARIANTS_MODULE = "study_trainers"


def variant_name(trainer: str, epochs: int, iterations: int) -> str:
    return f"{trainer}_study{epochs}x{iterations}"


def _import_lines(cls, alias: str) -> str:
    """Source that binds ``alias`` to ``cls`` in a fresh process (package import where possible, else by file)."""
    module = cls.__module__
    path = os.path.abspath(_source_file(cls))
    if module.split(".")[0] in ("nnunetv2", "nnunetv2_advmim") and importlib.util.find_spec(module) is not None:
        return f"from {module} import {cls.__name__} as {alias}\n"
    ours = importlib.util.find_spec("nnunetv2_advmim.trainers").submodule_search_locations
    if os.path.dirname(path) in [os.path.abspath(p) for p in ours]:
        stem = os.path.splitext(os.path.basename(path))[0]
        return f"from nnunetv2_advmim.trainers.{stem} import {cls.__name__} as {alias}\n"
    # a user's trainer from an nnUNet_extTrainer folder: load its file under a private module name
    mod = f"_study_base_{alias}"
    return (f"_spec = importlib.util.spec_from_file_location({mod!r}, {path!r})\n"
            f"_mod = importlib.util.module_from_spec(_spec)\nsys.modules[{mod!r}] = _mod\n"
            f"_spec.loader.exec_module(_mod)\n{alias} = _mod.{cls.__name__}\n")


def _source_file(cls) -> str:
    """The file that defines ``cls``; nnU-Net's lookup drops external trainer modules from ``sys.modules``, so
    ``inspect.getfile`` cannot be used for them: the file is read off the code of a method the class defines, or,
    for a class without methods of its own (an ablation arm that only sets attributes), found the way nnU-Net's
    lookup named its module: relative to an ``nnUNet_extTrainer`` folder."""
    for value in vars(cls).values():
        func = getattr(value, "__func__", value)
        code = getattr(func, "__code__", None)
        if code is not None:
            return code.co_filename
    parts = cls.__module__.split(".")
    for root in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep):
        if root.strip():
            for candidate in (os.path.join(root, *parts) + ".py", os.path.join(root, *parts, "__init__.py")):
                if os.path.isfile(candidate):
                    return candidate
    return inspect.getfile(cls)


def variants_source(variants: Sequence[tuple], threads: Optional[int] = None,
                    predicting: Sequence[tuple] = ()) -> str:
    """Source of a module with one schedule variant (``OneChoice``) per ``(name, base class, epochs, iterations,
    val_iterations)``. A base with ``warmup_epochs`` keeps its warm-up's share of the schedule
    (``methods.schedules.keep_warmup_share``). ``threads`` sets torch's CPU threads (``nnUNetv2_train -device cpu``
    uses one per core). ``predicting``: ``(name, parent variant name, network)``: a variant of a variant above that
    predicts with another AdvMIM network."""
    out = ['"""Trainer variants written by nnUNetv2_advmim_study: the study\'s schedule on each trainer."""\n',
           "import importlib.util\nimport sys\n\nimport torch\n\n"
           "from nnunetv2_advmim.methods.schedules import keep_warmup_share\n"
           "from nnunetv2_advmim.runtime.safe_training import SafeCheckpoints\n"
           "from nnunetv2_advmim.trainers.one_choice import OneChoice\n"]
    for i, (name, cls, epochs, iterations, val_iterations) in enumerate(variants):
        alias = f"_Base{i}"
        out.append("\n" + _import_lines(cls, alias))
        schedule = {"num_epochs": epochs, "num_iterations_per_epoch": iterations,
                    "num_val_iterations_per_epoch": val_iterations}
        # stock save_checkpoint is a plain torch.save: a kill while saving would leave a truncated checkpoint
        stock_save = getattr(cls, "save_checkpoint", None) is nnUNetTrainer.save_checkpoint
        bases = f"SafeCheckpoints, OneChoice, {alias}" if stock_save else f"OneChoice, {alias}"
        out.append(
            f"\n\nclass {name}({bases}):\n"
            f"    choice = {schedule!r}\n\n"
            f"    def apply_choices(self, choices):\n"
            f"        super().apply_choices(keep_warmup_share(self, choices))\n"
            + (f"        torch.set_num_threads({int(threads)})\n" if threads else "") +
            "\n"
            "    def perform_actual_validation(self, save_probabilities: bool = False):\n"
            "        # the study evaluates on imagesTs; predicting the validation cases again would only cost time\n"
            "        self.print_to_log_file('Final validation skipped (study variant: the test set is evaluated)')\n")
    for name, parent, network in predicting:
        out.append(f"\n\nclass {name}({parent}):\n    choice = {{'predict_with': {network!r}}}\n")
    return "".join(out)
