"""Reading published checkpoint files offline: state dicts of any format, and SD 2.1-base's original single-file
checkpoint (``v2-1_512-ema-pruned.ckpt``, paper §4.1) read into diffusers' UNet and VAE (docs/design.md §2).

:func:`read_state_dict` reads ``.safetensors``, torch pickles (safely, ``weights_only``) and TorchScript archives.
:func:`load_single_file_components` reads a single file with diffusers' ``from_single_file`` and the architecture
configs shipped in ``moediffir/configs/``, after :func:`check_single_file_tensors` has named every missing or
misshapen tensor (the layout is written out in :mod:`moediffir.weights.ldm_layout`).
"""

from __future__ import annotations

import json
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moediffir.utils.io import first_line
from moediffir.utils.layout import layout_diff

if TYPE_CHECKING:  # torch is imported where tensors are read
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

#: What to do with a pickle that holds more than tensors (the kit never unpickles one in full).
_SAFE_COPY_HINT = "use a .safetensors copy of these weights (most hubs publish one)"
# Architecture configs shipped with the package for single-file loading (written with models/sd_backbone.py).
SHIPPED_CONFIGS = {
    "unet": "sd21_base_unet.json",
    "vae": "sd21_base_vae.json",
    "scheduler": "sd21_base_scheduler.json",
}
# The components an original single-file checkpoint is read into (its text encoder is not converted).
_SINGLE_FILE_COMPONENTS = ("unet", "vae")
_COMPONENT_NAMES = {"unet": "UNet", "vae": "VAE"}


def shipped_config_path(component: str) -> Path:
    """The architecture config of ``component`` (``unet``, ``vae``, ``scheduler``) shipped with the package."""
    from importlib import resources

    return Path(str(resources.files("moediffir").joinpath("configs", SHIPPED_CONFIGS[component])))


def torch_dtype_kwargs(torch_dtype: torch.dtype | None) -> dict[str, Any]:
    """``torch_dtype=`` for diffusers' loaders, or nothing (their default) when ``torch_dtype`` is None."""
    return {"torch_dtype": torch_dtype} if torch_dtype is not None else {}



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

    Pickles are read only with ``weights_only=True`` (:func:`~moediffir.utils.io.load_weights_only`), with no
    switch to do otherwise: a file that needs more than tensors and plain values is refused unread with
    :class:`~moediffir.utils.io.UnsafeWeightsError`, and an unreadable one with ``ValueError``, each one line
    naming the file.
    """
    import torch

    from moediffir.utils.io import load_weights_only

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weight file not found")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    elif is_torchscript_archive(path):
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            state = load_weights_only(path, mmap=zipfile.is_zipfile(path), fix=_SAFE_COPY_HINT)
        except (pickle.UnpicklingError, EOFError, RuntimeError, OSError) as exc:  # corrupt or not a torch file
            raise ValueError(f"{path}: not a readable torch checkpoint ({first_line(exc)})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"{path}: expected a state dict, got {type(state).__name__}")
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def sd21_single_file_configs() -> dict[str, dict[str, Any]]:
    """The diffusers configs of SD 2.1-base's UNet and VAE shipped in ``moediffir/configs/`` (the architecture
    a single-file checkpoint is read into unless :func:`load_single_file_components` is given others)."""
    return {c: json.loads(shipped_config_path(c).read_text()) for c in _SINGLE_FILE_COMPONENTS}


def _single_file_class(component: str):
    """The diffusers class a single-file ``component`` (``unet`` or ``vae``) is read into."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if component not in _SINGLE_FILE_COMPONENTS:
        raise ValueError(f"component must be one of {_SINGLE_FILE_COMPONENTS}, got {component!r}")
    return UNet2DConditionModel if component == "unet" else AutoencoderKL


def _expected_ldm_tensors(component: str, config: Mapping[str, Any]) -> dict[str, torch.Size]:
    """LDM key (without prefix) -> shape of every tensor of ``component`` built from ``config``."""
    import torch

    from moediffir.weights import ldm_layout

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
    from moediffir.weights import ldm_layout

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
        names = {c: f"moediffir/configs/{SHIPPED_CONFIGS[c]}" for c in _SINGLE_FILE_COMPONENTS}
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
                    state, config=tmp, subfolder=component, local_files_only=True, **torch_dtype_kwargs(torch_dtype)
                )
            except (ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
                raise ValueError(
                    f"{path}: diffusers could not read the {_COMPONENT_NAMES[component]} of {names[component]} "
                    f"from this checkpoint: {type(exc).__name__}: {exc}"
                ) from exc
    from moediffir.utils.memory import own_aligned_storage

    return own_aligned_storage(models["unet"].eval()), own_aligned_storage(models["vae"].eval())
