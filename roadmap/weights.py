"""Weights in and out of a run: read any checkpoint or exported file, export plain state dicts, start a
model from weights (``model.init_from``).

``model.init_from`` takes a run's ``.ckpt`` (its raw weights), exported weights (``.safetensors`` /
``.pth``), ``timm`` (timm's pretrained weights of the matching reference model from the local cache; never
a download) or ``timm:/path/to/file`` (a timm state dict saved locally). When the class count differs
the classifier is left newly initialised (fine-tuning); every other tensor must fit the step.
"""
from __future__ import annotations

import os
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file

from roadmap.compat import convert_reference_state_dict
from roadmap.errors import ConfigError
from roadmap.files import atomic_path

HEAD_KEYS = ("fc.weight", "fc.bias")
TIMM_REFERENCES = ("resnet50", "resnet101", "resnet152", "resnet200", "convnext_tiny", "convnext_small",
                   "convnext_base", "convnext_large")


def _read(path: str | Path):
    """The file's content: a state dict (``.safetensors``, ``.pth``/``.pt``) or a Lightning checkpoint."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"no weights file {path}: point it at a run's checkpoints/*.ckpt or weights/*.safetensors")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=path.suffix != ".ckpt")
    except Exception as err:  # torch/safetensors raise many types for a bad file
        raise ConfigError(f"cannot read weights from {path}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def _select(blob, which: str, path) -> dict[str, torch.Tensor]:
    if "state_dict" in blob and isinstance(blob["state_dict"], dict):
        prefix = {"model": "model.", "ema": "ema.module."}[which]
        found = {k.removeprefix(prefix): v for k, v in blob["state_dict"].items() if k.startswith(prefix)}
        if not found:
            raise ConfigError(f"{path} holds no {which} weights" + (" (EMA was off in that run)" if which == "ema" else ""))
        return found
    if which == "ema":
        raise ConfigError(f"{path} holds no ema weights (only a run's .ckpt has them)")
    return blob.get("model", blob)


def read_state_dict(path: str | Path, which: str = "model") -> dict[str, torch.Tensor]:
    """RoadmapNet weights from a Lightning ``.ckpt`` (``which`` = ``model`` or ``ema``), a ``.safetensors``
    export or a ``.pth``/``.pt`` state dict."""
    return _select(_read(path), which, path)


def read_model_and_ema(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """The model's weights and the EMA's (``None`` when the file has none), reading the file once."""
    blob = _read(path)
    try:
        ema = _select(blob, "ema", path)
    except ConfigError:
        ema = None
    return _select(blob, "model", path), ema


def export(state_dict: dict[str, torch.Tensor], path: Path) -> Path:
    """Save a plain state dict as safetensors (atomically: a temporary file, then a rename)."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp))
    return path


def export_run_weights(module, paths) -> dict[str, str]:
    """A finished run's ``weights/{final,best,ema}.safetensors`` (plain RoadmapNet state dicts; best from
    ``best.ckpt``), as paths in the run folder (``paths``: its :class:`roadmap.record.RunPaths`)."""
    model = getattr(module.model, "_orig_mod", module.model)  # torch.compile's wrapper
    out = {"final": export(model.state_dict(), paths.weights_file("final"))}
    if paths.best_ckpt.exists():
        which = "ema" if module.ema is not None else "model"
        out["best"] = export(read_state_dict(paths.best_ckpt, which), paths.weights_file("best"))
    if module.ema is not None:
        out["ema"] = export(module.ema.module.state_dict(), paths.weights_file("ema"))
    return {k: paths.relative(v) for k, v in out.items()}


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load strictly, except a classifier of another class count, which stays newly initialised."""
    own = model.state_dict()
    head_differs = any(k in state_dict and state_dict[k].shape != own[k].shape for k in HEAD_KEYS)
    if head_differs:
        state_dict = {k: v for k, v in state_dict.items() if k not in HEAD_KEYS}
    missing, unexpected = set(own) - set(state_dict), set(state_dict) - set(own)
    shapes = [k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape]
    if (missing - (set(HEAD_KEYS) if head_differs else set())) or unexpected or shapes:
        detail = "; ".join(f"{name}: {sorted(keys)[:3]}{' ...' if len(keys) > 3 else ''}" for name, keys in
                           (("missing", missing - set(HEAD_KEYS)), ("unexpected", unexpected), ("other shape", shapes)) if keys)
        raise ConfigError(f"the weights of {source} do not fit this step ({detail}); use weights of the same step and regime")
    model.load_state_dict(state_dict, strict=not head_differs)


def _timm_match(model: torch.nn.Module) -> str:
    """The timm reference model whose weights fit ``model`` (same keys and shapes but for the head)."""
    own = {k: v.shape for k, v in model.state_dict().items() if k not in HEAD_KEYS}
    for name in TIMM_REFERENCES:
        with torch.device("meta"):
            reference = timm.create_model(name)
        converted = convert_reference_state_dict(reference.state_dict())
        if {k: v.shape for k, v in converted.items() if k not in HEAD_KEYS} == own:
            return name
    raise ConfigError(f"no timm model has this step's architecture (tried {', '.join(TIMM_REFERENCES)}); "
                      f"model.init_from=timm works for the first and last steps only")


def timm_state_dict(name: str, file: str | None) -> dict[str, torch.Tensor]:
    """timm's ``name`` weights from a local file, or from timm's cache with downloads switched off."""
    if file:
        return read_state_dict(file)
    os.environ["HF_HUB_OFFLINE"] = "1"  # never a download at run time
    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as err:  # hub/cache errors come in many types
        raise ConfigError(f"timm's {name} weights are not in the local cache ({type(err).__name__}); fetch them "
                          f"once where there is internet, or give model.init_from=timm:/path/to/{name}.pth") from None


def init_from(model: torch.nn.Module, source: str) -> None:
    """Start ``model`` from ``source`` (see the module docstring)."""
    if source == "timm" or source.startswith("timm:"):
        name = _timm_match(model)
        state_dict = convert_reference_state_dict(timm_state_dict(name, source.partition(":")[2] or None))
        load_into(model, state_dict, f"timm {name}")
    else:
        load_into(model, read_state_dict(source), source)
