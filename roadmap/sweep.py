"""Sweeps from the shell: a regime's steps as Hydra sweep values (for ``make roadmap``), the group folder of a run,
and the final weights of a finished run (for a fine-tune's ``model.init_from``).

    python -m roadmap.sweep r50     # prints the steps as Hydra sweep values: original_recipe,modern_recipe,...

A sweep's progress and outcome are :mod:`roadmap.run.outcome`'s.
"""
from __future__ import annotations

from pathlib import Path

from roadmap.config.steps import available_regimes, list_steps
from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.utils.cli import Parser


def _composed(overrides: list[str]):
    """The config of the run that ``run.py <overrides>`` names (a multirun's first job), with Hydra's runtime."""
    from roadmap.config.steps import _first_of_each_sweep, compose_config, split_command

    step, regime, rest = split_command(_first_of_each_sweep(overrides))
    return compose_config(step, regime, rest, as_run=True)


def finished_weights(overrides: list[str]) -> Path:
    """The final weights of the finished run that ``run.py <overrides>`` names: a chained stage's
    ``model.init_from`` (ImageNet-22K pre-training, then fine-tuning: ``make family-22k``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from roadmap.run.record import RunPaths, RunRecord

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # noqa: BLE001 - Hydra's parse errors: the override as written
        raise ConfigError(f"--weights-of: {str(err).splitlines()[0]}") from None
    swept = [text for text, override in zip(overrides, parsed) if override.is_sweep_override()]
    if swept:
        raise ConfigError(f"--weights-of names one run, and {swept[0]} names several: give one value (one command "
                          f"per run)")
    paths = RunPaths(Path(_composed(overrides).run.dir).resolve())
    run = RunRecord.read(paths.root)
    weights = paths.weights_file("final")
    if run is None or run.status != "done" or not weights.is_file():
        raise ConfigError(f"{paths.root} holds no finished run with weights/final.safetensors "
                          f"({run.status if run else 'no record'}): run that stage first")
    return weights


@exit_on_config_error
def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m roadmap.sweep", description="Print a regime's steps as Hydra sweep values "
                    "(for run.py -m \"+step=$(python -m roadmap.sweep r50)\"), or with --weights-of the final weights "
                    "of the finished run that run.py's overrides name (a chained stage's model.init_from), or with "
                    "--group-of the group folder of their runs (the sweep make roadmap hands the notebook).")
    parser.add_argument("regime", nargs="?", default="r50", choices=available_regimes())
    parser.add_argument("--weights-of", nargs="+", metavar="OVERRIDE", help="run.py overrides naming one run")
    parser.add_argument("--group-of", nargs="+", metavar="OVERRIDE", help="run.py overrides: print their runs' group")
    parser.add_argument("--recipe", nargs="+", metavar="NAME", help="only the steps every one of these recipes can "
                        "train (the paper gives each its stochastic depth there): make family-22k's members")
    args = parser.parse_args(argv)
    if args.weights_of:
        print(finished_weights(args.weights_of))
        return
    if args.group_of:
        print(_composed(args.group_of).run.group)
        return
    steps = [s.name for s in list_steps(args.regime)]
    if args.recipe:
        steps = [s for s in steps if all(_trainable(s, args.regime, recipe) for recipe in args.recipe)]
        if not steps:
            raise ConfigError(f"no step of regime {args.regime} can be trained by recipe(s) {', '.join(args.recipe)}")
    print(",".join(steps))


def _trainable(step: str, regime: str, recipe: str) -> bool:
    """Whether ``recipe`` can train ``step`` (its config validates: e.g. the paper gives its stochastic depth)."""
    from roadmap.config.steps import compose_config

    try:
        compose_config(step, regime, [f"recipe={recipe}"])
    except ConfigError:
        return False
    return True


if __name__ == "__main__":
    main()
