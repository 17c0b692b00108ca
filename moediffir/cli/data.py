"""``moediffir data build|merge|import|check|verify|tasks``: the datasets and the CIR benchmark (paper §3.5)."""

from __future__ import annotations

import argparse
from pathlib import Path

from moediffir.cli.common import Namespace, SubParsers, add_config_args, command_config, set_command
from moediffir.sharding import Shard


def _cmd_data_build(args: Namespace) -> int:
    from moediffir.data.builder import build_benchmark

    cfg = command_config(args, {"data.preset": args.preset, "data.workers": args.workers,
                                  "data.out_dir": args.out})
    splits = (args.split,) if args.split else ("train", "test")
    shard = Shard.parse(args.shard) if args.shard else None
    report = build_benchmark(cfg, splits=splits, progress=not args.no_progress, shard=shard)
    print(report.summary())
    if shard is not None:
        print(f"  shard {shard}: part {report.manifest_path.parent}; merge with `moediffir data merge`")
    return 0 if report.complete else 1


def _cmd_data_merge(args: Namespace) -> int:
    from moediffir.data.sharded_build import merge_benchmark
    from moediffir.utils.locks import folder_lock

    cfg = command_config(args, {"data.out_dir": args.out})
    # the lock of the whole benchmark: no unsharded build may write its manifest meanwhile (the shards' builds
    # hold only their own parts' locks; an evaluation that merges a sharded benchmark holds the results folder's)
    with folder_lock(cfg.benchmark_dir, what="benchmark folder"):
        print(f"wrote {merge_benchmark(cfg, args.shards)}")
    return 0


def _cmd_data_import(args: Namespace) -> int:
    from moediffir.data.dataset_folders import check_archive, import_dataset

    cfg = command_config(args)
    for archive in args.archive:
        print(check_archive(archive))
    check = import_dataset(args.name, args.sources, cfg.datasets_dir, mode="copy" if args.copy else "link",
                           decode=not args.no_decode)
    print(check.summary())
    print(f"wrote {check.folder / 'SHA256SUMS'}")
    return 0 if check.ok else 1


def _cmd_data_check(args: Namespace) -> int:
    from moediffir.data.dataset_folders import check_dataset

    cfg = command_config(args)
    target = Path(args.target)
    folder = target if target.is_dir() and not (cfg.datasets_dir / args.target).is_dir() else cfg.datasets_dir / args.target
    check = check_dataset(folder, decode=args.decode)
    print(check.summary())
    return 0 if check.ok else 1


def _cmd_data_verify(args: Namespace) -> int:
    from moediffir.data.manifest import read_manifest, verify_manifest

    cfg = command_config(args, {"data.out_dir": args.out})
    problems = verify_manifest(cfg.benchmark_dir, check_hashes=not args.no_hash, strict=args.strict)
    n = len(read_manifest(cfg.benchmark_dir))
    for p in problems:
        print(p)
    print(f"{cfg.benchmark_dir}: {n} manifest rows, {len(problems)} problem(s)")
    return 0 if not problems else 1


def _cmd_data_tasks(args: Namespace) -> int:
    from moediffir.data.tasks import CODEC_DISPLAY, all_tasks

    print(f"{'label':>5}  {'task':<12} {'codec':<7} {'level':<6} kind")
    for t in all_tasks(args.preset):
        print(f"{t.label:>5}  {t.id:<12} {CODEC_DISPLAY[t.codec]:<7} {t.level!s:<6} {t.kind}")
    return 0


def add_data_commands(sub: SubParsers) -> None:
    """``moediffir data ...``: the CIR benchmark (paper §3.5)."""
    group = sub.add_parser("data", help="datasets and the CIR benchmark (paper §3.5)")
    cmds = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = cmds.add_parser("build", help="build (or complete) the benchmark: every image under every task")
    add_config_args(p)
    p.add_argument("--preset", choices=("paper", "official"), default=None, help="level preset (data.preset)")
    p.add_argument("--workers", type=int, default=None, help="processes; 0 = one per core (data.workers)")
    p.add_argument("--out", default=None, help="output folder (data.out_dir)")
    p.add_argument("--split", choices=("train", "test"), default=None, help="build one split only")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="build only shard K of N (a stable hash of each image) and write it as its own part")
    set_command(p, _cmd_data_build, needs=("datasets", "codec_weights"), writes=("benchmark",))

    p = cmds.add_parser("merge", help="assemble the manifest from the parts of a sharded build")
    add_config_args(p)
    p.add_argument("--out", default=None, help="benchmark folder (data.out_dir)")
    p.add_argument("--shards", type=int, default=None, metavar="N", help="number of shards (default: as on disk)")
    set_command(p, _cmd_data_merge, writes=("benchmark",))

    p = cmds.add_parser("import", help="place a downloaded dataset under data/datasets/NAME and check it")
    add_config_args(p)
    p.add_argument("name", help="dataset name: DF2K, DIV2K_valid, LIVE1, Classic5, BSDS500, ICB (or your own)")
    p.add_argument("sources", nargs="+", help="folder(s) with the extracted images (DF2K: DIV2K_train_HR Flickr2K_HR)")
    p.add_argument("--copy", action="store_true", help="copy the files (default: symbolic links)")
    p.add_argument("--no-decode", action="store_true",
                   help="only open each image's header (faster; truncated files may pass)")
    p.add_argument("--decode", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old scripts
    p.add_argument("--archive", action="append", default=[], metavar="FILE",
                   help="also check a downloaded archive against its known checksum (repeatable)")
    set_command(p, _cmd_data_import, writes=("datasets",))

    p = cmds.add_parser("check", help="check a dataset folder (images open, count, SHA256SUMS)")
    add_config_args(p)
    p.add_argument("target", help="dataset name under the datasets folder, or a folder")
    p.add_argument("--decode", action="store_true", help="decode every image fully")
    set_command(p, _cmd_data_check)

    p = cmds.add_parser("verify", help="check a built benchmark's manifest against its files")
    add_config_args(p)
    p.add_argument("--out", default=None, help="benchmark folder (data.out_dir)")
    p.add_argument("--no-hash", action="store_true", help="check presence only, not SHA-256")
    p.add_argument("--strict", action="store_true", help="also report PNGs on disk that the manifest does not list")
    set_command(p, _cmd_data_verify)

    p = cmds.add_parser("tasks", help="list the tasks of a level preset with their labels")
    p.add_argument("--preset", choices=("paper", "official"), default="paper")
    set_command(p, _cmd_data_tasks)
