"""ImageNet-like data made here, for the data path's tests and benchmarks (nothing is downloaded).

    python -m roadmap.fake_imagenet jpegs OUT [--classes 100] [--train-per-class 8] [--val-per-class 2]
    python -m roadmap.fake_imagenet tree OUT --from JPEGS [--classes 1000] [--train-per-class 1281] [--val-per-class 50]
    python -m roadmap.fake_imagenet tars FOLDER OUT

``jpegs`` writes ``OUT/{train,val}/<class>/<n>.JPEG``: 500×375 JPEGs at quality 90 (about ImageNet's median size and
bytes), smooth random colour fields with texture, so decoding costs what ImageNet's does. ``tree`` makes an
ImageNet-sized folder (1.33 M files by default) of hard links to those JPEGs: the file system holds a million names
without a million images' bytes. ``tars`` packs an image folder as ImageNet ships it: ``train.tar`` holding one tar per
class, and ``val.tar`` laid out by class.
"""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.utils.cli import Parser, existing_folder, non_negative_int, output_folder, positive_int


def fake_jpeg(rng: np.random.Generator, width: int = 500, height: int = 375, quality: int = 90) -> bytes:
    """One ImageNet-like JPEG: a smooth random colour field (bicubic from 12×9) plus fine noise."""
    field = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def class_name(c: int) -> str:
    return f"n{c:08d}"  # ImageNet's synset-like names: sorted order is label order


def write_jpegs(out: Path, classes: int, train_per_class: int, val_per_class: int, seed: int = 0,
                size: tuple[int, int] = (500, 375)) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        if not n:  # no val/ at all: ImageNet-22K's layout
            continue
        for c in range(classes):
            folder = out / split / class_name(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{class_name(c)}_{i}.JPEG").write_bytes(fake_jpeg(rng, *size))
    return out


def link_tree(out: Path, source: Path, classes: int, train_per_class: int, val_per_class: int) -> Path:
    """``out/{train,val}/<class>/<n>.JPEG`` as hard links, cycling through ``source``'s JPEGs."""
    pool = sorted(str(p) for p in source.rglob("*.JPEG"))
    if not pool:
        raise ConfigError(f"no .JPEG files under {source}: make them with python -m roadmap.fake_imagenet jpegs")
    k = 0
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        if not n:
            continue
        for c in range(classes):
            folder = out / split / class_name(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                os.link(pool[k % len(pool)], folder / f"{class_name(c)}_{i}.JPEG")
                k += 1
    return out


def write_tars(folder: Path, out: Path) -> tuple[Path, Path]:
    """``out/train.tar`` (a tar of ``<class>.tar`` files, each flat) and ``out/val.tar`` (``<class>/<image>``)."""
    if not (folder / "train").is_dir():
        raise ConfigError(f"{folder} has no train/ folder: give an image folder's root (train/<class>/<image>, and "
                          f"val/<class>/<image>)")
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "train.tar", "w") as train:
        for class_dir in sorted(p for p in (folder / "train").iterdir() if p.is_dir()):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as class_tar:
                for image in sorted(class_dir.iterdir()):
                    class_tar.add(image, arcname=image.name)
            info = tarfile.TarInfo(f"{class_dir.name}.tar")
            info.size = inner.tell()
            inner.seek(0)
            train.addfile(info, inner)
    with tarfile.open(out / "val.tar", "w") as val:
        for image in sorted((folder / "val").rglob("*")):
            if image.is_file():
                val.add(image, arcname=f"{image.parent.name}/{image.name}")
    return out / "train.tar", out / "val.tar"


@exit_on_config_error
def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m roadmap.fake_imagenet", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    jpegs = commands.add_parser("jpegs", help="ImageNet-like JPEGs in the image-folder layout")
    tree = commands.add_parser("tree", help="an ImageNet-sized folder of hard links to JPEGs made by 'jpegs'")
    for command, defaults in ((jpegs, (100, 8, 2)), (tree, (1000, 1281, 50))):
        command.add_argument("out", type=output_folder)
        command.add_argument("--classes", type=positive_int, default=defaults[0])
        command.add_argument("--train-per-class", type=positive_int, default=defaults[1])
        command.add_argument("--val-per-class", type=non_negative_int, default=defaults[2],
                             help="0: no val/ folder (ImageNet-22K's layout)")
    tree.add_argument("--from", dest="source", type=existing_folder, required=True)
    tars = commands.add_parser("tars", help="pack an image folder as ImageNet's train and val tars")
    tars.add_argument("folder", type=existing_folder)
    tars.add_argument("out", type=output_folder)
    args = parser.parse_args(argv)
    if args.command in ("jpegs", "tree") and args.out.is_dir() and any(args.out.iterdir()):
        parser.error(f"{args.out} already holds files: give a new folder (its images would mix with these)")
    if args.command == "jpegs":
        write_jpegs(args.out, args.classes, args.train_per_class, args.val_per_class)
    elif args.command == "tree":
        link_tree(args.out, args.source, args.classes, args.train_per_class, args.val_per_class)
    else:
        print(*write_tars(args.folder, args.out))


if __name__ == "__main__":
    main()
