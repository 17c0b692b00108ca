"""The pipeline's inputs and outputs (paper §3, inference as §4.1): argument checks and image conversions.

:class:`~moediffir.pipelines.moediffir_pipeline.MoEDiffIRPipeline` takes PIL images, uint8 ``(H, W, 3)`` /
``(B, H, W, 3)`` arrays and float ``(B, 3, H, W)`` tensors in ``[0, 1]`` (or lists of them), and returns the kind
it was given (``output_type``). This module holds steps 1, 2 and 10 of its numbered steps: short, exact errors
for bad arguments before any work; inputs to ``(1, 3, H, W)`` float tensors; restored ``(B, 3, H, W)`` images
to the output type.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from moediffir.config.values import DECODERS
from moediffir.pipelines.colorfix import COLOR_FIXES
from moediffir.pipelines.tiling import BLEND_MODES
from moediffir.utils.image_tensors import to_tensor01
from moediffir.utils.io import to_rgb_uint8

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def image_kind(x: Any) -> str | None:
    """``pil``, ``np`` or ``pt`` for an accepted image, None for anything else."""
    if isinstance(x, Image.Image):
        return "pil"
    if isinstance(x, np.ndarray):
        return "np"
    if torch.is_tensor(x):
        return "pt"
    return None


def _check_one_image(x: Any, where: str) -> None:
    kind = image_kind(x)
    if kind is None:
        raise TypeError(
            f"{where}: expected a PIL image, a uint8 (H, W, 3) numpy array or a float (B, 3, H, W) tensor in [0, 1], "
            f"got {type(x).__name__}"
        )
    if kind == "pil":
        if x.width < 1 or x.height < 1:
            raise ValueError(f"{where}: PIL image has zero size {x.size}")
    elif kind == "np":
        if x.dtype != np.uint8:
            raise ValueError(f"{where}: numpy images must be uint8, got {x.dtype}")
        if not (x.ndim in (3, 4) and x.shape[-1] == 3) or 0 in x.shape:
            raise ValueError(f"{where}: numpy images must be (H, W, 3) or (B, H, W, 3), got {x.shape}")
    else:
        if x.ndim != 4 or x.shape[1] != 3 or 0 in x.shape:
            raise ValueError(f"{where}: tensor images must be (B, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{where}: tensor images must be float in [0, 1], got {x.dtype}")
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{where}: tensor images contain NaN or inf")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{where}: tensor values must be in [0, 1], got [{lo:.3g}, {hi:.3g}]")


def check_images(image: Any) -> int:
    """Check every image of ``image`` (one or a list); return how many images it holds."""
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    if not items:
        raise ValueError("image: got an empty list")
    n_images = 0
    for i, x in enumerate(items):
        _check_one_image(x, f"image[{i}]" if isinstance(image, (list, tuple)) else "image")
        n_images += x.shape[0] if (torch.is_tensor(x) or (isinstance(x, np.ndarray) and x.ndim == 4)) else 1
    return n_images


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_arguments(
    args: dict[str, Any], n_images: int, pixel_multiple: int, vae_scale_factor: int, uses_task_labels: bool
) -> None:
    """Raise a short, exact error for a bad sampling argument (``args``: names as in the pipeline's call;
    only those present are checked)."""
    steps = args.get("num_inference_steps", 1)
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"num_inference_steps must be an int >= 1, got {steps!r}")
    fusion_weight = args.get("fusion_weight")
    if fusion_weight is not None:
        if isinstance(fusion_weight, bool) or not isinstance(fusion_weight, (int, float)) or not math.isfinite(fusion_weight):
            raise ValueError(f"fusion_weight must be a number in [0, 1] or None, got {fusion_weight!r}")
        if not 0.0 <= float(fusion_weight) <= 1.0:
            raise ValueError(f"fusion_weight must be in [0, 1], got {fusion_weight}")
    tile_size, tile_overlap = args.get("tile_size", pixel_multiple), args.get("tile_overlap", 0)
    mult, f = pixel_multiple, vae_scale_factor
    if not _is_int(tile_size) or tile_size < mult or tile_size % mult:
        raise ValueError(f"tile_size must be a positive multiple of {mult} px (the latent grid), got {tile_size!r}")
    if not _is_int(tile_overlap) or tile_overlap < 0 or tile_overlap % f:
        raise ValueError(f"tile_overlap must be a multiple of {f} px and >= 0, got {tile_overlap!r}")
    if tile_overlap >= tile_size:
        raise ValueError(f"tile_overlap={tile_overlap} must be smaller than tile_size={tile_size}")
    if args.get("tile_blend", BLEND_MODES[0]) not in BLEND_MODES:
        raise ValueError(f"tile_blend={args['tile_blend']!r}: choose one of {BLEND_MODES}")
    if args.get("color_fix", COLOR_FIXES[0]) not in COLOR_FIXES:
        raise ValueError(f"color_fix={args['color_fix']!r}: choose one of {COLOR_FIXES}")
    output_type = args.get("output_type")
    if output_type is not None and output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type={output_type!r}: choose one of {OUTPUT_TYPES}")
    batch_size = args.get("batch_size", 1)
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    generator = args.get("generator")
    if isinstance(generator, (list, tuple)) and len(generator) != n_images:
        raise ValueError(f"generator: got {len(generator)} generators for {n_images} images; pass one per image or one")
    task_labels = args.get("task_labels")
    if uses_task_labels and "task_labels" in args and task_labels is None:
        raise ValueError("task_labels: this model routes by task label (model.routing='task'); pass one per image")
    if task_labels is not None and not isinstance(task_labels, int):
        labels = torch.as_tensor(task_labels).reshape(-1)
        if labels.numel() != n_images:
            raise ValueError(f"task_labels: got {labels.numel()} labels for {n_images} images")
    callback = args.get("callback")
    if callback is not None and not callable(callback):
        raise ValueError("callback must be callable: callback(step, t, latents, routing)")


def resolve_decoder(decoder: str | None, fusion_weight: float | None, has_compensator: bool,
                    default_weight: float) -> tuple[str, float | None]:
    """``(decoder, fusion_weight)`` of a call: ``decoder`` None is ``"compensator"`` where the model has one, else
    ``"vae"``; the compensator's weight defaults to ``default_weight``, and the plain decoder has none (None).
    Asking for the compensator of a model without one, or for an unknown decoder, is an error."""
    if decoder is None:
        decoder = "compensator" if has_compensator else "vae"
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(map(repr, DECODERS))}, got {decoder!r}")
    if decoder == "compensator" and not has_compensator:
        raise ValueError("decoder='compensator': this model has no decoder compensator (stage II not run); "
                         "use decoder='vae'")
    if decoder == "vae":
        return decoder, None
    return decoder, default_weight if fusion_weight is None else fusion_weight


def to_tensors(image: Any) -> tuple[list[torch.Tensor], str]:
    """Flatten the accepted inputs into ``(1, 3, H, W)`` float32 CPU tensors in [0, 1] and the input kind."""
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    out: list[torch.Tensor] = []
    for x in items:
        kind = image_kind(x)
        if kind == "pil":
            out.append(to_tensor01(np.asarray(to_rgb_uint8(x)))[None])  # (1, 3, H, W), channels-last strides
        elif kind == "np":
            # one conversion for the whole batch (channels-last views of it, in the layout the networks were
            # always given: to_tensor01 per image gives the same values with another batch stride, on which the
            # CPU convolutions round differently)
            arr = x[None] if x.ndim == 3 else x
            t = torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
            out.extend(t[i : i + 1] for i in range(t.shape[0]))
        else:
            t = x.detach().float().cpu()  # (B, 3, H, W)
            out.extend(t[i : i + 1] for i in range(t.shape[0]))
    return out, image_kind(items[0]) or "pil"


def size_groups(images: list[torch.Tensor], batch_size: int) -> list[list[int]]:
    """Indices of ``images`` in batches of at most ``batch_size`` images of one size (first-seen size first)."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(images):
        by_size.setdefault(tuple(x.shape[-2:]), []).append(i)
    return [ids[s : s + batch_size] for ids in by_size.values() for s in range(0, len(ids), batch_size)]


def to_uint8_images(x: torch.Tensor) -> list[np.ndarray]:
    """``(B, 3, H, W)`` in [0, 1] -> uint8 ``(H, W, 3)`` arrays (rounded, clipped): the pipeline's ``np`` output."""
    return [(x[i].permute(1, 2, 0).float().cpu().numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
            for i in range(x.shape[0])]


def convert_output(ordered: list[torch.Tensor], output_type: str) -> Any:
    """Per-image ``(1, C, H, W)`` results -> the output type: one tensor (a list when sizes differ) for ``pt`` and
    ``latent``, a list of uint8 arrays for ``np``, a list of PIL images for ``pil``."""
    if output_type in ("pt", "latent"):
        if len({tuple(x.shape) for x in ordered}) == 1:
            return torch.cat(ordered)  # (B, C, H, W)
        return ordered
    arrays = [to_uint8_images(x)[0] for x in ordered]
    if output_type == "np":
        return arrays
    return [Image.fromarray(a) for a in arrays]
