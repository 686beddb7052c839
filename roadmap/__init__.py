"""convnext-roadmap: the ResNet → ConvNeXt modernization roadmap (Liu et al., CVPR 2022) as Hydra configs."""
from roadmap.errors import ConfigError
from roadmap.model import RoadmapNet
from roadmap.steps import REGIMES, StepInfo, build_model, compose_config, list_steps

__all__ = ["ConfigError", "REGIMES", "RoadmapNet", "StepInfo", "build_model", "compose_config", "list_steps"]
