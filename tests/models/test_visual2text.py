"""Visual2Text adapter + quality enhancer (paper §3.3): shapes, frozen CLIP, gradients, loading, round trip."""

from __future__ import annotations

import pytest
import torch

from moediffir.config import resolve_config
from moediffir.errors import MissingWeightsError
from moediffir.models.clip_encoders import WeightLayoutError, clip_resize
from moediffir.models.visual2text import Visual2TextAdapter
from moediffir.weights.builders import build_visual2text, load_clip_visual


def _tiny(**kw) -> Visual2TextAdapter:
    args = {"num_tokens": 4, "enhancer_blocks": 1, "enhancer_dim": 8}
    args.update(kw)
    return Visual2TextAdapter.for_backend("tiny", 32, **args)


def _randomise_trainable(model: Visual2TextAdapter, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def test_context_shape_and_attributes():
    v2t = _tiny()
    ctx = v2t(torch.rand(3, 3, 50, 70))
    assert ctx.shape == (3, 2 * 2 + 4, 32)  # 2x2 CLIP grid tokens + 4 learnable tokens
    assert v2t.cross_attention_dim == 32 and v2t.context_length == 8
    assert v2t.clip_grid(torch.rand(1, 3, 64, 64)).shape == (1, 256, 2, 2)


def test_enhancer_is_identity_at_init():
    v2t = _tiny()
    lq = torch.rand(2, 3, 40, 48)
    assert torch.equal(v2t.enhance(lq), clip_resize(lq, 64))


def test_only_enhancer_and_adapter_train_and_gradient_crosses_frozen_clip():
    v2t = _tiny().train()
    assert not any(p.requires_grad for p in v2t.clip_visual.parameters())
    v2t(torch.rand(2, 3, 64, 64)).square().mean().backward()
    for name, p in v2t.named_parameters():
        if name.startswith("clip_visual."):
            assert p.grad is None, name
    # conv_out sits before the frozen CLIP: a non-zero gradient there proves it flowed through CLIP
    assert v2t.enhancer.conv_out.weight.grad.abs().sum() > 0
    assert v2t.proj.weight.grad.abs().sum() > 0 and v2t.learned_tokens.grad.abs().sum() > 0


def test_channels_last_layout_gives_the_same_context_and_gradients():
    """The CUDA layout (channels-last convolutions, forced here on the CPU) changes no value: same context, same
    gradients, and the weights end up channels-last."""
    results = {}
    for force in (False, True):
        torch.manual_seed(0)
        v2t = _tiny(enhancer_blocks=2).train()
        _randomise_trainable(v2t)
        v2t._force_channels_last = force
        lq = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(1))
        ctx = v2t(lq)
        ctx.square().mean().backward()
        results[force] = (ctx.detach(), v2t.enhancer.conv_in.weight.grad.clone(), v2t.proj.weight.grad.clone())
        conv = v2t.clip_visual.conv1.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == force
        assert v2t.enhancer.conv_in.weight.is_contiguous(memory_format=torch.channels_last) == force
        assert v2t.enhancer.conv_in.weight.is_contiguous() != force
    for a, b in zip(results[False], results[True]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert results[False][1].abs().sum() > 0  # the enhancer's first conv did get a gradient


def test_layout_follows_device_moves_before_any_forward():
    """Moving the adapter (``.to``/``.cuda``/dtype casts) sets the conv layout at once, so an optimiser or DDP built
    right after the move sees the final parameter layout (here the CUDA rule is forced on the CPU)."""
    v2t = _tiny()
    weight = v2t.clip_visual.conv1.weight
    assert weight.is_contiguous()
    v2t._force_channels_last = True
    v2t.to(torch.float64)
    assert v2t.clip_visual.conv1.weight is weight  # same Parameter object: optimisers keep their references
    assert weight.is_contiguous(memory_format=torch.channels_last) and weight.dtype == torch.float64
    v2t._force_channels_last = False
    v2t.to(torch.float32)
    assert weight.is_contiguous() and weight.dtype == torch.float32


def test_clip_batchnorm_stays_frozen_in_training():
    v2t = _tiny().train()
    assert v2t.training and v2t.enhancer.training and not v2t.clip_visual.training
    stats = {k: v.clone() for k, v in v2t.clip_visual.state_dict().items() if "running" in k}
    v2t(torch.rand(4, 3, 64, 64) * 3)
    for k, v in v2t.clip_visual.state_dict().items():
        if "running" in k:
            assert torch.equal(v, stats[k]), k


def test_tokens_come_from_the_grid_not_the_attention_pool():
    v2t = _tiny()
    lq = torch.rand(2, 3, 64, 64)
    before = v2t(lq)
    with torch.no_grad():
        for p in v2t.clip_visual.attnpool.parameters():
            p.add_(1.0)
    assert torch.equal(v2t(lq), before)


def test_save_load_round_trip(tmp_path):
    v2t = _tiny()
    _randomise_trainable(v2t)
    lq = torch.rand(2, 3, 64, 64)
    before = v2t.eval()(lq)
    v2t.save_pretrained(tmp_path / "v2t")
    again = Visual2TextAdapter.from_pretrained(tmp_path / "v2t")
    assert again.config.num_tokens == 4 and again.cross_attention_dim == 32
    assert torch.equal(again.eval()(lq), before)
    assert not any(p.requires_grad for p in again.clip_visual.parameters())
    assert all(p.requires_grad for p in again.enhancer.parameters())


def _clip_file(path, model: Visual2TextAdapter, drop: str | None = None, seed: int = 0) -> dict:
    """An open_clip-style CLIP checkpoint: ``visual.*`` = RN50 keys (random rows, expanded) + a text key."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for k, v in model.clip_visual.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue  # OpenAI's files may lack these; the loader fills them in
        row = torch.randn(v.shape[-1] if v.ndim else 1, generator=g)
        tensors["visual." + k] = row.expand(*v.shape) if v.ndim else row[0].clone()
    tensors["text_projection"] = torch.zeros(512, 1024)
    if drop:
        del tensors[drop]
    torch.save(tensors, path)
    return tensors


def test_loads_rn50_visual_subtree_and_reports_missing_keys(tmp_path):
    v2t = Visual2TextAdapter.for_backend("clip_rn50", 1024)
    tensors = _clip_file(tmp_path / "RN50.pt", v2t)
    load_clip_visual(v2t.clip_visual, tmp_path / "RN50.pt", v2t.config.backend)
    sd = v2t.clip_visual.state_dict()
    for key in ("conv1.weight", "layer4.2.bn3.running_var", "attnpool.c_proj.weight"):
        assert torch.equal(sd[key], tensors["visual." + key])
    _clip_file(tmp_path / "bad.pt", v2t, drop="visual.layer3.0.conv2.weight")
    with pytest.raises(WeightLayoutError, match=r"missing keys \(1\): \[layer3\.0\.conv2\.weight\]"):
        load_clip_visual(v2t.clip_visual, tmp_path / "bad.pt", v2t.config.backend)


def test_factory(tmp_path):
    smoke = resolve_config("smoke")
    v2t = build_visual2text(smoke, 32)
    assert v2t.config.backend == "tiny" and v2t.config.num_tokens == smoke.model.v2t_num_tokens
    assert v2t.config.enhancer_dim == smoke.model.enhancer_dim
    cfg = resolve_config("paper", {"data.root": str(tmp_path)})
    with pytest.raises(MissingWeightsError, match="RN50.pt"):
        build_visual2text(cfg, 1024)
    (tmp_path / "weights").mkdir()
    _clip_file(tmp_path / "weights" / "RN50.pt", Visual2TextAdapter.for_backend("clip_rn50", 1024))
    paper = build_visual2text(cfg, 1024)
    assert paper.context_length == 49 + cfg.model.v2t_num_tokens


def test_folded_clip_encoder_gives_the_same_context_and_enhancer_gradients():
    """``fold_batchnorm`` (the default) changes no value: same context and the same gradients in the trainable
    parts, including the enhancer that learns through the frozen encoder (fp64, non-trivial BatchNorm stats)."""
    results = {}
    for fold in (True, False):
        torch.manual_seed(0)
        v2t = _tiny(enhancer_blocks=2).double().train()
        _randomise_trainable(v2t)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for m in v2t.clip_visual.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        v2t.fold_batchnorm = fold
        lq = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        ctx = v2t(lq)
        ctx.square().mean().backward()
        results[fold] = (ctx.detach(), v2t.enhancer.conv_in.weight.grad.clone(), v2t.proj.weight.grad.clone())
    for a, b in zip(results[True], results[False]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert results[True][1].abs().sum() > 0


def test_encoder_switched_to_training_by_hand_runs_its_modules():
    """Folding needs the running statistics; an encoder someone put in training mode uses batch statistics, so the
    adapter falls back to the modules (and the statistics then move, as BatchNorm does in training)."""
    v2t = _tiny()
    v2t.clip_visual.train()
    before = v2t.clip_visual.bn1.running_mean.clone()
    v2t(torch.rand(2, 3, 64, 64))
    assert not torch.equal(v2t.clip_visual.bn1.running_mean, before)
