"""Execute notebooks/roadmap.ipynb on a sweep's results with papermill and save the executed copy beside its table.

    python -m analysis.notebook OUTPUTS_DIR [--regime r50] [--group synthetic-cpu_proxy]   # default: what is there

The notebook in git stays without outputs; its parameters (``outputs``, ``regime``, ``group``) are papermill's, and
the executed copy, every figure inline, lands in OUTPUTS_DIR/<group>/<regime>/roadmap.ipynb.
"""
from __future__ import annotations

from pathlib import Path

import papermill

from analysis.roadmap import groups, load_runs
from roadmap.config.steps import available_regimes
from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.utils.cli import Parser
from roadmap.utils.files import atomic_path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "roadmap.ipynb"


def run_notebook(outputs: Path, regime: str, group: str, target: Path, timeout: int = 600) -> Path:
    """Run the roadmap notebook top to bottom on ``group``'s ``regime`` runs under ``outputs``; write it to ``target``
    (atomically)."""
    with atomic_path(target) as tmp:
        papermill.execute_notebook(str(NOTEBOOK), str(tmp), parameters={"outputs": str(Path(outputs).resolve()),
                                                                         "regime": regime, "group": group},
                                   cwd=str(REPO), kernel_name="python3", progress_bar=False, execution_timeout=timeout)
    return target


@exit_on_config_error
def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m analysis.notebook", description=__doc__.splitlines()[0])
    parser.add_argument("outputs", type=Path, help="the sweep's outputs root (run.root)")
    parser.add_argument("--regime", default=None, choices=available_regimes(),
                        help="default: the regime of --group, else the first regime with runs under OUTPUTS_DIR")
    parser.add_argument("--group", default=None, help="<data>-<budget> folder; default: the first of the regime")
    args = parser.parse_args(argv)
    if not args.outputs.is_dir():
        raise ConfigError(f"outputs folder {args.outputs} does not exist; run `make roadmap OUTPUTS=...` first")
    found = [(r, g) for g, r in groups(load_runs(args.outputs))
             if (args.regime in (None, r)) and (args.group in (None, g))]
    if not found:
        which = " ".join(f"--{k} {v}" for k, v in (("regime", args.regime), ("group", args.group)) if v)
        raise ConfigError(f"no runs{f' of {which}' if which else ''} under {args.outputs}: run `make roadmap "
                          f"OUTPUTS={args.outputs}` first, or give one of its groups (the folders under {args.outputs})")
    regime, group = found[0]
    target = run_notebook(args.outputs, regime, group, args.outputs / group / regime / "roadmap.ipynb")
    print(f"executed notebook: {target}")


if __name__ == "__main__":
    main()
