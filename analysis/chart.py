"""The roadmap chart in the style of the paper's Figure 2: one horizontal bar per step, top to bottom."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from roadmap.record import atomic_path  # noqa: E402


def roadmap_chart(table: pd.DataFrame, out_dir: Path, title: str, reference) -> list[Path]:
    """Bars = our top-1 (± std over seeds), GFLOPs on each bar, branches hatched, paper top-1 as a marker,
    the paper's Swin reference as a dashed line. Writes roadmap.png and roadmap.svg."""
    n = len(table)
    fig, ax = plt.subplots(figsize=(9, 0.42 * n + 2.0))
    ys = list(range(n))[::-1]
    ours = table.top1_mean.astype(float).fillna(0.0)
    colors = ["#7a9cc6" if a else "#c9d6e8" for a in table.adopted]
    bars = ax.barh(ys, ours, xerr=table.top1_std.astype(float).fillna(0.0), color=colors, edgecolor="#34495e",
                   height=0.7, error_kw={"ecolor": "#34495e", "capsize": 3}, label="ours (mean ± std over seeds)")
    for bar, adopted in zip(bars, table.adopted):
        if not adopted:
            bar.set_hatch("//")
    for y, row, value in zip(ys, table.itertuples(), ours):
        gflops = f"{row.gflops:.2f} G" if pd.notna(row.gflops) else "no result"
        label = f"{value:.1f}% | {gflops}" if row.status == "done" else f"{gflops} [{row.status}]"
        ax.text(max(value, 0) + 0.5, y, label, va="center", fontsize=8, color="#2c3e50")
    ax.scatter(table.paper_top1.astype(float), ys, marker="D", color="#c0392b", zorder=3, s=22, label="paper top-1 (ImageNet-1K)")
    if reference is not None:  # the regime's reference model (Swin), when its file names one
        ax.axvline(reference.top1, color="#c0392b", ls="--", lw=1, label=f"paper {reference.name} ({reference.top1})")
    ax.set_yticks(ys, [f"{s}{'' if a else ' (branch)'}" for s, a in zip(table.step, table.adopted)], fontsize=9)
    ax.set_xlabel("top-1 accuracy (%)")
    ax.set_xlim(0, 100)
    ax.set_title(textwrap.fill(title, 95), fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    paths = [out_dir / "roadmap.png", out_dir / "roadmap.svg"]
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=130)
    plt.close(fig)
    return paths
