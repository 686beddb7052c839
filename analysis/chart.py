"""The roadmap chart in the style of the paper's Figure 2, with a second panel of our top-1 against the
paper's per step: the agreement at a glance."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from adjustText import adjust_text
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure  # no pyplot: the chart leaves the caller's backend (a notebook's) as it is

from roadmap.utils.files import atomic_path

OURS, PAPER = "#2c6fbb", "#c0392b"


def _limits(values: pd.Series, pad: float = 0.12) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    span = max(high - low, 1.0)
    return low - pad * span, high + pad * span


def roadmap_chart(table: pd.DataFrame, out_dir: Path, title: str, reference, agreement) -> list[Path]:
    """:func:`roadmap_figure` as roadmap.png and roadmap.svg in ``out_dir``."""
    fig = roadmap_figure(table, title, reference, agreement)
    paths = [out_dir / "roadmap.png", out_dir / "roadmap.svg"]
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=130, format=path.suffix[1:])
    return paths


def roadmap_figure(table: pd.DataFrame, title: str, reference, agreement) -> Figure:
    """Left: one dot per step (our top-1, ± std over seeds when there are several, clipped to 0–100 %; Δ to the
    parent step and its noise verdict; GFLOPs), branches hollow, the paper's top-1 as diamonds, on an accuracy
    axis fitted to the data (a dot, not a bar: the axis need not start at 0) — the paper's on its own (top, red)
    axis when the two ranges are far apart, its reference model then drawn in the right panel only. Right: our
    top-1 against the paper's, one point per step, labels placed apart by adjustText."""
    n = len(table)
    # constrained layout keeps the title block, the axes' labels and the legend below them apart at any size
    fig = Figure(figsize=(16, 0.42 * n + 3.6), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer for adjustText's text extents, without pyplot
    ax, scatter = fig.subplots(1, 2, width_ratios=[2.3, 1.2])
    ys = np.arange(n)[::-1]
    ours = table.top1_mean.astype(float)
    paper = table.paper_top1.astype(float)
    several = (table.n_seeds > 1).any()
    # the axis fits our steps; one far below the rest (e.g. row 0 at chance under a short proxy) is drawn off
    # the axis, its value printed beside it, so it does not flatten every other difference
    q1, q3 = ours.quantile(0.25), ours.quantile(0.75)
    off_axis = ours < q1 - 3 * max(q3 - q1, 2.0)
    fitted = ours[~off_axis]
    spread = table.top1_std[~off_axis].astype(float).fillna(0)
    low, high = _limits(pd.concat([fitted, fitted + spread, (fitted - spread).clip(lower=0)]).dropna()) \
        if fitted.notna().any() else (0, 100)
    shared = paper.notna().any() and ours.notna().any() and (
        max(high, paper.max()) - min(low, paper.min()) <= 1.5 * max(high - low, paper.max() - paper.min()))
    if shared:
        low, high = min(low, paper.min() - 1), max(high, paper.max() + 1)
    shown = ours.where(~off_axis)
    if several:  # ± std, clipped to what a top-1 can be
        std = table.top1_std.astype(float).fillna(0)
        ax.errorbar(shown, ys, xerr=[shown - (shown - std).clip(lower=0), (shown + std).clip(upper=100) - shown],
                    fmt="none", ecolor="#34495e", capsize=3, zorder=2)
    adopted = table.adopted.to_numpy(dtype=bool)
    ax.scatter(shown[adopted], ys[adopted], s=46, color=OURS, zorder=3,
               label=None if shown.isna().all() else "ours: mean ± std over seeds" if several
               else "ours (one seed: no error bars)")
    ax.scatter(shown[~adopted], ys[~adopted], s=46, facecolors="white", edgecolors=OURS, zorder=3,
               label="ours, a branch (not adopted)" if (~adopted).any() else None)
    ax.scatter([low] * int(off_axis.sum()), ys[off_axis.to_numpy()], marker="<", s=60, color=OURS, zorder=4,
               clip_on=False, label="ours, below the axis (value at right)" if off_axis.any() else None)
    for y, row in zip(ys, table.itertuples()):
        gflops = f"{row.gflops:.2f} G" if pd.notna(row.gflops) else "no result"
        if row.status == "done" and pd.notna(row.top1_mean):
            delta = f" | Δ {row.delta_top1:+.1f} {row.delta_verdict}" if pd.notna(row.delta_top1) else ""
            label = f"{row.top1_mean:.1f}%{delta} | {gflops}"
        elif row.status == "done":
            label = f"no top-1 (not validated) | {gflops}"
        else:
            label = f"[{row.status}] {gflops}"
        ax.text(1.01, y, label, va="center", fontsize=7.5, color="#2c3e50", transform=ax.get_yaxis_transform())
    paper_ax = ax if shared or paper.isna().all() else ax.twiny()  # a second axis only for the paper's own range
    paper_ax.scatter(paper, ys, marker="D", color=PAPER, zorder=3, s=24,
                     label="paper top-1" if paper.notna().any() else None)
    if reference is not None:  # on our rows only where ours and the paper's share the axis
        (paper_ax if shared else scatter).axvline(reference.top1, color=PAPER, ls="--", lw=1,
                                                  label=f"paper {reference.name} ({reference.top1})")
    if not shared and paper.notna().any():
        paper_low, paper_high = _limits(pd.concat([paper, pd.Series([getattr(reference, "top1", np.nan)])]).dropna())
        paper_ax.set_xlim(paper_low, paper_high)
        paper_ax.set_xlabel("paper top-1 (%) — its own axis (red)", color=PAPER, fontsize=9)
        paper_ax.tick_params(axis="x", colors=PAPER)
    ax.set_xlim(low, high)
    ax.set_yticks(ys, [f"{s}{'' if a else ' (branch)'}" for s, a in zip(table.step, table.adopted)], fontsize=9)
    metric = table.attrs.get("metric", "top-1")
    if ours.isna().all():
        ax.set_xlabel("our top-1: none (these runs do not validate)", color=OURS, fontsize=9)
    else:
        ax.set_xlabel(f"our {metric} (%), axis from {low:.1f} (not 0)" + ("" if shared or paper_ax is ax else
                      ", fitted to our range (blue)"), color=OURS, fontsize=9)
    handles = [h for a in dict.fromkeys([ax, paper_ax]) for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)

    both = table[ours.notna() & paper.notna() & ~off_axis]  # a step off the left axis is off this one too
    if off_axis.any():
        scatter.text(0.02, 0.02, "off the axis: " + ", ".join(f"{s} {v:.1f}%" for s, v in zip(table.step[off_axis],
                                                                                            ours[off_axis])),
                     transform=scatter.transAxes, fontsize=7, color="#7f8c8d")
    scatter.errorbar(both.paper_top1.astype(float), both.top1_mean.astype(float),
                     yerr=both.top1_std.astype(float).fillna(0) if several else None, fmt="none", ecolor="#7f8c8d")
    for adopted, marker in ((True, "o"), (False, "x")):
        part = both[both.adopted == adopted]
        if not part.empty:
            scatter.scatter(part.paper_top1, part.top1_mean, marker=marker, color=OURS,
                            label="adopted step" if adopted else "branch")
    if both.empty:  # nothing to set side by side: the panel says why instead of standing empty
        scatter.text(0.5, 0.5, "no step has both our top-1 and the paper's:\nnothing to compare", ha="center",
                     va="center", fontsize=9, color="#7f8c8d", transform=scatter.transAxes)
        scatter.set_xticks([])
        scatter.set_yticks([])
    labels = [scatter.text(row.paper_top1, row.top1_mean, row.step, fontsize=6.5) for row in both.itertuples()]
    scatter.set_xlabel(textwrap.fill(f"paper top-1 (%): {table.attrs.get('paper', 'ImageNet-1K')}", 60), fontsize=9)
    scatter.set_ylabel(f"our {metric} (%)", fontsize=9)
    scatter.set_title("per step: ours vs the paper\n" + (
        f"Spearman ρ = {agreement.spearman:+.2f}, Kendall τ = {agreement.kendall:+.2f} (n = {agreement.n})"
        if agreement.spearman is not None else f"n = {agreement.n}: too few steps to rank"), fontsize=9)
    if scatter.get_legend_handles_labels()[0]:
        scatter.legend(fontsize=8, loc="best")
    scatter.grid(alpha=0.3)

    # the title and the agreement as one block: the layout reserves its height, however many lines it wraps to
    fig.suptitle(textwrap.fill(title, 170) + "\n" + textwrap.fill(agreement.summary(), 200), fontsize=9)
    if labels:  # after every limit is set: apart from each other and from the points, a line to each point moved
        adjust_text(labels, x=both.paper_top1.astype(float).to_numpy(), y=both.top1_mean.astype(float).to_numpy(),
                    ax=scatter, expand=(1.15, 1.4), force_text=(0.3, 0.6),
                    arrowprops={"arrowstyle": "-", "color": "#95a5a6", "lw": 0.5})
    return fig
