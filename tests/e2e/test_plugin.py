"""Package layout and stock trainer discovery (wheel and editable installs), env command."""
import os
import sys
import sysconfig
import zipfile

from helpers import REPO, run_cmd
from nnunetv2_advmim.env import ENV_VAR, OPT_OUT_VAR, trainer_folder

LOOKUP = (
    "import os\n"
    "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
    "for name in NAMES:\n"
    "    c = find(name)\n"
    # nnU-Net drops external modules from sys.modules after the lookup, so read the file off a method
    "    f = [v.__code__.co_filename for v in vars(c).values() if hasattr(v, '__code__')][0]\n"
    "    print('FOUND', name, os.path.abspath(f))\n"
    "print('VAR', os.environ.get('nnUNet_extTrainer'))\n"
)


def lookup(names, env, python=sys.executable, check=True):
    """Run the stock trainer lookup in a fresh interpreter; return {name: file} and the variable's value."""
    code = f"NAMES = {list(names)!r}\n" + LOOKUP
    proc = run_cmd([python, "-c", code], env=env, check=check, cwd="/")
    found = {}
    var = None
    for line in proc.stdout.splitlines():
        if line.startswith("FOUND "):
            _, name, path = line.split(" ", 2)
            found[name] = path
        elif line.startswith("VAR "):
            var = line[4:]
    return found, var, proc


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, OPT_OUT_VAR)}
    env.update(extra)
    return env


def test_stock_lookup_finds_our_trainer_with_variable_unset():
    found, var, _ = lookup(["nnUNetTrainer_demo"], clean_env())
    assert os.path.dirname(found["nnUNetTrainer_demo"]) == trainer_folder()
    assert var == trainer_folder()


def test_stock_lookup_keeps_user_folder_first(tmp_path):
    user = tmp_path / "my_trainers"
    user.mkdir()
    (user / "my_variant.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n"
        "class nnUNetTrainer_user(nnUNetTrainer):\n    def on_train_start(self):\n        super().on_train_start()\n")
    found, var, _ = lookup(["nnUNetTrainer_user", "nnUNetTrainer_demo"], clean_env(nnUNet_extTrainer=str(user)))
    assert var.split(os.pathsep) == [str(user), trainer_folder()]
    assert found["nnUNetTrainer_user"] == str(user / "my_variant.py")
    assert os.path.dirname(found["nnUNetTrainer_demo"]) == trainer_folder()


def test_opt_out_and_explicit_env_command():
    env = clean_env(**{OPT_OUT_VAR: "1"})
    _, _, proc = lookup(["nnUNetTrainer_demo"], env, check=False)
    assert proc.returncode != 0 and "Could not find requested nnunet trainer" in proc.stdout
    # the explicit route: eval the line nnUNetv2_advmim_env prints
    code = "NAMES = ['nnUNetTrainer_demo']\n" + LOOKUP
    proc = run_cmd(["bash", "-c", f'eval "$(nnUNetv2_advmim_env)" && "{sys.executable}" -c "$CODE"'],
                   env=dict(env, CODE=code))
    assert f"FOUND nnUNetTrainer_demo {os.path.join(trainer_folder(), 'nnUNetTrainer_demo.py')}" in proc.stdout
    assert run_cmd(["nnUNetv2_advmim_env", "--folder"], env=env).stdout.strip() == trainer_folder()


def test_installed_layout_has_no_top_level_trainers_package():
    code = ("import importlib.util, nnunetv2_advmim.architectures, nnunetv2_advmim.trainers\n"
            "print(importlib.util.find_spec('trainers'), importlib.util.find_spec('architectures'))")
    out = run_cmd([sys.executable, "-c", code], env=clean_env(), cwd="/").stdout.strip().splitlines()[-1]
    assert out == "None None"


def test_wheel_install_is_zero_config(tmp_path):
    """Build the wheel, install it into a fresh venv, and look the trainer up there with the variable unset."""
    wheel_dir = tmp_path / "wheels"
    run_cmd([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir),
             REPO], env=clean_env(), timeout=300)
    wheel = next(wheel_dir.glob("nnunetv2_advmim-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "nnunetv2_advmim.pth" in names
    assert "nnunetv2_advmim/trainers/nnUNetTrainer_demo.py" in names
    assert "nnunetv2_advmim/architectures/__init__.py" in names
    assert not any(n.startswith(("trainers/", "architectures/")) for n in names)

    venv = tmp_path / "venv"
    # system site-packages provide pip; our package comes from the venv's own site-packages
    run_cmd([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)])
    py = str(venv / "bin" / "python")
    run_cmd([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], env=clean_env(), timeout=300)
    site = run_cmd([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # nnunetv2 and torch from the running interpreter's site-packages, appended after the venv's own (a plain path
    # line: the .pth files there, e.g. of an editable install of this package, are not run)
    with open(os.path.join(site, "zz_test_dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    assert os.path.isfile(os.path.join(site, "nnunetv2_advmim.pth"))
    found, var, _ = lookup(["nnUNetTrainer_demo"], clean_env(), python=py)
    ours = os.path.join(site, "nnunetv2_advmim", "trainers")
    assert found["nnUNetTrainer_demo"] == os.path.join(ours, "nnUNetTrainer_demo.py")
    assert var == ours
