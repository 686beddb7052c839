"""Train one roadmap step: python run.py +step=inverted_bottleneck [regime=r200] [data=...] [budget=...].

Exit codes: 0 done; 1 failed; 2 bad input (one line, before anything is recorded as running); 3 stopped by a
signal after saving a checkpoint (preempted or cancelled: the same command resumes). In a multirun (-m, e.g.
``make roadmap``) every step runs whatever the others do, and the sweep ends with one line per step and the
worst of these codes (roadmap.run.outcome.SweepReport). ``mode=eval ckpt=PATH`` evaluates weights.
"""
import os
import sys
import warnings
from pathlib import Path

import hydra
import torch.distributed
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from roadmap.config.command_line import check_overrides
from roadmap.config.steps import check_composition
from roadmap.errors import ConfigError, Stopped
from roadmap.run.outcome import EXIT, OTHER_RANKS_HYDRA, write_outcome
from roadmap.run.record import RunPaths, RunRecord, remove_if_unused


# Lightning's advice that does not apply to this command: it submits SLURM jobs itself (-m trainer=slurm), so srun is
# not to be prepended; and Lightning's own call of a deprecated torch API is not the user's to fix
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    if sweeping:  # a job that dies without a word stays "running": the launcher turns it into failed
        write_outcome(cfg, "running", None)
    try:
        if cfg.mode == "eval":  # each refuses bad input first (roadmap.run.plan.resolve_run): a sweep's job as refused
            from roadmap.run.evaluate import evaluate

            evaluate(cfg)
            status, error = "done", None
            if not sweeping:  # the result is in the weights' run record (or beside them): no folder of its own
                remove_if_unused(HydraConfig.get().runtime.output_dir, cfg.run.root)
        else:
            from roadmap.run.train import train

            status, error = train(cfg).status, None
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        status, error = "refused", str(err)
        if not sweeping:  # refused after Hydra made the run's folder: it goes, as if never made
            remove_if_unused(HydraConfig.get().runtime.output_dir, cfg.run.root)
    except Stopped as err:
        print(f"{err.status}: {err}", file=sys.stderr)
        status, error = err.status, str(err)
    except Exception as err:  # noqa: BLE001 - recorded in metrics.json by train(); the sweep goes on
        if not sweeping:
            raise
        print(f"step failed, sweep continues: {type(err).__name__}: {err}", file=sys.stderr)
        status, error = "failed", f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    if sweeping:
        write_outcome(cfg, status, error)
    elif EXIT.get(status, 1):
        sys.exit(EXIT.get(status, 1))


def evaluated_run(argv: list[str]) -> list[str]:
    """``mode=eval ckpt=<a run's weights>`` without ``+step=``: the step, regime, recipe and ``model.*`` overrides of
    the run that holds the weights (its record), so its model is built as it trained."""
    given = dict(a.lstrip("+").split("=", 1) for a in argv if "=" in a)
    if given.get("mode") != "eval" or not given.get("ckpt"):
        return []
    ckpt = Path(given["ckpt"]).expanduser()
    if ckpt.is_dir():
        found = sorted(str(p) for p in (*ckpt.glob("checkpoints/*.ckpt"), *ckpt.glob("weights/*.safetensors")))
        raise ConfigError(f"ckpt={ckpt} is a folder: give a weights file" + (f", e.g. ckpt={found[0]}" if found else
                          " (a run's checkpoints/*.ckpt or weights/*.safetensors)"))
    if "step" in given:
        return []
    paths = RunPaths.holding(ckpt.resolve())
    run = RunRecord.read(paths.root) if paths else None
    if run is None:
        return []
    found = [f"+step={run.step}", f"regime={run.regime}", *(o for o in run.overrides if o.startswith(("model.", "recipe")))]
    return [o for o in found if o.lstrip("+").split("=", 1)[0] not in given]


def cli(argv: list[str]) -> None:
    """``python run.py ARGS``: the command line checked before Hydra composes it (one line, exit 2), then Hydra."""
    try:
        argv = [*argv, *evaluated_run(argv)]
        check_overrides(argv)
        check_composition(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *argv]
    import lightning  # noqa: F401 - its import adds a console handler, which Hydra's job logging then replaces
    if torch.distributed.is_torchelastic_launched() and int(os.environ["RANK"]):  # torchrun runs this script in every worker:
        sys.argv += ["hydra.run.dir=.", *OTHER_RANKS_HYDRA]  # the run folder is rank 0's
    main()


if __name__ == "__main__":
    cli(sys.argv[1:])
