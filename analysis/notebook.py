"""Execute notebooks/roadmap.ipynb on a sweep's results and save the executed copy beside its table.

    python -m analysis.notebook OUTPUTS_DIR [--regime r50] [--group synthetic-cpu_proxy]

The notebook in git stays without outputs; the executed copy lands in OUTPUTS_DIR/<group>/<regime>/.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from analysis.roadmap import groups, load_runs
from roadmap.cli import Parser
from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.files import atomic_path
from roadmap.steps import available_regimes

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "roadmap.ipynb"


def run_notebook(outputs: Path, regime: str = "r50", group: str | None = None,
                 timeout: int = 600) -> nbformat.NotebookNode:
    """Run the roadmap notebook top to bottom on the runs under ``outputs``; return the executed notebook."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "ROADMAP_GROUP"}
    env.update(ROADMAP_OUTPUTS=str(Path(outputs).resolve()), ROADMAP_REGIME=regime)
    if group:
        env["ROADMAP_GROUP"] = group
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute(env=env)  # the kernel's environment
    return nb


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
    nb = run_notebook(args.outputs, args.regime, group)
    target = args.outputs / group / args.regime / "roadmap.ipynb"
    with atomic_path(target) as tmp:
        nbformat.write(nb, tmp)
    print(f"executed notebook: {target}")


def _first_group(outputs: Path, regime: str) -> str:
    found = [g for g, r in groups(load_runs(outputs)) if r == regime]
    if not found:
        raise ConfigError(f"no {regime} runs under {outputs}; run `make roadmap REGIME={regime} OUTPUTS={outputs}` first")
    return found[0]


if __name__ == "__main__":
    main()
