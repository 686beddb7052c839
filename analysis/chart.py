"""The roadmap chart in the style of the paper's Figure 2, with a second panel of our top-1 against the
paper's per step: the agreement at a glance."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from roadmap.files import atomic_path  # noqa: E402

OURS, PAPER = "#2c6fbb", "#c0392b"


def _limits(values: pd.Series, pad: float = 0.12) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    span = max(high - low, 1.0)
    return low - pad * span, high + pad * span


def roadmap_chart(table: pd.DataFrame, out_dir: Path, title: str, reference, agreement) -> list[Path]:
    """Left: one bar per step (our top-1, ± std over seeds when there are several; Δ to the parent step and
    its noise verdict; GFLOPs), branches hatched, the paper's top-1 as diamonds, on an accuracy axis fitted
    to the data — the paper's on its own (top) axis when the two ranges are far apart. Right: our top-1
    against the paper's, one point per step. Writes roadmap.png and roadmap.svg."""
    n = len(table)
    fig, (ax, scatter) = plt.subplots(1, 2, figsize=(16, 0.42 * n + 2.6), gridspec_kw={"width_ratios": [2.6, 1]})
    ys = np.arange(n)[::-1]
    ours = table.top1_mean.astype(float)
    paper = table.paper_top1.astype(float)
    several = (table.n_seeds > 1).any()
    # the axis fits our steps; one far below the rest (e.g. row 0 at chance under a short proxy) is drawn off
    # the axis, its value printed beside it, so it does not flatten every other difference
    q1, q3 = ours.quantile(0.25), ours.quantile(0.75)
    off_axis = ours < q1 - 3 * max(q3 - q1, 2.0)
    fitted = ours[~off_axis]
    low, high = _limits(pd.concat([fitted, fitted + table.top1_std[~off_axis].fillna(0)]).dropna()) \
        if fitted.notna().any() else (0, 100)
    shared = paper.notna().any() and ours.notna().any() and (
        max(high, paper.max()) - min(low, paper.min()) <= 1.5 * max(high - low, paper.max() - paper.min()))
    if shared:
        low, high = min(low, paper.min() - 1), max(high, paper.max() + 1)
    bars = ax.barh(ys, (ours.fillna(low) - low).clip(lower=0), left=low, height=0.7, edgecolor="#34495e",
                   color=[OURS if a else "#9dbbe0" for a in table.adopted],
                   xerr=table.top1_std.astype(float).fillna(0) if several else None,
                   error_kw={"ecolor": "#34495e", "capsize": 3},
                   label="ours: mean ± std over seeds" if several else "ours (one seed: no error bars)")
    for bar, adopted in zip(bars, table.adopted):
        if not adopted:
            bar.set_hatch("//")
    ax.scatter([low] * int(off_axis.sum()), ys[off_axis.to_numpy()], marker="<", s=60, color=OURS, zorder=4,
               clip_on=False, label="ours, below the axis (value at right)" if off_axis.any() else None)
    for y, row in zip(ys, table.itertuples()):
        gflops = f"{row.gflops:.2f} G" if pd.notna(row.gflops) else "no result"
        if row.status == "done" and pd.notna(row.top1_mean):
            delta = f" | Δ {row.delta_top1:+.1f} {row.delta_verdict}" if pd.notna(row.delta_top1) else ""
            label = f"{row.top1_mean:.1f}%{delta} | {gflops}"
        else:
            label = f"[{row.status}] {gflops}"
        ax.text(1.01, y, label, va="center", fontsize=7.5, color="#2c3e50", transform=ax.get_yaxis_transform())
    paper_ax = ax if shared else ax.twiny()
    paper_ax.scatter(paper, ys, marker="D", color=PAPER, zorder=3, s=24, label="paper top-1 (ImageNet-1K)")
    if reference is not None:
        paper_ax.axvline(reference.top1, color=PAPER, ls="--", lw=1, label=f"paper {reference.name} ({reference.top1})")
    if not shared and paper.notna().any():
        paper_low, paper_high = _limits(pd.concat([paper, pd.Series([getattr(reference, "top1", np.nan)])]).dropna())
        paper_ax.set_xlim(paper_low, paper_high)
        paper_ax.set_xlabel("paper top-1 (%), ImageNet-1K — its own axis (red)", color=PAPER, fontsize=9)
        paper_ax.tick_params(axis="x", colors=PAPER)
    ax.set_xlim(low, high)
    ax.set_yticks(ys, [f"{s}{'' if a else ' (branch)'}" for s, a in zip(table.step, table.adopted)], fontsize=9)
    ax.set_xlabel("our top-1 (%)" + ("" if shared else " — axis fitted to our range (blue)"), color=OURS, fontsize=9)
    handles = [h for a in {ax, paper_ax} for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)

    both = table[ours.notna() & paper.notna()]
    scatter.errorbar(both.paper_top1.astype(float), both.top1_mean.astype(float),
                     yerr=both.top1_std.astype(float).fillna(0) if several else None, fmt="none", ecolor="#7f8c8d")
    for adopted, marker in ((True, "o"), (False, "x")):
        part = both[both.adopted == adopted]
        scatter.scatter(part.paper_top1, part.top1_mean, marker=marker, color=OURS,
                        label="adopted step" if adopted else "branch")
    for row in both.itertuples():
        scatter.annotate(row.step, (row.paper_top1, row.top1_mean), fontsize=6.5, xytext=(3, 2), textcoords="offset points")
    scatter.set_xlabel("paper top-1 (%)", fontsize=9)
    scatter.set_ylabel("our top-1 (%)", fontsize=9)
    scatter.set_title("per step: ours vs the paper\n" + (
        f"Spearman ρ = {agreement.spearman:+.2f}, Kendall τ = {agreement.kendall:+.2f} (n = {agreement.n})"
        if agreement.spearman is not None else f"n = {agreement.n}: too few steps to rank"), fontsize=9)
    scatter.legend(fontsize=8, loc="best")
    scatter.grid(alpha=0.3)

    fig.suptitle(textwrap.fill(title, 150), fontsize=10, fontweight="bold")
    fig.text(0.5, 0.955, textwrap.fill(agreement.summary(), 190),
             ha="center", va="top", fontsize=8, color="#2c3e50")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    paths = [out_dir / "roadmap.png", out_dir / "roadmap.svg"]
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=130)
    plt.close(fig)
    return paths
