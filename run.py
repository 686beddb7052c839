"""Train one roadmap step: python run.py +step=inverted_bottleneck [regime=r200] [data=...] [budget=...].

In a multirun (-m, e.g. ``make roadmap``) a failing step is recorded as failed in its metrics.json and
the sweep goes on with the next step; a single run exits non-zero (2: bad input, 3: preempted after
saving a checkpoint that the same command resumes from). ``mode=eval ckpt=PATH`` evaluates weights.
"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from roadmap.callbacks import Preempted
from roadmap.errors import ConfigError
from roadmap.train import train

PREEMPTED_EXIT = 3  # the run saved checkpoints/last.ckpt and is marked preempted: rerun (requeue) to resume


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        train(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        if not sweeping:
            sys.exit(2)
    except Preempted as err:
        print(f"preempted: {err}", file=sys.stderr)
        if not sweeping:
            sys.exit(PREEMPTED_EXIT)
    except Exception as err:  # noqa: BLE001 - recorded in metrics.json by train(); the sweep goes on
        if not sweeping:
            raise
        print(f"step failed, sweep continues: {type(err).__name__}: {err}", file=sys.stderr)


if __name__ == "__main__":
    main()
