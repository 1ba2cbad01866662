"""Make stock nnU-Net see our trainers: the ``nnUNet_extTrainer`` search path.

nnU-Net 2.8 looks for trainer classes in its own package and then in every folder listed in the
environment variable ``nnUNet_extTrainer`` (``os.pathsep``-separated). ``nnunetv2_advmim.pth``, installed
into site-packages, calls :func:`register_trainer_folder` at interpreter start-up, so every Python
process (``nnUNetv2_train``, ``nnUNetv2_predict``, a notebook) sees our installed ``trainers/`` folder
appended to whatever the user set. ``nnUNetv2_advmim_env`` prints the equivalent shell line for users
who prefer to set the variable themselves (or who set ``NNUNETV2_ADVMIM_NO_AUTOREGISTER=1``).
"""
import argparse
import contextlib
import importlib.util
import io
import os
from nnunetv2_advmim.cli import DefaultsHelpFormatter

ENV_VAR = "nnUNet_extTrainer"
OPT_OUT_VAR = "NNUNETV2_ADVMIM_NO_AUTOREGISTER"


def trainer_folder() -> str:
    """Absolute path of the installed ``nnunetv2_advmim.trainers`` package folder (wheel or editable)."""
    spec = importlib.util.find_spec("nnunetv2_advmim.trainers")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nnunetv2_advmim.trainers is not installed; reinstall the package from its cloned folder "
                           "with `pip install .` (or `pip install -e .`)")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def extend_search_path(current, folder: str) -> str:
    """Return ``current`` (an ``os.pathsep``-separated list, possibly empty/None) with ``folder`` appended.

    The user's folders keep their order and precedence; ``folder`` is not added twice.
    """
    parts = [p for p in (current or "").split(os.pathsep) if p.strip()]
    norm = os.path.normcase(os.path.abspath(folder))
    if any(os.path.normcase(os.path.abspath(p)) == norm for p in parts):
        return os.pathsep.join(parts)
    return os.pathsep.join(parts + [folder])


def register_trainer_folder(environ=None) -> None:
    """Append our trainer folder to ``nnUNet_extTrainer`` in ``environ`` (default: ``os.environ``)."""
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT_VAR, "").strip() not in ("", "0"):
        return
    environ[ENV_VAR] = extend_search_path(environ.get(ENV_VAR), trainer_folder())


def find_trainer(name: str):
    """The trainer class ``nnUNetv2_train -tr name`` would use (nnU-Net's own lookup over its package and the
    ``nnUNet_extTrainer`` folders), without its printout; a clear error when there is none."""
    # imported here: nnU-Net's lookup imports torch, and this module runs at every interpreter start-up
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return recursive_find_trainer_class_by_name(name)
        except RuntimeError:
            raise ValueError(f"trainer {name!r} was not found by nnU-Net's lookup (nnunetv2 and the folders in "
                             f"{ENV_VAR}); check the name") from None


def shell_line(folder: str) -> str:
    """A POSIX shell line that appends ``folder`` to ``nnUNet_extTrainer``, keeping a value already set."""
    return f'export {ENV_VAR}="${{{ENV_VAR}:+${{{ENV_VAR}}}{os.pathsep}}}{folder}"'


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter,
        prog="nnUNetv2_advmim_env",
        description="Print the shell line that puts the nnunetv2-advmim trainers on nnU-Net's external "
                    "trainer path (nnUNet_extTrainer). Not needed after a normal install: every Python "
                    "process already gets it from nnunetv2_advmim.pth. Use it with "
                    "`eval \"$(nnUNetv2_advmim_env)\"`, e.g. in ~/.bashrc.")
    parser.add_argument("--folder", action="store_true", help="print only the trainer folder")
    args = parser.parse_args(argv)
    folder = trainer_folder()
    print(folder if args.folder else shell_line(folder))


if __name__ == "__main__":
    main()
