"""Restoration with a trained MoE-DiffIR: pipeline, tiling, colour fix, model folder (DESIGN.md §6).

Explicit re-exports; importing this package builds nothing.
"""

from moediffir.pipelines.colorfix import COLOR_FIXES, adain_color_fix, apply_color_fix, wavelet_color_fix
from moediffir.pipelines.model_folder import (
    ModelFolderError,
    load_pipeline,
    read_model_info,
    save_model_folder,
)
from moediffir.pipelines.moediffir_pipeline import MoEDiffIRPipeline, MoEDiffIRPipelineOutput, encode_lq
from moediffir.pipelines.sampling import SCHEDULERS, make_scheduler, sample_loop
from moediffir.pipelines.tiling import Tile, blend_weights, tile_grid, tiled_map

__all__ = [
    "COLOR_FIXES",
    "SCHEDULERS",
    "MoEDiffIRPipeline",
    "MoEDiffIRPipelineOutput",
    "ModelFolderError",
    "Tile",
    "adain_color_fix",
    "apply_color_fix",
    "blend_weights",
    "encode_lq",
    "load_pipeline",
    "make_scheduler",
    "read_model_info",
    "sample_loop",
    "save_model_folder",
    "tile_grid",
    "tiled_map",
    "wavelet_color_fix",
]
