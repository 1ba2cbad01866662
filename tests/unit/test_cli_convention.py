"""Every console command but the study's follows one convention: defaults shown in --help, kebab-case long options,
-p for plans, no -plans_name; and the shorter AdvMIM schedules exist as one-attribute variants."""
import argparse
import importlib
import re

import pytest

from helpers import REPO

EXEMPT = ()


class _Stop(Exception):
    pass


def console_scripts():
    text = open(f"{REPO}/setup.py").read()
    return [(name, target) for name, target in re.findall(r'"(nnUNetv2_advmim_\w+)=([\w.:]+)"', text)
            if name not in EXEMPT]


@pytest.mark.parametrize("name,target", console_scripts())
def test_every_option_shows_its_default_and_is_kebab_case(name, target, monkeypatch):
    module, func = target.split(":")
    captured = {}

    def capture(self, *args, **kwargs):
        captured["parser"] = self
        raise _Stop

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Stop):
        getattr(importlib.import_module(module), func)([])
    parser = captured["parser"]
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        for option in action.option_strings:
            assert not (option.startswith("--") and "_" in option), (name, option)
            assert option != "-plans_name", name
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in formatter._get_help_string(action).lower(), (name, action.option_strings)


def test_shorter_advmim_schedules_change_only_the_epochs():
    from nnunetv2_advmim.trainers import nnUNetTrainerAdvMIM_schedules as schedules
    from nnunetv2_advmim.trainers.nnUNetTrainerAdvMIM import nnUNetTrainerAdvMIM

    for epochs in (250, 100, 50):
        cls = getattr(schedules, f"nnUNetTrainerAdvMIM_{epochs}epochs")
        assert issubclass(cls, nnUNetTrainerAdvMIM) and cls.choice == {"num_epochs": epochs}
