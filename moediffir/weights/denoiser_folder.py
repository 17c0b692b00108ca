"""The stage-I model's trained parts on disk (paper §3.2-3.3; docs/design.md §6): one diffusers folder each.

:func:`save_denoiser` writes the parts stage I trains -- ``prompt_module/``, ``spade/`` and, with the
Visual2Text adapter, ``v2t/`` -- atomically (a crash never leaves half a checkpoint); :func:`load_denoiser`
rebuilds a :class:`~moediffir.models.denoiser.MoEDiffIRDenoiser` from them around a frozen UNet. The frozen
parts (UNet, VAE, degradation prior) are not repeated here: the model folder
(:mod:`moediffir.weights.model_folder`) stores or names them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from moediffir.models.denoiser import MoEDiffIRDenoiser
from moediffir.models.prompt_module import MoEPromptModule
from moediffir.models.spade import SpadeInjector
from moediffir.utils.io import atomic_directory

#: the sub-folder of each trained part
SUBFOLDERS = {"prompt_module": "prompt_module", "spade": "spade", "v2t": "v2t"}


def save_denoiser(denoiser: MoEDiffIRDenoiser, folder: str | os.PathLike) -> Path:
    """Write ``denoiser``'s trained parts into ``folder``, one diffusers folder each, atomically."""
    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        for name, module in denoiser.trainable_modules().items():
            module.save_pretrained(tmp / SUBFOLDERS[name])
    return folder


def _v2t_class(folder: Path) -> type:
    """The Visual2Text class of a saved ``v2t/`` folder, by the ``_class_name`` of its ``config.json``."""
    name = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_class_name")
    if name == "ReleasedVisual2Text":
        from moediffir.models.visual2text_released import ReleasedVisual2Text  # only when needed

        return ReleasedVisual2Text
    from moediffir.models.visual2text import Visual2TextAdapter  # only when needed

    return Visual2TextAdapter


def load_denoiser(
    folder: str | os.PathLike,
    unet: nn.Module,
    degradation_prior: nn.Module | None = None,
    v2t: nn.Module | None = None,
) -> MoEDiffIRDenoiser:
    """Rebuild from :func:`save_denoiser` output around a frozen ``unet``; no argument repeated.

    ``v2t``: an adapter whose class loads ``folder/v2t`` (default: the class its ``config.json`` names, the
    kit's ``Visual2TextAdapter`` or the released form's ``ReleasedVisual2Text``).
    """
    folder = Path(folder)
    for name in ("prompt_module", "spade"):
        if not (folder / SUBFOLDERS[name] / "config.json").is_file():
            raise FileNotFoundError(f"{folder / SUBFOLDERS[name]}: missing; expected a save_denoiser folder")
    prompt_module = MoEPromptModule.from_pretrained(folder / SUBFOLDERS["prompt_module"], use_safetensors=True)
    spade = SpadeInjector.from_pretrained(folder / SUBFOLDERS["spade"], use_safetensors=True)
    loaded_v2t = None
    if (folder / SUBFOLDERS["v2t"]).is_dir():
        v2t_cls = type(v2t) if v2t is not None else _v2t_class(folder / SUBFOLDERS["v2t"])
        loaded_v2t = v2t_cls.from_pretrained(folder / SUBFOLDERS["v2t"], use_safetensors=True)
    return MoEDiffIRDenoiser(unet, prompt_module, spade, degradation_prior=degradation_prior, v2t=loaded_v2t)
