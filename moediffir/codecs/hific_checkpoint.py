"""The public HiFiC checkpoints of the CIR benchmark (paper §3.5, footnote 1): their layout, their one-time
conversion and the files the codec reads (:mod:`moediffir.codecs.hific` codes with them).

The public ``.pt`` files of Justin-Tan/high-fidelity-generative-compression are full pickles (their ``args`` hold
objects that only full unpickling builds, and unpickling can run any code a file carries). Normal runs never
read them: each is converted once with ``moediffir convert-hific SRC`` (:func:`convert_checkpoint`, which says
what it reads and rebuilds every object the file names as an inert record, so no code of it runs) into ``hific_<level>.safetensors`` beside it, the coding networks'
tensors checked against the public layout (:func:`check_state_dict`) and the architecture kept in the file's
metadata; the codec reads only those (:func:`read_converted`, :func:`load_hific_model`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from moediffir.codecs.base import HIFIC_CHECKPOINT_FILES, HIFIC_CONVERTED_FILES, CodecError
from moediffir.codecs.hific_nets import HiFiCArch, HiFiCModel
from moediffir.utils.io import UnsafeWeightsError, atomic_write_bytes, load_weights_only, sha256_file
from moediffir.utils.layout import layout_diff

LEVELS: tuple[str, ...] = ("low", "med", "high")
CHECKPOINT_FILES: dict[str, str] = HIFIC_CHECKPOINT_FILES  # public file names (full pickles), one per level
#: The files the codec reads: each public pickle converted once by ``moediffir convert-hific`` (safetensors).
CONVERTED_FILES: dict[str, str] = HIFIC_CONVERTED_FILES
CONVERT_COMMAND = "moediffir convert-hific"
#: Per-level architecture from the README's training commands; a checkpoint's own ``args`` take precedence.
LEVEL_ARCH: dict[str, HiFiCArch] = {
    "low": HiFiCArch(likelihood_type="gaussian", normalize_input_image=True),
    "med": HiFiCArch(likelihood_type="logistic", normalize_input_image=False),
    "high": HiFiCArch(likelihood_type="gaussian", normalize_input_image=True),
}
PUBLISHED_AT = (
    "Zenodo record 4026003 (files hific_low.pt, hific_med.pt, hific_hi.pt; also linked from the README of the "
    "GitHub repository Justin-Tan/high-fidelity-generative-compression)"
)


class HiFiCCheckpointError(CodecError):
    """A HiFiC checkpoint does not have the public layout (missing/unexpected keys, wrong shapes or args)."""


def _arg(args: Any, name: str, default: Any) -> Any:
    if isinstance(args, Mapping):
        return args.get(name, default)
    return getattr(args, name, default)


def arch_from_args(args: Any, level: str, source: str = "<checkpoint>") -> HiFiCArch:
    """The architecture of a checkpoint from its recorded ``args`` (dict or object), level defaults otherwise."""
    base = LEVEL_ARCH[level]
    if _arg(args, "use_latent_mixture_model", False):
        raise HiFiCCheckpointError(f"{source}: args.use_latent_mixture_model=True (DLMM prior) is not supported; "
                                   "use the public hific_low/med/hi checkpoints")
    if _arg(args, "sample_noise", False):
        raise HiFiCCheckpointError(f"{source}: args.sample_noise=True (noise-conditioned generator) is not supported")
    if not _arg(args, "use_channel_norm", True):
        raise HiFiCCheckpointError(f"{source}: args.use_channel_norm=False (instance norm) is not supported")
    try:
        return HiFiCArch(
            latent_channels=int(_arg(args, "latent_channels", base.latent_channels)),
            hyper_channels=base.hyper_channels,
            n_residual_blocks=int(_arg(args, "n_residual_blocks", base.n_residual_blocks)),
            likelihood_type=str(_arg(args, "likelihood_type", base.likelihood_type)),
            normalize_input_image=bool(_arg(args, "normalize_input_image", base.normalize_input_image)),
        )
    except (TypeError, ValueError) as exc:
        raise HiFiCCheckpointError(f"{source}: unusable args ({exc})") from exc


def expected_state_dict_shapes(arch: HiFiCArch, with_discriminator: bool = True) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the public ``model_state_dict`` for ``arch`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = HiFiCModel(arch, with_discriminator=with_discriminator)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(state_dict: Mapping[str, Any], arch: HiFiCArch, source: str = "<state dict>") -> None:
    """Raise :class:`HiFiCCheckpointError` unless ``state_dict`` has the public layout for ``arch``.

    The ``Discriminator.*`` keys are optional (all present, as in the public files, or all absent).
    """
    expected = expected_state_dict_shapes(arch, with_discriminator=True)
    disc = {k for k in expected if k.startswith("Discriminator.")}
    required = set(expected) - disc if not any(k in state_dict for k in disc) else set(expected)
    diff = layout_diff(state_dict, {k: v for k, v in expected.items() if k in required})
    if not diff:
        return
    parts = [f"{source}: not a HiFiC state dict with the public layout for {arch}.", *diff.problems(12)]
    parts.append(f"Use the checkpoints published at {PUBLISHED_AT}.")
    raise HiFiCCheckpointError("\n".join(parts))


def convert_hint(pickle_path: str | Path) -> str:
    """The command that converts a public pickle into the file the codec reads."""
    try:
        target = converted_path(pickle_path).name
    except HiFiCCheckpointError:  # not a public file name: the level must be given
        return f"convert it once with `{CONVERT_COMMAND} {pickle_path} --level low|med|high`"
    return f"convert it once with `{CONVERT_COMMAND} {pickle_path}` (writes {target})"


def converted_path(pickle_path: str | Path, level: str | None = None) -> Path:
    """``hific_<level>.safetensors`` beside ``pickle_path`` (level: from the public file name unless given)."""
    pickle_path = Path(pickle_path)
    return pickle_path.parent / CONVERTED_FILES[level or level_of(pickle_path)]


def level_of(path: str | Path) -> str:
    """The level of a public checkpoint file name (``hific_low.pt`` -> ``low``); raise when it is not one."""
    name = Path(path).name
    for level, public in CHECKPOINT_FILES.items():
        if name in (public, CONVERTED_FILES[level]):
            return level
    raise HiFiCCheckpointError(f"{path}: not a public HiFiC file name ({', '.join(CHECKPOINT_FILES.values())}); "
                               "give the level with --level low|med|high")


def _split_checkpoint(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], Any]:
    """``(model_state_dict, args)`` of a loaded checkpoint object (public dict layout, or a bare state dict)."""
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        state, args = obj["model_state_dict"], obj.get("args", {})
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, args = obj, {}
    else:
        keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise HiFiCCheckpointError(f"{path}: expected a dict with 'model_state_dict' and 'args' (public HiFiC layout), "
                                   f"got {keys}")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):  # saved from a DataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, args


class InertRecord:
    """Stands in for a class or function a public checkpoint names (its ``args`` object): the unpickler builds
    this instead, keeping the call's arguments and the pickled attributes, so nothing of the original runs."""

    pickled_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.call_args = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


def _inert_record_class(name: str) -> type[InertRecord]:
    """A fresh :class:`InertRecord` subclass for the pickled global ``name`` (``"module.Name"``)."""
    return type(name.rsplit(".", 1)[-1], (InertRecord,), {"pickled_name": name})


def read_checkpoint(path: str | Path, trust: bool = False,
                    say: Callable[[str], None] = print) -> tuple[dict[str, torch.Tensor], Any]:
    """``(model_state_dict, args)`` of a public HiFiC ``.pt`` file, for :func:`convert_checkpoint` only.

    Read with ``weights_only=True``. A file that names other classes or functions (the public ones do: their
    ``args``) is read only with ``trust``, after ``say`` has named the file, its SHA-256 and those names, and
    still with ``weights_only=True``: every such name is rebuilt as an :class:`InertRecord`, so none of the file's
    code runs. Without ``trust`` it raises :class:`~moediffir.utils.io.UnsafeWeightsError`.
    """
    path = Path(path)
    try:
        obj = load_weights_only(path, fix=convert_hint(path))
    except UnsafeWeightsError:
        if not trust:
            raise
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        say(f"trusting {path} (sha256 {sha256_file(path)}) for its tensors: its other objects ({', '.join(names)}) "
            f"are read as inert records and none of their code runs; convert only the checkpoints published at "
            f"{PUBLISHED_AT}")
        obj = load_weights_only(path, allow=[(_inert_record_class(name), name) for name in names],
                                fix=convert_hint(path))
    except Exception as exc:  # zip / pickle errors of every kind: name the file
        raise HiFiCCheckpointError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: "
                                   f"{(str(exc).splitlines() or [''])[0]})") from exc
    return _split_checkpoint(obj, path)


def convert_checkpoint(src: str | Path, out_dir: str | Path | None = None, level: str | None = None,
                       say: Callable[[str], None] = print) -> Path:
    """Convert a public HiFiC checkpoint (a full pickle) into ``hific_<level>.safetensors`` and return its path.

    The one place the kit unpickles such a file (``moediffir convert-hific``, see :func:`read_checkpoint`): the
    coding networks' tensors are checked against the public layout and written with the architecture in the
    file's metadata (the discriminator is left out), atomically, in ``out_dir`` (default: beside ``src``).
    """
    src = Path(src)
    level = level or level_of(src)
    if level not in LEVELS:
        raise HiFiCCheckpointError(f"{src}: unknown level {level!r}; choose one of {LEVELS}")
    state, args = read_checkpoint(src, trust=True, say=say)
    arch = arch_from_args(args, level, source=str(src))
    check_state_dict(state, arch, source=str(src))
    from safetensors.torch import save

    coding = {k: v.detach().contiguous() for k, v in state.items() if not k.startswith("Discriminator.")}
    meta = {"format": "pt", "level": level, "arch": json.dumps(asdict(arch), sort_keys=True), "source": src.name,
            "source_sha256": sha256_file(src)}
    dest = Path(out_dir) / CONVERTED_FILES[level] if out_dir is not None else converted_path(src, level)
    return atomic_write_bytes(dest, save(coding, metadata=meta))


def read_converted(path: str | Path) -> tuple[dict[str, torch.Tensor], HiFiCArch]:
    """``(state_dict, arch)`` of a file written by :func:`convert_checkpoint` (safetensors: no code can run)."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise HiFiCCheckpointError(f"{path}: normal runs read only converted .safetensors files, never pickles "
                                   f"(unpickling may run code); {convert_hint(path)}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (a handle, not a dict)
        arch = HiFiCArch(**json.loads(meta["arch"]))
    except Exception as exc:  # header, JSON or field errors: name the file
        raise HiFiCCheckpointError(f"{path}: not a HiFiC checkpoint converted by `{CONVERT_COMMAND}` "
                                   f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})") from exc
    return state, arch


def load_hific_model(path: str | Path, level: str, device: str = "cpu") -> HiFiCModel:
    """Build the coding part (Encoder, Generator, Hyperprior) of a converted checkpoint, in eval mode, float32."""
    from moediffir.utils.memory import own_aligned_storage

    state, arch = read_converted(path)
    check_state_dict(state, arch, source=str(path))
    with torch.device("meta"):
        model = HiFiCModel(arch, with_discriminator=False)
    coding = {k: v for k, v in state.items() if not k.startswith("Discriminator.")}
    model.load_state_dict(coding, strict=True, assign=True)
    model = own_aligned_storage(model)
    return model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
