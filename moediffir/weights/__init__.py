"""Everything that reads or writes weight files (docs/design.md §2, §6, §11): the networks live in
:mod:`moediffir.models`, their files here.

* :mod:`.builders` -- a config's networks (backbone, degradation prior, Visual2Text, stage-I model) with the
  published weights it asks for;
* :mod:`.denoiser_folder` -- the stage-I model's trained parts on disk;
* :mod:`.loading` -- where the `paper` profile's pretrained weights come from, and loading them offline;
* :mod:`.checkpoint_files` -- state dicts of any format, and SD 2.1-base's single-file checkpoint;
* :mod:`.ldm_layout` -- the original LDM key layout of SD 2.1's UNet and VAE, written out;
* :mod:`.weight_checks` -- which weight files a config needs, where each goes, and how to get it;
* :mod:`.released_checkpoint` -- the paper's released checkpoint, converted into a model folder;
* :mod:`.empty_prompt` -- the cached text encoding of the empty prompt (the null context without V2T);
* :mod:`.model_folder` and :mod:`.model_card` -- a trained model's folder (save, check, load) and its card.

Explicit re-exports, resolved lazily: importing this package does not import diffusers.
"""

from __future__ import annotations

from moediffir.utils.lazy import lazy_getattr

_EXPORTS = {
    "build_backbone": "builders",
    "build_degradation_prior": "builders",
    "build_denoiser": "builders",
    "build_visual2text": "builders",
    "load_denoiser": "denoiser_folder",
    "save_denoiser": "denoiser_folder",
    "empty_prompt_context": "empty_prompt",
    "ModelFolderError": "model_folder",
    "load_model_parts": "model_folder",
    "read_model_info": "model_folder",
    "save_model_folder": "model_folder",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (names resolved lazily by __getattr__)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
