"""The demo never touches the user's own nnU-Net folders unless asked to."""
import hashlib
import os

import pytest

from nnunetv2_advmim.commands.demo import PATH_VARS, demo_paths, run_demo
from nnunetv2_advmim.data.synthetic import make_synthetic_dataset

DEMO_ID = 946


def snapshot(folder):
    """Every file and folder under ``folder``: relative path -> (size, mtime, sha1) for files, None for folders."""
    state = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            state[os.path.relpath(os.path.join(root, d), folder)] = None
        for f in files:
            path = os.path.join(root, f)
            st = os.stat(path)
            with open(path, "rb") as fh:
                state[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns, hashlib.sha1(fh.read()).hexdigest())
    return state


def test_demo_leaves_the_users_nnunet_folders_alone(tmp_path, monkeypatch, capsys):
    """The three variables point at folders that hold a dataset with the demo's own ID and a model folder; the demo
    (every stage, a 1-iteration stock arm) runs in --workdir and none of those files changes."""
    user = {var: tmp_path / "user" / var for var in PATH_VARS}
    for var, folder in user.items():
        folder.mkdir(parents=True)
        monkeypatch.setenv(var, str(folder))
    make_synthetic_dataset(str(user["nnUNet_raw"]), DEMO_ID, dim=2, n_train=4, n_unlabeled=1, n_test=1,
                           shape=(32, 32), seed=5, preset="scarce")
    model = user["nnUNet_results"] / "Dataset946_Mine" / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0"
    model.mkdir(parents=True)
    (model / "checkpoint_final.pth").write_bytes(b"the user's model")
    (user["nnUNet_preprocessed"] / "Dataset946_Mine").mkdir()
    (user["nnUNet_preprocessed"] / "Dataset946_Mine" / "splits_final.json").write_text("[]")
    before = {var: snapshot(folder) for var, folder in user.items()}

    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    workdir = tmp_path / "demo"
    result = run_demo(str(workdir), dataset_id=DEMO_ID, dim=2, device="cpu", arms=("nnUNetTrainer",),
                      pretrainer=None, n_labeled=2, draws=1, epochs=1, iterations=1, val_iterations=1,
                      num_processes=1, case_counts=(6, 2, 2))

    assert {var: snapshot(folder) for var, folder in user.items()} == before
    assert result["paths"] == {var: str(workdir / var) for var in PATH_VARS}
    assert os.path.isdir(workdir / "nnUNet_raw" / "Dataset946_SyntheticScarce2D" / "imagesTs")
    assert {os.environ[var] for var in PATH_VARS} == {str(folder) for folder in user.values()}  # restored
    assert f"The demo wrote everything under {workdir}" in capsys.readouterr().out


def test_demo_uses_the_nnunet_folders_only_when_asked(tmp_path, monkeypatch):
    for var in PATH_VARS:
        monkeypatch.setenv(var, str(tmp_path / var))
    assert demo_paths(str(tmp_path / "w")) == {var: str(tmp_path / "w" / var) for var in PATH_VARS}
    assert demo_paths(str(tmp_path / "w"), use_nnunet_folders=True) == {var: str(tmp_path / var) for var in PATH_VARS}
    monkeypatch.delenv("nnUNet_results")
    with pytest.raises(ValueError, match="nnUNet_results not set"):
        demo_paths(str(tmp_path / "w"), use_nnunet_folders=True)
