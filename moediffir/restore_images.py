"""``moediffir restore INPUT... -o OUTDIR --model MODEL_DIR``: restore your own images (docs/design.md §6).

Runs the MoE-DiffIR pipeline (paper §3, inference as §4.1) of a model folder over any number of image files
and folders, of any size (large images go through the tiled path). Outputs are PNGs named ``<stem>.png`` in
OUTDIR. Rules:

- an existing output is never overwritten without ``--overwrite``: the command stops before any work and names
  the file(s); two inputs with the same stem are refused the same way;
- an unreadable input is skipped with a warning naming it, the others go on; the exit code is 1 when any
  image failed (a summary lists them), 0 otherwise;
- each image is sampled with its own generator seeded by ``--seed``, so its result does not depend on which
  other images are restored with it;
- a model whose weights are random (the smoke profile) is said to be so: its outputs are not restorations.

The lead wires :func:`add_restore_parser` / :func:`run_restore` into ``moediffir.cli``; :func:`restore_images`
is the same logic as a function for notebooks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class RestoreError(ValueError):
    """A problem found before any image is restored (bad inputs, an existing output, a name clash)."""


@dataclass
class RestoreReport:
    """What a restore run did: written outputs and ``(input, reason)`` of every failure."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def collect_inputs(inputs: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Image files of the given files and folders (folders: files with an image suffix, sorted by name).

    A file given by name is taken whatever its suffix (an unreadable one fails later, by name); a path that
    does not exist raises :class:`RestoreError`.
    """
    files: list[Path] = []
    missing = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            missing.append(str(path))
    if missing:
        raise RestoreError("input not found: " + ", ".join(missing))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def plan_outputs(files: Sequence[Path], out_dir: Path, overwrite: bool) -> list[Path]:
    """``<out_dir>/<stem>.png`` per input; refuse name clashes, and existing files unless ``overwrite``."""
    outputs = [out_dir / f"{f.stem}.png" for f in files]
    by_out: dict[Path, list[Path]] = {}
    for f, o in zip(files, outputs):
        by_out.setdefault(o, []).append(f)
    clashes = {o: fs for o, fs in by_out.items() if len(fs) > 1}
    if clashes:
        lines = [f"{o}: from {', '.join(map(str, fs))}" for o, fs in clashes.items()]
        raise RestoreError("several inputs would write the same output (rename them):\n  " + "\n  ".join(lines))
    if not overwrite:
        existing = [o for o in outputs if o.exists()]
        if existing:
            raise RestoreError(
                "output exists (pass --overwrite to replace): " + ", ".join(map(str, existing))
            )
    return outputs


def restore_images(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    pipe: Any,
    num_inference_steps: int | None = None,
    seed: int = 0,
    fusion_weight: float | None = ...,  # type: ignore[assignment]
    tile_size: int | None = None,
    color_fix: str | None = None,
    overwrite: bool = False,
    recursive: bool = False,
    warn: Callable[[str], None] | None = None,
    progress: bool = True,
) -> RestoreReport:
    """Restore every image of ``inputs`` with ``pipe`` into ``out_dir`` (rules in the module docstring).

    Raises :class:`RestoreError` before any work for missing inputs, name clashes and existing outputs.
    """
    import torch
    from tqdm.auto import tqdm

    from moediffir.utils.io import ImageReadError, atomic_save_png, read_image_rgb

    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    files = collect_inputs(inputs, recursive=recursive)
    if not files:
        raise RestoreError("no images found in: " + ", ".join(map(str, inputs)))
    outputs = plan_outputs(files, out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.set_progress_bar_config(disable=True)
    report = RestoreReport()
    kwargs = {"num_inference_steps": num_inference_steps, "fusion_weight": fusion_weight, "tile_size": tile_size,
              "color_fix": color_fix}  # None (fusion_weight: ...) means the model's default
    for src, dst in tqdm(list(zip(files, outputs)), desc="restore", unit="img", disable=not progress, file=sys.stderr):
        try:
            lq = read_image_rgb(src)  # (H, W, 3) uint8
        except ImageReadError as exc:
            warn(f"warning: skipping {src}: {exc}")
            report.failed.append((src, str(exc)))
            continue
        try:
            generator = torch.Generator().manual_seed(int(seed))
            restored = pipe(lq, generator=generator, output_type="np", **kwargs).images[0]  # (H, W, 3) uint8
            if not overwrite and dst.exists():  # appeared while we worked
                raise RestoreError(f"output exists (pass --overwrite to replace): {dst}")
            atomic_save_png(dst, restored)
        except Exception as exc:  # noqa: BLE001 (one bad image must not stop the others; it is named and counted)
            warn(f"warning: failed {src}: {type(exc).__name__}: {exc}")
            report.failed.append((src, f"{type(exc).__name__}: {exc}"))
            continue
        report.written.append(dst)
    return report


# ------------------------------------------------------------------------------------------------ CLI
def _weight_arg(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'none', got {text!r}") from exc


def add_restore_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``restore`` sub-command to an ``argparse`` sub-parser collection and return its parser."""
    from moediffir.pipelines.colorfix import COLOR_FIXES

    p = subparsers.add_parser(
        "restore",
        help="restore images with a trained MoE-DiffIR model folder",
        description="Restore compressed images (any number, any size) with a MoE-DiffIR model folder. "
        "Outputs are OUTDIR/<stem>.png; existing files are kept unless --overwrite.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the restored PNGs")
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="model folder (save_model_folder)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--dtype", default=None, choices=("fp32", "fp16", "bf16"), help="default: the model's sample.dtype")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's sample.num_steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of every image's noise (default: 0)")
    p.add_argument("--fusion-weight", type=_weight_arg, default=..., metavar="W",
                   help="decoder compensator weight in [0, 1], or 'none' for the plain VAE decoder")
    p.add_argument("--tile-size", type=int, default=None, help="tile size in pixels (multiple of 64)")
    p.add_argument("--color-fix", choices=COLOR_FIXES, default=None, help="colour correction against the input")
    p.add_argument("--scheduler", default=None, help="ddpm (paper), ddim, dpmpp_2m, euler, euler_a, unipc")
    p.add_argument("--recursive", action="store_true", help="also take images in sub-folders of folder inputs")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run_restore)
    return p


def run_restore(args: argparse.Namespace) -> int:
    """Run ``moediffir restore``; return the exit code (0 all restored, 1 some failed, 2 nothing done)."""
    from moediffir.config import ConfigError
    from moediffir.pipelines.model_folder import read_model_info
    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    err = lambda msg: print(msg, file=sys.stderr)
    try:
        files = collect_inputs(args.inputs, recursive=args.recursive)
        if not files:
            raise RestoreError("no images found in: " + ", ".join(map(str, args.inputs)))
        plan_outputs(files, Path(args.output), args.overwrite)  # fail before loading the model
        overrides = {"sample.scheduler": args.scheduler} if args.scheduler else None
        pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, overrides=overrides)
    except (RestoreError, ConfigError, ValueError, FileNotFoundError) as exc:  # incl. ModelFolderError
        err(f"error: {exc}")
        return 2
    try:  # bad sampling arguments fail here, once, not once per image
        import numpy as np

        settings = pipe.resolve_arguments(num_inference_steps=args.steps, fusion_weight=args.fusion_weight,
                                          tile_size=args.tile_size, color_fix=args.color_fix)
        pipe.check_inputs(np.zeros((8, 8, 3), np.uint8), output_type="np", **settings)
    except (TypeError, ValueError) as exc:
        err(f"error: {exc}")
        return 2
    random_parts = read_model_info(args.model).get("random_weights", [])
    if random_parts:
        err("note: this model has random weights (" + "; ".join(random_parts) + "): outputs are not restorations")
    try:
        report = restore_images(
            files, args.output, pipe, num_inference_steps=args.steps, seed=args.seed, fusion_weight=args.fusion_weight,
            tile_size=args.tile_size, color_fix=args.color_fix, overwrite=args.overwrite, warn=err,
        )
    except RestoreError as exc:
        err(f"error: {exc}")
        return 2
    total = len(report.written) + len(report.failed)
    print(f"restored {len(report.written)} of {total} image(s) into {args.output}", file=sys.stderr)
    if report.failed:
        err(f"{len(report.failed)} failed:")
        for path, reason in report.failed:
            err(f"  {path}: {reason}")
        return 1
    return 0
