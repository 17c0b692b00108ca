"""Third-party messages that mislead or distract users of this offline kit (housekeeping; no paper section).

The entry points (the ``moediffir`` command and the first cell of every notebook) call
:func:`quiet_third_party` before anything imports diffusers, compressai or tqdm. Nothing here runs at import.

- ``bitsandbytes`` is installed only because pyiqa lists it; the kit calls none of its ops. diffusers imports
  it whenever it is installed, and on CPUs with AVX-512 BF16 its import logs "Failed to load CPU
  gemm_4bit_forward from kernels-community ... pip install kernels". Following that advice would make the
  import fetch a kernel from the Hugging Face hub, which this kit must never do: that logger shows errors only.
  Recent transformers releases install ``kernels`` themselves; bitsandbytes' import then asks it for that kernel,
  which fails here (no hub), and in offline mode ``kernels`` logs that it skips its publisher check: its logger
  shows errors only too.
- ``tqdm.auto`` (used by diffusers) warns "IProgress not found" in a Jupyter kernel without ipywidgets, then
  draws text progress bars, which is what executed notebooks should hold anyway.
- ``import compressai`` imports torch_geometric, whose import calls ``torch.jit.script`` and makes torch warn
  that it is deprecated; nothing of the kit scripts anything.
"""

from __future__ import annotations

import logging
import warnings

QUIETED_LOGGERS = ("bitsandbytes", "kernels")  # and their children, e.g. bitsandbytes.backends.cpu.ops


def quiet_third_party() -> None:
    """Lower :data:`QUIETED_LOGGERS` to errors and ignore the two warnings above; call it before the imports."""
    from tqdm import TqdmWarning  # tqdm itself (not tqdm.auto) warns nothing on import

    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
