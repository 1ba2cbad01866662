"""Run-to-run noise of the scarce-preset study and the designs that would resolve 2 Dice points (docs/study.md,
"Designing a study that resolves 2 points"). Reads only the study's CSV files; trains nothing. They live in the
repository's docs/study_results, which a clone finds by itself; an installed wheel has no docs folder, so pass
``--results DIR`` (a copy of that folder).

Usage::

    python -m nnunetv2_advmim.benchmark.study_noise   # sigma 2.3 for the design table (the measured, rounded figure)
    python -m nnunetv2_advmim.benchmark.study_noise --target 1.0 --cost-ratio 10 --sigma 2.3 --tau 0 1.5 3
"""
import argparse
import csv
import math
import os

from nnunetv2_advmim.commands.study import plan_study, run_to_run_sd
from nnunetv2_advmim.commands.study.design import between_draw_sd, cheapest_design, expected_paired_se

# docs/study_results of the clone this module sits in (nnunetv2_advmim/benchmark/ -> repository root)
RESULTS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                                        "study_results"))
CSV_FILES = ("scarce2d_1000it_runs.csv", "scarce2d_1000it_reruns_runs.csv", "scarce2d_1000it_noadv_runs.csv",
             "scarce2d_1000it_reruns.csv")


def check_results(folder: str) -> None:
    """Fail with the missing folder or file named and the way out, before any figure is printed."""
    if not os.path.isdir(folder):
        raise SystemExit(f"ERROR: the study results folder {folder} does not exist. It is docs/study_results of the "
                         f"repository: run this from a clone, or pass --results DIR with a copy of that folder.")
    missing = [name for name in CSV_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise SystemExit(f"ERROR: {folder} lacks {', '.join(missing)}; pass --results DIR with a complete copy of "
                         f"the repository's docs/study_results.")


def read_runs(folder: str, name: str, arms: dict) -> list:
    """Study records (arm, n, draw, mean foreground Dice) of the arms ``arms`` names (CSV name -> name here)."""
    with open(os.path.join(folder, name)) as f:
        return [{"arm": arms[r["arm"]], "n": r["n"], "draw": int(r["draw"]), "foreground_mean": {
            "Dice": float(r["Dice_mean"])}} for r in csv.DictReader(f) if r["arm"] in arms and r["n"] != "all"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=1.0, help="target SE in Dice points (default 1)")
    parser.add_argument("--cost-ratio", type=float, default=10.0, help="arm training / stock training (default 10)")
    parser.add_argument("--sigma", type=float, default=2.3, help="run-to-run sd for the design table (default 2.3)")
    parser.add_argument("--tau", type=float, nargs="+", default=[0.0, 1.5, 3.0], help="between-draw sds")
    parser.add_argument("--results", default=RESULTS,
                        help="folder with the study's CSV files (default: docs/study_results of this clone)")
    args = parser.parse_args(argv)
    check_results(args.results)

    # stock: the first run per draw (scarce2d_1000it_runs.csv) and the reruns; the default AdvMIM (no adversarial
    # loss, C): its first runs, named _noAdv when they ran (scarce2d_1000it_noadv_runs.csv), and its second runs
    records = (read_runs(args.results, "scarce2d_1000it_runs.csv", {"nnUNetTrainer": "stock"})
               + read_runs(args.results, "scarce2d_1000it_reruns_runs.csv", {"nnUNetTrainer": "stock",
                                                                "nnUNetTrainerAdvMIM": "default"})
               + read_runs(args.results, "scarce2d_1000it_noadv_runs.csv", {"nnUNetTrainerAdvMIM_noAdv": "default"}))
    stock = [r for r in records if r["arm"] == "stock"]
    print("Run-to-run sd of stock nnU-Net, pooled over draws (Dice points):")
    for n in ("2", "4", "8"):
        at_n = [r for r in stock if r["n"] == n]
        print(f"  n={n}: {100 * run_to_run_sd(at_n):.2f} ({len(at_n)} runs on 3 draws)")
    pooled = run_to_run_sd([dict(r, draw=(r["n"], r["draw"])) for r in stock])
    print(f"  2, 4 and 8 pooled: {100 * pooled:.2f}")

    print("\nThe default AdvMIM against the mean of the stock runs (nnUNetv2_advmim_study --plan-se's estimate):")
    for plan in plan_study(records, "stock", args.target, args.cost_ratio):
        mean, std, draws = plan["delta"]
        print(f"  n={plan['n']}: {100 * mean:+.1f} ± {100 * std:.1f} (SE {100 * std / math.sqrt(draws):.1f}); "
              f"sigma {plan['sigma']:.2f}, tau {plan['tau']:.2f}")

    sigma4 = 100 * run_to_run_sd([r for r in stock if r["n"] == "4"])
    print(f"\ntau of every arm at 4 labeled cases with 3 draws (sigma {sigma4:.2f}, 4 stock runs per draw):")
    with open(os.path.join(args.results, "scarce2d_1000it_reruns.csv")) as f:
        for r in csv.DictReader(f):
            runs = r["runs_per_draw"].split("/")
            if r["n"] != "4" or not r["vs_stock_std"] or "0" in runs:
                continue
            noise = [sigma4 ** 2 * (1 / int(k) + 1 / 4) for k in runs]
            print(f"  {r['arm']}: sd of the differences {float(r['vs_stock_std']):.2f}, "
                  f"tau {between_draw_sd(float(r['vs_stock_std']), noise):.2f}")

    s, t = args.sigma, args.target
    print(f"\nsigma {s}, target SE {t}, one arm training = {args.cost_ratio:g} stock trainings:\n")
    print("| tau | 3 draws x (1 + 1) | 3 draws x (1 + 4) | 3 draws, unlimited runs | cheapest design reaching "
          "SE 1 | its SE | cost (stock trainings) |")
    print("|---|---|---|---|---|---|---|")
    for tau in args.tau:
        d = cheapest_design(t, s, tau, args.cost_ratio)
        print(f"| {tau:g} | {expected_paired_se(s, tau, 1, 1, 3):.2f} | {expected_paired_se(s, tau, 1, 4, 3):.2f} | "
              f"{tau / math.sqrt(3):.2f} | {d['draws']} draws x ({d['r_arm']} + {d['r_ref']}) | {d['se']:.2f} | "
              f"{d['cost']:g} |")


if __name__ == "__main__":
    main()
