"""The run record: the paths of a run folder (:class:`RunPaths`), what its ``metrics.json`` says (:class:`RunRecord`),
and how both are written and read; whether a folder may be reused (:func:`check_identity`) or an evaluation recorded
(:func:`check_evaluation_target`). Training, evaluation, sweeps, analysis and the tests all go through this module;
nothing else spells a run's files. The folder itself and its identity are :mod:`roadmap.config.identity`'s.
``metrics.json`` is a :class:`RunRecord` stamped with :data:`SCHEMA_VERSION`; ``data_identity`` in it is the
fingerprint of the data the run read. Every file here is written atomically (:mod:`roadmap.utils.files`)."""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml
from omegaconf import DictConfig

from roadmap.config.identity import RunKey, identity, identity_differences, resolved, result_overrides
from roadmap.errors import ConfigError
from roadmap.utils.files import sha256_once, write_text

SCHEMA_VERSION = 3
RESULT_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
STATUSES = ("running", "done", "failed", "preempted", "cancelled")


def read_config(run_dir: Path) -> dict | None:
    """A run's saved ``config.yaml`` (resolved), or None; one that is not a readable config is refused naming it."""
    path = RunPaths(run_dir).config
    if not path.exists():
        return None
    try:
        saved = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"{path}{f', line {mark.line + 1}' if mark else ''} is not readable YAML: restore it, or "
                          f"run.force=true to start this run over") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} holds no config: restore it, or run.force=true to start this run over")
    return saved


def saved_identity(run_dir: Path) -> dict | None:
    """:func:`identity` of a run's saved ``config.yaml`` (None without one); an incomplete one is refused naming it."""
    saved = read_config(run_dir)
    if saved is None:
        return None
    try:
        return identity(saved)
    except Exception as err:  # noqa: BLE001 - a hand-edited config fails in many places
        raise ConfigError(f"{RunPaths(run_dir).config} is incomplete ({type(err).__name__}: "
                          f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}): restore it, or run.force=true "
                          f"to start this run over") from None


def check_identity(cfg: DictConfig, data_identity: dict | None, previous: RunRecord | None) -> None:
    """Refuse to reuse a run folder (``run.dir``) whose saved config computes something else, or whose record
    (``previous``) was made on other data (``data_identity``'s fingerprint; run.force=true overwrites)."""
    if cfg.run.force:
        return
    paths = RunPaths(Path(cfg.run.dir).resolve())
    saved = saved_identity(paths.root)
    if saved is None:
        return
    before = previous.data_identity if previous else None
    if before and data_identity and before["fingerprint"] != data_identity["fingerprint"]:
        raise ConfigError(f"{paths.root} holds a run on other data ({before['holds']} at {before['root']}; "
                          f"{data_identity['root']} holds {data_identity['holds']}): run.root=<another folder> for a "
                          f"run on this data, or run.force=true overwrites it")
    differences = identity_differences(saved, identity(cfg))
    if differences:
        layout_changed = any(d.startswith("effective.effective_batch") for d in differences)
        # the config values that differ; the effective run's only where nothing else does (it follows from them)
        differences = [d for d in differences if not d.startswith("effective.")] or differences
        shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4 else "")
        layout = (" (per-device batch × devices × nodes × accumulation may change, their product may not)"
                  if layout_changed else "")
        raise ConfigError(f"{paths.root} holds a run of another config ({shown}){layout}: run.force=true "
                          f"overwrites it, or change run.root")


# Model knobs that do not change what trained weights compute: the head follows the data, the others only start
# training (a layer scale's presence changes the weights' keys, which loading checks)
NOT_WEIGHTS_IDENTITY = ("num_classes", "init", "init_from", "drop_path_rate", "layer_scale_init", "head_init_scale")


def check_evaluation_target(cfg: DictConfig, step: str) -> None:
    """``mode=eval``: the weights exist and, when they are a run's, that run is of this step and regime and its
    model knobs are this config's (the evaluation lands in that run's record)."""
    ckpt = Path(str(cfg.ckpt or "")).expanduser()
    if not cfg.ckpt:
        raise ConfigError("mode=eval needs the weights to evaluate: ckpt=<run>/checkpoints/best.ckpt (or a .safetensors)")
    if not ckpt.is_file():
        raise ConfigError(f"no weights file {ckpt}: point ckpt= at a run's checkpoints/*.ckpt or weights/*.safetensors")
    paths = RunPaths.holding(ckpt.resolve())
    run = RunRecord.read(paths.root) if paths else None
    if run is None:
        return
    regime = cfg.regime.name
    if (run.step, run.regime) != (step, regime):
        raise ConfigError(f"{ckpt} holds weights of the {run.step} run ({run.regime}), not of {step} ({regime}): "
                          f"evaluate them with +step={run.step} regime={run.regime}")
    saved = (read_config(paths.root) or {}).get("model") or {}
    requested = resolved(cfg)["model"]
    differ = [f"model.{k}={saved[k]} (this command: {requested.get(k)})" for k in saved
              if k not in NOT_WEIGHTS_IDENTITY and saved[k] != requested.get(k)]
    if differ:
        raise ConfigError(f"{ckpt} was trained with {', '.join(differ[:3])}: give the run's own overrides "
                          f"(its folder {paths.root.parent.parent.parent.name} names them)")


@dataclass(frozen=True)
class RunPaths:
    """Every path of one run folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / CONFIG_FILE)
    metrics = property(lambda self: self.root / RESULT_FILE)
    checkpoints = property(lambda self: self.root / "checkpoints")
    last_ckpt = property(lambda self: self.checkpoints / "last.ckpt")
    previous_ckpt = property(lambda self: self.checkpoints / "previous.ckpt")  # the one last.ckpt replaced
    best_ckpt = property(lambda self: self.checkpoints / "best.ckpt")
    weights = property(lambda self: self.root / "weights")
    wandb_id = property(lambda self: self.root / "wandb_id")
    wandb = property(lambda self: self.root / "wandb")

    def weights_file(self, name: str) -> Path:
        """``weights/<name>.safetensors`` (final, best, ema)."""
        return self.weights / f"{name}.safetensors"

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    @classmethod
    def holding(cls, file: Path) -> RunPaths | None:
        """The run folder a checkpoint or exported weights file lives in, or None for a file outside one."""
        file = Path(file)
        paths = cls(file.parent.parent)
        return paths if file.parent in (paths.checkpoints, paths.weights) and paths.metrics.exists() else None


_NEW_ROOTS: set[Path] = set()  # run roots this process found absent before Hydra made them


def note_run_root(run_root: Path) -> None:
    """Before Hydra makes the run's folder: remember ``run_root`` if it does not exist yet, so that a refused command
    removes it again (:func:`remove_if_unused`)."""
    root = Path(run_root).expanduser().resolve()
    if not root.exists():
        _NEW_ROOTS.add(root)


def remove_if_unused(run_dir: Path, run_root: Path) -> None:
    """Remove a run folder that holds nothing but Hydra's own files (``.hydra/``, the job log: what Hydra writes
    before a refused command is refused), and the folders above it that are left empty, up to ``run_root``, and
    ``run_root`` too where this process made it (:func:`note_run_root`)."""
    run_dir, run_root = Path(run_dir).resolve(), Path(run_root).resolve()
    if not run_dir.is_dir() or not run_dir.is_relative_to(run_root):
        return
    if any(p.name != ".hydra" and p.suffix != ".log" for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir)
    for parent in run_dir.parents:
        if parent == run_root or any(parent.iterdir()):
            break
        parent.rmdir()
    if run_root in _NEW_ROOTS and not any(run_root.iterdir()):
        run_root.rmdir()


def find_runs(root: Path) -> list[Path]:
    """Every run folder under ``root`` (the layout of :class:`RunKey`), in layout order."""
    return [p for p in sorted(Path(root).glob("*/*/*/seed*")) if p.is_dir()]


@dataclass
class RunRecord:
    """``metrics.json``: what a run is (its key, data, budget, overrides), how it stands (``status``: running →
    done | failed | preempted | cancelled) and, once done, what it measured. ``missing`` and ``corrupt`` are
    never written: :meth:`load` says so of a folder without a readable record."""

    status: str
    step: str
    regime: str
    seed: int
    group: str
    data: str
    budget: str
    recipe: str | None = None                            # the recipe preset (conf/recipe/): what the paper compares with
    overrides: list[str] = field(default_factory=list)   # the command-line overrides that change the result
    error: str | None = None
    proxy: str | None = None                             # the proxy label; None in the paper's setting
    run_dir: str | None = None
    effective_run: dict = field(default_factory=dict)    # roadmap.config.effective.EffectiveRun
    history: list[dict] = field(default_factory=list)    # one row per validated epoch
    wall_s: float | None = None                          # seconds over every process of the run (resumes included)
    # a finished run's results
    img_size: int | None = None
    final: dict = field(default_factory=dict)            # top1, top5, top1_ema, top5_ema of the last epoch
    best: dict = field(default_factory=dict)             # top1, epoch and metric of the best epoch: the paper's top-1
    epochs: int = 0
    checkpoints: dict = field(default_factory=dict)      # name → path in the run folder
    weights: dict = field(default_factory=dict)          # name → path in the run folder
    gflops_224: float | None = None                      # the paper's count: 1000 classes at 224²
    gflops_run: float | None = None                      # as trained
    params_m: float | None = None                        # as trained: this run's head (data.num_classes)
    params_m_1000: float | None = None                   # the paper's count: a 1000-class head
    train_images_per_s: float | None = None
    warmup_batches_s: float | None = None                # the first 2 batches: compile, autotuning
    hardware: dict = field(default_factory=dict)         # device (roadmap.utils.devices), devices
    versions: dict = field(default_factory=dict)
    git_commit: str | None = None
    evaluations: list[dict] = field(default_factory=list)  # mode=eval results of this run's weights
    data_identity: dict | None = None                    # the data's fingerprint (roadmap.data.datamodule.data_identity)
    bad_files: dict = field(default_factory=dict)        # unreadable files met (skipped) → times
    weights_from: dict | None = None                     # model.init_from: file, SHA-256, run, EMA or raw, head
    schema: int = SCHEMA_VERSION

    @property
    def key(self) -> RunKey:
        return RunKey(self.group, self.regime, self.step, self.seed)

    @classmethod
    def of_run(cls, cfg: DictConfig, step: str, task_overrides, paths: RunPaths, run,
               data_identity: dict | None = None, weights_from: dict | None = None) -> RunRecord:
        """A starting run's record (``running``): what it is, on which data and weights, and its effective run."""
        return cls(status="running", step=step, regime=cfg.regime.name, seed=cfg.seed, group=cfg.run.group,
                   data=cfg.data.name, budget=cfg.budget.name, recipe=cfg.recipe.name,
                   overrides=result_overrides(task_overrides),
                   proxy=proxy_label(cfg, run.epochs), run_dir=str(paths.root), effective_run=run.as_dict(),
                   img_size=cfg.data.img_size, data_identity=data_identity, weights_from=weights_from)

    def with_status(self, status: str, error: str | None, history: list[dict], wall_s: float) -> RunRecord:
        """This record at a stop or a failure."""
        return replace(self, status=status, error=error, history=list(history), wall_s=round(wall_s, 1))

    def finished(self, history: list[dict], metric: str, wall_s: float, **measured) -> RunRecord:
        """The record of the finished run: the last and best epochs by ``metric``, the measured facts
        (GFLOPs, params, speed, hardware, exported weights), the versions and commit that ran."""
        paths = RunPaths(self.run_dir)
        last = history[-1] if history else {}
        best = max(history, key=lambda row: row.get(metric, -1)) if history else {}
        return replace(self, **measured, status="done", error=None, history=list(history), wall_s=round(wall_s, 1),
                       final={k: last.get(f"val/{k}") for k in ("top1", "top5", "top1_ema", "top5_ema")},
                       best={"top1": best.get(metric), "epoch": best.get("epoch"), "metric": metric},
                       epochs=last.get("epoch", 0), versions=_versions(), git_commit=_git_commit(),
                       checkpoints={"last": paths.relative(paths.last_ckpt), "best": paths.relative(paths.best_ckpt)})

    def write(self, run_dir: Path) -> None:
        """``metrics.json``, atomically."""
        write_text(RunPaths(run_dir).metrics, json.dumps(asdict(self), indent=2))

    @classmethod
    def from_dict(cls, payload: dict) -> RunRecord:
        unknown = set(payload) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        return cls(**payload)

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord | None:
        """The run's record, or None when it has none or it is unreadable (:meth:`load` says which)."""
        try:
            return cls.from_dict(json.loads(RunPaths(run_dir).metrics.read_text()))
        except (FileNotFoundError, ValueError, TypeError, UnicodeDecodeError):
            return None

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord:
        """The record, or one with status ``missing`` / ``corrupt`` saying why there is none, keyed by the
        folder's place (the one thing such a folder still says)."""
        key = RunKey.of_folder(run_dir)
        blank = dict(step=key.step, regime=key.regime, seed=key.seed, group=key.group, data="?", budget="?",
                     run_dir=str(run_dir))
        try:
            record = cls.from_dict(json.loads(RunPaths(run_dir).metrics.read_text()))
        except FileNotFoundError:
            return cls(status="missing", error="no metrics.json (never started or killed before writing it)", **blank)
        except (ValueError, TypeError, UnicodeDecodeError) as err:
            return cls(status="corrupt", error=f"unreadable metrics.json ({err}); re-run the step to rewrite it",
                       **blank)
        if record.status not in STATUSES:
            return cls(status="corrupt", error=f"metrics.json has the unknown status {record.status!r} (known: "
                                               f"{', '.join(STATUSES)}); re-run the step to rewrite it", **blank)
        return record

    def _params_text(self) -> str:
        """The parameters as the paper counts them (a 1000-class head), and as trained where the head differs."""
        if self.params_m_1000 is None or round(self.params_m_1000, 2) == round(self.params_m, 2):
            return f"{self.params_m:.2f} M params"
        return f"{self.params_m_1000:.2f} M params with the paper's 1000-class head ({self.params_m:.2f} M as trained)"

    def summary(self) -> str:
        """The lines a finished run prints."""
        final = self.final
        ema = (f" | EMA top-1 {final['top1_ema']:.2f} top-5 {final['top5_ema']:.2f}"
               if final.get("top1_ema") is not None else " | EMA off")
        ips = f"{self.train_images_per_s:.1f}" if self.train_images_per_s else "n/a"
        return "\n".join([
            f"== {self.step} ({self.regime}, seed {self.seed}): {self.status} ==", *([self.proxy] if self.proxy else []),
            (f"top-1 {final['top1']:.2f} top-5 {final['top5']:.2f} (best top-1 {self.best['top1']:.2f}){ema} | "
             if final.get("top1") is not None else "no validation (recipe.validate=false) | ") + epochs_text(self.epochs),
            f"{self.gflops_224:.3f} GFLOPs at 224² as in the paper ({self.gflops_run:.4f} as trained at "
            f"{self.img_size}²) | {self._params_text()} | train {ips} img/s | wall {self.wall_s:.0f} s",
            f"results: {self.run_dir}"])


def epochs_text(epochs: int) -> str:
    return f"{epochs} epoch" + ("" if epochs == 1 else "s")


def proxy_label(cfg: DictConfig, epochs: int) -> str | None:
    """A warning for every output when the run (of ``epochs``, its effective run's) is not the paper's setting
    (ImageNet-1K, full recipe)."""
    if cfg.budget.proxy:
        return (f"PROXY: {cfg.data.name} data at {cfg.data.img_size}px, {epochs_text(epochs)} ({cfg.budget.name} budget) - "
                f"not comparable to the paper's ImageNet-1K numbers")
    return None


def table_metric(recipe) -> str:
    """The roadmap table's metric, and the one ``best.ckpt`` is chosen by: EMA top-1 when the EMA is on."""
    return "val/top1_ema" if recipe.ema.enabled else "val/top1"


def _versions() -> dict:
    import lightning
    import timm
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "lightning": lightning.__version__}


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def benchmark_file(outputs: Path, regime: str) -> Path:
    """Where ``make bench`` writes a regime's speeds under the outputs folder, and where analysis finds them."""
    return Path(outputs) / "benchmark" / f"{regime}.csv"


def source_run(source: str) -> str:
    """`` (the <step> (<regime>) run)`` where ``source`` is a run's file, else ''."""
    paths = RunPaths.holding(Path(source).expanduser().resolve()) if Path(source).expanduser().is_file() else None
    run = RunRecord.read(paths.root) if paths else None
    return f" (the {run.step} ({run.regime}) run)" if run else ""



def weights_source(source: str | None) -> dict | None:
    """What a run's record keeps of its ``model.init_from``: the file, its SHA-256 and the run it is of (timm's cached
    weights: their name)."""
    if not source:
        return None
    file = Path(source.removeprefix("timm:")).expanduser()
    if not file.is_file():
        return {"source": source}
    return {"source": source, "sha256": sha256_once(file), "run": source_run(str(file)).strip(" ()") or None}
