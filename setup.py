"""Installable nnU-Net v2 extension: semi-supervised (AdvMIM) and masked-image-modeling trainers.

The repository shows three rooms (``nnunetv2_advmim/`` core in sub-packages by concern, ``trainers/``,
``architectures/``); the installed namespace is one package, ``nnunetv2_advmim``, with ``trainers/`` and
``architectures/`` mapped to ``nnunetv2_advmim.trainers`` and ``nnunetv2_advmim.architectures``.

Stock nnU-Net finds external trainers only through the ``nnUNet_extTrainer`` environment variable. We ship ``nnunetv2_advmim.pth`` in site-packages: Python's ``site`` module runs
its ``import`` line at every interpreter start-up, and that line appends our installed ``trainers/``
folder to the variable (keeping whatever the user set). A regular wheel gets the file through
``build_py``; an editable wheel (PEP 660) is assembled by ``editable_wheel`` without build_py's output,
so that command is extended to put the same file into the editable wheel.
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PTH_NAME = "nnunetv2_advmim.pth"
# a site-packages .pth line that starts with "import" is exec'd; if the package is gone (an editable install whose
# source folder was deleted) this stays silent instead of printing a traceback at every Python start
PTH_CONTENT = 'import sys; exec("try:\\n import nnunetv2_advmim._startup\\nexcept ImportError:\\n pass")\n'


class build_py_with_pth(build_py):
    """build_py that also places the start-up ``.pth`` file at the root of the wheel (site-packages)."""

    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            target = os.path.join(self.build_lib, PTH_NAME)
            with open(target, "w") as f:
                f.write(PTH_CONTENT)

    def get_outputs(self, include_bytecode=True):
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH_NAME))
        return outputs


cmdclass = {"build_py": build_py_with_pth}

try:
    from setuptools.command.editable_wheel import editable_wheel

    class editable_wheel_with_pth(editable_wheel):
        """Editable wheel that carries the same start-up ``.pth`` file as the regular wheel."""

        def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
            result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
            with open(os.path.join(unpacked_wheel, PTH_NAME), "w") as f:
                f.write(PTH_CONTENT)
            return result

    cmdclass["editable_wheel"] = editable_wheel_with_pth
except ImportError:  # setuptools < 64 has no PEP 660 editable wheels
    pass


def read_version():
    with open(os.path.join(HERE, "nnunetv2_advmim", "__init__.py")) as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("__version__ not found in nnunetv2_advmim/__init__.py")


setup(
    name="nnunetv2-advmim",
    version=read_version(),
    description="nnU-Net v2 extension: AdvMIM semi-supervised training, masked image modeling "
                "pretraining (random, AnatoMask, MPS-AMS) and a hybrid CNN-Transformer U-Net",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(where=HERE, include=["nnunetv2_advmim", "nnunetv2_advmim.*"]) +
    ["nnunetv2_advmim.trainers", "nnunetv2_advmim.architectures"],
    package_dir={
        "nnunetv2_advmim": "nnunetv2_advmim",
        "nnunetv2_advmim.trainers": "trainers",
        "nnunetv2_advmim.architectures": "architectures",
    },
    # the ACDC GPU benchmark's hard-limit wrapper runs ``python -m nnunetv2_advmim.benchmark.acdc_gpu``
    package_data={"nnunetv2_advmim.benchmark": ["acdc_gpu.sh"]},
    # Every package the code imports, with the lowest version it was written against. nnunetv2 is pinned because
    # the trainers override its internals (2.8.1); pip replaces another installed nnunetv2, editable ones included
    # (docs/install.md). torch is not upgraded by this list when an installed version meets it.
    install_requires=[
        "nnunetv2==2.8.1",
        "torch>=2.1.2,!=2.9.*",  # nnunetv2 2.8.1's own bounds
        "numpy>=1.24",
        "scipy",
        "SimpleITK>=2.2.1",
        "timm>=0.9,<2",  # timm.models.vision_transformer.Block with proj_drop (0.9 renamed drop to proj_drop)
        "dynamic_network_architectures>=0.4.4,<0.5",
        "batchgenerators>=0.25.1",
        "batchgeneratorsv2>=0.3.2",
        "acvl_utils>=0.2.6,<0.3",
        "blosc2>=3.3.2",
        "nibabel",
        "threadpoolctl>=3",
        "tqdm",
        "monai>=1.4",  # surface metrics (nnunetv2_advmim.evaluation.metrics)
        "matplotlib",  # comparison figure (nnunetv2_advmim.evaluation.compare)
    ],
    extras_require={
        "test": ["pytest>=7.3", "pytest-timeout", "pyflakes>=3.2"],
    },
    entry_points={
        "console_scripts": [
            "nnUNetv2_advmim_env=nnunetv2_advmim.env:main",
            "nnUNetv2_advmim_make_synthetic=nnunetv2_advmim.data.synthetic:main",
            "nnUNetv2_advmim_demo=nnunetv2_advmim.commands.demo:main",
            "nnUNetv2_advmim_evaluate=nnunetv2_advmim.evaluation.evaluate:main",
            "nnUNetv2_advmim_compare=nnunetv2_advmim.evaluation.compare:main",
            "nnUNetv2_advmim_export_submission=nnunetv2_advmim.evaluation.submission:main",
            "nnUNetv2_advmim_plan_hybrid=nnunetv2_advmim.commands.plan_hybrid:main",
            "nnUNetv2_advmim_preprocess_unlabeled=nnunetv2_advmim.data.unlabeled:main",
            "nnUNetv2_advmim_label_budget=nnunetv2_advmim.data.label_budget:main",
            "nnUNetv2_advmim_convert_acdc=nnunetv2_advmim.data.convert_acdc:main",
            "nnUNetv2_advmim_check_weights=nnunetv2_advmim.commands.check_weights:main",
            "nnUNetv2_advmim_mim_visualize=nnunetv2_advmim.commands.mim_visualize:main",
            "nnUNetv2_advmim_benchmark=nnunetv2_advmim.benchmark.cli:main",
            "nnUNetv2_advmim_study=nnunetv2_advmim.commands.study.cli:main",
            "nnUNetv2_advmim_small_plan=nnunetv2_advmim.commands.small_plan:main",
            "nnUNetv2_advmim_verify_raw=nnunetv2_advmim.commands.verify_raw:main",
        ],
    },
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Topic :: Scientific/Engineering :: Image Recognition",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
    keywords=["nnU-Net", "medical image segmentation", "semi-supervised learning", "masked image modeling"],
    cmdclass=cmdclass,
    zip_safe=False,
)
