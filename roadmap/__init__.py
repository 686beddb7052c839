"""convnext-roadmap: the ResNet → ConvNeXt modernization roadmap (Liu et al., CVPR 2022) as Hydra configs.

The packages, from the bottom up (``docs/architecture.md``): ``utils``, ``models``, ``config``, ``data``, ``run``,
``cluster``; the tools beside them (``python -m roadmap.<tool>``). The names below load on first use, so importing a
module low in the house (``roadmap.config.schema``, ``roadmap.utils.files``) loads no model and registers no op."""
import importlib
import os

# Nothing is downloaded at run time: huggingface_hub reads this once, when first imported (by timm), so it is set here,
# before any module of the project can import it; weights come from the local cache only (roadmap.models.weights)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_EXPORTS = {"ConfigError": "roadmap.errors", "RoadmapNet": "roadmap.models.net", "StepInfo": "roadmap.config.steps",
            "available_regimes": "roadmap.config.steps", "available_steps": "roadmap.config.steps",
            "build_model": "roadmap.config.steps", "compose_config": "roadmap.config.steps",
            "list_steps": "roadmap.config.steps"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'roadmap' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
