"""One device check for every command (moediffir.utils.devices.check_device)."""

from __future__ import annotations

import pytest
import torch

from moediffir.errors import DeviceError, MoEDiffIRError
from moediffir.utils.devices import check_device


def test_cpu_and_auto_always_pass():
    check_device("cpu")
    check_device("auto")
    check_device(None)


def test_cuda_without_cuda_is_one_line_naming_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available") as err:
        check_device("cuda")
    assert "--device cpu" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, MoEDiffIRError)


def test_a_device_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(DeviceError, match="2 CUDA device"):
        check_device("cuda:2")
