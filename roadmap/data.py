"""Datasets and the Lightning data module: the embedded synthetic default, ImageFolder, torchvision sets.

The default data, ``SyntheticShapes``, is generated deterministically from a seed: eight classes of
patterns (stripes in three orientations, checkerboard, disk, ring, square outline, plus sign) at random
scale, phase and position, each drawn in a random foreground colour on a random background colour
with Gaussian noise. Colours are drawn independently of the class, so the mean colour of an image
carries no class information (tests check that a classifier on mean colour stays at chance): a model
must learn spatial structure.
"""
from __future__ import annotations

import math
import random
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from roadmap.errors import ConfigError
from roadmap.recipe_parts import build_transform
from roadmap.schema import data_root

SHAPES = ("stripes_h", "stripes_v", "stripes_diag", "checkerboard", "disk", "ring", "square", "plus")
TORCHVISION_SETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "fashion_mnist": "FashionMNIST",
                    "imagenette": "Imagenette"}


def _shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean foreground mask of one pattern with random scale/phase/position."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(size / 8, size / 3.5)
    phase = rng.uniform(0, period)
    cy, cx = rng.uniform(0.3 * size, 0.7 * size, 2)
    radius = rng.uniform(0.15 * size, 0.35 * size)
    if kind == "stripes_h":
        return ((yy + phase) % period) < period / 2
    if kind == "stripes_v":
        return ((xx + phase) % period) < period / 2
    if kind == "stripes_diag":
        return ((xx + yy + phase) % period) < period / 2
    if kind == "checkerboard":
        return (((xx + phase) // (period / 2)) + ((yy + phase) // (period / 2))) % 2 == 0
    dist = np.hypot(yy - cy, xx - cx)
    if kind == "disk":
        return dist < radius
    if kind == "ring":
        return np.abs(dist - radius) < max(1.0, radius / 4)
    box = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
    if kind == "square":
        return np.abs(box - radius) < max(1.0, radius / 4)
    # plus sign
    arm = max(1.0, radius / 3)
    return ((np.abs(yy - cy) < arm) | (np.abs(xx - cx) < arm)) & (box < radius)


def generate_shapes(num_samples: int, img_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``num_samples`` uint8 images (N, H, W, 3) and balanced labels, a pure function of the seed."""
    rng = np.random.default_rng(seed)
    labels = np.arange(num_samples) % len(SHAPES)
    rng.shuffle(labels)
    images = np.empty((num_samples, img_size, img_size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        mask = _shape_mask(SHAPES[label], img_size, rng)[..., None]
        fg, bg = rng.uniform(0, 1, (2, 1, 1, 3))
        img = np.where(mask, fg, bg) + rng.normal(0, 0.08, (img_size, img_size, 3))
        images[i] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return images, labels


class SyntheticShapes(Dataset):
    """The embedded default dataset (see the module docstring); PIL images, like torchvision's sets."""

    classes = list(SHAPES)

    def __init__(self, num_samples: int, img_size: int, seed: int, transform=None):
        self.images, self.targets = generate_shapes(num_samples, img_size, seed)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        img = Image.fromarray(self.images[index])
        return (self.transform(img) if self.transform else img), int(self.targets[index])


def _to_rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")  # grayscale sets get 3 channels


class _RGB:
    """Transform wrapper: convert to RGB first (grayscale inputs work with every step's 3-channel stem)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return self.transform(_to_rgb(img))


def check_image_loader(path: str) -> Image.Image:
    """ImageFolder loader whose failure names the file and the fix, instead of a PIL traceback."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise ConfigError(f"corrupt image {path} ({err}); delete or replace it") from None


def _is_corrupt(path: str) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()
        return False
    except Exception:  # PIL raises many types for broken files
        return True


def verified_image_folder(split_dir: Path, transform, verify: bool):
    """torchvision ImageFolder over ``split_dir`` with one-line errors for every bad-input case."""
    if not any(p.is_dir() for p in split_dir.iterdir()):
        raise ConfigError(f"no class folders in {split_dir}: put each class's images in {split_dir}/<class>/")
    try:
        dataset = torchvision.datasets.ImageFolder(str(split_dir), transform=transform, loader=check_image_loader)
    except FileNotFoundError as err:
        raise ConfigError(f"no images in {split_dir}: {str(err).splitlines()[0]}") from None
    if verify:
        with ThreadPoolExecutor(8) as pool:
            corrupt = [p for (p, _), bad in zip(dataset.samples, pool.map(_is_corrupt, [s[0] for s in dataset.samples])) if bad]
        if corrupt:
            shown = ", ".join(corrupt[:3]) + (f" and {len(corrupt) - 3} more" if len(corrupt) > 3 else "")
            raise ConfigError(f"{len(corrupt)} corrupt image(s) in {split_dir}: {shown}; delete or replace them "
                              f"(data.verify_images=false skips this check)")
    return dataset


def torchvision_dataset(name: str, root: Path, train: bool, transform, download: bool):
    """A torchvision dataset from a local root (no download unless data.download=true)."""
    cls = getattr(torchvision.datasets, TORCHVISION_SETS[name])
    split = {"split": "train" if train else "val"} if name == "imagenette" else {"train": train}
    try:
        return cls(str(root), transform=transform, download=download, **split)
    except (RuntimeError, FileNotFoundError) as err:
        raise ConfigError(f"{TORCHVISION_SETS[name]} not found under {root} ({str(err).splitlines()[0]}); "
                          f"point data.root at it or set data.download=true") from None


class SeededSamples(Dataset):
    """A training set whose every sample is augmented from RNGs seeded by (seed, epoch, index): the same
    image gets the same crop, RandAugment and erasing whichever worker loads it, and whatever ran before."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0
        self.classes = dataset.classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample_seed = ((self.seed * 100_003 + self.epoch) * 1_000_003 + index) % 2**32
        random.seed(sample_seed)
        np.random.seed(sample_seed)
        torch.manual_seed(sample_seed)
        return self.dataset[index]


class EpochSeededSampler(DistributedSampler):
    """DistributedSampler (also for one process) whose order depends only on (seed, epoch), and which
    resumes mid-epoch: in the epoch a checkpoint was saved in, it skips the batches already trained on
    (``len`` stays the epoch's, so Lightning's restored batch counter ends the epoch where it should).

    The epoch comes from ``current_epoch()``, not from ``set_epoch``'s argument: after a resume Lightning
    builds the first epoch's iterator before it advances its epoch counters, and passes
    ``epoch_progress.current.processed``, which then lags by one (the data module supplies the epoch).
    """

    def __init__(self, dataset: SeededSamples, batch_size: int, current_epoch, batches_to_skip, **kwargs):
        super().__init__(dataset, **kwargs)
        self.batch_size, self.current_epoch, self.batches_to_skip = batch_size, current_epoch, batches_to_skip

    def set_epoch(self, epoch: int | None = None) -> None:
        epoch = self.current_epoch()
        super().set_epoch(epoch)
        self.dataset.epoch = epoch

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.batches_to_skip(self.epoch) * self.batch_size:])


class ResumableLoader(DataLoader):
    """The training loader, stateful in Lightning's sense (``state_dict``/``load_state_dict``): each checkpoint
    holds where in its epoch the run is, and a resumed run's sampler starts there (Lightning restores it
    before the first iterator is built)."""

    def __init__(self, *args, state, restore, **kwargs):
        super().__init__(*args, **kwargs)
        self._state, self._restore = state, restore

    def state_dict(self) -> dict:
        return self._state()

    def load_state_dict(self, state_dict: dict) -> None:
        self._restore(state_dict)
        self.sampler.set_epoch()  # the sampler was made before the restore: it starts in the restored epoch


def leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """DataLoader workers ignore SLURM's stop signals (SIGTERM on preemption or scancel, USR1/USR2 before a
    time limit, sent to every process of the job): the training process saves a checkpoint at the next step
    and ends them; a worker dying first would fail the run instead."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


class RoadmapDataModule(L.LightningDataModule):
    """Train/val loaders for any data config (conf/data/*.yaml) with the recipe's timm transforms."""

    def __init__(self, data, recipe, batch_size: int, num_workers: int, seed: int):
        super().__init__()
        self.data, self.recipe = data, recipe
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.resume_epoch, self.resume_batch = 0, 0

    def build_split(self, train: bool):
        d, transform = self.data, _RGB(build_transform(self.recipe, self.data, train))
        if d.kind == "synthetic":
            n = d.train_size if train else d.val_size
            return SyntheticShapes(n, d.img_size, seed=d.seed * 2 + (0 if train else 1), transform=transform)
        root = data_root(d)
        if d.kind == "imagefolder":
            return verified_image_folder(root / ("train" if train else "val"), transform, d.verify_images)
        if d.kind == "torchvision":
            return torchvision_dataset(d.name, root, train, transform, d.download)
        raise ConfigError(f"unknown data.kind {d.kind!r}; allowed: synthetic, imagefolder, torchvision")

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_set"):
            self.train_set, self.val_set = self.build_split(True), self.build_split(False)
            found = len(self.train_set.classes)
            if found != self.data.num_classes:
                raise ConfigError(f"{self.data.name} has {found} classes but data.num_classes={self.data.num_classes}: "
                                  f"set data.num_classes={found}")
            if len(self.train_set) < self.batch_size:
                raise ConfigError(f"{len(self.train_set)} training images but batch_size {self.batch_size}: "
                                  f"lower budget.batch_size or add data")

    def _loader(self, dataset, cls=DataLoader, **kwargs):
        return cls(dataset, batch_size=self.batch_size, num_workers=self.num_workers, persistent_workers=False,
                   pin_memory=torch.cuda.is_available(), worker_init_fn=leave_stop_signals_to_the_trainer, **kwargs)

    # The position lives here: Lightning restores a data module's state before any loader exists, whatever the
    # checkpoint. The training loader hands the same state on (ResumableLoader), which makes it "resumable".
    def state_dict(self) -> dict:
        """Where a checkpoint saved now resumes: the epoch (the next one once the last batch ran) and how many of
        its samples every process together trained on (a mid-epoch checkpoint: preemption,
        ``checkpoint_every_n_steps``). In samples, the position holds on any layout of the same effective batch:
        the epoch's order is one permutation whatever the number of processes, each taking every n-th sample."""
        progress = self.trainer.fit_loop.epoch_loop.batch_progress
        at_epoch_end = progress.is_last_batch
        batches = 0 if at_epoch_end else progress.current.processed
        return {"resume_epoch": self.trainer.current_epoch + int(at_epoch_end),
                "resume_samples": batches * self._batch_of(),
                "batch_size": self.batch_size, "world_size": self.trainer.world_size}

    def load_state_dict(self, state_dict: dict) -> None:
        self.resume_epoch = state_dict["resume_epoch"]
        samples = state_dict.get("resume_samples", state_dict.get("resume_batch", 0) * self._batch_of(state_dict))
        per_batch = self._batch_of()
        if samples % per_batch:
            raise ConfigError(f"the checkpoint was saved {samples} samples into epoch {self.resume_epoch}, not a whole "
                              f"number of this run's batches of {self.batch_size} × {self.trainer.world_size} "
                              f"processes: resume on a layout whose batch × processes divides {samples}")
        self.resume_batch = samples // per_batch

    def _batch_of(self, state: dict | None = None) -> int:
        """Samples per batch of all processes together: in the layout that saved ``state``, or this run's (where
        ``state`` is not given or does not say)."""
        state = state or {}
        return state.get("batch_size", self.batch_size) * state.get("world_size", self.trainer.world_size)

    def relayout_loop(self, checkpoint: dict) -> None:
        """Count the restored epoch's batches in this run's layout: Lightning's loop state in ``checkpoint``
        counts them in the saving run's, and ends the epoch, steps and accumulates by that count
        (:class:`roadmap.callbacks.LayoutChange` calls this before Lightning restores its loops)."""
        saved_batch, batch = self._batch_of(checkpoint[type(self).__qualname__]), self._batch_of()
        progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
        shift = math.ceil(progress["current"]["processed"] * saved_batch / batch) - progress["current"]["processed"]
        for counts in (progress["current"], progress["total"]):
            for key in ("ready", "started", "processed", "completed"):
                counts[key] += shift

    def train_dataloader(self):
        trainer = self.trainer
        sampler = EpochSeededSampler(SeededSamples(self.train_set, self.seed), self.batch_size,
                                     lambda: max(trainer.current_epoch, self.resume_epoch),
                                     lambda epoch: self.resume_batch if epoch == self.resume_epoch else 0,
                                     num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=True,
                                     seed=self.seed, drop_last=True)
        sampler.set_epoch()
        return self._loader(sampler.dataset, ResumableLoader, sampler=sampler, drop_last=True,
                            state=self.state_dict, restore=self.load_state_dict)

    def val_dataloader(self):
        """Every validation image exactly once: split across processes without padding."""
        trainer = self.trainer
        sampler = UnrepeatedDistributedSampler(self.val_set, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                               shuffle=False) if trainer.world_size > 1 else None
        return self._loader(self.val_set, sampler=sampler)
