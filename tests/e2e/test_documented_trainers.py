"""Every trainer README.md and docs/*.md name is found by stock nnU-Net on a regular (non-editable) install.

The package is built as a wheel from a copy of the repository and installed into a folder; a subprocess with that
folder first on ``PYTHONPATH`` processes the wheel's own ``nnunetv2_advmim.pth`` (``site.addsitedir``), which puts the
installed ``trainers/`` folder on ``nnUNet_extTrainer`` as in site-packages, and looks every name up with nnU-Net's
``recursive_find_trainer_class_by_name`` (what ``nnUNetv2_train -tr`` calls). A name a page defines itself (a
``class NAME(`` in a code block of a page that also sets ``nnUNet_extTrainer``) is found that way instead; a study arm
``FINETUNER_from_PRETRAINER`` (a name the study makes at run time) needs both of its trainers.
"""
import glob
import json
import os
import re
import shutil
import sys

from helpers import REPO, run_cmd

NAME = re.compile(r"nnUNetTrainer\w*(?!\w|\.py)")

LOOKUP = r"""
import contextlib, io, json, os, re, site, sys
site.addsitedir(sys.argv[1])  # runs the wheel's nnunetv2_advmim.pth, as site-packages does
import nnunetv2_advmim
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
found = {}
for name in json.loads(sys.argv[2]):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            recursive_find_trainer_class_by_name(name)
    except Exception:
        found[name] = None
        continue
    where = re.search(r"Using trainer '.*' from: (.*)", out.getvalue())  # absent: found in nnU-Net's own package
    found[name] = where.group(1).strip() if where else "nnunetv2"
print("RESULT " + json.dumps({"package": nnunetv2_advmim.__file__, "ext": os.environ.get("nnUNet_extTrainer"),
                              "found": found}))
"""


def documented_trainers():
    """{trainer name: [pages naming it]} of README.md and docs/*.md, without the names pages define themselves;
    a results folder ``TRAINER__PLANS__CONFIGURATION`` counts as its trainer."""
    names = {}
    for page in [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))):
        text = open(page).read()
        defined = set(re.findall(r"^class (nnUNetTrainer\w*)\(", text, re.M)) if "nnUNet_extTrainer" in text else set()
        for name in NAME.findall(text):
            name = name.split("__")[0]
            for part in name.split("_from_"):  # a study arm: fine-tuner _from_ pretrainer
                if part not in defined:
                    names.setdefault(part, set()).add(os.path.relpath(page, REPO))
    return names


def test_every_documented_trainer_is_found_on_a_regular_install(tmp_path):
    names = documented_trainers()
    assert {"nnUNetTrainerAdvMIM", "nnUNetTrainer_Finetune", "nnUNetTrainerAdvMIM_fgUnlabeled",
            "nnUNetTrainerAdvMIM_250epochs"} <= set(names)
    src = tmp_path / "src"
    src.mkdir()
    for item in ("setup.py", "README.md", "LICENSE"):
        shutil.copy(os.path.join(REPO, item), src / item)
    for item in ("nnunetv2_advmim", "trainers", "architectures"):
        shutil.copytree(os.path.join(REPO, item), src / item, ignore=shutil.ignore_patterns("__pycache__"))
    run_cmd([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(src), "-w",
             str(tmp_path / "wheel")], timeout=600)
    wheel = glob.glob(str(tmp_path / "wheel" / "*.whl"))
    assert len(wheel) == 1
    target = tmp_path / "site"
    run_cmd([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), wheel[0]], timeout=600)
    assert (target / "nnunetv2_advmim.pth").is_file() and not (target / "nnunetv2_advmim" / "trainers" / "__init__.py") \
        .is_symlink()
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", "NNUNETV2_ADVMIM_NO_AUTOREGISTER")}
    env["PYTHONPATH"] = str(target)
    out = run_cmd([sys.executable, "-c", LOOKUP, str(target), json.dumps(sorted(names))], env=env, cwd=str(tmp_path),
                  timeout=600).stdout
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["package"].startswith(str(target)), result["package"]  # the installed copy, not the repository
    assert str(target / "nnunetv2_advmim" / "trainers") in result["ext"].split(os.pathsep)
    missing = {n: sorted(names[n]) for n, f in result["found"].items() if f is None}
    assert not missing, f"named in the docs but not found by nnU-Net on a regular install: {missing}"
    ours = [f for f in result["found"].values() if f != "nnunetv2"]
    assert ours and set(ours) == {str(target / "nnunetv2_advmim" / "trainers")}  # from the installed folder
