"""Atomic training checkpoints with exact resume (paper §4.1 runs 0.4 M + 0.1 M steps; docs/design.md §5).

A checkpoint is the folder ``<stage dir>/checkpoints/step_XXXXXX`` holding

- ``trainable.pt``: the state of the *trained* modules only (frozen sub-modules such as the UNet, the VAE or
  the V2T adapter's CLIP tower are left out: they come from the backbone and never change);
- ``optimizers.pt`` and ``schedulers.pt``: optimiser (Adam moments) and learning-rate scheduler states;
- ``rng_rank<r>.pt``: the Python, NumPy, torch CPU and CUDA RNG states of every process;
- ``checkpoint.json``: step, data-sampler position and anything else the trainer needs, written last.

Every ``.pt`` file holds tensors, containers and plain values only (the NumPy RNG state is stored as a tensor),
and is read with ``torch.load(weights_only=True)``: reading a checkpoint never runs code it carries. The one
other type allowed, for that read only, is the NumPy array of the RNG files of checkpoints written before.

The folder is assembled as ``.step_XXXXXX.tmp`` beside the others and renamed into place only when complete
(every file fsynced), so a kill during the write leaves the previous checkpoint untouched and usable; stale
``.tmp`` folders are ignored and cleaned up by the next save. With several processes, every rank writes its
own RNG file into the temporary folder and rank 0 writes the rest and renames it (a shared file system is
assumed, as on one multi-GPU machine).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from moediffir.errors import MoEDiffIRError
from moediffir.utils.io import UnsafeWeightsError, load_weights_only

PREFIX = "step_"
MARKER = "checkpoint.json"
_NAME_RE = re.compile(r"^step_(\d{6,})$")


class CheckpointError(MoEDiffIRError, RuntimeError):
    """A checkpoint cannot be read or does not fit the model it is loaded into."""


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, folder)``, oldest first (``.tmp`` folders excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_dir() and (p / MARKER).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or ``None``."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


# ------------------------------------------------------------------------------------------- RNG states
def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if present) CUDA RNG states of this process, as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state(saved: Any) -> tuple:
    """The ``np.random.set_state`` tuple of a saved NumPy state (the dict of tensors, or an older tuple)."""
    if isinstance(saved, Mapping):
        keys = saved["keys"].numpy().astype(np.uint32)
        return saved["kind"], keys, saved["pos"], saved["has_gauss"], saved["gauss"]
    return tuple(saved)


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (also reads the NumPy tuples of checkpoints written before)."""
    random.setstate(state["python"])
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------- trainable state dicts
def frozen_prefixes(module: nn.Module) -> list[str]:
    """Names of the largest sub-modules whose parameters are all frozen (at least one parameter)."""
    out: list[str] = []

    def visit(prefix: str, m: nn.Module) -> None:
        params = list(m.parameters())
        if prefix and params and not any(p.requires_grad for p in params):
            out.append(prefix + ".")
            return
        for name, child in m.named_children():
            visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", module)
    return out


def trainable_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without the frozen sub-modules (see :func:`frozen_prefixes`), detached on CPU."""
    skip = tuple(frozen_prefixes(module))
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if not k.startswith(skip)}


def load_trainable_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], where: str = "") -> None:
    """Load a :func:`trainable_state_dict`; every key must fit and only frozen parts may be missing."""
    skip = tuple(frozen_prefixes(module))
    result = module.load_state_dict(dict(state), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(skip)]
    if result.unexpected_keys or missing:
        raise CheckpointError(
            f"{where}: checkpoint does not fit {type(module).__name__}: unexpected {result.unexpected_keys[:5]}, "
            f"missing {missing[:5]}; it was written by a different model configuration"
        )


# ------------------------------------------------------------------------------------------- save / load
def _fsync_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _noop() -> None:
    return None


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, Any] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = _noop,
    keep_last: int = 0,
) -> Path:
    """Write checkpoint ``step`` atomically under ``root`` and return its folder (see the module docstring).

    Call it on **every** process with that process's ``rank``, ``world_size`` and a ``barrier`` (e.g.
    ``accelerator.wait_for_everyone``). ``meta`` must be JSON-serialisable. ``keep_last > 0`` removes all but
    the newest ``keep_last`` complete checkpoints afterwards.
    """
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f".{PREFIX}*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    barrier()
    _fsync_save(capture_rng_state(), tmp / f"rng_rank{rank}.pt")
    barrier()
    if rank == 0:
        try:
            _fsync_save({k: trainable_state_dict(m) for k, m in modules.items()}, tmp / "trainable.pt")
            _fsync_save({k: o.state_dict() for k, o in (optimizers or {}).items()}, tmp / "optimizers.pt")
            _fsync_save({k: s.state_dict() for k, s in (schedulers or {}).items()}, tmp / "schedulers.pt")
            info = {"step": int(step), "world_size": int(world_size), "meta": dict(meta or {})}
            with open(tmp / MARKER, "w") as fh:
                fh.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(tmp)
            if final.exists():  # the same step written again (e.g. a rerun): swap the old one out
                old = root / f".{final.name}.old.tmp"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if keep_last > 0:
            for _, old_ckpt in list_checkpoints(root)[:-keep_last]:
                shutil.rmtree(old_ckpt, ignore_errors=True)
    barrier()
    return final


def read_checkpoint_info(folder: str | Path) -> dict[str, Any]:
    """The ``checkpoint.json`` of a checkpoint folder (``step``, ``world_size``, ``meta``)."""
    path = Path(folder) / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a complete checkpoint ({exc})") from exc


def _legacy_rng_types() -> list[Any]:
    """The NumPy types of the RNG files of checkpoints written before their states became tensors."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return [(_reconstruct, "numpy.core.multiarray._reconstruct"),
            (_reconstruct, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _read(path: Path, allow: list[Any] | None = None) -> Any:
    """One file of a checkpoint, read with ``weights_only=True`` (only ``allow`` besides tensors and plain values)."""
    fix = "the kit's checkpoints hold only tensors and plain values; start afresh with --overwrite"
    try:
        return load_weights_only(path, allow=allow or (), fix=fix)
    except UnsafeWeightsError:
        raise
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: cannot read ({type(exc).__name__}: {reason})") from exc


def load_checkpoint(
    folder: str | Path,
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, Any] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint into the given objects (and this process's RNG states); return its info dict.

    Raises:
        CheckpointError: incomplete folder, a different process count, or a model that does not fit.
        UnsafeWeightsError: a file holds objects beyond tensors and plain values (it is not unpickled).
    """
    folder = Path(folder)
    info = read_checkpoint_info(folder)
    if int(info.get("world_size", 1)) != world_size:
        raise CheckpointError(
            f"{folder}: written by {info.get('world_size')} process(es), resumed with {world_size}; resume with "
            f"the same number of processes (the data order and RNG streams are per process)"
        )
    trainable = _read(folder / "trainable.pt")
    for name, module in modules.items():
        if name not in trainable:
            raise CheckpointError(f"{folder}: no state for {name!r} (has {sorted(trainable)})")
        load_trainable_state_dict(module, trainable[name], where=f"{folder}/trainable.pt[{name}]")
    for fname, objs in (("optimizers.pt", optimizers), ("schedulers.pt", schedulers)):
        if not objs:
            continue
        states = _read(folder / fname)
        for name, obj in objs.items():
            if name not in states:
                raise CheckpointError(f"{folder}/{fname}: no state for {name!r}")
            obj.load_state_dict(states[name])
    if restore_rng:
        rng_path = folder / f"rng_rank{rank}.pt"
        if not rng_path.is_file():
            raise CheckpointError(f"{rng_path}: missing; the checkpoint was written by fewer processes")
        restore_rng_state(_read(rng_path, allow=_legacy_rng_types()))
    return info
