"""The ``nnUNet_extTrainer`` search path: user folders kept and first, the shell line of ``nnUNetv2_advmim_env``."""
import os
import subprocess


from nnunetv2_advmim.env import ENV_VAR, OPT_OUT_VAR, extend_search_path, shell_line


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
