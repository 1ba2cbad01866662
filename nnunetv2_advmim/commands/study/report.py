"""The study's report (``nnunetv2_advmim.commands.study``): per-draw means over runs, aggregates over draws, paired
differences and their standard errors, the ``--plan-se`` designs, and the files ``study.md``, ``study.csv``,
``study_runs.csv`` and ``study.png``."""
import csv
import math
import os
from typing import Dict, List, Optional, Sequence

import matplotlib
import numpy as np

matplotlib.use("agg")  # figures go to files; no display is needed
import matplotlib.pyplot as plt  # noqa: E402

from nnunetv2_advmim.commands.study.design import (ADVMIM_COST_RATIO, between_draw_sd,  # noqa: E402
                                                   cheapest_design)
from nnunetv2_advmim.commands.study.protocol import (PP_SUFFIX, count_sort_key, is_every_case,  # noqa: E402
                                                     is_protocol, single_draw)

OUTPUTS = ("study.md", "study.csv", "study_runs.csv", "study.png")
METRIC_NAMES = ("Dice", "HD95", "NSD")


def per_draw(records: Sequence[dict]) -> List[dict]:
    """Records of one arm at one count -> one record per draw, its metrics the mean over the draw's runs (``runs``:
    how many; metrics that are NaN in a run are left out of that mean)."""
    by_draw: Dict[int, List[dict]] = {}
    for r in records:
        by_draw.setdefault(r["draw"], []).append(r)
    merged = []
    for draw, rs in sorted(by_draw.items()):
        if len(rs) == 1:
            merged.append(dict(rs[0], runs=1))
            continue
        mean = {label: {m: _mean_std([r["mean"][label][m] for r in rs])[0] for m in rs[0]["mean"][label]}
                for label in rs[0].get("mean", {})}
        foreground = {m: _mean_std([r["foreground_mean"][m] for r in rs])[0] for m in rs[0]["foreground_mean"]}
        merged.append(dict(rs[0], mean=mean, foreground_mean=foreground, runs=len(rs),
                           **{k: float(np.mean([r[k] for r in rs])) for k in ("iterations", "train_s") if k in rs[0]}))
    return merged


def run_to_run_sd(records: Sequence[dict]) -> float:
    """Pooled standard deviation of the mean foreground Dice between runs of one arm on the same draw (records of one
    arm at one count): ``sqrt(sum_d sum_r (x_dr - mean_d)^2 / sum_d (runs_d - 1))`` over the draws with at least two
    runs; NaN when none has two. How far one training can land from the next on the same labeled cases."""
    by_draw: Dict[int, List[float]] = {}
    for r in records:
        x = r["foreground_mean"]["Dice"]
        if x is not None and not math.isnan(x):
            by_draw.setdefault(r["draw"], []).append(x)
    groups = [np.array(v) for v in by_draw.values() if len(v) > 1]
    dof = sum(len(v) - 1 for v in groups)
    if not dof:
        return float("nan")
    return float(math.sqrt(sum(((v - v.mean()) ** 2).sum() for v in groups) / dof))


def aggregate(records: Sequence[dict]) -> List[dict]:
    """One row per (arm, count): mean and sample std over draws of every label's mean metric (a draw with several
    runs enters with the mean over its runs; ``run_sd``: :func:`run_to_run_sd`)."""
    groups: Dict[tuple, List[dict]] = {}
    for r in records:
        groups.setdefault((r["arm"], str(r["n"])), []).append(r)
    rows = []
    for (arm, n), runs in groups.items():
        rs = per_draw(runs)
        labels = rs[0]["labels"]
        row = {"arm": arm, "n": n, "n_labeled": rs[0]["n_labeled"], "draws": len(rs), "runs": len(runs),
               "iterations": int(np.mean([r["iterations"] for r in rs])),
               "train_s": float(np.mean([r["train_s"] for r in rs])), "run_sd": run_to_run_sd(runs)}
        for m in METRIC_NAMES:
            for label, name in labels.items():
                row[f"{m}_{name}"] = _mean_std([r["mean"][label][m] for r in rs])
            row[f"{m}_mean"] = _mean_std([r["foreground_mean"][m] for r in rs])
        rows.append(row)
    return rows


def paired_difference(records: Sequence[dict], arm: str, n, baseline: str) -> Optional[tuple]:
    """Mean foreground Dice of ``arm`` minus ``baseline``'s on the same draws (paired): ``(mean, std, draws)`` over
    the draws both have at count ``n``, None when they share none. A draw with several runs of an arm enters with
    the mean over its runs."""
    dice = {}
    for name in (arm, baseline):
        for r in per_draw([r for r in records if str(r["n"]) == str(n) and r["arm"] == name]):
            dice[(name, r["draw"])] = r["foreground_mean"]["Dice"]
    diffs = [dice[(arm, d)] - dice[(baseline, d)] for (a, d) in list(dice) if a == arm and (baseline, d) in dice]
    if not diffs:
        return None
    mean, std = _mean_std(diffs)
    return mean, std, len(diffs)


def paired_standard_error(delta: tuple) -> float:
    """Standard error of the mean of a :func:`paired_difference` ``(mean, std, draws)``: ``std / sqrt(draws)``;
    NaN with one draw."""
    _, std, draws = delta
    return std / math.sqrt(draws) if draws > 1 else float("nan")


def plan_study(records: Sequence[dict], reference: str, target_se: float, cost_ratio: float = ADVMIM_COST_RATIO,
               sigma: Optional[float] = None, tau: Optional[float] = None) -> List[dict]:
    """``--plan-se``: for every arm and count that shares draws with ``reference``, the cheapest design
    (:func:`~nnunetv2_advmim.commands.study.design.cheapest_design`) whose paired SE reaches ``target_se``, all in
    Dice points. ``sigma``: the run-to-run sd of the arm and the reference pooled together (their draws with several
    runs; the two are assumed equally noisy), unless given. ``tau``: from the per-draw differences, their variance
    minus the noise of each draw's run counts (``between_draw_sd``), unless given; 0 (``tau_assumed``) when it cannot
    be estimated (one draw). ``design`` is None when sigma is unknown (no draw with several runs)."""
    plans = []
    counts = sorted({str(r["n"]) for r in records}, key=count_sort_key)
    for n in counts:
        at_n = [r for r in records if str(r["n"]) == n]
        for arm in dict.fromkeys(r["arm"] for r in at_n):
            delta = paired_difference(records, arm, n, reference) if arm != reference else None
            if delta is None:
                continue
            pair = [dict(r, draw=(r["arm"], r["draw"])) for r in at_n if r["arm"] in (arm, reference)]
            s = 100 * run_to_run_sd(pair) if sigma is None else sigma
            runs = {name: {r["draw"]: r["runs"] for r in per_draw([r for r in at_n if r["arm"] == name])}
                    for name in (arm, reference)}
            noise = [s ** 2 * (1 / runs[arm][d] + 1 / runs[reference][d]) for d in runs[arm] if d in runs[reference]]
            t = between_draw_sd(100 * delta[1], noise) if tau is None else tau
            assumed = math.isnan(t) and not math.isnan(s)
            t = 0.0 if assumed else t
            plans.append({"arm": arm, "n": n, "delta": delta, "sigma": s, "tau": t, "tau_assumed": assumed,
                          "design": None if math.isnan(s) else cheapest_design(target_se, s, t, cost_ratio)})
    return plans


def format_plan(plan: dict, reference: str, target_se: float) -> str:
    """One line of ``--plan-se`` output."""
    head = f"n={plan['n']} {plan['arm']}: vs {_fmt_delta(plan['delta'])}; " if "delta" in plan else ""
    if plan["design"] is None:
        return head + "no draw has several runs, so the run-to-run sd is unknown: give --sigma"
    d = plan["design"]
    tau = f"{plan['tau']:.1f}" + (" (assumed: one draw)" if plan.get("tau_assumed") else "")
    return (head + f"run-to-run sd {plan['sigma']:.1f}, between-draw sd {tau} -> SE {target_se:g} needs {d['draws']} "
            f"draws, each with {d['r_arm']} run(s) of the arm and {d['r_ref']} of {reference} (expected SE "
            f"{d['se']:.2f}, cost {d['cost']:g} trainings of {reference})")


def _mean_std(values) -> tuple:
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _fmt(ms: tuple, digits: int = 3) -> str:
    mu, sd = ms
    if math.isnan(mu):
        return "-"
    return f"{mu:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def _fmt_delta(delta: tuple) -> str:
    """``+M ± S (SE E, D draws)`` in Dice points (mean and sd of the per-draw differences, standard error);
    ``+M (1 draw)`` for a single draw."""
    mean, std, count = delta
    if count == 1:
        return f"{100 * mean:+.1f} (1 draw)"
    return f"{100 * mean:+.1f} ± {100 * std:.1f} (SE {100 * paired_standard_error(delta):.1f}, {count} draws)"


def _fmt_points(sd: float) -> str:
    return "" if math.isnan(sd) else f"{100 * sd:.1f}"


def _sort_key(row, arm_order):
    return (count_sort_key(row["n"]), arm_order.index(row["arm"]))


def reported_arms(study) -> List[str]:
    """The arms of the report in their order: the trainers (-tr), then each pretrainer's fine-tuning arms, each
    followed by its ``+pp`` twin with postprocessing."""
    trained = [t for t, _ in study.arms] + [a for p in study.pretrainers for a in study.finetune_arms(p)]
    return [name for arm in trained for name in study.reported(arm)]


def write_outputs(study, records: Sequence[dict], failures: Sequence[dict]) -> Dict[str, str]:
    """``study.md``, ``study.csv``, ``study_runs.csv`` and ``study.png`` in the study folder; returns their paths."""
    arm_order = reported_arms(study)
    rows = sorted(aggregate(records), key=lambda r: _sort_key(r, arm_order))
    out = {k: os.path.join(study.folder, k) for k in OUTPUTS}
    used_labels = list(records[0]["labels"].values()) if records else []
    baseline = arm_order[0] if arm_order else None
    deltas = {(r["arm"], r["n"]): paired_difference(records, r["arm"], r["n"], baseline) if r["arm"] != baseline
              else None for r in rows}
    schedule = _write_markdown(study, rows, deltas, used_labels, baseline, failures, out["study.md"])
    _write_csv(rows, deltas, baseline, out["study.csv"])
    _write_runs_csv(records, arm_order, used_labels, out["study_runs.csv"])
    plot_study(rows, arm_order, out["study.png"], f"{study.dataset_name} ({study.configuration}): {schedule}")
    return out


def _write_markdown(study, rows, deltas, used_labels, baseline, failures, filename) -> str:
    """``study.md``: the table and how to read it; returns the schedule's description (also the figure's title)."""
    several_runs = any(r["runs"] != r["draws"] for r in rows)
    header = (["labeled", "arm", "draws"] + (["runs"] if several_runs else []) + ["iterations", "train s"]
              + [f"Dice {n}" for n in used_labels]
              + ["mean Dice", f"vs {baseline}"] + (["run-to-run sd"] if several_runs else [])
              + ["mean HD95", "mean NSD"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        delta = deltas[(r["arm"], r["n"])]
        lines.append("| " + " | ".join(
            [str(r["n"]) if not single_draw(r["n"]) else f"{r['n']} ({r['n_labeled']})", r["arm"], str(r["draws"])]
            + ([str(r["runs"])] if several_runs else []) + [str(r["iterations"]), f"{r['train_s']:.0f}"]
            + [_fmt(r[f"Dice_{n}"]) for n in used_labels]
            + [_fmt(r["Dice_mean"]), "" if delta is None else _fmt_delta(delta)]
            + ([_fmt_points(r["run_sd"])] if several_runs else []) + [_fmt(r["HD95_mean"], 2), _fmt(r["NSD_mean"])])
            + " |")
    schedule = (f"{study.epochs} epochs x {study.iterations} iterations for every arm" if not study.match_time else
                f"wall time matched to {study.match_time} ({study.epochs} x {study.iterations} iterations); the "
                f"other trainers ran as many epochs of {study.iterations} iterations as fit into that time "
                f"(iterations column)")
    md = [f"# Label-efficiency study: {study.dataset_name}, {study.configuration}, plans {study.plans}", "",
          f"- Schedule: {schedule}.",
          (f"- Labeled cases of the published protocols {', '.join(study.counts)} (one draw each; the protocol's "
           f"split): a pool of {len(study.pool)}, {len(study.val)} validation cases shared by every arm."
           if any(is_protocol(n) for n in study.counts) else
           f"- Labeled cases drawn from a pool of {len(study.pool)}; {len(study.val)} validation cases shared by "
           f"every arm; {study.draws} draw(s) per count (seed {study.seed}), nested across counts."),
          f"- Test set: `{os.path.join(study.raw, 'imagesTs')}` against `labelsTs`; values are mean ± standard "
          f"deviation over draws of the per-label mean over test cases; 'vs' is the difference of mean Dice to "
          f"{baseline} on the same draws, in Dice points: mean ± standard deviation of the per-draw differences "
          f"(paired), SE = that standard deviation / sqrt(draws), the standard error of the mean difference.",
          *([f"- `ARM{PP_SUFFIX}`: ARM's test predictions after nnU-Net's postprocessing (keep the largest foreground "
             f"component, overall or per label, where that raised Dice), chosen per draw on ARM's predictions of the "
             f"validation cases (`nnUNetv2_determine_postprocessing`); the same training."] if study.postprocess
            else []),
          *(["- `runs`: trainings per arm over all draws (`--runs`); a draw with several runs of an arm enters the "
             "means, spreads and 'vs' with the mean over its runs. `run-to-run sd`: the pooled standard "
             "deviation of mean Dice between runs of the arm on the same draw, in Dice points (empty with one run "
             "per draw): one training of the arm can land about this far from the next on the same labeled cases, "
             "so a 'vs' of that size from one run per draw is noise."] if several_runs else []),
          "", *lines, ""]
    if failures:
        md += ["## Failed arms", ""] + [f"- n={f['n']} draw {f['draw']} {f['arm']}: {f['error']} (log: {f['log']})"
                                        for f in failures] + [""]
    md += ["![Dice versus labeled cases](study.png)", ""]
    with open(filename, "w") as f:
        f.write("\n".join(md))
    return schedule


def _write_csv(rows, deltas, baseline, filename) -> None:
    """``study.csv``: one row per arm and count, means and standard deviations, the paired difference."""
    keys = [k for k in (rows[0] if rows else {}) if k not in ("arm", "n")]
    with open(filename, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "n"] + [c for k in keys for c in ((f"{k}_mean", f"{k}_std") if isinstance(
            rows[0][k], tuple) else (k,))] + ["vs_reference", "vs_mean", "vs_std", "vs_se", "vs_draws"])
        for r in rows:
            delta = deltas[(r["arm"], r["n"])]
            vs = ["", "", "", "", ""] if delta is None else [baseline, *delta[:2], paired_standard_error(delta),
                                                            delta[2]]
            w.writerow([r["arm"], r["n"]] + [c for k in keys for c in (r[k] if isinstance(r[k], tuple) else (r[k],))]
                       + vs)


def _write_runs_csv(records, arm_order, used_labels, filename) -> None:
    """``study_runs.csv``: one row per training run."""
    with open(filename, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "n", "draw", "run", "n_labeled", "iterations", "train_s"]
                   + [f"{m}_{n}" for m in METRIC_NAMES for n in used_labels] + [f"{m}_mean" for m in METRIC_NAMES]
                   + ["labeled"])
        for r in sorted(records, key=lambda r: (_sort_key(r, arm_order), r["draw"], r.get("run", 0))):
            by_name = {v: k for k, v in r["labels"].items()}
            w.writerow([r["arm"], r["n"], r["draw"], r.get("run", 0), r["n_labeled"], r["iterations"],
                        round(r["train_s"], 1)]
                       + [r["mean"][by_name[n]][m] for m in METRIC_NAMES for n in used_labels]
                       + [r["foreground_mean"][m] for m in METRIC_NAMES] + [" ".join(r["labeled"])])


def _plot_x(row) -> int:
    """A count's place on the x axis: its labeled cases (a protocol's frames or slices count, not its patients)."""
    return int(row["n_labeled"]) if is_protocol(row["n"]) else int(row["n"])


def plot_study(rows: Sequence[dict], arm_order: Sequence[str], png_file: str, title: str) -> str:
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, arm in enumerate(arm_order):
        c = colours[i % len(colours)]
        pts = sorted((_plot_x(r), *r["Dice_mean"]) for r in rows if r["arm"] == arm and not is_every_case(r["n"]))
        if pts:
            x, mu, sd = map(np.array, zip(*pts))
            dodge = 2.0 ** (0.04 * (i - (len(arm_order) - 1) / 2))  # arms side by side at each count, not on top
            ax.errorbar(x * dodge, mu, yerr=np.nan_to_num(sd), marker="o", capsize=3, color=c, label=arm)
        for r in rows:
            if r["arm"] == arm and is_every_case(r["n"]):
                ax.axhline(r["Dice_mean"][0], color=c, linestyle="--", linewidth=1,
                           label=f"{arm}, all {r['n_labeled']} labeled")
    ticks = {_plot_x(r): str(r["n"]) + (f" ({r['n_labeled']})" if is_protocol(r["n"]) else "")
             for r in rows if not is_every_case(r["n"])}
    if ticks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks))
        ax.set_xticklabels([ticks[x] for x in sorted(ticks)])
    ax.set_xlabel("labeled training cases")
    ax.set_ylabel("mean foreground Dice (test set)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: points stay visible
    fig.tight_layout()
    fig.savefig(png_file, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return png_file
