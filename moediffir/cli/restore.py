"""``moediffir restore INPUT... -o OUTDIR --model DIR``: restore your own images with a model folder (the
sampling of paper §3.1-3.4, docs/design.md §6)."""

from __future__ import annotations

import argparse
import sys

from moediffir.cli.common import Namespace, SubParsers, add_config_args, set_command
from moediffir.config import parse_override, resolve_config


def _weight_arg(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from exc


def _cmd_restore(args: Namespace) -> int:
    from moediffir.restore_images import run_restore
    from moediffir.weights.model_folder import is_load_overridable

    err = lambda msg: print(msg, file=sys.stderr)
    sets = dict(parse_override(text) for text in args.overrides)
    cfg = resolve_config(args.profile, sets)  # the --set values are checked like every command's
    model = args.model
    if model is None:
        from moediffir.training.runtime import model_dir

        model = model_dir(cfg)
    # sampling settings and weight sources override the model folder's own config; the rest (runs_dir, ...)
    # only say where the profile's model folder is
    report = run_restore(
        args.inputs, args.output, model, overrides={k: v for k, v in sets.items() if is_load_overridable(k)},
        device=args.device, dtype=args.dtype, scheduler=args.scheduler,
        steps=args.steps, seed=args.seed, decoder=args.decoder, fusion_weight=args.fusion_weight,
        tile_size=args.tile_size, color_fix=args.color_fix, recursive=args.recursive, overwrite=args.overwrite, warn=err,
    )
    total = len(report.written) + len(report.failed)
    err(f"restored {len(report.written)} of {total} image(s) into {args.output}")
    if report.failed:
        err(f"{len(report.failed)} failed:")
        for path, reason in report.failed:
            err(f"  {path}: {reason}")
        return 1
    return 0


def add_restore_commands(sub: SubParsers) -> None:
    """``moediffir restore INPUT... -o OUTDIR --model DIR``: restore your own images."""
    from moediffir.config import DECODERS, allowed_values

    p = sub.add_parser(
        "restore", help="restore images with a trained MoE-DiffIR model folder",
        description="Restore compressed images (any number, any size) with a MoE-DiffIR model folder. "
        "Outputs are OUTDIR/<stem>.png; existing files are kept unless --overwrite.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the restored PNGs")
    p.add_argument("--model", default=None, metavar="MODEL_DIR",
                   help="model folder (default: runs/<profile>/model, written by `moediffir train`)")
    add_config_args(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--dtype", default=None, choices=allowed_values("sample.dtype"),
                   help="default: the model's sample.dtype")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's sample.num_steps)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the noise, combined with each image's stem as the evaluation does (default: 0)")
    p.add_argument("--decoder", choices=DECODERS, default=None,
                   help="the decoder compensator (default where the model has one) or the plain VAE decoder")
    p.add_argument("--fusion-weight", type=_weight_arg, default=None, metavar="W",
                   help="decoder compensator weight in [0, 1] (default: the model's sample.fusion_weight)")
    p.add_argument("--tile-size", type=int, default=None, help="tile size in pixels (multiple of 64)")
    p.add_argument("--color-fix", choices=allowed_values("sample.color_fix"), default=None,
                   help="colour correction against the input")
    p.add_argument("--scheduler", default=None, choices=allowed_values("sample.scheduler"),
                   help="sampler (default: the model's sample.scheduler; the paper's is ddpm)")
    p.add_argument("--recursive", action="store_true", help="also take images in sub-folders of folder inputs")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    set_command(p, _cmd_restore)
