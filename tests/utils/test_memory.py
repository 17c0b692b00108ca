"""Loaded weights are moved off unaligned addresses with their values unchanged."""

import torch

from moediffir.utils.memory import ALIGNMENT, own_aligned_storage


def _unaligned(n: int) -> torch.Tensor:
    """A float32 tensor of ``n`` values starting 4 bytes past an aligned address (as safetensors hands out)."""
    base = torch.arange(n + 1, dtype=torch.float32)
    view = base[1:]
    assert view.data_ptr() % ALIGNMENT == 4
    return view


def test_unaligned_parameters_and_buffers_are_copied_with_the_same_values():
    layer = torch.nn.Linear(4, 3)
    layer.weight.data = _unaligned(12).view(3, 4)
    layer.register_buffer("scale", _unaligned(5))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    aligned_bias_ptr = layer.bias.data_ptr() if layer.bias.data_ptr() % ALIGNMENT == 0 else None
    assert own_aligned_storage(layer) is layer
    for name, tensor in layer.state_dict().items():
        assert tensor.data_ptr() % ALIGNMENT == 0, name
        assert torch.equal(tensor, before[name]), name
    assert isinstance(layer.weight, torch.nn.Parameter) and layer.weight.requires_grad
    if aligned_bias_ptr is not None:  # an aligned tensor stays where it is (no needless copy)
        assert layer.bias.data_ptr() == aligned_bias_ptr


def test_copied_weights_give_the_outputs_of_freshly_built_ones():
    """The property the loaders rely on: after the copy, a network equals the one it was saved from, bit for bit."""
    torch.manual_seed(0)
    fresh = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    loaded = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    for (_, src), (_, dst) in zip(fresh.named_parameters(), loaded.named_parameters()):
        view = _unaligned(src.numel()).view_as(src)
        view.copy_(src.detach())
        dst.data = view
    own_aligned_storage(loaded)
    x = torch.randn(16, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), loaded(x))
