"""How far a roadmap table agrees with the paper's: rank correlation, the sign of each step's Δ, and
whether each Δ stands out of seed noise. Every table, chart and notebook shows this beside the numbers,
so a proxy's ranking is never read as the paper's without its measured agreement.

Definitions (over the table's rows that have both our top-1 and the paper's):

- Spearman ρ and Kendall τ-b between our mean top-1 and the paper's, with scipy's two-sided p-values and a
  95% percentile bootstrap interval for ρ (rows resampled with replacement, fixed seed).
- Sign agreement: over the steps with a parent (Δ to the step they change) where both Δs exist and the
  paper's is not zero, the fraction whose Δ has the paper's sign.
- Noise: the seed std pooled over every step with at least two seeds, s_p = sqrt(Σ(n_i−1)s_i² / Σ(n_i−1));
  a Δ is distinguishable when |Δ| > 2·s_p·sqrt(1/n_step + 1/n_parent) (about 95%), else "n.s."; with no
  step run on two seeds there is no noise estimate and every Δ is "n.s.".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

BOOTSTRAP_RESAMPLES = 2000
NOISE_Z = 2.0


def pooled_seed_std(table: pd.DataFrame) -> float | None:
    """The seed std pooled over every step with ≥ 2 seeds; None when there is none."""
    multi = table[(table.n_seeds >= 2) & table.top1_std.notna()]
    dof = (multi.n_seeds - 1).sum()
    return float(math.sqrt(((multi.n_seeds - 1) * multi.top1_std.astype(float) ** 2).sum() / dof)) if dof else None


def delta_verdicts(table: pd.DataFrame) -> pd.Series:
    """Per step: '+' or '−' when its Δ to its parent stands out of seed noise, 'n.s.' when not (or when
    there is no noise estimate), None without a Δ."""
    pooled = pooled_seed_std(table)
    seeds = dict(zip(table.step, table.n_seeds))
    verdicts = []
    for row in table.itertuples():
        if pd.isna(row.delta_top1):
            verdicts.append(None)
            continue
        noise = None if pooled is None else NOISE_Z * pooled * math.sqrt(1 / row.n_seeds + 1 / seeds[row.parent])
        verdicts.append("n.s." if noise is None or abs(row.delta_top1) <= noise else
                        "+" if row.delta_top1 > 0 else "−")
    return pd.Series(verdicts, index=table.index, dtype=object)


@dataclass
class Agreement:
    """A table's agreement with the paper (see the module docstring); None where it cannot be computed."""

    n: int                       # rows with both our top-1 and the paper's
    rows: int                    # rows in the table
    spearman: float | None = None
    spearman_p: float | None = None
    spearman_ci_low: float | None = None
    spearman_ci_high: float | None = None
    kendall: float | None = None
    kendall_p: float | None = None
    sign_matches: int = 0
    sign_total: int = 0          # steps with both Δs (the paper's non-zero)
    distinguishable: int = 0     # Δs beyond seed noise
    deltas: int = 0              # Δs we have
    pooled_std: float | None = None

    def as_row(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One or two sentences for captions, footers and chart subtitles."""
        if self.n < 3:
            corr = f"agreement with the paper: {self.n} of {self.rows} steps have both top-1s, too few to rank"
        else:
            corr = (f"agreement with the paper over {self.n} of {self.rows} steps: Spearman ρ = {self.spearman:+.2f} "
                    f"(p = {self.spearman_p:.2g}, 95% bootstrap CI {self.spearman_ci_low:+.2f} to "
                    f"{self.spearman_ci_high:+.2f}), Kendall τ = {self.kendall:+.2f} (p = {self.kendall_p:.2g})")
        sign = (f"; Δ has the paper's sign on {self.sign_matches}/{self.sign_total} steps" if self.sign_total else "")
        noise = (f"; {self.distinguishable}/{self.deltas} Δs beyond seed noise (pooled seed std {self.pooled_std:.2f})"
                 if self.pooled_std is not None else
                 "; one seed per step: no noise estimate, every Δ n.s." if self.deltas else "")
        return corr + sign + noise


def _bootstrap_spearman(ours: np.ndarray, paper: np.ndarray) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    samples = rng.integers(0, len(ours), size=(BOOTSTRAP_RESAMPLES, len(ours)))
    rhos = []
    for idx in samples:
        a, b = ours[idx], paper[idx]
        if np.ptp(a) > 0 and np.ptp(b) > 0:  # a resample of one repeated value has no ranking
            rhos.append(stats.spearmanr(a, b).statistic)
    low, high = np.nanpercentile(rhos, [2.5, 97.5])
    return float(low), float(high)


def agreement(table: pd.DataFrame) -> Agreement:
    """The agreement of a roadmap table (``analysis.roadmap.roadmap_table``) with the paper's numbers."""
    both = table[table.top1_mean.notna() & table.paper_top1.notna()]
    result = Agreement(n=len(both), rows=len(table), pooled_std=pooled_seed_std(table))
    if result.n >= 3:
        ours, paper = both.top1_mean.astype(float).to_numpy(), both.paper_top1.astype(float).to_numpy()
        rho = stats.spearmanr(ours, paper)
        tau = stats.kendalltau(ours, paper)
        result.spearman, result.spearman_p = float(rho.statistic), float(rho.pvalue)
        result.kendall, result.kendall_p = float(tau.statistic), float(tau.pvalue)
        result.spearman_ci_low, result.spearman_ci_high = _bootstrap_spearman(ours, paper)
    signed = table[table.delta_top1.notna() & table.paper_delta.notna() & (table.paper_delta != 0)]
    result.sign_total = len(signed)
    result.sign_matches = int((np.sign(signed.delta_top1.astype(float)) == np.sign(signed.paper_delta.astype(float))).sum())
    verdicts = table.delta_verdict.dropna()
    result.deltas, result.distinguishable = len(verdicts), int((verdicts != "n.s.").sum())
    return result
