"""pyflakes over the package and the tests: no unused or undefined names, no f-strings without placeholders.

An unused import is how a moved function leaves a stale path behind, and an undefined name in a rarely taken
branch (an error message, a DDP path) is a crash that only a user meets.
"""
import os

from pyflakes.api import checkPath
from pyflakes.reporter import Reporter

from helpers import REPO

FOLDERS = ("nnunetv2_advmim", "architectures", "trainers", "tests")


class _Collect(Reporter):
    def __init__(self):
        self.messages = []

    def unexpectedError(self, filename, message):
        self.messages.append(f"{filename}: {message}")

    def syntaxError(self, filename, msg, lineno, offset, text):
        self.messages.append(f"{filename}:{lineno}: {msg}")

    def flake(self, message):
        self.messages.append(str(message))


def _python_files():
    for folder in FOLDERS:
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            yield from (os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))


def test_the_check_reports_an_unused_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\n")
    reporter = _Collect()
    checkPath(str(f), reporter)
    assert len(reporter.messages) == 1 and "'os' imported but unused" in reporter.messages[0]


def test_pyflakes_is_clean():
    reporter = _Collect()
    files = list(_python_files())
    for f in files:
        checkPath(f, reporter)
    assert len(files) > 100
    assert reporter.messages == [], "\n".join(reporter.messages)
