"""No module reads or sets a private attribute (``obj._name``) of an object it does not own, read with ``ast``.

A leading underscore says "may change without notice": a caller in another module that uses it breaks silently when the
owner changes. Our own classes offer a public attribute or method instead. What remains are internals of the
libraries we extend that have no public alternative; each is listed here with the reason.
"""
import ast
import os
from typing import List, Tuple

from helpers import REPO

FOLDERS = ("nnunetv2_advmim", "architectures", "trainers")
# third-party internals without a public alternative -> why we use them
ALLOWED = {
    "_orig_mod": "torch.compile's wrapper exposes the compiled module only as _orig_mod",
    "_best_ema": "nnUNetTrainer keeps its best validation EMA (saved in checkpoints) only as _best_ema",
    "_get_deep_supervision_scales": "nnUNetTrainer's deep-supervision scales, needed to build the same loaders",
    "_set_batch_size_and_oversample": "nnUNetTrainer's per-rank batch size under DDP, needed to build the same "
                                      "loaders",
    "_do_i_compile": "nnUNetTrainer's decision whether to torch.compile, reported by the benchmark",
    "_sample_foreground_locations": "nnU-Net's preprocessor samples class locations only through this static method",
    "_finish": "batchgenerators' augmenters stop their workers only through _finish (nnU-Net calls it too)",
}


def private_accesses(source: str, filename: str = "<source>") -> List[Tuple[int, str, str]]:
    """``(line, attribute, expression)`` for every ``x._name`` (not a dunder) where ``x`` is not ``self``, ``cls``,
    ``super()`` or a class defined in the same source."""
    tree = ast.parse(source, filename)
    own_classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.endswith("__"):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in {"self", "cls"} | own_classes:
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
            continue
        found.append((node.lineno, node.attr, ast.unparse(node)))
    return found


def test_the_check_flags_foreign_private_attributes_only():
    source = ("class A:\n    def f(self, other):\n        self._a = other._b\n        super()._c()\n"
              "        return A._d, type(other).__name__, cls_free._e\n")
    assert private_accesses(source) == [(3, "_b", "other._b"), (5, "_e", "cls_free._e")]


def test_no_private_attribute_of_another_module_is_used():
    offenders = []
    for folder in FOLDERS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(REPO, folder)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for f in sorted(filenames):
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    with open(path) as fh:
                        hits = private_accesses(fh.read(), path)
                    rel = os.path.relpath(path, REPO)
                    offenders += [f"{rel}:{line}: {text}" for line, attr, text in hits if attr not in ALLOWED]
    assert not offenders, "private attributes used across modules (offer a public name instead):\n" + \
        "\n".join(offenders)
