"""Quieting third-party notices that mislead in this offline kit (moediffir.utils.quiet)."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

from tqdm import TqdmWarning

from moediffir.utils.quiet import quiet_third_party

BUILD = ("from moediffir.config import resolve_config; from moediffir.weights.builders import build_denoiser; "
         "build_denoiser(resolve_config('smoke'))")
QUIET = "from moediffir.utils.quiet import quiet_third_party; quiet_third_party(); "


def test_quiet_lowers_bitsandbytes_to_errors_and_ignores_only_the_named_warnings(capsys):
    child = logging.getLogger("bitsandbytes.backends.cpu.ops")
    parent = logging.getLogger("bitsandbytes")
    old = parent.level
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_third_party()
            warnings.warn("IProgress not found. Please update jupyter and ipywidgets.", TqdmWarning)
            warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile`", FutureWarning)
            warnings.warn("some other tqdm notice", TqdmWarning)
            warnings.warn("some other deprecation", FutureWarning)
        assert [str(w.message) for w in caught] == ["some other tqdm notice", "some other deprecation"]
        assert not child.isEnabledFor(logging.WARNING) and child.isEnabledFor(logging.ERROR)
        child.warning("Failed to load CPU gemm_4bit_forward from kernels-community")
        assert "gemm_4bit" not in capsys.readouterr().err
    finally:
        parent.setLevel(old)


def _stderr(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr


def test_a_quieted_process_shows_no_kernels_advice():
    """In a fresh interpreter: where building a model prints bitsandbytes' advice (CPUs with AVX-512 BF16), the
    quieted entry does not; elsewhere neither prints it."""
    quiet = _stderr(QUIET + BUILD)
    assert "kernels" not in quiet
    plain = _stderr(BUILD)
    if "gemm_4bit_forward" in plain:  # this CPU does trigger it: the advice is what we hide
        assert "pip install kernels" in plain


def test_a_quieted_process_imports_compressai_without_the_jit_notice():
    loud = "import warnings; warnings.simplefilter('always', FutureWarning); "
    if "torch.jit.script" not in _stderr(loud + "import compressai"):
        return  # these versions of compressai / torch_geometric / torch say nothing: nothing to hide
    assert "torch.jit.script" not in _stderr(loud + QUIET + "import compressai")
