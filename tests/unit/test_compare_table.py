"""nnUNetv2_advmim_compare's table parts on plain result dicts: CSV rows, metric file names, the case check and the
note under the table."""
import math

from nnunetv2_advmim.evaluation.compare import (CSV_HEADER, comparison_csv_rows, comparison_note, comparison_rows,
                                                metrics_file_name, same_cases, tolerance_text)
from nnunetv2_advmim.evaluation.metrics import METRICS


def _result(cases, dice_mean, dice_std):
    """An evaluate result with two labels; Dice as given, every other metric 10 * label, std 0.5, 3 values."""
    mean = {label: {m: dice_mean[label] if m == "Dice" else 10.0 * label for m in METRICS} for label in (1, 2)}
    std = {label: {m: dice_std[label] if m == "Dice" else 0.5 for m in METRICS} for label in (1, 2)}
    return {"labels": {1: "liver", 2: "tumour"}, "mean": mean, "std": std,
            "n": {label: {m: 3 for m in METRICS} for label in (1, 2)}, "num_cases": len(cases),
            "cases": [{"case": c} for c in cases],
            "foreground_mean": {m: (mean[1][m] + mean[2][m]) / 2 for m in METRICS}}


def test_csv_rows_one_per_run_label_and_metric():
    results = {"A": _result(["c1", "c2", "c3"], {1: 0.9, 2: 0.5}, {1: 0.05, 2: 0.2}),
               "B": _result(["c1", "c2", "c3"], {1: 0.8, 2: float("nan")}, {1: 0.1, 2: float("nan")})}
    rows = comparison_csv_rows(results, {"A": 4, "B": None})
    assert len(CSV_HEADER) == 9 and len(rows) == 2 * 2 * len(METRICS)
    assert rows[0] == ["A", 1, "liver", "Dice", 0.9, 0.05, 3, 3, 4]
    hd95_tumour_b = [r for r in rows if r[:4] == ["B", 2, "tumour", "HD95"]]
    assert hd95_tumour_b == [["B", 2, "tumour", "HD95", 20.0, 0.5, 3, 3, ""]]  # unknown labeled count: empty
    dice_tumour_b = [r for r in rows if r[:4] == ["B", 2, "tumour", "Dice"]][0]
    assert math.isnan(dice_tumour_b[4]) and math.isnan(dice_tumour_b[5])
    # the table built from the same dicts shows the same numbers
    header, table = comparison_rows(results, {"A": 4, "B": None})
    assert header == ["metric", "A", "B"]
    assert ["liver Dice", "0.900 ± 0.050", "0.800 ± 0.100"] in table
    assert ["tumour Dice", "0.500 ± 0.200", "n/a"] in table
    assert table[-1] == ["labeled training cases", "4", "n/a"]


def test_metrics_file_names_are_safe():
    assert metrics_file_name("nnUNetTrainerAdvMIM") == "nnUNetTrainerAdvMIM_metrics.json"
    assert metrics_file_name("Good fold_0") == "Good_fold_0_metrics.json"
    assert metrics_file_name("a/b: c") == "a_b_c_metrics.json"  # one "_" per run of other characters
    assert metrics_file_name("v1.2-x") == "v1.2-x_metrics.json"


def test_same_cases_needs_the_same_cases_in_the_same_order():
    a, b = _result(["c1", "c2"], {1: 1, 2: 1}, {1: 0, 2: 0}), _result(["c1", "c2"], {1: 1, 2: 1}, {1: 0, 2: 0})
    assert same_cases({"a": a}) and same_cases({"a": a, "b": b})
    assert not same_cases({"a": a, "c": _result(["c1", "c3"], {1: 1, 2: 1}, {1: 0, 2: 0})})
    assert not same_cases({"a": a, "c": _result(["c1"], {1: 1, 2: 1}, {1: 0, 2: 0})})


def test_tolerance_and_note():
    assert tolerance_text(1.0) == "1.0" and tolerance_text(2) == "2"
    assert tolerance_text({1: 1.0, 2: 2.5}) == "1: 1.0, 2: 2.5"
    assert comparison_note("/r/labelsTs", "1: 1.0, 2: 2.5", "monai", "nan", "diagonal") == (
        "Reference: /r/labelsTs. Mean ± std over cases (NaN cases left out: both masks empty); NSD tolerance "
        "1: 1.0, 2: 2.5 mm; HD95 definition monai; empty-mask conventions both_empty=nan, "
        "one_empty_distance=diagonal.")
