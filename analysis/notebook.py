"""Execute notebooks/roadmap.ipynb on a sweep's results with papermill and save the executed copy beside its table.

    python -m analysis.notebook OUTPUTS_DIR [--regime r50] [--group synthetic-cpu_proxy]

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
    parser.add_argument("--regime", default="r50", choices=available_regimes())
    parser.add_argument("--group", default=None, help="<data>-<budget> folder; default: the first for the regime")
    args = parser.parse_args(argv)
    if not args.outputs.is_dir():
        raise ConfigError(f"outputs folder {args.outputs} does not exist; run `make roadmap OUTPUTS=...` first")
    group = args.group or _first_group(args.outputs, args.regime)
    if (args.regime, group) not in [(r, g) for g, r in groups(load_runs(args.outputs))]:
        raise ConfigError(f"no {args.regime} runs of group {group} under {args.outputs}: give one of its groups "
                          f"(the folders under {args.outputs})")
    target = run_notebook(args.outputs, args.regime, group, args.outputs / group / args.regime / "roadmap.ipynb")
    print(f"executed notebook: {target}")


def _first_group(outputs: Path, regime: str) -> str:
    found = [g for g, r in groups(load_runs(outputs)) if r == regime]
    if not found:
        raise ConfigError(f"no {regime} runs under {outputs}; run `make roadmap REGIME={regime} OUTPUTS={outputs}` first")
    return found[0]


if __name__ == "__main__":
    main()
