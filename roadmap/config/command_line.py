"""``run.py``'s command line before Hydra composes it: overrides Hydra can read, no key twice, group choices that a
config folder holds (with the nearest name), user regime and step files that are sound, no loop key of the trainer,
an experiment's budget keys not spilled onto another budget."""
from __future__ import annotations

from roadmap.config.files import check_choice, config_groups, options, read_yaml
from roadmap.config.schema import check_regime_file
from roadmap.config.trainer import refuse_loop_overrides
from roadmap.errors import ConfigError, one_line


def command_line(argv: list[str]) -> tuple[list[str], bool]:
    """A ``run.py`` command line's overrides, and whether it is a multirun, as Hydra's own argument parser reads it."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    return args.overrides, args.multirun



def check_overrides(argv: list[str], repeats: bool = False) -> None:
    """The command line before Hydra composes it: a loop key of the trainer, a key given twice (unless ``repeats``),
    a group choice (step, regime, data, ...) that no config folder holds, a user's regime or step file that is
    broken."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    words, sweeping = command_line(argv)
    alone = next((w for w in words if "=" not in w and not w.startswith("~")), None)
    if alone is not None:
        raise ConfigError(f"{alone} is not an override: write key=value (+key=value adds a key, ~key removes one)")
    overrides = [w for w in words if "=" in w]
    refuse_loop_overrides(overrides)
    parser, parsed = OverridesParser.create(), []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException as err:
            raise ConfigError(f"cannot read the override {text} ({one_line(err)}): quote a value with special "
                              f"characters, e.g. 'key=\"a b\"'; ~ is not expanded, give the full path") from None
    seen: dict[str, str] = {}
    for override, text in zip(parsed, overrides):
        key = override.key_or_group
        if override.is_sweep_override() and not sweeping and not repeats:
            raise ConfigError(f"{text} is a sweep: give one value, or add -m to run.py for a job per value (a list "
                              f"value is written {key}=[...])")
        if key in seen and not repeats:
            raise ConfigError(f"{key} is given twice ({seen[key]}, {text}): keep one")
        seen[key] = text
        if key in config_groups() and not override.is_delete():
            values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
            for value in values:
                path = check_choice(key, str(value))
                if key == "regime":
                    check_regime_file(path)
    _check_experiment_groups(seen)
    options("step")  # every user step file is checked, whichever is chosen: a broken one breaks the roadmap



def _check_experiment_groups(given: dict[str, str]) -> None:
    """An experiment that chooses a budget and sets some of its keys (``paper_in1k_1gpu``: the paper budget at batch
    128 × 32) would set those keys on the command line's other budget too: half of each applied. (Data keys an
    experiment sets, ``verify_images``, hold for any image data chosen instead: ``data=imagenet_tar``.)"""
    experiment = given.get("experiment") or given.get("+experiment")
    if not experiment:
        return
    name = experiment.split("=", 1)[1]
    content = read_yaml(check_choice("experiment", name)) or {}
    for entry in content.get("defaults") or []:
        for chosen, value in (entry.items() if isinstance(entry, dict) else ()):
            group = str(chosen).removeprefix("override ").strip().lstrip("/")
            if group == "budget" and group in given and isinstance(content.get(group), dict) \
                    and given[group] != f"{group}={value}":
                keys = ", ".join(f"{group}.{k}" for k in content[group])
                raise ConfigError(f"+experiment={name} sets {keys} of its {group}={value}: with {given[group]} they "
                                  f"would apply to {given[group].split('=', 1)[1]} too; drop {given[group]}, or set "
                                  f"the {group} keys you want on the command line")
