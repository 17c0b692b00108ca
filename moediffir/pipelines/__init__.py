"""Restoration with a trained MoE-DiffIR: pipeline, sampling, tiling, colour fix (docs/design.md §6); the model
folder it loads is :mod:`moediffir.weights.model_folder`.

Explicit re-exports, resolved lazily: importing this package (or one of its light modules such as
``colorfix``) does not import diffusers.
"""

from __future__ import annotations

from moediffir.utils.lazy import lazy_getattr

_EXPORTS = {
    "COLOR_FIXES": "colorfix",
    "adain_color_fix": "colorfix",
    "apply_color_fix": "colorfix",
    "wavelet_color_fix": "colorfix",
    "load_pipeline": "moediffir_pipeline",
    "MoEDiffIRPipeline": "moediffir_pipeline",
    "MoEDiffIRPipelineOutput": "moediffir_pipeline",
    "encode_lq": "vae_steps",
    "SCHEDULERS": "sampling",
    "make_scheduler": "sampling",
    "sample_loop": "sampling",
    "Tile": "tiling",
    "blend_weights": "tiling",
    "tile_grid": "tiling",
    "tiled_map": "tiling",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (names resolved lazily by __getattr__)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
