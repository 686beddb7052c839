"""Train one roadmap step: python run.py +step=inverted_bottleneck [regime=r200] [data=...] [budget=...]."""
import hydra
from omegaconf import DictConfig

from roadmap.errors import exit_on_config_error
from roadmap.train import train


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
@exit_on_config_error
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
