"""Rebuild the paper's roadmap table (Table 10/11) and chart (Figure 2) from run directories.

    python -m analysis.roadmap OUTPUTS_DIR [--group synthetic-cpu_proxy] [--regime r50]

Runs are grouped by their records' group (``<data>-<budget>[+overrides]``, see roadmap.run.record) and regime;
each group gets its own table, so runs with other data, budgets or configs
never mix and are never averaged as seeds. Files are written next to the
runs: ``OUTPUTS_DIR/<group>/<regime>/roadmap.{csv,md,tex,png,svg}``.
"""
from __future__ import annotations

import re

from pathlib import Path

import pandas as pd

from analysis.agreement import agreement, delta_verdicts
from roadmap.config.steps import PaperColumns, available_regimes, list_steps, paper_columns, regime_table
from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.run import record
from roadmap.run.record import RunRecord
from roadmap.utils.cli import Parser
from roadmap.utils.files import write_text

COLUMNS = ["step", "change", "adopted", "parent", "gflops", "params_m", "images_per_s", "top1_mean", "top1_std",
           "n_seeds", "delta_top1", "delta_verdict", "paper_top1", "paper_delta", "paper_gflops", "status", "error"]


def load_runs(root: Path) -> pd.DataFrame:
    """One row per run folder under ``root`` with its record (roadmap.run.record), or why there is none. ``top1`` is the
    paper's metric, as the official code reports it: the best epoch's top-1, of the EMA weights where the EMA is on
    (``metric`` names which); the last epoch's are ``top1_last`` and ``top1_last_ema``. ``params_m`` is counted with
    the paper's 1000-class head, whatever head the run trained."""
    rows = []
    for run_dir in record.find_runs(root):
        run = RunRecord.load(run_dir)
        rows.append({"group": run.group, "regime": run.regime, "step": run.step, "seed": run.seed,
                     "overrides": ", ".join(run.overrides), "run_dir": str(run_dir), "status": run.status,
                     "error": run.error, "top1": run.best.get("top1"), "metric": run.best.get("metric"),
                     "top1_last": run.final.get("top1"), "top1_last_ema": run.final.get("top1_ema"),
                     "top5_last": run.final.get("top5"), "recipe": run.recipe, "gflops": run.gflops_224,
                     "params_m": run.params_m if run.params_m_1000 is None else run.params_m_1000,  # the paper's
                     "images_per_s": run.train_images_per_s, "proxy": run.proxy, "img_size": run.img_size,
                     "wall_s": run.wall_s, "device": run.hardware.get("device"),
                     "devices": run.hardware.get("devices", 1),
                     "weights_from": (run.weights_from or {}).get("source")})
    return pd.DataFrame(rows)


def _status(statuses: pd.Series) -> str:
    if statuses.empty:
        return "missing"
    if (statuses == "done").all():
        return "done"
    return "/".join(f"{s}×{n}" if n > 1 else s for s, n in statuses.value_counts().items())


METRICS = {"val/top1": "best-epoch top-1", "val/top1_ema": "best-epoch EMA top-1"}


def metric_name(runs: pd.DataFrame) -> str:
    """What a group's top-1 is (:func:`load_runs`), for column headers and axis labels."""
    found = sorted({METRICS.get(m, m) for m in runs.get("metric", pd.Series(dtype=object)).dropna()})
    return " / ".join(found) or "top-1"


def paper_setting(runs: pd.DataFrame) -> PaperColumns:
    """The paper's numbers a group's runs compare with (:func:`roadmap.config.steps.paper_columns`): by their recipe and image
    size, and whether they started from other weights."""
    if runs.empty:
        return paper_columns()
    recipes = runs.get("recipe", pd.Series(dtype=object)).dropna().unique()
    sizes = runs.img_size.dropna().unique()
    fine_tuned = runs.get("weights_from", pd.Series(dtype=object)).notna().any()
    if len(recipes) > 1 or len(sizes) > 1:
        return PaperColumns(None, "gflops", f"runs of several recipes or sizes ({', '.join(map(str, recipes))}): "
                                            f"no one paper column", "none")
    return paper_columns(recipes[0] if len(recipes) else None, int(sizes[0]) if len(sizes) else 224, fine_tuned)


def roadmap_table(runs: pd.DataFrame, regime: str) -> pd.DataFrame:
    """The regime's steps in roadmap order, with this group's results beside the paper's of the same setting
    (:func:`paper_setting`: trained from scratch, pre-trained on 22K, or fine-tuned from 1K or 22K); Δ is to the step
    each one changes (its parent: the previous adopted step)."""
    rows = {}
    setting = paper_setting(runs)
    for info in list_steps(regime, setting):
        mine = runs[runs.step == info.name] if not runs.empty else runs
        done = mine[mine.status == "done"] if not mine.empty else mine
        top1 = done.top1.dropna().astype(float) if not done.empty else pd.Series(dtype=float)
        errors = mine.error.dropna().unique().tolist() if not mine.empty else []
        row = {"step": info.name, "change": info.change, "adopted": info.adopted, "parent": info.parent,
               "gflops": done.gflops.iloc[0] if not done.empty else None,
               "params_m": done.params_m.iloc[0] if not done.empty else None,
               "images_per_s": round(done.images_per_s.astype(float).mean(), 1) if not done.empty and done.images_per_s.notna().any() else None,
               "top1_mean": round(top1.mean(), 2) if len(top1) else None,
               "top1_std": round(top1.std(), 2) if len(top1) > 1 else None,  # sample std; none for one seed
               "n_seeds": len(top1), "delta_top1": None, "paper_top1": info.paper_top1, "paper_delta": None,
               "paper_gflops": info.paper_gflops, "status": _status(mine.status if not mine.empty else pd.Series(dtype=str)),
               "error": "; ".join(errors) or None}
        parent = rows.get(info.parent)
        if row["top1_mean"] is not None and parent is not None and parent["top1_mean"] is not None:
            row["delta_top1"] = round(row["top1_mean"] - parent["top1_mean"], 2)
        if info.paper_top1 is not None and parent is not None and parent["paper_top1"] is not None:
            row["paper_delta"] = round(info.paper_top1 - parent["paper_top1"], 2)
        rows[info.name] = row
    table = pd.DataFrame(list(rows.values()), columns=COLUMNS)
    table["delta_verdict"] = delta_verdicts(table)
    table.attrs.update(metric=metric_name(runs), paper=setting.label, paper_short=setting.short,
                       from_scratch=setting.top1 == "top1")
    return table


def headed(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its top-1 columns named by what they hold (:func:`metric_name`, the paper's setting)."""
    return table.rename(columns={"top1_mean": f"top1_mean ({table.attrs.get('metric', 'top-1')})",
                                 "paper_top1": f"paper_top1 ({table.attrs.get('paper_short', '1K, 224²')})"})


def groups(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """Every (group, regime) with a run that started: a folder without a record (``missing``) shows nothing."""
    started = runs[runs.status != "missing"] if not runs.empty else runs
    return sorted(set(zip(started.group, started.regime))) if not started.empty else []


def describe(runs: pd.DataFrame, group: str) -> str:
    """What data and budget a group's table shows (its records' proxy label when it is not the paper's
    setting) and the overrides its runs were given."""
    mine = runs[runs.group == group]
    proxies = mine.proxy.dropna().unique()
    label = proxies[0] if len(proxies) else f"{group}: data and budget as named"
    overrides = [_short_paths(o) for o in mine.overrides.dropna().unique() if o]
    label = f"{label} | overrides: {overrides[0]}" if overrides else label
    return f"{label} | paper: {paper_setting(mine).label}"


def _short_paths(overrides: str) -> str:
    """``key=/a/long/path/file`` as ``key=.../file`` in a title: the full path is in each run's config.yaml."""
    return re.sub(r"=(/[^,\s]*/)([^/,\s]+)", r"=.../\2", overrides)


def throughput_source(table: pd.DataFrame, runs: pd.DataFrame, outputs: Path, regime: str) -> str:
    """Fill ``images_per_s`` from ``make bench``'s ``OUTPUTS/benchmark/<regime>.csv`` when it was measured on
    the runs' hardware (224², the paper's setting); otherwise it stays the runs' own training speed. Returns
    the label saying which."""
    devices = runs.device.dropna().unique()
    bench_file = record.benchmark_file(outputs, regime)
    if bench_file.exists() and len(devices) == 1:
        bench = pd.read_csv(bench_file)
        mine = bench[(bench.model == "roadmap") & (bench.get("device") == devices[0])].set_index("step")
        if not mine.empty:
            table["images_per_s"] = table.step.map(mine.train_img_s.round(1))
            return f"images/s: training at {int(mine.img_size.iloc[0])}² from make bench on {devices[0]}"
    sizes = sorted({int(s) for s in runs.img_size.dropna()})
    where = devices[0] if len(devices) == 1 else "mixed hardware" if len(devices) else "unknown hardware"
    return (f"images/s: the runs' training speed at {'/'.join(map(str, sizes)) or '?'}² on {where} "
            f"(no make bench output for it)")


def caption(title: str, agreement_text: str, notes: list[str]) -> str:
    return f"{title}. {agreement_text[0].upper()}{agreement_text[1:]}." + "".join(f" {n}." for n in notes)


_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
# What the captions and cells hold beyond ASCII, as LaTeX (booktabs; no package beyond it)
_LATEX = {"ρ": r"$\rho$", "τ": r"$\tau$", "Δ": r"$\Delta$", "²": r"$^2$", "±": r"$\pm$", "×": r"$\times$",
          "→": r"$\rightarrow$", "≥": r"$\geq$", "≤": r"$\leq$", "–": "--", "—": "---", "…": r"\ldots{}", "’": "'"}


def latex_text(text: str) -> str:
    """Plain text as LaTeX: its special characters escaped, its symbols as math."""
    escaped = "".join(_SPECIAL.get(char, char) for char in str(text))
    for symbol, command in _LATEX.items():
        escaped = escaped.replace(symbol, command)
    return escaped


def latex(table: pd.DataFrame, caption_text: str, label: str) -> str:
    """The table as a booktabs LaTeX table (pandas' Styler), every cell, header and the caption escaped."""
    shown = table.copy()
    for column in shown.columns:
        shown[column] = shown[column].map(lambda v: latex_text(v) if isinstance(v, str) else v)
    shown.columns = [latex_text(c) for c in shown.columns]
    styler = shown.style.format(precision=2, na_rep="--").hide(axis="index")
    return styler.to_latex(caption=latex_text(caption_text), label=label, hrules=True, position="htbp")


def write_outputs(table: pd.DataFrame, out_dir: Path, regime: str, title: str, notes: list[str] = ()) -> list[Path]:
    """CSV, Markdown and LaTeX tables (with the agreement with the paper as footer/caption), the agreement
    as its own CSV, and the PNG/SVG chart; every file written atomically."""
    from analysis.chart import roadmap_chart

    out_dir.mkdir(parents=True, exist_ok=True)
    measured = agreement(table)
    text = caption(title, measured.summary(), list(notes))
    written = []
    for name, render in (
            ("roadmap.csv", lambda: table.to_csv(index=False)),
            ("roadmap_agreement.csv", lambda: pd.DataFrame([measured.as_row()]).to_csv(index=False)),
            ("roadmap.md", lambda: f"{title}\n\n{headed(table.drop(columns=['error'])).to_markdown(index=False)}\n\n{text}\n"),
            ("roadmap.tex", lambda: latex(headed(table.drop(columns=["error", "change"])), text, "tab:roadmap"))):
        path = out_dir / name
        write_text(path, render())
        written.append(path)
    reference = regime_table(regime).get("reference") if table.attrs.get("from_scratch", True) else None
    return written + roadmap_chart(table, out_dir, title, reference, measured)


@exit_on_config_error
def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m analysis.roadmap", description=__doc__.splitlines()[0])
    parser.add_argument("outputs", type=Path)
    parser.add_argument("--group", help="only this <data>-<budget> group")
    parser.add_argument("--regime", choices=available_regimes(), help="only this regime")
    args = parser.parse_args(argv)
    if not args.outputs.is_dir():
        raise ConfigError(f"no outputs folder {args.outputs}: pass the run.root of your runs (default: outputs)")
    runs = load_runs(args.outputs)
    selected = [(g, r) for g, r in groups(runs)
                if (args.group in (None, g)) and (args.regime in (None, r)) and r in available_regimes()]
    if not selected:
        raise ConfigError(f"no runs under {args.outputs} for group={args.group} regime={args.regime}; "
                          f"found: {', '.join(f'{g}/{r}' for g, r in groups(runs)) or 'nothing'}")
    for group, regime in selected:
        subset = runs[(runs.group == group) & (runs.regime == regime)]
        title = f"{regime} roadmap, {describe(runs, group)}"
        table = roadmap_table(subset, regime)
        notes = [throughput_source(table, subset, args.outputs, regime)]
        files = write_outputs(table, args.outputs / group / regime, regime, title, notes)
        print(f"## {title}\n{headed(table.drop(columns=['error', 'change'])).to_string(index=False)}")
        print(caption("", agreement(table).summary(), notes)[2:])
        for _, row in table[table.status != "done"].iterrows():
            print(f"  {row.step}: {row.status}" + (f" ({row.error})" if row.error else ""))
        print("written: " + ", ".join(str(f) for f in files) + "\n")


if __name__ == "__main__":
    main()
