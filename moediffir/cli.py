"""The ``moediffir`` command line: one entry point, command groups that call the same functions as the notebooks.

    moediffir data build  --profile smoke [--preset paper|official] [--workers N] [--out DIR] [--set K=V ...]
    moediffir data import NAME SRC [SRC ...] [--copy] [--decode] [--archive FILE ...]
    moediffir data check  NAME|DIR [--decode]
    moediffir data verify [--profile P] [--out DIR]
    moediffir data tasks  [--preset paper|official]

Every command takes ``--profile`` and repeated ``--set KEY=VALUE`` overrides (dotted config keys, values read
as JSON when they parse: ``--set data.codecs='["jpeg","webp"]'``); commands that run networks take
``--device``. To add a command group, write ``add_<group>_commands(subparsers)`` that registers its
sub-commands with ``set_defaults(func=...)`` and put it in :data:`COMMAND_GROUPS`.
Heavy imports happen inside the command functions, so ``moediffir --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from moediffir.config import PROFILES, Config, ConfigError, parse_override, resolve_config
from moediffir.utils.logs import quiet_third_party


# ------------------------------------------------------------------------------------- shared arguments
def add_config_args(parser: argparse.ArgumentParser, device: bool = False, default_profile: str = "smoke") -> None:
    """``--profile``, repeated ``--set KEY=VALUE`` and (optionally) ``--device``."""
    parser.add_argument("--profile", choices=PROFILES, default=default_profile,
                        help=f"settings profile (default: {default_profile})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.workers=2 (repeatable)")
    if device:
        parser.add_argument("--device", default=None, help="'auto', 'cpu', 'cuda', 'cuda:1', ... (config key device)")


def overrides_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--set`` pairs, then ``--device``, then command-specific flags (``extra``, ``None`` values skipped)."""
    out: dict[str, Any] = {}
    for text in getattr(args, "overrides", []) or []:
        key, value = parse_override(text)
        out[key] = value
    if getattr(args, "device", None):
        out["device"] = args.device
    for key, value in (extra or {}).items():
        if value is not None:
            out[key] = value
    return out


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Config:
    """Resolve the profile with every override given on the command line (validated)."""
    return resolve_config(args.profile, overrides_from_args(args, extra))


# ------------------------------------------------------------------------------------------ data group
def _cmd_data_build(args: argparse.Namespace) -> int:
    from moediffir.data.builder import build_benchmark

    cfg = config_from_args(args, {"data.preset": args.preset, "data.workers": args.workers,
                                  "data.out_dir": args.out})
    splits = (args.split,) if args.split else ("train", "test")
    report = build_benchmark(cfg, splits=splits, progress=not args.no_progress)
    print(report.summary())
    return 0 if report.complete else 1


def _cmd_data_import(args: argparse.Namespace) -> int:
    from moediffir.data.datasets import check_archive, import_dataset

    cfg = config_from_args(args)
    for archive in args.archive:
        print(check_archive(archive))
    check = import_dataset(args.name, args.sources, cfg.datasets_dir, mode="copy" if args.copy else "link",
                           decode=args.decode)
    print(check.summary())
    print(f"wrote {check.folder / 'SHA256SUMS'}")
    return 0 if check.ok else 1


def _cmd_data_check(args: argparse.Namespace) -> int:
    from moediffir.data.datasets import check_dataset

    cfg = config_from_args(args)
    target = Path(args.target)
    folder = target if target.is_dir() and not (cfg.datasets_dir / args.target).is_dir() else cfg.datasets_dir / args.target
    check = check_dataset(folder, decode=args.decode)
    print(check.summary())
    return 0 if check.ok else 1


def _cmd_data_verify(args: argparse.Namespace) -> int:
    from moediffir.data.manifest import read_manifest, verify_manifest

    cfg = config_from_args(args, {"data.out_dir": args.out})
    problems = verify_manifest(cfg.benchmark_dir, check_hashes=not args.no_hash, strict=args.strict)
    n = len(read_manifest(cfg.benchmark_dir))
    for p in problems:
        print(p)
    print(f"{cfg.benchmark_dir}: {n} manifest rows, {len(problems)} problem(s)")
    return 0 if not problems else 1


def _cmd_data_tasks(args: argparse.Namespace) -> int:
    from moediffir.data.tasks import CODEC_DISPLAY, all_tasks

    print(f"{'label':>5}  {'task':<12} {'codec':<7} {'level':<6} kind")
    for t in all_tasks(args.preset):
        print(f"{t.label:>5}  {t.id:<12} {CODEC_DISPLAY[t.codec]:<7} {t.level!s:<6} {t.kind}")
    return 0


def add_data_commands(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_cmd_data_build)

    p = cmds.add_parser("import", help="place a downloaded dataset under data/datasets/NAME and check it")
    add_config_args(p)
    p.add_argument("name", help="dataset name: DF2K, DIV2K_valid, LIVE1, Classic5, BSDS500, ICB (or your own)")
    p.add_argument("sources", nargs="+", help="folder(s) with the extracted images (DF2K: DIV2K_train_HR Flickr2K_HR)")
    p.add_argument("--copy", action="store_true", help="copy the files (default: symbolic links)")
    p.add_argument("--decode", action="store_true", help="decode every image fully while checking (slower)")
    p.add_argument("--archive", action="append", default=[], metavar="FILE",
                   help="also check a downloaded archive against its known checksum (repeatable)")
    p.set_defaults(func=_cmd_data_import)

    p = cmds.add_parser("check", help="check a dataset folder (images open, count, SHA256SUMS)")
    add_config_args(p)
    p.add_argument("target", help="dataset name under the datasets folder, or a folder")
    p.add_argument("--decode", action="store_true", help="decode every image fully")
    p.set_defaults(func=_cmd_data_check)

    p = cmds.add_parser("verify", help="check a built benchmark's manifest against its files")
    add_config_args(p)
    p.add_argument("--out", default=None, help="benchmark folder (data.out_dir)")
    p.add_argument("--no-hash", action="store_true", help="check presence only, not SHA-256")
    p.add_argument("--strict", action="store_true", help="also report PNGs on disk that the manifest does not list")
    p.set_defaults(func=_cmd_data_verify)

    p = cmds.add_parser("tasks", help="list the tasks of a level preset with their labels")
    p.add_argument("--preset", choices=("paper", "official"), default="paper")
    p.set_defaults(func=_cmd_data_tasks)


#: Command groups, in help order (a plain dict; each group imports its own module only when the parser is built).
def add_train_commands(sub: argparse._SubParsersAction) -> None:
    """``moediffir train stage1|stage2`` and ``moediffir stage2-data`` (paper §3.4)."""
    from moediffir.training.cli import add_train_parsers

    add_train_parsers(sub)


def add_evaluation_commands(sub: argparse._SubParsersAction) -> None:
    """``moediffir evaluate`` and ``moediffir report`` (paper §4.2)."""
    from moediffir.evaluation.cli import add_eval_parsers

    add_eval_parsers(sub)


def add_sweep_commands(sub: argparse._SubParsersAction) -> None:
    """``moediffir sweep NAME`` (paper §4.3 ablations)."""
    from moediffir.ablation.cli import add_sweep_parsers

    add_sweep_parsers(sub)


def add_reproduce_commands(sub: argparse._SubParsersAction) -> None:
    """``moediffir reproduce``: notebooks 01-06 in order."""
    from moediffir.reproduce import add_reproduce_parser

    add_reproduce_parser(sub)


def add_restore_commands(sub: argparse._SubParsersAction) -> None:
    """``moediffir restore INPUT... -o OUTDIR --model DIR``."""
    from moediffir.restore_images import add_restore_parser

    add_restore_parser(sub)


COMMAND_GROUPS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "data": add_data_commands,
    "train": add_train_commands,
    "evaluate": add_evaluation_commands,
    "sweep": add_sweep_commands,
    "reproduce": add_reproduce_commands,
    "restore": add_restore_commands,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moediffir", description="MoE-DiffIR reproduction kit")
    sub = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for add in COMMAND_GROUPS.values():
        add(sub)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: printed as one line, exit code 2 (no traceback)."""
    errors: list[type[BaseException]] = [ConfigError, FileNotFoundError]
    try:
        from moediffir.codecs.base import CodecError
        from moediffir.data.builder import BuildError
        from moediffir.data.datasets import DatasetImportError
        from moediffir.data.manifest import ManifestError
        from moediffir.data.tasks import TaskError

        errors += [CodecError, BuildError, DatasetImportError, ManifestError, TaskError]
    except ImportError:  # pragma: no cover - a broken install still gets a traceback
        pass
    for module, names in (
        ("moediffir.evaluation.protocol", ("EvaluationError",)),
        ("moediffir.ablation.sweep", ("SweepError",)),
        ("moediffir.report.ablations", ("AblationReportError",)),
        ("moediffir.training.checkpoint", ("CheckpointError",)),
        ("moediffir.training.runtime", ("TrainingConfigError",)),
        ("moediffir.pipelines.model_folder", ("ModelFolderError",)),
        ("moediffir.reproduce", ("ReproduceError",)),
    ):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:  # pragma: no cover
            continue
        errors += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``moediffir`` (pyproject ``[project.scripts]``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_third_party()  # before any command imports diffusers
    try:
        return int(args.func(args) or 0)
    except _known_errors() as exc:
        print(f"moediffir: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = "rerun with --resume" if args.group == "train" else "rerun the same command"
        print(f"moediffir: interrupted; {again} to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
