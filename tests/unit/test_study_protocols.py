"""The study's published protocols (``-n acdc-3 acdc-7 acdc-all``): counts, their order, their split."""
import math

import pytest

from nnunetv2_advmim.commands.study.protocol import (count_sort_key, is_every_case, parse_count, protocol_split,
                                                     single_draw)
from nnunetv2_advmim.commands.study.settings import StudySettings
from nnunetv2_advmim.data.acdc_split import SPLIT_KEY

TRAIN = ["patient099", "patient038", "patient050", "patient100", "patient058", "patient021", "patient049",
         "patient020"]
VAL = ["patient028"]
DATASET_JSON = {SPLIT_KEY: {"train": TRAIN, "val": VAL, "test": ["patient011"]}}


def _cases(patients):
    return [f"{p}_frame{f:02d}" for p in patients for f in (1, 12)]


def test_counts_parse_and_sort_with_protocols_after_numbers():
    assert [parse_count(c) for c in ("4", "all", "acdc-3", "acdc-7", "acdc-all")] == [4, "all", "acdc-3", "acdc-7",
                                                                                       "acdc-all"]
    with pytest.raises(ValueError, match="acdc-3"):
        parse_count("acdc-5")
    assert [count_sort_key(c) for c in (2, "acdc-3", "acdc-7", "acdc-all", "all")] == [2.0, 3.0, 7.0, math.inf,
                                                                                       math.inf]
    assert [single_draw(c) for c in (4, "all", "acdc-3")] == [False, True, True]
    assert [is_every_case(c) for c in ("acdc-7", "acdc-all", "all", 8)] == [False, True, True, False]


def test_protocol_split_takes_the_papers_patients_validation_and_pool():
    val, pool, labeled = protocol_split(_cases(TRAIN + VAL), ["acdc-3", "acdc-7", "acdc-all"], DATASET_JSON)
    assert val == _cases(VAL)  # the split's validation patients, every frame
    assert pool == sorted(_cases(TRAIN))  # every training patient; validation patients are never training data
    assert labeled["acdc-3"] == sorted(_cases(TRAIN[:3]))  # patient099, 038, 050: the first of train.list
    assert labeled["acdc-7"] == sorted(_cases(TRAIN[:7]))
    assert labeled["acdc-all"] == sorted(_cases(TRAIN))


def test_protocol_split_refuses_a_dataset_that_is_not_the_converted_acdc():
    with pytest.raises(ValueError, match="patientXXX_frameYY"):
        protocol_split(["case_000", "case_001"], ["acdc-3"], DATASET_JSON)
    with pytest.raises(ValueError, match="test patients"):  # a test patient among the training cases
        protocol_split(_cases(TRAIN + VAL + ["patient011"]), ["acdc-3"], DATASET_JSON)


def test_settings_refuse_protocols_mixed_with_numbers_or_a_validation_count():
    StudySettings(dataset=1, configuration="2d", counts=["acdc-3", "acdc-7"], trainers=["nnUNetTrainer"])
    with pytest.raises(ValueError, match="protocols only"):
        StudySettings(dataset=1, configuration="2d", counts=["acdc-3", "4"], trainers=["nnUNetTrainer"])
    with pytest.raises(ValueError, match="--n-val"):
        StudySettings(dataset=1, configuration="2d", counts=["acdc-3"], trainers=["nnUNetTrainer"], n_val=3)
