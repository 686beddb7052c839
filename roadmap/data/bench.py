"""How fast the training data comes: the real training loader beside timm's ``create_loader`` path and the decode
floor, in one process (``python -m roadmap.benchmark --data-only``).

* **ours**: :class:`roadmap.data.datamodule.RoadmapDataModule`'s training loader as training builds it (``--workers`` worker
  processes, one thread each as PyTorch gives DataLoader workers; uint8 batches), then the copy to the device and
  the per-pixel part there (:class:`roadmap.config.recipe.BatchTransform`: normalization, random erasing).
* **timm**: ``timm.data.create_loader(..., use_prefetcher=True)`` on timm's own dataset of the same files (its
  reader, its RandAugment/erasing settings set to the recipe's), the same number of workers, through its
  ``PrefetchLoader`` on the same device.
* **decode floor**: one thread opening and decoding the same files, nothing else (what no loader can beat).

The two loaders alternate, ``--repeats`` times each, and each figure is the median; the first batches of each
pass (worker start-up) are not timed. images/s per core = images/s ÷ workers.
"""
from __future__ import annotations

import statistics
import time

import torch
from timm.data import ImageDataset, create_loader

from roadmap.config.recipe import BatchTransform
from roadmap.data.datamodule import INDEXED_KINDS, EpochSeededSampler, ResumableLoader, RoadmapDataModule
from roadmap.data.file_index import decode, read_file
from roadmap.errors import ConfigError


class _TimmView(torch.utils.data.Dataset):
    """Images without the recipe's transform, for timm's loader to set its own (``dataset.transform``)."""

    def __init__(self, images):
        self.images, self.transform = images, None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img, label = self.images[i]
        return self.transform(img.convert("RGB")), label


def _timm_dataset(data, ours):
    """timm's dataset of the same training images: its folder or tar reader, else our images untransformed."""
    if data.kind in INDEXED_KINDS:
        return ImageDataset(str(ours.dataset.index.sources["train"]))
    return _TimmView(ours.dataset)


def _timed(batches, count: int, skip: int) -> float:
    """Images/s over ``count`` batches after ``skip`` untimed ones."""
    it = iter(batches)
    for _ in range(skip):
        next(it)
    images, start = 0, time.perf_counter()
    for _ in range(count):
        images += len(next(it)[0])
    return images / (time.perf_counter() - start)


def data_throughput(cfg, workers: int, batch_size: int, batches: int, repeats: int, device: torch.device,
                    log=print) -> list[dict]:
    """Rows (path, workers, img_s, img_s_per_core, ratio to timm, share of the decode floor) for ``cfg``'s data
    and recipe at ``cfg.data.img_size``."""
    module = RoadmapDataModule(cfg.data, cfg.recipe, batch_size, num_workers=workers, seed=cfg.seed)
    module.setup()
    train_set, recipe = module.train_set, cfg.recipe
    needed = (batches + 2) * batch_size
    if len(train_set) < needed:
        raise ConfigError(f"the data has {len(train_set)} training images, the data benchmark needs {needed} "
                          f"(--data-batches {batches} + 2 untimed, × batch {batch_size}): lower them or add data")
    transform = BatchTransform()
    sampler = EpochSeededSampler(train_set, batch_size, lambda: 0, lambda epoch: 0, num_replicas=1, rank=0,
                                 shuffle=True, seed=cfg.seed, drop_last=True)
    sampler.set_epoch()
    ours_loader = module._loader(train_set, ResumableLoader, sampler=sampler, drop_last=True, state=None, restore=None)

    def ours():
        for batch in ours_loader:
            yield transform(batch.images.to(device, non_blocking=True), batch.erase), batch.labels.to(device)

    timm_loader = create_loader(
        _timm_dataset(cfg.data, train_set), input_size=(3, cfg.data.img_size, cfg.data.img_size), batch_size=batch_size,
        is_training=True, use_prefetcher=True, scale=tuple(recipe.train_crop_scale), auto_augment=recipe.auto_augment,
        color_jitter=recipe.color_jitter or None, interpolation=recipe.interpolation, re_prob=recipe.re_prob,
        re_mode="pixel", re_count=1, num_workers=workers, device=device, persistent_workers=True,
        pin_memory=device.type == "cuda")
    measured = {"ours": [], "timm": []}
    for _ in range(repeats):  # alternating: a machine's drift reaches both
        measured["ours"].append(_timed(ours(), batches, skip=2))
        measured["timm"].append(_timed(timm_loader, batches, skip=2))
    rows = [{"path": f"ours ({cfg.data.name}, recipe {recipe.name})", "workers": workers,
             "img_s": statistics.median(measured["ours"])},
            {"path": "timm create_loader (use_prefetcher)", "workers": workers,
             "img_s": statistics.median(measured["timm"])}]
    if cfg.data.kind in INDEXED_KINDS:
        index, n = train_set.dataset.index, min(len(train_set), batches * batch_size)
        start = time.perf_counter()
        for i in range(n):
            decode(read_file(index, "train", i))
        rows.append({"path": "decode floor (one thread, no augmentation)", "workers": 1,
                     "img_s": n / (time.perf_counter() - start)})
    for row in rows:
        row["img_s_per_core"] = row["img_s"] / row["workers"]
    ours_core, timm_core = rows[0]["img_s_per_core"], rows[1]["img_s_per_core"]
    rows[0]["vs_timm"] = ours_core / timm_core
    if len(rows) > 2:
        rows[0]["of_decode_floor"] = ours_core / rows[2]["img_s_per_core"]
        rows[1]["of_decode_floor"] = timm_core / rows[2]["img_s_per_core"]
    return rows


class _FileBytes(torch.utils.data.Dataset):
    """A split's files read through the index, not decoded: what the file list costs a worker, alone."""

    def __init__(self, index, split: str = "train"):
        self.index, self.split = index, split

    def __len__(self):
        return len(self.index.splits[self.split])

    def __getitem__(self, i):
        return len(read_file(self.index, self.split, i)), int(self.index.splits[self.split].labels[i])


def _private_mib(pid: int) -> float:
    """A process's private written memory (``Private_Dirty``): a forked worker's own copies, which is how
    copy-on-read of the parent's Python objects shows (memory-mapped index pages are the page cache's, shared)."""
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def index_costs(root, workers: int, samples: int) -> dict:
    """This (fresh) process's start on ``root``'s index, and each worker's private memory when it starts and after
    it read ``samples`` files through the index."""
    from roadmap.data.datamodule import root_config
    from roadmap.data.file_index import file_index

    start = time.perf_counter()
    index = file_index(root_config(root))
    loaded_s = time.perf_counter() - start
    dataset = _FileBytes(index)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=samples * workers)
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, sampler=sampler, num_workers=workers,
                                         persistent_workers=True)
    it = iter(loader)
    at_start = [_private_mib(w.pid) for w in it._workers]
    for _ in it:
        pass
    after = [_private_mib(w.pid) for w in it._workers]
    return {"files": len(index.splits["train"]) + len(index.splits["val"]), "index_s": round(loaded_s, 2),
            "worker_private_mib_start": [round(m, 1) for m in at_start],
            "worker_private_mib_after": [round(m, 1) for m in after]}


def main(argv: list[str] | None = None) -> None:
    """``python -m roadmap.data.bench ROOT [--workers N] [--samples K]``: the index's start time in this process and
    what it costs each loader worker (private memory after K files each)."""
    from pathlib import Path

    from roadmap.utils.cli import Parser, existing_folder, positive_int

    parser = Parser(prog="python -m roadmap.data.bench", description=main.__doc__)
    parser.add_argument("root", type=existing_folder)
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--samples", type=positive_int, default=50_000)
    args = parser.parse_args(argv)
    print(Path(args.root), index_costs(args.root, args.workers, args.samples))


if __name__ == "__main__":
    main()
