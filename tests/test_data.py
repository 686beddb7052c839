"""The data path on real JPEG files and tars: an index built once and never rescanned, the data's fingerprint in a
run's identity, persistent workers that cannot use a stale epoch, unreadable files skipped and bounded, and exact
resume on ImageNet's tar layout. (Refusals of bad data are cases of tests/test_refusals.py.)"""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from roadmap.config.steps import compose_config
from roadmap.data import file_index as fi
from roadmap.data.__main__ import main as data_main
from roadmap.data.datamodule import EpochSeededSampler, RoadmapDataModule, ResumableLoader, check_data, collate
from roadmap.errors import ConfigError, Stopped
from roadmap.fake_imagenet import write_jpegs, write_tars
from roadmap.run.record import RunRecord
from roadmap.run.train import train
from tests.helpers import assert_same_weights_and_history, tiny_run_config

REPO = Path(__file__).resolve().parent.parent
SMALL = (64, 48)  # JPEG size: decoding stays cheap in tests


def _folder(root: Path, classes=3, train=8, val=2) -> Path:
    return write_jpegs(root, classes, train, val, size=SMALL)


def _data(root: Path, *extra) -> list[str]:
    return ["data=imagefolder", f"data.root={root}", "data.img_size=32", "data.num_classes=3", *extra]


@pytest.fixture(autouse=True)
def fresh_index_memory():
    fi._LOADED.clear()  # each test reads indexes from disk, as a new process would
    yield
    fi._LOADED.clear()


def test_the_index_is_built_once_then_read_without_listing_a_class_folder(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data")
    cfg = compose_config("gelu", overrides=_data(root))
    built = check_data(cfg.data)
    assert built.folder.parent == root / fi.BESIDE_DATA and len(built.splits["train"]) == 24
    fi._LOADED.clear()

    def no_listing(*args, **kwargs):
        raise AssertionError(f"listed {args[0]}")

    monkeypatch.setattr(fi.os, "walk", no_listing)  # what listing a class folder's files uses
    monkeypatch.setattr(fi, "_is_bad", no_listing)  # nor is anything decoded again
    again = check_data(cfg.data)
    assert again.fingerprint == built.fingerprint and again.splits["val"].name(0) == built.splits["val"].name(0)
    assert type(again.splits["train"].names).__name__ == "memmap"  # pages shared with every worker, not copied
    monkeypatch.undo()
    fi._LOADED.clear()
    (root / "train" / "n00000001" / "extra.JPEG").write_bytes((root / "val" / "n00000001" / "n00000001_0.JPEG").read_bytes())
    changed = check_data(cfg.data)  # a changed class folder: listed anew, the old index removed
    assert len(changed.splits["train"]) == 25 and changed.fingerprint != built.fingerprint
    assert [p.name for p in (root / fi.BESIDE_DATA).iterdir() if not p.name.startswith(".")] == [changed.folder.name]


def test_concurrent_first_builds_make_one_index(tmp_path):
    root = _folder(tmp_path / "data", classes=4, train=20)
    code = ("import sys; from omegaconf import OmegaConf; from roadmap.data.file_index import file_index; "
            f"print(file_index(OmegaConf.create({{'kind': 'imagefolder', 'root': '{root}', 'index_dir': None}})).fingerprint)")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outputs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1500:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1
    assert len([p for p in (root / fi.BESIDE_DATA).iterdir() if not p.name.startswith(".")]) == 1


def test_the_data_is_part_of_the_result(tmp_path):
    """A moved copy of the data is the same run ('already done'); other data at a path of the same class count is
    refused in the run's folder."""
    root = _folder(tmp_path / "data")
    first = train(tiny_run_config("gelu", tmp_path / "out", overrides=_data(root)))
    assert first.status == "done" and first.data_identity["holds"].startswith("3 classes, 24 train + 6 val files")
    moved = shutil.copytree(root, tmp_path / "moved", ignore=shutil.ignore_patterns(fi.BESIDE_DATA))
    again = train(tiny_run_config("gelu", tmp_path / "out", overrides=_data(moved)))
    assert again.wall_s == first.wall_s  # not retrained: the same data
    other = shutil.copytree(moved, tmp_path / "other", ignore=shutil.ignore_patterns(fi.BESIDE_DATA))
    victim = other / "train" / "n00000002" / "n00000002_3.JPEG"
    victim.write_bytes(victim.read_bytes() + b"\0")  # one file differs, in size only
    with pytest.raises(ConfigError, match=r"holds a run on other data \(3 classes, 24 train \+ 6 val files, "
                                          r"fingerprint \w+ at .*/data; .*/other holds .*: run.root="):
        train(tiny_run_config("gelu", tmp_path / "out", overrides=_data(other)))


def test_a_persistent_worker_augments_epoch_2_as_a_fresh_process_does(tmp_path):
    cfg = compose_config("gelu", overrides=_data(_folder(tmp_path / "data")))
    epoch = [0]

    def batches(dm, epochs):
        sampler = EpochSeededSampler(dm.train_set, 4, lambda: epoch[0], lambda e: 0, num_replicas=1, rank=0,
                                     shuffle=True, seed=0, drop_last=True)
        loader = dm._loader(dm.train_set, ResumableLoader, sampler=sampler, drop_last=True, state=None, restore=None)
        seen = []
        for epoch[0] in epochs:
            sampler.set_epoch()
            seen = [(b.images, b.erase) for b in loader]
        assert loader._iterator is None or loader.persistent_workers
        return seen

    dm = RoadmapDataModule(cfg.data, cfg.recipe, 4, num_workers=2, seed=0)
    dm.setup()
    kept = batches(dm, [0, 1])  # the same two worker processes for both epochs
    fresh = RoadmapDataModule(cfg.data, cfg.recipe, 4, num_workers=1, seed=0)
    fresh.setup()
    first = batches(fresh, [1])
    assert len(kept) == len(first) == 6
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(kept, first))
    assert not torch.equal(batches(fresh, [0])[0][0], kept[0][0])  # another epoch, other augmentations


def test_an_unreadable_file_mid_run_is_skipped_and_recorded_and_too_many_stop_the_run(tmp_path):
    """Train holds a truncated JPEG (verification off, as the paper presets have it): with 2 worker processes the
    run replaces it, names it in the log and in metrics.json; at the default threshold (0.1 % of an epoch) the
    same data stops the run in one line."""
    root = _folder(tmp_path / "data")
    bad = root / "train" / "n00000001" / "n00000001_5.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])
    command = [sys.executable, "run.py", "+step=gelu", "budget=smoke", "logger=csv", "run.export_weights=false",
               "trainer.enable_progress_bar=false", "depthwise=native", *_data(root, "data.verify_images=false"),
               "budget.num_workers=2", "budget.batch_size=4", "budget.limit_train_batches=6"]
    ran = subprocess.run([*command, f"run.root={tmp_path / 'a'}", "data.max_bad_fraction=0.2"], cwd=REPO,
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert f"unreadable image skipped (train, rank 0): {bad}" in ran.stdout
    (run_dir,) = (tmp_path / "a").glob("*/r50/gelu/seed0")
    record = RunRecord.read(run_dir)
    assert record.bad_files == {str(bad): 1} and record.history[-1]["data/bad_files"] == 1
    stopped = subprocess.run([*command, f"run.root={tmp_path / 'b'}"], cwd=REPO, capture_output=True, text=True)
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1].startswith(
        "error: more than data.max_bad_fraction=0.001 of an epoch's images are unreadable (first: "), stopped.stderr
    (run_dir,) = (tmp_path / "b").glob("*/r50/gelu/seed0")
    assert RunRecord.read(run_dir).status == "failed" and "max_bad_fraction" in RunRecord.read(run_dir).error


def test_imagenet_tars_train_checkpoint_and_resume_exactly(tmp_path):
    """The train tar of class tars and the val tar by class, read at their offsets by 2 persistent workers: a run
    stopped after step 3 (of 2 epochs × 3) and resumed ends with the uninterrupted run's weights and history, and its
    ``wall_s`` (analysis.compare's device-hours) counts both processes."""
    tars = tmp_path / "tars"
    write_tars(_folder(tmp_path / "data", train=4), tars)
    data = ["data=imagenet_tar", f"data.root={tars}", "data.train_tar=train.tar", "data.val_tar=val.tar",
            "data.img_size=32", "data.num_classes=3", "budget.num_workers=2", "budget.batch_size=4",
            "budget.limit_train_batches=3", "budget.epoch_scale=0.007"]  # 300 epochs → 2
    reference = train(tiny_run_config("gelu", tmp_path / "reference", overrides=data))
    assert reference.status == "done" and reference.epochs == 2 and reference.data_identity["holds"].startswith(
        "3 classes, 12 train + 6 val files")
    stop = ["+callbacks.stop._target_=tests.helpers.SignalAtStep", "+callbacks.stop.step=3"]
    with pytest.raises(Stopped):
        train(tiny_run_config("gelu", tmp_path / "resumed", overrides=[*data, *stop]))
    (metrics,) = (tmp_path / "resumed").rglob("metrics.json")
    stopped = json.loads(metrics.read_text())
    assert stopped["status"] == "preempted" and stopped["wall_s"] > 0
    metrics.write_text(json.dumps({**stopped, "wall_s": 1000.0}))  # as if the first process had trained 1000 s
    began = time.time()
    resumed = train(tiny_run_config("gelu", tmp_path / "resumed", overrides=data))
    assert resumed.status == "done" and 1000.0 < resumed.wall_s <= 1000.0 + (time.time() - began) + 0.1
    assert_same_weights_and_history(Path(resumed.run_dir), Path(reference.run_dir))


def test_verify_decodes_once_and_runs_read_its_result(tmp_path, capsys, monkeypatch):
    root = _folder(tmp_path / "data")
    data_main(["verify", str(root), "--threads", "2"])
    out = capsys.readouterr().out
    assert "3 classes, 24 train + 6 val files" in out and "verified: every image" in out
    index = check_data(compose_config("gelu", overrides=_data(root)).data)
    assert json.loads(index.verified_file.read_text()) == {"train": [], "val": []}
    fi._LOADED.clear()
    monkeypatch.setattr(fi, "_is_bad", lambda *a: pytest.fail("decoded again"))
    check_data(compose_config("gelu", overrides=_data(root)).data)
    monkeypatch.undo()
    bad = root / "val" / "n00000000" / "n00000000_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:150])  # truncated in place: PIL's verify() passes it, decoding does not
    data_main(["verify", str(root)])  # the folder's time did not change: the stored result stands
    with pytest.raises(SystemExit) as stop:
        data_main(["verify", str(root), "--rebuild"])
    assert stop.value.code == 2 and capsys.readouterr().err == f"error: 1 unreadable image(s) in {root}: {bad}; delete " \
        f"or replace them (then run again: a changed folder is listed and verified anew)\n"
    fi._LOADED.clear()
    copy = bad.with_name("copy.tmp")
    shutil.copy(root / "val" / "n00000000" / "n00000000_0.JPEG", copy)
    copy.rename(bad)  # replaced as rsync and cp --remove-destination do: a new entry, so a new listing
    check_data(compose_config("gelu", overrides=_data(root)).data)


def test_an_unwritable_data_folder_keeps_its_index_in_the_cache(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data", classes=2, train=2, val=1)
    monkeypatch.setattr(fi, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(fi.os, "access", lambda path, mode: Path(path) != root)
    index = check_data(compose_config("gelu", overrides=_data(root, "data.num_classes=2")).data)
    assert index.folder.parent == tmp_path / "cache" and not (root / fi.BESIDE_DATA).exists()


def test_a_run_of_unreadable_files_stops_a_worker_in_one_line(tmp_path):
    """More unreadable files in a row than a sample may skip: the worker's error reaches the trainer as one line
    (torch re-raises it with the worker's traceback as its message)."""
    root = _folder(tmp_path / "data", classes=3, train=8)
    cfg = compose_config("gelu", overrides=_data(root, "data.verify_images=false"))
    dm = RoadmapDataModule(cfg.data, cfg.recipe, 4, num_workers=1, seed=0)
    dm.setup()
    for image in (root / "train").rglob("*.JPEG"):
        image.write_bytes(b"not a JPEG")  # after the listing: gone bad mid-run
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=4, num_workers=1, collate_fn=collate)
    with pytest.raises(ConfigError) as err:
        next(iter(loader))
    assert "\n" not in str(err.value) and str(err.value).startswith("16 files in a row from ") and "are unreadable" in str(err.value)


def test_an_index_that_does_not_read_back_is_rebuilt_saying_so(tmp_path, capsys):
    """A stored index cut short, or changed by hand so its labels and classes disagree, is listed again (one line on
    stderr) instead of being refused as unwritable or trusted with out-of-range labels."""
    root = _folder(tmp_path / "data")
    data = compose_config("gelu", overrides=_data(root)).data
    index = fi.file_index(data)
    meta = json.loads((index.folder / "meta.json").read_text())
    for damage in (lambda: (index.folder / "train_labels.npy").write_bytes(b"\x93NUMPY cut"),
                   lambda: (index.folder / "meta.json").write_text(json.dumps({**meta, "classes": meta["classes"][:1]}))):
        damage()
        fi._LOADED.clear()
        rebuilt = fi.file_index(data)
        assert "does not read back whole: listing" in capsys.readouterr().err
        assert rebuilt.classes == index.classes and rebuilt.fingerprint == index.fingerprint
        assert len(rebuilt.splits["train"]) == 24
