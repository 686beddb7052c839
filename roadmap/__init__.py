"""convnext-roadmap: the ResNet → ConvNeXt modernization roadmap (Liu et al., CVPR 2022) as Hydra configs.

The names below load on first use, so importing a leaf module (``roadmap.schema``, ``roadmap.files``) loads no
model and registers no op."""
import importlib

_EXPORTS = {"ConfigError": "roadmap.errors", "RoadmapNet": "roadmap.model", "StepInfo": "roadmap.steps",
            "available_regimes": "roadmap.steps", "available_steps": "roadmap.steps", "build_model": "roadmap.steps",
            "compose_config": "roadmap.steps", "list_steps": "roadmap.steps"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'roadmap' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
