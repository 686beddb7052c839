"""Datasets and the Lightning data module: the embedded synthetic default, image folders and ImageNet's tars (read
through a file index built once: :mod:`roadmap.data.file_index`), torchvision sets.

Workers decode and augment into uint8 batches; normalization and random erasing run on the device
(:class:`roadmap.config.recipe.BatchTransform`). ``python -m roadmap.data verify ROOT`` checks a root once.

The default data, ``SyntheticShapes``, is generated deterministically from a seed: eight classes of
patterns (stripes in three orientations, checkerboard, disk, ring, square outline, plus sign) at random
scale, phase and position, each drawn in a random foreground colour on a random background colour
with Gaussian noise. Colours are drawn independently of the class, so the mean colour of an image
carries no class information (tests check that a classifier on mean colour stays at chance): a model
must learn spatial structure.
"""
from __future__ import annotations

import math
import os
import random
import signal
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
import torchvision
from PIL import Image
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from timm.data.loader import fast_collate
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from roadmap.config.recipe import ErasingBox, build_transform
from roadmap.config.trainer import data_root
from roadmap.data.file_index import SPLITS, FileIndex, bad_files_message, decode, file_index, file_name, read_file, verify
from roadmap.errors import ConfigError

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


class UnreadableImage(ConfigError):
    """A file of the data that cannot be read or decoded; ``str(err)`` names it and why."""


class IndexedImages(Dataset):
    """One split of a data root's file index (:mod:`roadmap.data.file_index`: an image folder or ImageNet's tars): decoded
    RGB images and their labels."""

    def __init__(self, index: FileIndex, split: str):
        self.index, self.split, self.classes = index, split, index.classes

    def __len__(self) -> int:
        return len(self.index.splits[self.split])

    def name(self, i: int) -> str:
        return file_name(self.index, self.split, i)

    def __getitem__(self, i: int):
        try:
            img = decode(read_file(self.index, self.split, i))
        except Exception as err:  # noqa: BLE001 - PIL and the file system raise many types
            reason = str(err).splitlines()[0] if str(err) else ""
            raise UnreadableImage(f"{self.name(i)} ({type(err).__name__}: {reason})") from None
        return img, int(self.index.splits[self.split].labels[i])


def torchvision_dataset(name: str, root: Path, train: bool, transform, download: bool):
    """A torchvision dataset from a local root (no download unless data.download=true)."""
    cls = getattr(torchvision.datasets, TORCHVISION_SETS[name])
    split = {"split": "train" if train else "val"} if name == "imagenette" else {"train": train}
    try:
        return cls(str(root), transform=transform, download=download, **split)
    except (RuntimeError, FileNotFoundError) as err:
        raise ConfigError(f"{TORCHVISION_SETS[name]} not found under {root} ({str(err).splitlines()[0]}); "
                          f"point data.root at it or set data.download=true") from None


INDEXED_KINDS = ("imagefolder", "tar")


def check_data(data, validate: bool = True, mode: str = "train") -> FileIndex:
    """The file index of an image folder or tar data config (built once, :mod:`roadmap.data.file_index`), checked: its
    class count is ``data.num_classes``, it has a val split where the run ``validate``\ s, and its images decode (the
    val split always, train too with ``data.verify_images``; each verified once per index). Bad data is refused in
    one line."""
    index = file_index(data)
    if len(index.classes) != data.num_classes:
        raise ConfigError(f"{data.root} has {len(index.classes)} classes but data.num_classes={data.num_classes}: set "
                          f"data.num_classes={len(index.classes)}")
    if mode == "eval" and not len(index.splits["val"]):
        raise ConfigError(f"{data.root} has no val/ split to evaluate on: evaluate on data that has one (data=... "
                          f"data.root=<a folder with val/>)")
    if validate and not len(index.splits["val"]):
        raise ConfigError(f"{data.root} has no val/ split to validate on: add one, or train without validation "
                          f"(recipe.validate=false, as ImageNet-22K pre-training does)")
    bad = verify(index, SPLITS if data.verify_images else ("val",), threads=max(1, os.cpu_count() or 1))
    problem = bad_files_message(index, bad)
    if problem:
        raise ConfigError(problem + ("" if data.verify_images else " (val is always verified)"))
    return index


def data_identity(data, validate: bool = True, mode: str = "train") -> dict | None:
    """What identifies the data a run reads beyond its config: its file index's fingerprint, what it holds and where
    it was read (None for data the config names fully: synthetic, torchvision)."""
    if data.kind not in INDEXED_KINDS:
        return None
    index = check_data(data, validate, mode)
    return {"fingerprint": index.fingerprint, "holds": index.summary(), "root": str(Path(data.root).expanduser())}


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * 100_003 + epoch) * 1_000_003 + index) % 2**32


class Samples(Dataset):
    """What the loader's workers make from a dataset of PIL images: each image decoded, cropped, flipped and
    RandAugmented by the recipe's timm transform, as uint8 (C, H, W); the per-pixel rest (normalization, random
    erasing) runs on the device batch (:meth:`roadmap.run.module.RoadmapModule.prepare`).

    Training keys are ``(epoch, index)`` pairs (:class:`EpochSeededSampler`): a sample's RNGs are seeded by (seed,
    epoch, index), so the same image gets the same augmentation whichever worker loads it, whatever ran before, and
    a persistent worker cannot use a stale epoch. An unreadable file is replaced by the next readable one
    (training: the batch keeps its size; the replacement is a function of the index, so a resumed run replays it) or
    left out (validation); either way the batch names it (:func:`collate`)."""

    def __init__(self, dataset, transform, seed: int | None = None, erase_box=None):
        self.dataset, self.transform, self.seed, self.erase_box = dataset, transform, seed, erase_box
        self.classes = dataset.classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        bad = []
        for tried in range(min(len(self), MAX_REPLACEMENTS)):
            position = (index + tried) % len(self)
            if self.seed is not None:
                chosen = sample_seed(self.seed, epoch, index)
                random.seed(chosen)
                np.random.seed(chosen)
                torch.default_generator.manual_seed(chosen)  # the CPU's: torch.manual_seed would also queue a
                # traceback per call for CUDA's lazy seeding in a process without CUDA (0.4 ms a sample)
            try:
                img, label = self.dataset[position]
            except UnreadableImage:
                bad.append(position)
                if self.seed is None:  # validation: every image at most once
                    return None, -1, ErasingBox.NONE, bad
                continue
            img = self.transform(_to_rgb(img))
            return img, label, self.erase_box(*img.shape[1:]) if self.erase_box else ErasingBox.NONE, bad
        raise UnreadableImage(f"{len(bad)} files in a row from {self.name(index)} are unreadable: check the data "
                              f"(python -m roadmap.data verify ROOT)")

    def name(self, index: int) -> str:
        """A sample's file (its index where the dataset has no files)."""
        return self.dataset.name(index) if hasattr(self.dataset, "name") else f"sample {index}"


MAX_REPLACEMENTS = 16


class Batch(NamedTuple):
    """What the loader yields: uint8 images (B, 3, H, W) and labels (timm's ``fast_collate``), each image's random
    erasing box (:class:`roadmap.config.recipe.ErasingBox`; filled on the device), and the indices of the
    unreadable files the batch replaced or left out (:class:`roadmap.run.callbacks.BadFiles` names them)."""

    images: torch.Tensor
    labels: torch.Tensor
    erase: list
    bad: list


def collate(samples: list) -> Batch:
    kept = [s for s in samples if s[0] is not None]
    bad = [i for *_, indices in samples for i in indices]
    if not kept:
        return Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), [], bad)
    return Batch(*fast_collate([(img, label) for img, label, *_ in kept]), [s[2] for s in kept], bad)


class EpochSeededSampler(DistributedSampler):
    """DistributedSampler (also for one process) of ``(epoch, index)`` pairs, whose order depends only on (seed,
    epoch), and which resumes mid-epoch: in the epoch a checkpoint was saved in, it skips the batches already
    trained on (``len`` stays the epoch's, so Lightning's restored batch counter ends the epoch where it should).

    The epoch comes from ``current_epoch()``, not from ``set_epoch``'s argument: after a resume Lightning
    builds the first epoch's iterator before it advances its epoch counters, and passes
    ``epoch_progress.current.processed``, which then lags by one (the data module supplies the epoch).
    """

    def __init__(self, dataset: Samples, batch_size: int, current_epoch, batches_to_skip, **kwargs):
        super().__init__(dataset, **kwargs)
        self.batch_size, self.current_epoch, self.batches_to_skip = batch_size, current_epoch, batches_to_skip

    def set_epoch(self, epoch: int | None = None) -> None:
        super().set_epoch(self.current_epoch())

    def __iter__(self):
        indices = list(super().__iter__())[self.batches_to_skip(self.epoch) * self.batch_size:]
        return iter([(self.epoch, i) for i in indices])


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
        """The split's images as the workers make them (:class:`Samples`)."""
        d = self.data
        transform = build_transform(self.recipe, d, train)
        erase_box = ErasingBox(self.recipe.re_prob) if train and self.recipe.re_prob > 0 else None
        if d.kind == "synthetic":
            n = d.train_size if train else d.val_size
            images = SyntheticShapes(n, d.img_size, seed=d.seed * 2 + (0 if train else 1))
        elif d.kind in INDEXED_KINDS:
            images = IndexedImages(check_data(d, self.recipe.validate), "train" if train else "val")
        elif d.kind == "torchvision":
            images = torchvision_dataset(d.name, data_root(d), train, None, d.download)
        else:
            raise ConfigError(f"unknown data.kind {d.kind!r}; allowed: synthetic, imagefolder, tar, torchvision")
        return Samples(images, transform, self.seed if train else None, erase_box)

    def setup(self, stage: str | None = None) -> None:
        if not hasattr(self, "train_set"):
            self.train_set = self.build_split(True)
            self.val_set = self.build_split(False) if self.recipe.validate else None  # no val_dataloader is asked
            found = len(self.train_set.classes)
            if found != self.data.num_classes:
                raise ConfigError(f"{self.data.name} has {found} classes but data.num_classes={self.data.num_classes}: "
                                  f"set data.num_classes={found}")
            if len(self.train_set) < self.batch_size:
                raise ConfigError(f"{len(self.train_set)} training images but batch_size {self.batch_size}: "
                                  f"lower budget.batch_size or add data")

    def _loader(self, dataset, cls=DataLoader, **kwargs):
        """Workers that live as long as the loader (each sample's epoch travels with its key: never stale), uint8
        batches, pinned where CUDA is (Lightning copies them without blocking)."""
        return cls(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                   persistent_workers=self.num_workers > 0, collate_fn=collate, pin_memory=torch.cuda.is_available(),
                   worker_init_fn=leave_stop_signals_to_the_trainer, **kwargs)

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
        (:class:`roadmap.run.callbacks.LayoutChange` calls this before Lightning restores its loops)."""
        saved_batch, batch = self._batch_of(checkpoint[type(self).__qualname__]), self._batch_of()
        progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
        shift = math.ceil(progress["current"]["processed"] * saved_batch / batch) - progress["current"]["processed"]
        for counts in (progress["current"], progress["total"]):
            for key in ("ready", "started", "processed", "completed"):
                counts[key] += shift

    def train_dataloader(self):
        trainer = self.trainer
        sampler = EpochSeededSampler(self.train_set, self.batch_size,
                                     lambda: max(trainer.current_epoch, self.resume_epoch),
                                     lambda epoch: self.resume_batch if epoch == self.resume_epoch else 0,
                                     num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=True,
                                     seed=self.seed, drop_last=True)
        sampler.set_epoch()
        return self._loader(self.train_set, ResumableLoader, sampler=sampler, drop_last=True,
                            state=self.state_dict, restore=self.load_state_dict)

    def val_dataloader(self):
        """Every validation image exactly once: split across processes without padding."""
        trainer = self.trainer
        sampler = UnrepeatedDistributedSampler(self.val_set, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                               shuffle=False) if trainer.world_size > 1 else None
        return self._loader(self.val_set, sampler=sampler)


def root_config(root: Path, train_tar: str | None = None, val_tar: str | None = None, index_dir: str | None = None):
    """The data config of a root given on a command line: an image folder (``train/``, ``val/``), or ImageNet's tars
    (conf/data/imagenet_tar.yaml's names unless given)."""
    from omegaconf import OmegaConf

    from roadmap.config.files import CONF_DIR

    tar = OmegaConf.load(CONF_DIR / "data" / "imagenet_tar.yaml")
    train_tar, val_tar = train_tar or tar.train_tar, val_tar or tar.val_tar
    is_folder = (root / "train").is_dir()  # val/ may be absent (ImageNet-22K)
    if not is_folder and not (root / train_tar).is_file():
        raise ConfigError(f"{root} holds neither a train/ folder nor the tar {train_tar}: give an image "
                          f"folder's root, or the folder of ImageNet's tars (--train-tar/--val-tar name them)")
    return OmegaConf.create({"kind": "imagefolder" if is_folder else "tar", "root": str(root), "index_dir": index_dir,
                             "train_tar": train_tar, "val_tar": val_tar})
