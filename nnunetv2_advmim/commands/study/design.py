"""How many draws and training runs a label-efficiency study needs to resolve a difference between two arms.

On one draw the paired difference "arm minus reference" is the true difference on that draw's labeled cases plus
the run-to-run noise of each arm's mean over its runs. With ``sigma`` the run-to-run standard deviation of one
training, ``tau`` the standard deviation of the true difference between draws, and ``r_arm`` / ``r_ref`` runs per
draw, the mean difference over ``draws`` draws has the standard error

    SE = sqrt((tau^2 + sigma^2 / r_arm + sigma^2 / r_ref) / draws).

Runs per draw lower only the noise part; only draws lower the ``tau`` part. Units are the caller's (Dice points in
``nnUNetv2_advmim_study --plan-se``).
"""
import math
from typing import Sequence

# default cost of one training of the arm in trainings of the reference: about what an AdvMIM training costs
# against stock nnU-Net (docs/study.md)
ADVMIM_COST_RATIO = 10.0


def expected_paired_se(sigma: float, tau: float, r_arm: int, r_ref: int, draws: int) -> float:
    """Expected standard error of the mean paired difference (module docstring)."""
    if min(r_arm, r_ref, draws) < 1:
        raise ValueError("runs per draw and draws must be at least 1")
    return math.sqrt((tau ** 2 + sigma ** 2 / r_arm + sigma ** 2 / r_ref) / draws)


def cheapest_design(target_se: float, sigma: float, tau: float, cost_ratio: float = ADVMIM_COST_RATIO,
                    max_runs: int = 10, min_draws: int = 2) -> dict:
    """The cheapest ``{"draws", "r_arm", "r_ref", "se", "cost"}`` whose expected SE is at most ``target_se``.

    Cost is counted in reference trainings: ``draws * (r_arm * cost_ratio + r_ref)``. Every pair of runs per draw up
    to ``max_runs`` is tried with the fewest draws that reach the target (at least ``min_draws``: an SE cannot be
    estimated from one draw). Among equal costs the lower SE wins, then the design with more draws, because only
    draws average over labeled sets."""
    if target_se <= 0:
        raise ValueError(f"the target standard error must be positive, got {target_se}")
    best = None
    for r_arm in range(1, max_runs + 1):
        for r_ref in range(1, max_runs + 1):
            variance = tau ** 2 + sigma ** 2 / r_arm + sigma ** 2 / r_ref
            draws = max(min_draws, math.ceil(variance / target_se ** 2 - 1e-9))
            design = {"draws": draws, "r_arm": r_arm, "r_ref": r_ref,
                      "se": expected_paired_se(sigma, tau, r_arm, r_ref, draws),
                      "cost": draws * (r_arm * cost_ratio + r_ref)}
            if best is None or _rank(design) < _rank(best):
                best = design
    return best


def _rank(design: dict) -> tuple:
    # SEs are rounded so that designs equal up to float rounding (4 runs on 2 draws, 1 on 8) tie and more draws win
    return design["cost"], round(design["se"], 9), -design["draws"]


def between_draw_sd(difference_sd: float, noise_variances: Sequence[float]) -> float:
    """``tau`` from a study: the variance of the per-draw differences minus their mean run-to-run noise variance
    (``sigma^2 / r_arm + sigma^2 / r_ref`` of each draw), floored at 0; NaN when either is unknown."""
    if math.isnan(difference_sd) or not noise_variances or any(math.isnan(v) for v in noise_variances):
        return float("nan")
    return math.sqrt(max(0.0, difference_sd ** 2 - sum(noise_variances) / len(noise_variances)))
