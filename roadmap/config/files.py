"""Where configs live, and the checks a user's config file gets before Hydra reads it.

Config folders: ``conf/`` and every folder of ``$ROADMAP_CONFIG_PATH`` (``os.pathsep``-separated, same layout:
``regime/``, ``step/``, ...), which Hydra searches too (``hydra.searchpath`` in ``conf/config.yaml``). A user's step
file is refused, naming the file, when its YAML is broken, its ``# @package _global_`` header is missing (Hydra
would nest it under ``step:`` and train its parent), its parent step does not exist, a ``model:`` key is not an
argument of the builder, or it has the name of a step found earlier on the path (which would win unseen).
"""
from __future__ import annotations

import copy
import difflib
import functools
import os
from pathlib import Path

import yaml

from roadmap.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
CONFIG_PATH_ENV = "ROADMAP_CONFIG_PATH"
MODEL_FILE = "roadmap"  # conf/model/roadmap.yaml: the builder's arguments, each with its default
PACKAGE_HEADER = "# @package _global_"


def config_dirs() -> list[Path]:
    """``conf/`` first, then the folders of ``$ROADMAP_CONFIG_PATH`` (each must exist)."""
    extra = [Path(p).expanduser().resolve() for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    for folder in extra:
        if not folder.is_dir():
            raise ConfigError(f"{CONFIG_PATH_ENV} names {folder}, which is not a folder: fix or unset {CONFIG_PATH_ENV}")
    return [CONF_DIR, *extra]


def read_yaml(path: Path) -> dict:
    """A config file's content (a fresh copy); broken YAML is refused naming the file and line."""
    try:
        stat = path.stat()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    return copy.deepcopy(_parsed_yaml(path, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=1024)
def _parsed_yaml(path: Path, mtime_ns: int, size: int) -> dict:
    """One parse per file version (every composition reads the step chain, the regimes and the model file),
    by libyaml where PyYAML has it."""
    try:
        content = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        raise broken_yaml(err, path) from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None
    if content is not None and not isinstance(content, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of keys, not {type(content).__name__}")
    return content or {}


def broken_yaml(err: yaml.YAMLError, path: Path | None = None) -> ConfigError:
    """A YAML parser's error as one line naming the file (``path``, else the one the parser read) and line."""
    mark = getattr(err, "problem_mark", None)
    where = str(path or (mark.name if mark else "a config file")) + (f", line {mark.line + 1}" if mark else "")
    return ConfigError(f"{where}: broken YAML ({getattr(err, 'problem', None) or type(err).__name__}): fix the file")


def options(group: str) -> dict[str, Path]:
    """Every config of a group (``step``, ``regime``, ...) by name, from the folders in search order; a user's
    step file is checked first (:func:`check_step_file`)."""
    found: dict[str, Path] = {}
    for folder in config_dirs():
        for path in sorted((folder / group).glob("*.yaml")):
            if group == "step" and folder != CONF_DIR:
                if path.stem in found:
                    raise ConfigError(f"{path} has the name of the step {found[path.stem]}, which would be used instead: "
                                      f"rename your file (a new step needs a new name)")
                check_step_file(path)
            found.setdefault(path.stem, path)
    if group == "step":
        for name, path in found.items():
            parent = step_parent(read_yaml(path))
            if parent is not None and parent not in found:
                raise ConfigError(f"{path}: its parent step {parent!r} (first entry of defaults) does not exist; "
                                  f"valid steps: {', '.join(sorted(found))}")
    return found


def config_groups() -> set[str]:
    """The config groups a command line can choose from (``step``, ``regime``, ``data``, ...; not Hydra's own)."""
    return {p.name for d in config_dirs() for p in d.iterdir() if p.is_dir() and p.name != "hydra"}


def check_choice(group: str, name: str) -> Path:
    """The file of ``group=name``, or one line naming the valid choices."""
    found = options(group)
    if name not in found:
        lower = {option.lower(): option for option in found}
        near = [lower[n] for n in difflib.get_close_matches(name.lower(), lower, n=1)]
        plural = group if group == "data" else f"{group}s"
        raise ConfigError(f"unknown {group} {name!r}" + (f" (did you mean {near[0]}?)" if near else "")
                          + f"; valid {plural}: {', '.join(sorted(found))} (or add {group}/{name}.yaml to conf/ or "
                            f"${CONFIG_PATH_ENV})")
    return found[name]


def step_parent(step_file: dict) -> str | None:
    """The step a step file changes: the first plain entry of its defaults list."""
    return next((d for d in step_file.get("defaults") or [] if isinstance(d, str) and d != "_self_"), None)


def builder_arguments() -> list[str]:
    """The model knobs: the keys of the builder's config file (``_target_`` and its arguments)."""
    return list(read_yaml(CONF_DIR / "model" / f"{MODEL_FILE}.yaml"))


def check_step_file(path: Path) -> None:
    """A user's step file: YAML, package header and model keys (its parent is checked by :func:`options`); each
    version of a file is checked once per process."""
    stat = path.stat()
    _check_step_file(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _check_step_file(path: Path, mtime_ns: int, size: int) -> None:
    content = read_yaml(path)
    lines = [line.strip() for line in path.read_text().splitlines()]
    leading = lines[:next((i for i, line in enumerate(lines) if line and not line.startswith("#")), len(lines))]
    if PACKAGE_HEADER not in leading:  # Hydra reads the header from the comments before the first key
        raise ConfigError(f"{path}: a step file starts with the line '{PACKAGE_HEADER}' (without it Hydra nests the file "
                          f"under step: and trains its parent): add it as the first line")
    model = content.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{path}: model: holds the knobs it changes (key: value), not {model!r}")
    known = builder_arguments()
    for key in model:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            raise ConfigError(f"{path}: model.{key} is not a knob of the builder"
                              + (f"; did you mean model.{near[0]}?" if near else "")
                              + f" (knobs: conf/model/{MODEL_FILE}.yaml)")
