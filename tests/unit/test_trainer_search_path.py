"""Issue 2: package layout and stock trainer discovery (wheel and editable installs), env command."""
import os
import subprocess
import sys


from helpers import run_cmd
from nnunetv2_advmim.env import ENV_VAR, OPT_OUT_VAR, extend_search_path, shell_line

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


def test_extend_search_path_keeps_user_folders_and_order():
    sep = os.pathsep
    assert extend_search_path(None, "/ours") == "/ours"
    assert extend_search_path("", "/ours") == "/ours"
    assert extend_search_path(f"/a{sep}/b", "/ours") == f"/a{sep}/b{sep}/ours"
    # not added twice, user's order kept
    assert extend_search_path(f"/ours{sep}/a", "/ours") == f"/ours{sep}/a"
    assert extend_search_path(f"/a{sep}{sep}/b{sep}", "/ours") == f"/a{sep}/b{sep}/ours"


def test_shell_line_appends_to_existing_value(tmp_path):
    line = shell_line("/opt/ours")
    out = subprocess.run(["bash", "-c", f'{line}; echo "$nnUNet_extTrainer"'], capture_output=True, text=True,
                         env=clean_env()).stdout.strip()
    assert out == "/opt/ours"
    out = subprocess.run(["bash", "-c", f'{line}; echo "$nnUNet_extTrainer"'], capture_output=True, text=True,
                         env=clean_env(nnUNet_extTrainer="/mine")).stdout.strip()
    assert out == f"/mine{os.pathsep}/opt/ours"
