"""Compare proxies: every data-budget group of a regime side by side, to pick the cheapest one whose
ranking of the steps you trust.

    python -m analysis.compare OUTPUTS_DIR [--regime r50]     # default: every regime with runs there

Per group: top-1 per step beside the paper's, the agreement with the paper (analysis.agreement), and the
group's cost — the summed wall time of its runs × their devices, from the run records, on the hardware
they name. Written to ``OUTPUTS_DIR/compare-<regime>.{csv,md}`` (the CSV is the per-group summary).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.agreement import agreement
from analysis.roadmap import describe, groups, load_runs, roadmap_table
from roadmap.config.steps import available_regimes
from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.utils.cli import Parser
from roadmap.utils.files import write_text


def cost(runs: pd.DataFrame) -> tuple[float | None, str]:
    """Device-hours of a group's recorded runs (wall time × devices) and the hardware they ran on."""
    timed = runs[runs.wall_s.notna()]
    if timed.empty:
        return None, "unknown"
    hours = float((timed.wall_s.astype(float) * timed.devices.fillna(1).astype(float)).sum() / 3600)
    devices = timed.device.dropna().unique()
    return round(hours, 2), devices[0] if len(devices) == 1 else "mixed" if len(devices) else "unknown"


def compare(runs: pd.DataFrame, regime: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-group summary, per-step top-1 of every group beside the paper's) for one regime."""
    summary, per_step = [], None
    for group in sorted(g for g, r in groups(runs) if r == regime):
        subset = runs[(runs.group == group) & (runs.regime == regime)]
        table = roadmap_table(subset, regime)
        measured = agreement(table)
        hours, device = cost(subset)
        summary.append({"group": group, "label": describe(runs, group),
                        "steps_done": int((table.status == "done").sum()), "steps": len(table),
                        "seeds": int(table.n_seeds.max()), "spearman": measured.spearman,
                        "spearman_ci": (f"{measured.spearman_ci_low:+.2f} to {measured.spearman_ci_high:+.2f}"
                                        if measured.spearman_ci_low is not None else None),
                        "kendall": measured.kendall, "n": measured.n,
                        "sign_agreement": f"{measured.sign_matches}/{measured.sign_total}",
                        "deltas_beyond_noise": f"{measured.distinguishable}/{measured.deltas}"
                                               if measured.pooled_std is not None else "n.s. (one seed)",
                        "device_hours": hours, "device": device})
        column = table.set_index("step").top1_mean.rename(group)
        per_step = (table.set_index("step")[["adopted", "paper_top1"]] if per_step is None else per_step).join(column)
    return pd.DataFrame(summary), per_step


@exit_on_config_error
def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m analysis.compare", description=__doc__.splitlines()[0])
    parser.add_argument("outputs", type=Path)
    parser.add_argument("--regime", default=None, choices=available_regimes(),
                        help="default: every regime with runs under OUTPUTS")
    args = parser.parse_args(argv)
    if not args.outputs.is_dir():
        raise ConfigError(f"no outputs folder {args.outputs}: pass the run.root of your runs (default: outputs)")
    runs = load_runs(args.outputs)
    regimes = [args.regime] if args.regime else sorted({r for _, r in groups(runs)})
    if not regimes:
        raise ConfigError(f"no runs under {args.outputs}; run `make roadmap` first")
    for regime in regimes:
        write_comparison(runs, regime, args.outputs)


def write_comparison(runs: pd.DataFrame, regime: str, outputs: Path) -> None:
    """``compare-<regime>.{csv,md}`` under ``outputs``, and the markdown printed."""
    summary, per_step = compare(runs, regime)
    if summary.empty:
        raise ConfigError(f"no {regime} runs under {outputs}; run `make roadmap REGIME={regime}` first")
    text = (f"# Proxies of the {regime} roadmap compared\n\nAgreement with the paper (Spearman ρ, Kendall τ over "
            f"the n steps with both top-1s; Δ sign; Δs beyond seed noise) and cost (device-hours from the run "
            f"records).\n\n{summary.to_markdown(index=False, floatfmt='.2f')}\n\n## Top-1 per step\n\n"
            f"{per_step.reset_index().to_markdown(index=False, floatfmt='.2f')}\n")
    write_text(outputs / f"compare-{regime}.csv", summary.to_csv(index=False))
    write_text(outputs / f"compare-{regime}.md", text)
    print(text)
    print(f"written: {outputs / f'compare-{regime}.csv'}, {outputs / f'compare-{regime}.md'}")


if __name__ == "__main__":
    main()
