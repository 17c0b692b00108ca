"""Third-party log lines that mislead users of this offline kit (housekeeping; no paper section).

``bitsandbytes`` is installed only because pyiqa lists it; the kit calls none of its ops. diffusers imports it
whenever it is installed, and on CPUs with AVX-512 BF16 its import logs "Failed to load CPU gemm_4bit_forward
from kernels-community ... pip install kernels". Following that advice would make the import fetch a kernel
from the Hugging Face hub, which this kit must never do, so the entry points (the ``moediffir`` command and the
notebooks' first cell) lower that logger to errors before anything imports diffusers. Nothing here runs at
import time.
"""

from __future__ import annotations

import logging

QUIETED_LOGGERS = ("bitsandbytes",)  # and their children, e.g. bitsandbytes.backends.cpu.ops


def quiet_third_party_logs() -> None:
    """Show only errors from :data:`QUIETED_LOGGERS`; call it before importing diffusers to take effect."""
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
