"""The model folder: a trained MoE-DiffIR in one directory, loadable with nothing else (paper §3.4; docs/design.md §4-§6).

Written by the trainer after stage I (prompt module, SPADE, V2T) and again after stage II (plus the decoder
compensator); read by :func:`~moediffir.pipelines.moediffir_pipeline.load_pipeline`, ``moediffir restore`` and the notebooks. Layout::

    config.json                 the resolved moediffir Config (moediffir.config.save_config)
    model_info.json             format version, the parts present, each part's provenance (moediffir.provenance:
                                pretrained / random / trained here), the kit's git revision, extra info
    README.md                   the model card (moediffir.weights.model_card), rewritten after evaluation
    eval_results.json           the numbers of the last evaluation (only after one)
    denoiser/                   save_denoiser: prompt_module/, spade/, v2t/ (if used)
    null_context.safetensors    the UNet context used when there is no V2T adapter
    compensator/                DecoderCompensator.save_pretrained (after stage II)
    degradation_prior/          when the DP has random weights (``tiny`` backend or a random backbone) or was
                                imported with the model (``moediffir import-released``); else from model.dp_weights
    backbone/unet, backbone/vae, backbone/scheduler
                                only when the backbone has random weights (``model.backbone == "tiny"`` or
                                ``model.random_backbone``: the smoke profile), so the exact frozen networks travel
                                with the model; otherwise they come from ``model.sd_source``

Pretrained frozen parts (SD 2.1-base, DA-CLIP) are not copied; their sources are in ``config.json`` and can be
redirected at load time (``overrides={"model.sd_source": ...}``). Writes are atomic: the folder is built
beside its place and renamed in. Weights are read from ``.safetensors`` files only (``use_safetensors=True``):
a part saved as a pickled ``.bin`` is refused, naming it, and never unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from moediffir.config import Config, ConfigError, apply_overrides, load_config, save_config
from moediffir.errors import DeviceError, MoEDiffIRError
from moediffir.provenance import (
    DEGRADATION_PRIOR,
    RANDOM,
    UNET,
    V2T_CLIP,
    backbone_provenance,
    frozen_encoder_provenance,
    provenance,
    uses_degradation_prior,
)
from moediffir.utils.devices import resolve_device
from moediffir.utils.io import atomic_directory, atomic_write_json
from moediffir.utils.memory import own_aligned_storage
from moediffir.weights import model_card
from moediffir.weights.denoiser_folder import load_denoiser, save_denoiser

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
INFO_FILE = "model_info.json"
NULL_CONTEXT_FILE = "null_context.safetensors"
DENOISER_DIR = "denoiser"
COMPENSATOR_DIR = "compensator"
DP_DIR = "degradation_prior"
BACKBONE_DIR = "backbone"
# Config keys that may change when loading a trained model (everything else is the model itself).
LOAD_OVERRIDABLE = ("sample.", "seed", "device", "model.sd_source", "model.dp_weights", "model.v2t_weights", "data.root")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ModelFolderError(MoEDiffIRError, FileNotFoundError):
    """A model folder is missing, incomplete or broken; the message names the folder and what is wrong."""


def dp_is_random(cfg: Config) -> bool:
    """True when build_degradation_prior gives random weights (rule: :mod:`moediffir.provenance`)."""
    return frozen_encoder_provenance(cfg, cfg.model.dp_backend) == RANDOM


def _random_parts(prov: Mapping[str, str], cfg: Config) -> list[str]:
    """The frozen parts with random weights, as ``model_info.json`` and every ``model_weights`` label name them."""
    m = cfg.model
    named = {UNET: f"backbone ({m.backbone}, random weights)",
             DEGRADATION_PRIOR: f"degradation_prior ({m.dp_backend}, random weights)",
             V2T_CLIP: f"v2t CLIP encoder ({m.v2t_backend}, random weights)"}
    return [text for part, text in named.items() if prov.get(part) == RANDOM]


# --------------------------------------------------------------------------------------------- saving
def save_model_folder(
    folder: str | os.PathLike,
    cfg: Config,
    denoiser,
    vae,
    scheduler,
    compensator=None,
    info: Mapping[str, Any] | None = None,
    save_dp: bool = False,
) -> Path:
    """Write a model folder (layout in the module docstring) atomically; an existing folder is replaced.

    Args:
        cfg: the resolved config the parts were built from. denoiser: the stage-I ``MoEDiffIRDenoiser``.
        vae, scheduler: the frozen backbone parts (saved only when random). compensator: stage II, optional.
        info: extra JSON-serialisable facts for ``model_info.json`` (e.g. training steps).
        save_dp: write the degradation prior even when pretrained (weights imported from another checkpoint).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        save_config(cfg, tmp, CONFIG_FILE)
        save_denoiser(denoiser, tmp / DENOISER_DIR)
        save_file({"null_context": denoiser.null_context.detach().float().cpu().contiguous()}, str(tmp / NULL_CONTEXT_FILE))
        parts = [DENOISER_DIR]
        if compensator is not None:
            compensator.save_pretrained(tmp / COMPENSATOR_DIR)
            parts.append(COMPENSATOR_DIR)
        dp = denoiser.degradation_prior
        if dp is not None and (save_dp or dp_is_random(cfg)):
            dp.save_pretrained(tmp / DP_DIR)
            parts.append(DP_DIR)
        if backbone_provenance(cfg) == RANDOM:
            denoiser.unet.save_pretrained(tmp / BACKBONE_DIR / "unet")
            vae.save_pretrained(tmp / BACKBONE_DIR / "vae")
            scheduler.save_pretrained(tmp / BACKBONE_DIR / "scheduler")
            parts.append(BACKBONE_DIR)
        prov = provenance(cfg, trained=(info or {}).get("trained", True) is not False,
                          compensator=compensator is not None)
        model_info = {
            "format": FORMAT_VERSION,
            "profile": cfg.profile,
            "parts": parts,
            "provenance": prov,
            "random_weights": _random_parts(prov, cfg),
            "git_revision": model_card.git_revision(),
            "info": dict(info or {}),
        }
        atomic_write_json(tmp / INFO_FILE, model_info)
        model_card.write_model_card(tmp, cfg, model_info)
    return folder


def build_fresh_model_folder(
    folder: str | os.PathLike, cfg: Config, with_compensator: bool = True, seed: int = 0
) -> Path:
    """A model folder of **untrained** parts built from ``cfg`` (backbone + fresh denoiser [+ compensator]).

    For tests, demos and CI of the restore machinery only: its outputs are not restorations, and its
    ``model_info.json`` says ``"trained": false``. Builds pretrained frozen parts from their sources when the
    profile has them (paper) -- missing weights raise the loader's error.
    """
    from moediffir.models.compensator import build_compensator
    from moediffir.weights.builders import build_backbone, build_denoiser

    torch.manual_seed(seed)
    unet, vae, scheduler = build_backbone(cfg)
    denoiser = build_denoiser(cfg, unet=unet)
    compensator = build_compensator(cfg, vae) if with_compensator else None
    try:
        return save_model_folder(folder, cfg, denoiser, vae, scheduler, compensator, info={"trained": False})
    finally:
        denoiser.spade.detach()  # leave no hooks behind on the (discarded) UNet


# -------------------------------------------------------------------------------------------- loading
def read_model_info(folder: str | os.PathLike) -> dict[str, Any]:
    """``model_info.json`` of a model folder (``{}`` when absent)."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{path}: cannot read ({exc})") from exc


def record_evaluation(folder: str | os.PathLike, summary: Mapping[str, Any]) -> Path:
    """Store an evaluation's numbers in the folder's ``eval_results.json`` and rewrite its model card (both
    atomically; :func:`moediffir.weights.model_card.evaluation_summary` makes ``summary``)."""
    folder = Path(folder)
    atomic_write_json(folder / model_card.EVAL_FILE, dict(summary))
    return model_card.write_model_card(folder, load_config(folder / CONFIG_FILE), read_model_info(folder))


def check_model_folder(folder: str | os.PathLike) -> Config:
    """The folder's config, after checking every file loading needs; raise one error listing what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: model folder not found (expected a folder written by save_model_folder)")
    if not (folder / CONFIG_FILE).is_file():
        raise ModelFolderError(f"{folder}: not a MoE-DiffIR model folder; missing {CONFIG_FILE}")
    try:
        cfg = load_config(folder / CONFIG_FILE)
    except ConfigError as exc:
        raise ModelFolderError(f"{folder}: broken {CONFIG_FILE} ({exc})") from exc
    needed = [f"{DENOISER_DIR}/prompt_module/config.json", f"{DENOISER_DIR}/spade/config.json"]
    if cfg.model.use_v2t:
        needed.append(f"{DENOISER_DIR}/v2t/config.json")
    if backbone_provenance(cfg) == RANDOM:
        needed += [f"{BACKBONE_DIR}/unet/config.json", f"{BACKBONE_DIR}/vae/config.json",
                   f"{BACKBONE_DIR}/scheduler/scheduler_config.json"]
    if uses_degradation_prior(cfg) and dp_is_random(cfg):
        needed.append(f"{DP_DIR}/config.json")
    missing = [p for p in needed if not (folder / p).is_file()]
    missing += [f"{p}/ (listed in {INFO_FILE})" for p in read_model_info(folder).get("parts", [])
                if not (folder / p).exists()]  # a part the folder says it has is never silently left out
    if missing:
        raise ModelFolderError(f"{folder}: incomplete model folder; missing " + ", ".join(missing))
    return cfg


def is_load_overridable(key: str) -> bool:
    """Whether the config key ``key`` may change when a trained model is loaded (:data:`LOAD_OVERRIDABLE`: a key
    named there, or one under a section named there with its dot)."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in LOAD_OVERRIDABLE)


def _check_overrides(overrides: Mapping[str, Any] | None) -> None:
    for key in overrides or {}:
        if not is_load_overridable(key):
            raise ConfigError(
                f"override {key!r}: cannot change the architecture of a trained model; loadable overrides are "
                f"sample.*, seed, device, model.sd_source, model.dp_weights, model.v2t_weights, data.root"
            )


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, default: str = "fp32") -> torch.dtype:
    """A torch dtype from ``"fp32"``/``"fp16"``/``"bf16"`` (or a torch dtype); half types need CUDA."""
    if dtype is None:
        dtype = default
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: choose one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype {dtype}: choose one of torch.float32, torch.float16, torch.bfloat16")
    if dtype != torch.float32 and device.type != "cuda":
        raise DeviceError(f"dtype {dtype} needs a CUDA device (got {device}); use fp32 on {device.type}")
    return dtype


def _load_part(folder: Path, what: str, loader):
    try:
        part = loader()
    except ModelFolderError:
        raise
    except Exception as exc:  # corrupt or mismatched weights, a pickled .bin without safetensors: name the part
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise ModelFolderError(f"{folder / what}: cannot load ({type(exc).__name__}: {reason})") from exc
    return own_aligned_storage(part) if isinstance(part, torch.nn.Module) else part


@dataclass
class ModelParts:
    """The networks of a model folder, frozen and in eval mode (on the CPU, in float32), and where they go;
    ``scheduler`` is the folder's noise schedule (the pipeline makes its ``sample.scheduler`` sampler from it)."""

    config: Config
    denoiser: Any
    vae: Any
    scheduler: Any
    compensator: Any
    device: torch.device
    dtype: torch.dtype


def load_model_parts(
    folder: str | os.PathLike,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ModelParts:
    """The parts of a model folder that :func:`~moediffir.pipelines.moediffir_pipeline.load_pipeline` puts
    into a pipeline (arguments as there).

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``. dtype: ``"fp32"``/``"fp16"``/``"bf16"`` or a
            torch dtype (None: ``sample.dtype`` of the config); half types on CUDA only.
        overrides: config overrides of the sampling settings and weight sources (``{"sample.num_steps": 50}``).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file

    from moediffir.models.compensator import DecoderCompensator

    folder = Path(folder)
    cfg = check_model_folder(folder)
    _check_overrides(overrides)
    cfg = apply_overrides(cfg, overrides)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev, cfg.sample.dtype)

    if backbone_provenance(cfg) == RANDOM:
        bb = folder / BACKBONE_DIR
        unet = _load_part(folder, f"{BACKBONE_DIR}/unet",
                          lambda: UNet2DConditionModel.from_pretrained(bb / "unet", use_safetensors=True))
        vae = _load_part(folder, f"{BACKBONE_DIR}/vae",
                         lambda: AutoencoderKL.from_pretrained(bb / "vae", use_safetensors=True))
        scheduler = _load_part(
            folder, f"{BACKBONE_DIR}/scheduler", lambda: DDPMScheduler.from_pretrained(bb / "scheduler")
        )
    else:
        from moediffir.weights.builders import build_backbone

        # Pretrained SD from model.sd_source; loading.py lists every missing file at once. The V2T adapter's CLIP
        # tower travels in denoiser/v2t, so its weight file is not asked for (a tiny v2t backend skips that check).
        bb_cfg = replace(cfg, model=replace(cfg.model, v2t_backend="tiny"))
        unet, vae, scheduler = build_backbone(bb_cfg)
    dp = None
    if uses_degradation_prior(cfg):
        if dp_is_random(cfg) or DP_DIR in read_model_info(folder).get("parts", []):
            from moediffir.models.degradation_prior import DegradationPrior

            dp = _load_part(folder, DP_DIR,
                            lambda: DegradationPrior.from_pretrained(folder / DP_DIR, use_safetensors=True))
        else:
            from moediffir.weights.builders import build_degradation_prior

            dp = build_degradation_prior(cfg)
    denoiser = _load_part(
        folder, DENOISER_DIR, lambda: load_denoiser(folder / DENOISER_DIR, unet, degradation_prior=dp)
    )
    if (folder / NULL_CONTEXT_FILE).is_file():
        null = _load_part(folder, NULL_CONTEXT_FILE, lambda: load_file(str(folder / NULL_CONTEXT_FILE))["null_context"])
        denoiser.set_null_context(null)
    compensator = None
    if (folder / COMPENSATOR_DIR).is_dir():
        compensator = _load_part(
            folder, COMPENSATOR_DIR,
            lambda: DecoderCompensator.from_pretrained(folder / COMPENSATOR_DIR, use_safetensors=True),
        )

    for module in (unet, vae, denoiser, compensator):
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    return ModelParts(cfg, denoiser, vae, scheduler, compensator, dev, torch_dtype)
