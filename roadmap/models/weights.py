"""Weights in and out of a run: read any checkpoint or exported file, export plain state dicts, start a
model from weights (``model.init_from``).

``model.init_from`` takes a run's ``.ckpt`` (its raw weights), exported weights (``.safetensors`` /
``.pth``), ``timm`` (timm's weights of the paper's training of the matching reference model, from the local
Hugging Face cache; never a download) or ``timm:/path/to/file`` (a timm state dict saved locally). When the class count differs
the classifier is left newly initialised (fine-tuning); every other tensor must fit the step.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file

from roadmap.errors import ConfigError
from roadmap.models.key_maps import convert_reference_state_dict
from roadmap.utils.files import atomic_path

HEAD_KEYS = ("fc.weight", "fc.bias")
# timm's architectures a step can match, with the weights of the paper's training of each: torchvision's ResNets
# (Tables 10/11, row 0) and the official ImageNet-1K ConvNeXts (timm's default tags are other trainings, e.g.
# convnext_tiny's in12k_ft_in1k); timm has no ImageNet-1K weights of resnet200
TIMM_WEIGHTS = {"resnet50": "resnet50.tv_in1k", "resnet101": "resnet101.tv_in1k", "resnet152": "resnet152.tv_in1k",
                "resnet200": None, "convnext_tiny": "convnext_tiny.fb_in1k", "convnext_small": "convnext_small.fb_in1k",
                "convnext_base": "convnext_base.fb_in1k", "convnext_large": "convnext_large.fb_in1k"}
TIMM_REFERENCES = tuple(TIMM_WEIGHTS)


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


def _architecture(model: torch.nn.Module) -> str:
    """``depths 3-3-27-3, stem width 128`` of a RoadmapNet."""
    depths = "-".join(str(len(stage.blocks)) for stage in model.stages)
    return f"depths {depths}, stem width {model.stem[0].out_channels}"


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> str:
    """Load strictly, except a classifier of another class count, which stays newly initialised; what became of the
    head: ``kept``, or ``new: N classes (the weights have M)``."""
    own = model.state_dict()
    head_differs = any(k in state_dict and state_dict[k].shape != own[k].shape for k in HEAD_KEYS)
    theirs = next((state_dict[k].shape[0] for k in HEAD_KEYS if k in state_dict), None)  # the weights' classes
    if head_differs:
        state_dict = {k: v for k, v in state_dict.items() if k not in HEAD_KEYS}
    missing, unexpected = set(own) - set(state_dict), set(state_dict) - set(own)
    shapes = [k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape]
    if (missing - (set(HEAD_KEYS) if head_differs else set())) or unexpected or shapes:
        detail = "; ".join(f"{name}: {sorted(keys)[:3]}{' ...' if len(keys) > 3 else ''}" for name, keys in
                           (("missing", missing - set(HEAD_KEYS)), ("unexpected", unexpected), ("other shape", shapes)) if keys)
        raise ConfigError(f"the weights of {source} do not fit this model ({_architecture(model)}: "
                          f"{detail}); use weights of the same architecture")
    model.load_state_dict(state_dict, strict=not head_differs)
    if not head_differs:
        return "kept"
    return f"new: {own[HEAD_KEYS[0]].shape[0]} classes (the weights have {theirs})"


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
    """The weights of timm's ``name`` from a local file, or the paper's training of it (:data:`TIMM_WEIGHTS`) from the
    Hugging Face cache on this machine; never a download, never a network request."""
    if file:
        return read_state_dict(file)
    return timm.create_model(TIMM_WEIGHTS[name], pretrained=True,
                             pretrained_cfg_overlay={"file": timm_weights_file(name)}).state_dict()


def timm_weights_file(name: str) -> str:
    """The local file of the paper's weights of timm's ``name`` (:data:`TIMM_WEIGHTS`) in this machine's Hugging Face
    cache, found without a request; one line where there is none."""
    from huggingface_hub import try_to_load_from_cache  # the cache only: no request, no retries

    tag = TIMM_WEIGHTS[name]
    if tag is None:
        raise ConfigError(f"timm has no ImageNet-1K weights of {name}: give model.init_from=timm:/path/to/{name}.pth")
    hub_id = timm.models.get_pretrained_cfg(tag).hf_hub_id
    cached = [path for filename in ("model.safetensors", "pytorch_model.bin")
              if isinstance(path := try_to_load_from_cache(hub_id, filename), str)]
    if not cached:
        raise ConfigError(f"timm's {tag} weights are not in this machine's Hugging Face cache ({hub_id}): fetch them "
                          f"once where there is internet (timm.create_model('{tag}', pretrained=True)), or give "
                          f"model.init_from=timm:/path/to/{name}.pth")
    return cached[0]


def check_init_source(model: torch.nn.Module, source: str, ema: bool = False) -> None:
    """Refuse a ``model.init_from`` that cannot be read, before any work: a missing file, a step timm has no model
    of, timm's weights not in the local cache, and with ``ema`` (``recipe.init_from_ema``) a file that holds no EMA
    weights (``model`` may be on the meta device: nothing is loaded)."""
    if source == "timm" or source.startswith("timm:"):
        name, file = _timm_match(model), source.partition(":")[2] or None
        if file is None:
            timm_weights_file(name)
            return
        source = file
    if not Path(source).expanduser().is_file():
        raise ConfigError(f"no weights file {source}: point model.init_from at a run's checkpoints/*.ckpt or "
                          f"weights/*.safetensors")
    if ema:
        _ema_weights_of(source)


def _ema_weights_of(source: str) -> dict[str, torch.Tensor]:
    """The EMA weights ``recipe.init_from_ema`` asks for: a run's ``.ckpt``'s, or an exported ``ema.safetensors``."""
    if Path(source).name == "ema.safetensors":
        return read_state_dict(source)
    if Path(source).suffix != ".ckpt":
        raise ConfigError(f"recipe.init_from_ema=true starts from EMA weights, which {source} is not known to hold: give "
                          f"the pre-trained run's checkpoints/last.ckpt or weights/ema.safetensors, or recipe.init_from_ema=false")
    try:
        return read_state_dict(source, "ema")
    except ConfigError as err:
        raise ConfigError(f"{err}: recipe.init_from_ema=true needs them (recipe.init_from_ema=false starts from the "
                          f"raw weights)") from None


def init_from(model: torch.nn.Module, source: str, ema: bool = False, named: str | None = None) -> dict:
    """Start ``model`` from ``source`` (see the module docstring); ``ema``: a run's EMA weights (``recipe.init_from_ema``;
    timm's are the paper's released weights as they are); ``named``: how messages name ``source`` (e.g. with the run
    that made it). What was loaded: ``{"file", "weights": "EMA"|"raw"|"timm's released", "head"}``."""
    if source == "timm" or source.startswith("timm:"):
        name, file = _timm_match(model), source.partition(":")[2] or None
        state_dict = convert_reference_state_dict(timm_state_dict(name, file))
        shown = f"{file} (as timm's {name})" if file else f"timm {name}"
        return {"file": shown, "weights": "timm's released", "head": load_into(model, state_dict, shown)}
    head = load_into(model, _ema_weights_of(source) if ema else read_state_dict(source), named or source)
    return {"file": named or source, "weights": "EMA" if ema else "raw", "head": head}


