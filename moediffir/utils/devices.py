"""The one reading of a device setting (``cfg.device``, ``--device``) for every command and notebook."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; anything else as torch reads it (``"cuda:1"``, ...)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
