"""``OneChoice``: the one way to declare a trainer variant. A variant names its parent and the attributes it
changes; nothing else (the shipped variants such as the ablation arms in ``nnUNetTrainerAdvMIM_ablations.py`` and
``nnUNetTrainerMIM_ablations.py`` and the shorter schedules, the study's generated variants and the tests' short
variants all read so)::

    class nnUNetTrainerAdvMIM_rampups(OneChoice, nnUNetTrainerAdvMIM):
        choice = {"u_rampup_fraction": 0.4, "adv_rampup_fraction": 0.4}

The parent may be a variant itself: the variant keeps its parent's choices and adds its own.
"""
import torch


class OneChoiceMixin:
    """Sets every ``choice`` attribute after the parent's ``__init__``; a name the parent does not define is an error
    (a typo would otherwise train the parent's default and look like a measured choice).

    The choices of every variant between a class and its first non-variant parent apply, the class's own last. A
    choice of a class attribute (e.g. ``predict_with``, which nnU-Net's ``build_network_architecture`` reads from the
    class) is also set on the variant class itself."""

    choice = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, value in cls.__dict__.get("choice", {}).items():
            if hasattr(cls, name):
                setattr(cls, name, value)

    @classmethod
    def choices(cls) -> dict:
        """Every choice in force for ``cls``: its ancestors' first, its own last."""
        merged = {}
        for klass in reversed(cls.__mro__):
            merged.update(klass.__dict__.get("choice", {}))
        return merged

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.apply_choices(self.choices())

    def apply_choices(self, choices: dict) -> None:
        """Set ``choices`` on this instance (a variant may adjust them first, e.g. from the parent's values)."""
        mro = type(self).__mro__
        parent = mro[mro.index(OneChoiceMixin) + 1].__name__
        for name, value in choices.items():
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__}: {parent} has no attribute {name!r}")
            setattr(self, name, value)


class _OneChoiceBase:
    """What ``OneChoice`` stands for in a list of base classes (PEP 560 ``__mro_entries__``): the mixin, unless a
    parent is a variant already. Python cannot order ``class X(Mixin, Parent)`` when ``Parent`` derives from
    ``Mixin`` too; leaving the mixin out there makes ``class X(OneChoice, AnyTrainer)`` valid for every parent."""

    def __mro_entries__(self, bases):
        if any(isinstance(b, type) and issubclass(b, OneChoiceMixin) for b in bases):
            return ()
        return (OneChoiceMixin,)

    def __repr__(self):
        return "OneChoice"


OneChoice = _OneChoiceBase()
