"""A data root's file index: built once, stored, and read by every rank, job and requeue after it.

An image folder (``train/<class>/<image>``, ``val/<class>/<image>``) or a pair of ImageNet tars (the train tar of
class tars, a val tar laid out by class; scanned by timm's ``extract_tarinfos``) is listed by the first process
that meets it. The list is stored as flat arrays (:class:`Split`: names as one byte buffer, labels, sizes, tar
offsets), memory-mapped when read, so a DataLoader worker shares its pages instead of copying a million Python
objects. Where it lives: ``data.index_dir`` when set, else ``<root>/.roadmap-index`` where the data is writable,
else ``~/.cache/convnext-roadmap/data-index``; inside, one folder per listing, named by the sources and their
modification times (a changed folder or tar gets a new index; the class folders are stat'ed, never listed again).
A lock makes concurrent first builds wait for one; the index appears in one rename.

The index carries the data's fingerprint: a hash of the class names and of every file's name, label and size, in
order. It is part of a run's identity (another dataset at the same path is another run; a moved copy is not).
Verification (``python -m roadmap.data verify ROOT``, or at a run's start) decodes every image once and stores the
bad ones in the index's ``verified.json``, which later runs read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tarfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from PIL import Image

from roadmap.errors import ConfigError
from roadmap.utils.files import write_text

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
BESIDE_DATA = ".roadmap-index"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "convnext-roadmap" / "data-index"
SPLITS = ("train", "val")
ARRAYS = ("names", "starts", "labels", "sizes", "offsets")
LOCK_TIMEOUT_S = 3 * 3600  # a rank waits this long for another's first build of an ImageNet-sized index


@dataclass
class Split:
    """One split's files as arrays: file ``i`` is ``names[starts[i]:starts[i+1]]`` (UTF-8; a path relative to the
    split's folder, or a tar member's name), of class ``labels[i]``, ``sizes[i]`` bytes, at byte ``offsets[i]`` of
    the tar (-1 in a folder)."""

    names: np.ndarray
    starts: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, i: int) -> str:
        return bytes(self.names[self.starts[i]:self.starts[i + 1]]).decode()

    @classmethod
    def of(cls, files: list[tuple[str, int, int, int]]) -> Split:
        """From ``(name, label, size, offset)`` rows."""
        encoded = [f[0].encode() for f in files]
        starts = np.zeros(len(files) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=starts[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), starts,
                   np.array([f[1] for f in files], dtype=np.int32), np.array([f[2] for f in files], dtype=np.int64),
                   np.array([f[3] for f in files], dtype=np.int64))

    def digest(self, h) -> None:
        for array in (self.names, self.starts, self.labels, self.sizes):
            h.update(np.ascontiguousarray(array).tobytes())


@dataclass
class FileIndex:
    """Both splits of a data root, their classes (the same for both, in label order) and the fingerprint."""

    kind: str
    sources: dict[str, Path]
    classes: list[str]
    splits: dict[str, Split]
    fingerprint: str
    folder: Path

    def summary(self) -> str:
        return (f"{len(self.classes)} classes, {len(self.splits['train']):,} train + {len(self.splits['val']):,} val "
                f"files, fingerprint {self.fingerprint[:12]}")

    @property
    def verified_file(self) -> Path:
        return self.folder / "verified.json"

    def verified(self) -> dict:
        """``{split: [bad file indices]}`` for each split verification has decoded."""
        try:
            return json.loads(self.verified_file.read_text())
        except (OSError, ValueError):
            return {}


def sources(data) -> dict[str, Path]:
    """Where each split is read: ``root/train`` and ``root/val``, or the data config's tar files under root."""
    root = Path(data.root).expanduser()
    if data.kind == "tar":
        return {"train": root / data.train_tar, "val": root / data.val_tar}
    return {split: root / split for split in SPLITS}


def _stamp(kind: str, paths: dict[str, Path]) -> list:
    """What a listing depends on, read without listing a class folder: the tars' sizes and times, or the split
    folders' and their class folders' times (adding or removing a file changes its folder's)."""
    stamp = []
    for split, path in paths.items():
        if _absent_val(kind, split, path):
            stamp.append([split, "absent"])
            continue
        try:
            info = path.stat()
            stamp.append([split, str(path.resolve()), info.st_size if kind == "tar" else 0, info.st_mtime_ns])
            if kind != "tar":
                stamp += sorted([e.name, e.stat().st_mtime_ns] for e in os.scandir(path) if e.is_dir())
        except OSError as err:
            raise ConfigError(f"cannot read {path} ({err.strerror}): check data.root") from None
    return stamp


def _absent_val(kind: str, split: str, path: Path) -> bool:
    """An image folder without ``val/`` (ImageNet-22K): its val split is empty, which only a run that does not
    validate accepts (:func:`roadmap.data.datamodule.check_data`)."""
    return kind != "tar" and split == "val" and not path.exists()


def _list_folder(split_dir: Path) -> tuple[list[str], list[tuple]]:
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ConfigError(f"no class folders in {split_dir}: put each class's images in {split_dir}/<class>/")

    def size(path: str) -> int:
        try:
            return os.stat(path).st_size
        except OSError as err:  # a broken link, a file gone while listed, no permission: the file named
            raise ConfigError(f"cannot read {path} ({err.strerror or err}): remove it, or restore what it "
                              f"points to") from None

    def files_of(label: int) -> list[tuple]:
        found = []
        for folder, _, names in os.walk(split_dir / classes[label], followlinks=True):
            rel = os.path.relpath(folder, split_dir)
            found += [(os.path.join(rel, n), label, size(os.path.join(folder, n)), -1) for n in names
                      if n.lower().endswith(IMAGE_EXTENSIONS)]
        return sorted(found)

    with ThreadPoolExecutor(16) as pool:  # a cluster file system answers many metadata requests at once
        per_class = list(pool.map(files_of, range(len(classes))))
    empty = [c for c, files in zip(classes, per_class) if not files]
    if empty:
        raise ConfigError(f"no images in {split_dir / empty[0]}"
                          f"{f' and {len(empty) - 1} more class folders' if len(empty) > 1 else ''} (images end in "
                          f"{', '.join(IMAGE_EXTENSIONS)}): remove the folder or add its images")
    return classes, [f for files in per_class for f in files]


def _list_tar(path: Path, split: str) -> tuple[list[str], list[tuple]]:
    from timm.data.readers.reader_image_in_tar import extract_tarinfos

    layout = ("a tar of class tars (ILSVRC2012_img_train.tar) or of class folders" if split == "train"
              else "a tar of class folders (<class>/<image>)")
    if not path.is_file():
        raise ConfigError(f"no tar file {path}: set data.root and data.{split}_tar to ImageNet's {split} tar")
    scan_log = logging.getLogger("timm.data.readers.reader_image_in_tar")
    level = scan_log.level
    scan_log.setLevel(logging.WARNING)  # its progress lines: the index's summary says what they would
    try:
        samples, targets, class_to_idx, _ = extract_tarinfos(str(path), cache_tarinfo=False)
    except (tarfile.TarError, AssertionError, ValueError, EOFError, OSError) as err:
        reason = "no images in it" if isinstance(err, ValueError) else (str(err).splitlines()[0] if str(err) else
                                                                         type(err).__name__)
        raise ConfigError(f"{path} is not a readable uncompressed tar of images ({reason}): data.{split}_tar must be "
                          f"{layout}") from None
    finally:
        scan_log.setLevel(level)
    classes = sorted(class_to_idx, key=class_to_idx.get)
    if "" in classes:
        raise ConfigError(f"{path} holds images outside any class (ImageNet's val tar as shipped is one such): "
                          f"data.{split}_tar must be {layout}")
    files = []
    for (info, _, parent), label in zip(samples, targets):
        start = (parent.offset_data if parent is not None else 0) + info.offset_data
        files.append((info.name, int(label), info.size, start))
    return classes, files


def _build(kind: str, paths: dict[str, Path]) -> tuple[list[str], dict[str, Split]]:
    listed = {split: (_list_tar(path, split) if kind == "tar" else _list_folder(path)) for split, path in paths.items()
              if not _absent_val(kind, split, path)}
    listed.setdefault("val", (listed["train"][0], []))
    (train_classes, _), (val_classes, _) = listed["train"], listed["val"]
    if train_classes != val_classes:
        only_val = sorted(set(val_classes) - set(train_classes))
        only_train = sorted(set(train_classes) - set(val_classes))
        differ = ([f"val has {_few(only_val)} that train lacks"] if only_val else []) + \
                 ([f"train has {_few(only_train)} that val lacks"] if only_train else [])
        raise ConfigError(f"the train and val classes of {paths['train'].parent} differ "
                          f"({'; '.join(differ) or 'in order'}): every class needs its folder in both, or val's "
                          f"labels would score other classes")
    return train_classes, {split: Split.of(files) for split, (_, files) in listed.items()}


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _location(data) -> Path:
    if data.get("index_dir"):
        return Path(data.index_dir).expanduser()
    root = Path(data.root).expanduser()
    return root / BESIDE_DATA if os.access(root, os.W_OK) else CACHE


def _save(folder: Path, meta: dict, splits: dict[str, Split]) -> None:
    """Write into a temporary folder, then rename it into place: a reader sees a whole index or none."""
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        for split, arrays in splits.items():
            for name in ARRAYS:
                np.save(tmp / f"{split}_{name}.npy", getattr(arrays, name))
        write_text(tmp / "meta.json", json.dumps(meta, indent=1))
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path, kind: str, paths: dict[str, Path]) -> FileIndex | None:
    """The stored index, or None where there is none or it does not read back whole (then rebuilt: :func:`file_index`)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        splits = {split: Split(*(np.load(folder / f"{split}_{name}.npy", mmap_mode="r") for name in ARRAYS))
                  for split in SPLITS}
        classes, fingerprint = list(meta["classes"]), str(meta["fingerprint"])
        for split, files in splits.items():  # every array of a split as long as the listing said, labels in range
            lengths = {len(getattr(files, name)) for name in ARRAYS if name not in ("names", "starts")}
            if lengths != {meta["files"][split]} or (len(files.labels) and not 0 <= files.labels.max() < len(classes)):
                raise ValueError(f"its {split} arrays do not agree with meta.json")
            if len(files.labels):
                files.name(len(files.labels) - 1)  # the names decode to their end
    except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError):
        return None  # absent, or left incomplete or changed by hand: rebuilt
    return FileIndex(kind, paths, classes, splits, fingerprint, folder)


# per process: the refusal pass, the record and the data module share one read (and one stat of the class folders)
_LOADED: dict[tuple, FileIndex] = {}


def lock(index: FileIndex) -> FileLock:
    """The lock that one process holds while it builds or verifies ``index``."""
    return _lock(index.folder)


def _lock(folder: Path) -> FileLock:
    # writable by every user who can write the folder: a shared dataset's index is built and verified by whoever
    # comes first
    return FileLock(str(folder.parent / f".{folder.name}.lock"), timeout=LOCK_TIMEOUT_S, mode=0o666)


def file_index(data) -> FileIndex:
    """The index of ``data`` (an ``imagefolder`` or ``tar`` data config): read where stored, else built and stored;
    once per process (a process reads its data as it was when it started)."""
    paths = sources(data)
    location = _location(data)
    loaded = (data.kind, *map(str, paths.values()), str(location))
    if loaded in _LOADED:
        return _LOADED[loaded]
    stamp = _stamp(data.kind, paths)
    key = hashlib.sha1(json.dumps([data.kind, stamp]).encode()).hexdigest()[:16]
    folder = location / key
    index = _load(folder, data.kind, paths)
    if index is None:
        try:
            location.mkdir(parents=True, exist_ok=True)
            with _lock(folder):  # one process builds; the others wait, then read what it wrote
                index = _load(folder, data.kind, paths)
                if index is None and folder.exists():  # stored but unreadable: listed again, saying so
                    print(f"the file index {folder} does not read back whole: listing {data.root} again",
                          file=sys.stderr)
                    shutil.rmtree(folder)
                index = index or _publish(folder, data.kind, paths, stamp)
        except Timeout:  # an OSError too: first
            raise ConfigError(f"waited {LOCK_TIMEOUT_S} s for another process to build the index in {location}: "
                              f"remove {location}/.{key}.lock if no process is building it") from None
        except OSError as err:
            raise ConfigError(f"cannot write the file index of {data.root} in {location} ({err.strerror or err}): set "
                              f"data.index_dir to a writable folder") from None
    _LOADED[loaded] = index
    return index


def rebuild(data, index: FileIndex) -> FileIndex:
    """``index`` listed (and later verified) anew, in place of the stored one."""
    with lock(index):
        shutil.rmtree(index.folder)
    _LOADED.clear()
    return file_index(data)


def _publish(folder: Path, kind: str, paths: dict[str, Path], stamp: list) -> FileIndex:
    started = time.time()
    classes, splits = _build(kind, paths)
    h = hashlib.sha256(json.dumps(classes).encode())
    for split in SPLITS:
        splits[split].digest(h)
    meta = {"kind": kind, "sources": {s: str(p.resolve()) for s, p in paths.items()}, "stamp": stamp,
            "classes": classes, "fingerprint": h.hexdigest(), "files": {s: len(splits[s]) for s in SPLITS},
            "built_s": round(time.time() - started, 2)}
    _save(folder, meta, splits)
    for other in folder.parent.iterdir():  # earlier listings of the same sources: stale
        if other != folder and other.is_dir() and not other.name.startswith("."):
            try:
                if json.loads((other / "meta.json").read_text()).get("sources") == meta["sources"]:
                    shutil.rmtree(other, ignore_errors=True)
            except (OSError, ValueError):
                pass
    return _load(folder, kind, paths)


def file_name(index: FileIndex, split: str, i: int) -> str:
    """File ``i`` of ``split`` as a user finds it: its path, or ``tar:member``."""
    name = index.splits[split].name(i)
    return f"{index.sources[split]}:{name}" if index.kind == "tar" else str(index.sources[split] / name)


def read_file(index: FileIndex, split: str, i: int) -> bytes:
    """File ``i`` of ``split``'s bytes: from the folder, or from its place in the tar."""
    files = index.splits[split]
    if files.offsets[i] < 0:
        return (index.sources[split] / files.name(i)).read_bytes()
    fd = _TAR_FDS.get(index.sources[split])
    if fd is None:  # one descriptor per tar and process (each DataLoader worker opens its own)
        fd = _TAR_FDS[index.sources[split]] = os.open(index.sources[split], os.O_RDONLY)
    data = os.pread(fd, int(files.sizes[i]), int(files.offsets[i]))
    if len(data) != files.sizes[i]:
        raise OSError(f"{index.sources[split]} ends inside {files.name(i)}")
    return data


_TAR_FDS: dict[Path, int] = {}


def decode(data: bytes) -> Image.Image:
    """An image's pixels, fully decoded (PIL's ``verify()`` does not decode: a truncated JPEG passes it)."""
    with Image.open(BytesIO(data)) as img:
        return img.convert("RGB")


def _is_bad(index: FileIndex, split: str, i: int) -> bool:
    try:
        decode(read_file(index, split, i))
        return False
    except Exception:  # noqa: BLE001 - PIL raises many types for broken files
        return True


def verify(index: FileIndex, splits=SPLITS, threads: int | None = None, progress=None) -> dict:
    """Decode every file of ``splits`` not yet verified (threads: PIL decodes without the GIL); store and return
    ``{split: [bad indices]}``. Where the result cannot be stored, one line says so."""
    done = index.verified()
    if all(split in done for split in splits):  # read without the lock: an index may sit where nothing is written
        return done
    try:
        with lock(index):  # the other ranks wait for one to verify, then read its result
            return _verify(index, splits, threads, progress)
    except OSError as err:  # the lock or verified.json cannot be written (a lock timeout is one too)
        raise ConfigError(f"cannot store the verification of {index.sources['train'].parent} in {index.folder} "
                          f"({err.strerror or err}): set data.index_dir (verify: --index-dir) to a writable "
                          f"folder") from None


def _verify(index: FileIndex, splits, threads, progress) -> dict:
    done = index.verified()
    for split in splits:
        if split in done:
            continue
        n = len(index.splits[split])
        with ThreadPoolExecutor(threads or os.cpu_count()) as pool:
            flags = []
            for start in range(0, n, 10_000):
                flags += pool.map(lambda i: _is_bad(index, split, i), range(start, min(n, start + 10_000)))
                if progress:
                    progress(split, len(flags), n)
        done[split] = [i for i, bad in enumerate(flags) if bad]
        write_text(index.verified_file, json.dumps(done))
    return done


def bad_files_message(index: FileIndex, bad: dict) -> str | None:
    """One line naming the bad files verification found, or None."""
    named = [file_name(index, split, i) for split in SPLITS for i in bad.get(split, [])]
    if not named:
        return None
    return (f"{len(named)} unreadable image(s) in {Path(index.sources['train']).parent}: {_few(named)}; delete or "
            f"replace them (then run again: a changed folder is listed and verified anew)")
