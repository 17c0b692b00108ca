"""Loaded weights own aligned memory, so a loaded network computes exactly what the saved one did.

Nothing here implements a paper equation. A ``.safetensors`` file places tensors at byte offsets that are not
multiples of 64, and recent ``safetensors`` releases hand those tensors out as views into one buffer. CPU
matrix kernels pick their vector path by the address of the data, so a UNet whose weights sit at such addresses
gives outputs that differ in the last bit from the same weights held in freshly allocated tensors (measured:
a tiny UNet read back through ``from_single_file`` differed by 1e-7 until its weights were copied). Every loader
of networks passes its result through :func:`own_aligned_storage`; weights already aligned are left in place.
"""

from __future__ import annotations

from itertools import chain

import torch

ALIGNMENT = 64  # bytes; what PyTorch's CPU allocator guarantees for every new tensor


def own_aligned_storage(module: torch.nn.Module, alignment: int = ALIGNMENT) -> torch.nn.Module:
    """``module`` with every parameter and buffer whose data starts off an ``alignment``-byte boundary copied
    into a new tensor (same values, dtype, device and memory format); returns the same module."""
    with torch.no_grad():
        for tensor in chain(module.parameters(), module.buffers()):
            if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % alignment:
                tensor.data = tensor.data.clone(memory_format=torch.preserve_format)
    return module
