"""``python -m roadmap.data verify ROOT``: a data root indexed and every image decoded once; runs read the result."""
import os
import time

from roadmap.data.datamodule import root_config
from roadmap.data.file_index import SPLITS, bad_files_message, file_index, rebuild, verify
from roadmap.errors import ConfigError, exit_on_config_error
from roadmap.utils.cli import Parser, existing_folder, positive_int


@exit_on_config_error
def main(argv: list[str] | None = None) -> None:
    """``python -m roadmap.data verify ROOT``: index a data root and decode every image once (runs read the result)."""
    parser = Parser(prog="python -m roadmap.data", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify_cmd = commands.add_parser("verify", help="index ROOT and decode every image (train and val) once")
    verify_cmd.add_argument("root", type=existing_folder)
    verify_cmd.add_argument("--train-tar", help="the train tar's name under ROOT (tar data)")
    verify_cmd.add_argument("--val-tar", help="the val tar's name under ROOT (tar data)")
    verify_cmd.add_argument("--index-dir", help="where the index is stored (data.index_dir)")
    verify_cmd.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1)
    verify_cmd.add_argument("--rebuild", action="store_true",
                            help="list and decode everything again (a file rewritten in place, same name, leaves its "
                                 "folder's time unchanged: the index cannot see it)")
    args = parser.parse_args(argv)
    data = root_config(args.root, args.train_tar, args.val_tar, args.index_dir)
    started = time.time()
    index = file_index(data)
    if args.rebuild:
        index = rebuild(data, index)
    print(f"{data.root}: {index.summary()} (index {index.folder}, {time.time() - started:.1f} s)", flush=True)

    def progress(split, done, total):
        print(f"  {split}: {done:,}/{total:,} decoded", flush=True)

    problem = bad_files_message(index, verify(index, SPLITS, threads=args.threads, progress=progress))
    if problem:
        raise ConfigError(problem)
    print(f"verified: every image of {data.root} decodes ({time.time() - started:.1f} s); runs on it read "
          f"{index.verified_file}")


if __name__ == "__main__":
    main()
