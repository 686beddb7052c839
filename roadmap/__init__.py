"""convnext-roadmap: the ResNet → ConvNeXt modernization roadmap (Liu et al., CVPR 2022) as Hydra configs."""
from roadmap.errors import ConfigError
from roadmap.model import RoadmapNet
from roadmap.steps import StepInfo, available_regimes, available_steps, build_model, compose_config, list_steps

__all__ = ["ConfigError", "RoadmapNet", "StepInfo", "available_regimes", "available_steps", "build_model",
           "compose_config", "list_steps"]
