"""The one reading of a device setting (``cfg.device``, ``--device``) for every command and notebook."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported when a device is resolved: `cpu` and `auto` settings are checked without it
    import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; anything else as torch reads it (``"cuda:1"``, ...)."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_device(device: str | None) -> None:
    """Refuse a device this machine does not have, before any work: one line naming the setting and the fix.

    ``auto`` (and None) always pass; ``cuda`` / ``cuda:N`` need a CUDA device (and N below the device count).
    """
    from moediffir.errors import DeviceError

    text = "auto" if device is None else str(device)
    if not text.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise DeviceError(f"device={text!r} (--device / config key device) but CUDA is not available on this "
                          "machine; use --device cpu or --device auto")
    index = text.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        raise DeviceError(f"device={text!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")


def check_dtype(dtype: str | None, device: str | None) -> None:
    """Refuse a half dtype (``fp16``, ``bf16``) on a device that is not CUDA, before any work: one line naming both.

    None (the model's ``sample.dtype``, checked when the model is loaded) and ``fp32`` always pass.
    """
    from moediffir.errors import DeviceError

    if dtype is None or dtype == "fp32":
        return
    resolved = resolve_device(device)
    if resolved.type != "cuda":
        raise DeviceError(f"--dtype {dtype} needs a CUDA device, but the device is {resolved} (--device "
                          f"{device or 'auto'}); use --dtype fp32 on {resolved.type}")
