"""``OneChoice``: the mixin of trainer variants that change a few attributes of their parent, e.g. the arms of an
ablation study (``nnUNetTrainerAdvMIM_ablations.py``, ``nnUNetTrainerMIM_ablations.py``) and the shorter
schedules (``nnUNetTrainerAdvMIM_schedules.py``)::

    class nnUNetTrainerAdvMIM_rampups(OneChoice, nnUNetTrainerAdvMIM):
        choice = {"u_rampup_fraction": 0.4, "adv_rampup_fraction": 0.4}
"""
import torch


class OneChoice:
    """Sets every ``choice`` attribute after the parent's ``__init__``; a name the parent does not define is an error
    (a typo would otherwise train the parent's default and look like a measured choice)."""

    choice = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        mro = type(self).__mro__
        parent = mro[mro.index(OneChoice) + 1].__name__
        for name, value in self.choice.items():
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__}: {parent} has no attribute {name!r}")
            setattr(self, name, value)
