"""README's "Baseline, pretraining and fine-tuning, side by side" block, run as written on a tiny 2D dataset.

The block's commands run in a shell with substitutions that fit them to a tiny dataset: dataset 4 becomes a copy of
the planned 2D fixture (6 training cases), ``3d_fullres`` becomes ``2d``, the label budget keeps 2 cases over 2 folds,
and every trainer it names becomes a variant of 1 epoch x 2 iterations under the same name plus ``_tiny`` (also
inside the results-folder path of ``-pretrained_weights``).
"""
import glob
import os
import re

from helpers import REPO, copy_planned, run_cmd, short_trainer

SECTION = "### Baseline, pretraining and fine-tuning, side by side"
TINY = dict(num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1)
MODULES = {"nnUNetTrainer": "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
           "nnUNetTrainerAnatoMask": "nnunetv2_advmim.trainers.nnUNetTrainerMIM",
           "nnUNetTrainer_Finetune": "nnunetv2_advmim.trainers.nnUNetTrainer_Finetune"}


def readme_block():
    """The commands of the README's fenced bash block after SECTION (continuation lines joined)."""
    text = open(os.path.join(REPO, "README.md")).read()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    block = text.split(SECTION, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_readme_baseline_pretraining_finetuning_keep_both_models(planned_2d, ext_trainers):
    commands = readme_block()
    trained = [c for c in commands if c.startswith("nnUNetv2_train")]
    names = [re.search(r"-tr (\S+)", c).group(1) if "-tr " in c else "nnUNetTrainer" for c in trained]
    assert len(trained) == 3 and len(set(names)) == 3, names  # baseline, pretraining, fine-tuning: three folders
    assert "-pretrained_weights" in trained[2] and names[2] == "nnUNetTrainer_Finetune"

    name, _, _ = copy_planned(planned_2d, 4, "Readme")
    folder, write = ext_trainers
    for trainer in set(names):
        write(f"{trainer}_tiny", short_trainer(MODULES[trainer], trainer, f"{trainer}_tiny", final_validation=False,
                                               **TINY))
    env = dict(planned_2d.env, nnUNet_extTrainer=folder)
    for command in commands:
        command = command.replace("3d_fullres", "2d")
        if command.startswith("nnUNetv2_advmim_label_budget"):
            command = re.sub(r"-n \d+", "-n 2 --folds 2", command)
        if command.startswith("nnUNetv2_train"):
            command = re.sub(r"(-tr \S+)", r"\1_tiny", command) if "-tr " in command else \
                command + " -tr nnUNetTrainer_tiny"
            command = re.sub(r"/(nnUNetTrainer\w*?)__", r"/\1_tiny__", command) + " -device cpu"
        run_cmd(["bash", "-c", command], env=env, timeout=900)

    results = os.path.join(planned_2d.results.replace(planned_2d.name, name))
    baseline = os.path.join(results, "nnUNetTrainer_tiny__nnUNetPlans__2d", "fold_0")
    finetuned = os.path.join(results, "nnUNetTrainer_Finetune_tiny__nnUNetPlans__2d", "fold_0")
    for model in (baseline, finetuned):
        assert os.path.isfile(os.path.join(model, "checkpoint_final.pth")), model
    log = "".join(open(f).read() for f in glob.glob(os.path.join(finetuned, "training_log_*.txt")))
    assert "Loaded pretrained weights from" in log and "nnUNetTrainerAnatoMask_tiny__nnUNetPlans__2d" in log
    assert not glob.glob(os.path.join(baseline, "..", "..", "nnUNetTrainer_tiny*", "fold_0", "*pretrained*"))
