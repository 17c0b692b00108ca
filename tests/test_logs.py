"""Quieting bitsandbytes' import-time advice to install a hub-downloading package (moediffir.utils.logs)."""

from __future__ import annotations

import logging
import subprocess
import sys

from moediffir.utils.logs import quiet_third_party_logs

BUILD = "from moediffir.config import resolve_config; from moediffir.models.denoiser import build_denoiser; " \
        "build_denoiser(resolve_config('smoke'))"


def test_quiet_lowers_the_bitsandbytes_loggers_to_errors(capsys):
    child = logging.getLogger("bitsandbytes.backends.cpu.ops")
    parent = logging.getLogger("bitsandbytes")
    old = parent.level
    try:
        quiet_third_party_logs()
        assert not child.isEnabledFor(logging.WARNING) and child.isEnabledFor(logging.ERROR)
        child.warning("Failed to load CPU gemm_4bit_forward from kernels-community")
        assert "gemm_4bit" not in capsys.readouterr().err
    finally:
        parent.setLevel(old)


def _stderr(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr


def test_the_cli_path_shows_no_kernels_advice():
    """In a fresh interpreter: where building a model prints bitsandbytes' advice (CPUs with AVX-512 BF16), the
    quieted entry does not; elsewhere neither prints it."""
    plain = _stderr(BUILD)
    quiet = _stderr("from moediffir.utils.logs import quiet_third_party_logs; quiet_third_party_logs(); " + BUILD)
    assert "kernels" not in quiet
    if "gemm_4bit_forward" not in plain:
        return  # this CPU never triggers the message: nothing more to compare
    assert "pip install kernels" in plain
