"""Test-wide settings: never download, deterministic, small thread counts."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from repo_paths import REPO_ROOT, SHARED_DATASETS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tiny networks run fastest single-threaded, and parallel test workers / notebook kernels must not
# oversubscribe the cores (measured: 10x slower with default threads on a busy 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")



def _is_local(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return True  # AF_UNIX paths
    return host in ("localhost", "::1", "") or host.startswith(("127.", "/"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny networks run fastest on one thread (OMP_NUM_THREADS above covers torch imported after this file;
    this covers a torch imported earlier, e.g. by a plugin)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to reach a non-loopback address fails the test loudly (tests never download)."""
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
            raise RuntimeError(f"test tried to open a network connection to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def photo():
    """The bundled Kodak thumbnail ``kodim19.png``, ``(192, 128, 3)`` uint8: a real photograph for codec tests."""
    from moediffir.utils.io import read_image_rgb

    return read_image_rgb(REPO_ROOT / "data" / "smoke" / "smoke_test" / "kodim19.png")


@pytest.fixture(scope="session")
def data_cfg():
    """The ``data`` section of the smoke profile."""
    from moediffir.config import resolve_config

    return resolve_config("smoke").data


@pytest.fixture
def shared_datasets() -> Path:
    """The development images beside the repository; tests using them skip when absent."""
    if not SHARED_DATASETS.exists():
        pytest.skip("no shared/datasets folder beside the repository")
    return SHARED_DATASETS
