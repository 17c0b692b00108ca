"""``moediffir restore INPUT... -o OUTDIR --model MODEL_DIR``: restore your own images (docs/design.md §6).

Runs the MoE-DiffIR pipeline (paper §3, inference as §4.1) of a model folder over any number of image files
and folders, of any size (large images go through the tiled path). Outputs are PNGs named ``<stem>.png`` in
OUTDIR. Rules:

- an existing output is never overwritten without ``--overwrite``: the command stops before any work and names
  the file(s); two inputs with the same stem are refused the same way;
- an output folder that is an input folder, or holds an input file, is refused (with or without
  ``--overwrite``) before any work, naming both: the originals are never replaced by their restorations;
- an unreadable input is skipped with a warning naming it, the others go on; the exit code is 1 when any
  image failed (a summary lists them), 0 otherwise;
- each image is sampled with its own generator, seeded as the evaluation seeds a benchmark image
  (:func:`restore_seed`: ``--seed`` and the image's stem), so its result does not depend on which other images
  are restored with it, nor on their order;
- ``--profile`` names the default model folder (``runs/<profile>/model``); ``--set KEY=VALUE`` overrides a
  sampling setting of the model folder's config (``sample.*``, ``seed``, ``device``, weight sources);
- a model whose weights are random (the smoke profile) is said to be so: its outputs are not restorations.

:func:`run_restore` is the command (the ``moediffir`` command line parses its arguments);
:func:`restore_images` restores with a pipeline already loaded, for notebooks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moediffir.errors import MoEDiffIRError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def restore_seed(seed: int, stem: str) -> int:
    """The sampling seed of an image of yours: the evaluation's rule for a benchmark image
    (:func:`~moediffir.evaluation.protocol.image_seed`), with no set or task."""
    from moediffir.evaluation.protocol import image_seed

    return image_seed(int(seed), "", "", stem)


class RestoreError(MoEDiffIRError, ValueError):
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


def check_not_in_place(inputs: Sequence[str | Path], files: Sequence[Path], out_dir: str | Path) -> None:
    """Refuse an output folder that is an input folder or holds an input file (even in a sub-folder), whatever
    ``--overwrite`` says: one line naming both, before any work."""
    out = Path(out_dir).resolve()
    for item in inputs:
        if Path(item).is_dir() and Path(item).resolve() == out:
            raise RestoreError(f"output folder {out_dir} is the input folder {item}: the restorations would replace "
                               "the originals; choose another -o")
    for f in files:
        if out in f.resolve().parents:
            raise RestoreError(f"input {f} lies inside the output folder {out_dir}: its restoration could replace "
                               "it; choose another -o")


def plan_outputs(files: Sequence[Path], out_dir: Path, overwrite: bool) -> list[Path]:
    """``<out_dir>/<stem>.png`` per input; refuse name clashes, and existing files unless ``overwrite``."""
    outputs = [out_dir / f"{f.stem}.png" for f in files]
    by_out: dict[Path, list[Path]] = {}
    for f, o in zip(files, outputs):
        by_out.setdefault(o, []).append(f)
    clashes = {o: fs for o, fs in by_out.items() if len(fs) > 1}
    if clashes:
        lines = [f"{o} from {' and '.join(map(str, fs))}" for o, fs in clashes.items()]
        raise RestoreError("several inputs would write the same output (rename them): " + "; ".join(lines))
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
    decoder: str | None = None,
    fusion_weight: float | None = None,
    tile_size: int | None = None,
    color_fix: str | None = None,
    overwrite: bool = False,
    recursive: bool = False,
    warn: Callable[[str], None] | None = None,
    progress: bool = True,
) -> RestoreReport:
    """Restore every image of ``inputs`` with ``pipe`` into ``out_dir`` (rules in the module docstring).

    Raises :class:`RestoreError` before any work for missing inputs, an output folder holding inputs, name clashes
    and existing outputs.
    """
    import torch
    from tqdm.auto import tqdm

    from moediffir.utils.io import ImageReadError, atomic_save_png, read_image_rgb

    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    files = collect_inputs(inputs, recursive=recursive)
    if not files:
        raise RestoreError("no images found in: " + ", ".join(map(str, inputs)))
    check_not_in_place(inputs, files, out_dir)
    outputs = plan_outputs(files, out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.set_progress_bar_config(disable=not progress, leave=False)  # per-image bars: steps, tiles of big photos
    report = RestoreReport()
    kwargs = {"num_inference_steps": num_inference_steps, "decoder": decoder, "fusion_weight": fusion_weight,
              "tile_size": tile_size, "color_fix": color_fix}  # None means the model's default
    for src, dst in tqdm(list(zip(files, outputs)), desc="restore", unit="img", disable=not progress, file=sys.stderr):
        try:
            lq = read_image_rgb(src)  # (H, W, 3) uint8
        except ImageReadError as exc:
            warn(f"warning: skipping {src}: {exc}")
            report.failed.append((src, str(exc)))
            continue
        try:
            generator = torch.Generator().manual_seed(restore_seed(seed, src.stem))
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


def prepare_pipeline(model: str | Path, *, device: str = "auto", dtype: str | None = None,
                     scheduler: str | None = None, steps: int | None = None, decoder: str | None = None,
                     fusion_weight: float | None = None, tile_size: int | None = None,
                     color_fix: str | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
    """Load the model folder's pipeline (``overrides``: its config's sampling settings, ``--set``) and check the
    sampling arguments once (not once per image).

    Raises :class:`RestoreError` (or the model folder's error) naming the problem, before any image is sampled.
    """
    import numpy as np

    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    overrides = {**(overrides or {}), **({"sample.scheduler": scheduler} if scheduler else {})}
    pipe = load_pipeline(model, device=device, dtype=dtype, overrides=overrides or None)
    try:
        settings = pipe.resolve_arguments(num_inference_steps=steps, decoder=decoder, fusion_weight=fusion_weight,
                                          tile_size=tile_size, color_fix=color_fix)
        pipe.check_inputs(np.zeros((8, 8, 3), np.uint8), output_type="np", **settings)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RestoreError):
            raise
        raise RestoreError(str(exc)) from exc
    return pipe


def run_restore(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    model: str | Path,
    *,
    device: str = "auto",
    dtype: str | None = None,
    scheduler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    decoder: str | None = None,
    fusion_weight: float | None = None,
    tile_size: int | None = None,
    color_fix: str | None = None,
    recursive: bool = False,
    overwrite: bool = False,
    overrides: Mapping[str, Any] | None = None,
    warn: Callable[[str], None] | None = None,
    progress: bool = True,
) -> RestoreReport:
    """``moediffir restore``: check inputs, outputs, the output folder and the model first, then restore.

    Everything that can be refused is refused before the model is loaded or an image sampled
    (:class:`RestoreError` naming the file); a model with random weights is said to be so through ``warn``.
    """
    from moediffir.utils.io import check_writable_dir

    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    files = collect_inputs(inputs, recursive=recursive)
    if not files:
        raise RestoreError("no images found in: " + ", ".join(map(str, inputs)))
    check_not_in_place(inputs, files, out_dir)
    plan_outputs(files, Path(out_dir), overwrite)  # fail before loading the model
    check_writable_dir(out_dir, what="output folder (-o)")
    from moediffir.utils.devices import check_device, check_dtype  # torch: after the checks that need none

    check_device(device)
    check_dtype(dtype, device)
    pipe = prepare_pipeline(model, device=device, dtype=dtype, scheduler=scheduler, steps=steps, decoder=decoder,
                            fusion_weight=fusion_weight, tile_size=tile_size, color_fix=color_fix, overrides=overrides)
    from moediffir.weights.model_folder import read_model_info  # loaded with the pipeline: no new import

    random_parts = read_model_info(model).get("random_weights", [])
    if random_parts:
        warn("note: this model has random weights (" + "; ".join(random_parts) + "): outputs are not restorations")
    return restore_images(files, out_dir, pipe, num_inference_steps=steps, seed=seed, decoder=decoder,
                          fusion_weight=fusion_weight, tile_size=tile_size, color_fix=color_fix, overwrite=overwrite,
                          warn=warn, progress=progress)
