"""The one JSON writer and backups that leave the live file in place."""
import json
import os

import pytest

from nnunetv2_advmim.runtime.atomic import keep_backup, write_json_atomic


def test_backup_is_independent_of_the_live_file_after_a_rewrite(tmp_path):
    live = tmp_path / "splits_final.json"
    write_json_atomic(str(live), [{"train": ["a"], "val": ["b"]}])
    backup = keep_backup(str(live))
    assert os.path.isfile(live) and json.load(open(backup)) == json.load(open(live))  # live file not moved
    write_json_atomic(str(live), [{"train": ["c"], "val": ["d"]}])
    assert json.load(open(backup)) == [{"train": ["a"], "val": ["b"]}]  # the new file is a new inode
    assert json.load(open(live)) == [{"train": ["c"], "val": ["d"]}]
    assert keep_backup(str(live)) != backup  # a second backup in the same second gets its own name


def test_unserialisable_content_writes_nothing(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(str(target), {"x": 1})
    with pytest.raises(TypeError):
        write_json_atomic(str(target), {"x": object()})
    assert json.load(open(target)) == {"x": 1} and os.listdir(tmp_path) == ["a.json"]


def test_indent_and_new_folder(tmp_path):
    target = tmp_path / "new" / "b.json"
    write_json_atomic(str(target), {"k": [1, 2]}, indent=None)
    assert target.read_text() == '{"k": [1, 2]}'
    assert oct(os.stat(target).st_mode & 0o777) != oct(0o600)  # the mode open() would give, not mkstemp's
