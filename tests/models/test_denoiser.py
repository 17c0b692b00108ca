"""MoE-DiffIR denoiser: frozen UNet + prompt module + SPADE (+ DP, + V2T) (moediffir/models/denoiser.py).

Smoke components: tiny random networks (UNet/VAE from moediffir.models.sd_backbone; DP and V2T `tiny` backends).
"""

from __future__ import annotations

import pytest
import torch

from moediffir.config import resolve_config
from moediffir.models.denoiser import MoEDiffIRDenoiser
from moediffir.models.sd_backbone import build_unet
from moediffir.weights.builders import build_denoiser
from moediffir.weights.denoiser_folder import load_denoiser, save_denoiser


def _cfg(**overrides):
    return resolve_config("smoke", overrides)


def _build(**overrides) -> MoEDiffIRDenoiser:
    torch.manual_seed(0)
    return build_denoiser(_cfg(**overrides))


def _batch(b=2, hw=(8, 8)):
    g = torch.Generator().manual_seed(5)
    z_t = torch.randn(b, 4, *hw, generator=g)
    z_lq = torch.randn(b, 4, *hw, generator=g)
    img = torch.rand(b, 3, hw[0] * 8, hw[1] * 8, generator=g)
    return z_t, torch.tensor([7, 640][:b]), z_lq, img


def img_for(z: torch.Tensor) -> torch.Tensor:
    return torch.rand(z.shape[0], 3, z.shape[-2] * 8, z.shape[-1] * 8, generator=torch.Generator().manual_seed(6))


def _train_spade(d: MoEDiffIRDenoiser) -> None:
    """Give the SPADE convs other weights, as training would (the output form starts at zero)."""
    with torch.no_grad():
        for layer in d.spade.layers:
            gamma, beta = (layer.gamma, layer.beta) if hasattr(layer, "gamma") else (layer.mlp_gamma, layer.mlp_beta)
            gamma.weight.normal_(std=0.05)
            beta.weight.normal_(std=0.05)


def test_smoke_build_uses_every_part():
    d = _build()
    assert d.degradation_prior is not None and d.v2t is not None
    assert d.prompt_module.config.dp_dim == d.degradation_prior.token_dim
    assert d.v2t.cross_attention_dim == d.unet.config.cross_attention_dim
    assert len(d.spade.sites) == 9 and d.prompt_module.config.num_scales == 4
    z_t, t, z_lq, img = _batch()
    assert d(z_t, t, z_lq, lq_image=img).shape == z_t.shape


def test_output_form_zero_init_equals_stock_unet_with_the_empty_prompt():
    d = _build(**{"model.use_v2t": False, "model.spade_form": "output"})
    z_t, t, z_lq, img = _batch()
    with torch.no_grad():
        eps = d(z_t, t, z_lq, lq_image=img)
        with d.stock_unet() as unet:
            ref = unet(z_t, t, encoder_hidden_states=d.null_context.expand(2, -1, -1)).sample
    assert torch.equal(eps, ref)


def test_residual_spade_is_the_default_and_modulates_from_step_0():
    d = _build(**{"model.use_v2t": False})
    assert d.spade.config.form == "residual"
    z_t, t, z_lq, img = _batch()
    with torch.no_grad():
        eps = d(z_t, t, z_lq, lq_image=img)
        with d.stock_unet() as unet:
            ref = unet(z_t, t, encoder_hidden_states=d.null_context.expand(2, -1, -1)).sample
    assert not torch.allclose(eps, ref, atol=1e-4)


def test_v2t_off_context_is_the_text_encoding_of_the_empty_prompt():
    from moediffir.weights.empty_prompt import clip_tokenizer, encode_text, tiny_text_encoder

    d = _build(**{"model.use_v2t": False})
    width = d.unet.config.cross_attention_dim
    expected = encode_text(clip_tokenizer(), tiny_text_encoder(width), "")
    assert d.null_context.shape == (1, 77, width)
    assert torch.equal(d.null_context, expected)
    assert d.null_context.abs().sum() > 0  # not the zero token of a bare MoEDiffIRDenoiser
    assert not torch.allclose(d.null_context[0, 0], d.null_context[0, 5])  # BOS, EOS, pads differ by position
    _, t, z_lq, img = _batch()
    cond = d.prepare(z_lq, t, lq_image=img)
    assert torch.equal(cond.context, d.null_context)  # what the UNet's cross-attention reads


def test_only_trainable_parts_get_gradients():
    d = _build()
    _train_spade(d)
    d.train()
    assert not d.unet.training and not d.degradation_prior.training and d.prompt_module.training
    z_t, t, z_lq, img = _batch()
    loss = (d(z_t, t, z_lq, lq_image=img) - torch.randn_like(z_t)).square().mean()
    loss.backward()
    trainable = {id(p) for p in d.trainable_parameters()}
    for name, p in d.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None, f"trainable {name} got no gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    assert all(p.grad is None for p in d.unet.parameters())
    assert all(p.grad is None for p in d.degradation_prior.parameters())
    assert sum(p.grad.abs().sum() for p in d.prompt_module.parameters()) > 0
    n_unet = sum(p.numel() for p in d.unet.parameters())
    assert 0 < sum(p.numel() for p in d.trainable_parameters()) < n_unet


def test_routing_decisions_readable_and_balance_loss():
    d = _build(**{"model.balance_loss_weight": 0.01})
    d.train()
    z_t, t, z_lq, img = _batch(hw=(16, 8))
    out = d(z_t, t, z_lq, lq_image=img, return_aux=True)
    assert out.sample.shape == z_t.shape
    routing = out.routing
    assert [(r["height"], r["width"]) for r in routing] == [(16, 8), (8, 4), (4, 2), (2, 1)]
    k = d.prompt_module.config.top_k
    for r in routing:
        assert r["indices"].shape == (2, r["height"] * r["width"], k) and not r["indices"].requires_grad
    assert out.balance_loss.requires_grad and out.balance_loss.item() > 0
    assert not hasattr(d, "last_routing") and not hasattr(d, "last_balance_loss")


def test_prepare_once_denoise_many_equals_forward():
    d = _build()
    _train_spade(d)
    z_t, t, z_lq, img = _batch()
    with torch.no_grad():
        cond = d.prepare(z_lq, lq_image=img)
        assert not cond.timestep_dependent
        for step in (t, torch.tensor([300, 20])):
            assert torch.allclose(d.denoise(z_t, step, cond), d(z_t, step, z_lq, lq_image=img), atol=1e-6)


def test_context_argument_overrides_v2t_and_dp_tokens_override_dp():
    d = _build()
    _train_spade(d)
    z_t, t, z_lq, img = _batch()
    with torch.no_grad():
        ctx = torch.randn(2, 5, d.unet.config.cross_attention_dim)
        a = d(z_t, t, z_lq, lq_image=img, context=ctx)
        b = d(z_t, t, z_lq, lq_image=torch.rand_like(img), context=ctx, dp_tokens=d.degradation_prior(img))
        assert torch.allclose(a, b, atol=1e-6)  # V2T and DP not used when their outputs are given


def test_missing_inputs_raise():
    d = _build()
    z_t, t, z_lq, _ = _batch()
    with pytest.raises(ValueError, match="lq_image"):
        d(z_t, t, z_lq)
    with pytest.raises(ValueError, match="batch"):
        d(z_t[:1], t[:1], z_lq, lq_image=torch.rand(2, 3, 64, 64))
    task = _build(**{"model.routing": "task", "model.use_v2t": False, "model.use_dp": False})
    assert task.degradation_prior is None
    with pytest.raises(ValueError, match="task_labels"):
        task(z_t, t, z_lq)
    out = [task(z_t, t, z_lq, task_labels=torch.tensor([i, i])) for i in (0, 5)]
    assert out[0].shape == z_t.shape


def test_blind_ignores_task_label_task_uses_it():
    z_t, t, z_lq, img = _batch()
    blind = _build(**{"model.use_v2t": False})
    _train_spade(blind)
    task = _build(**{"model.use_v2t": False, "model.routing": "task"})
    _train_spade(task)
    with torch.no_grad():
        a = blind(z_t, t, z_lq, lq_image=img, task_labels=torch.tensor([0, 0]))
        b = blind(z_t, t, z_lq, lq_image=img, task_labels=torch.tensor([3, 17]))
        assert torch.equal(a, b)
        outs = [task(z_t, t, z_lq, lq_image=img, task_labels=torch.tensor([i, i])) for i in range(21)]
        assert any(not torch.allclose(outs[0], o) for o in outs[1:])


def test_save_load_round_trip(tmp_path):
    d = _build()
    _train_spade(d)
    save_denoiser(d, tmp_path / "ckpt")
    save_denoiser(d, tmp_path / "ckpt")  # overwriting an existing checkpoint folder works
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["prompt_module", "spade", "v2t"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    with pytest.raises(RuntimeError, match="another injector"):
        load_denoiser(tmp_path / "ckpt", d.unet, d.degradation_prior)
    unet2 = build_unet("tiny")
    unet2.load_state_dict(d.unet.state_dict())
    d2 = load_denoiser(tmp_path / "ckpt", unet2, d.degradation_prior)
    z_t, t, z_lq, img = _batch()
    with torch.no_grad():
        assert torch.equal(d(z_t, t, z_lq, lq_image=img), d2(z_t, t, z_lq, lq_image=img))


@pytest.mark.parametrize("design", ["none", "single", "multi"])
def test_other_prompt_designs_run(design):
    d = _build(**{"model.prompt_design": design})
    assert d.degradation_prior is None  # no router, no DP
    _train_spade(d)
    z_t, t, z_lq, img = _batch(hw=(8, 24))
    d.train()
    d(z_t, t, z_lq, lq_image=img).mean().backward()
    assert d.spade.layers[0].mlp_gamma.weight.grad is not None


def test_num_scales_must_match_unet():
    with pytest.raises(ValueError, match="num_scales = 4"):
        _build(**{"model.num_scales": 3})


@pytest.mark.slow
def test_paper_architecture_random_weights_256px():
    """SD 2.1-base UNet + DA-CLIP-architecture DP + RN50 V2T, random weights; one forward at 256 px."""
    cfg = resolve_config("paper", {"model.random_backbone": True})
    torch.manual_seed(0)
    d = build_denoiser(cfg)
    sites = d.spade.sites
    assert len(sites) == 13
    assert [s.channels for s in sites] == [1280] * 7 + [640] * 3 + [320] * 3
    assert d.prompt_module.config.prompt_dim == 256 and d.degradation_prior.token_dim == 768
    img = torch.rand(1, 3, 256, 256)
    z_t, z_lq = torch.randn(1, 4, 32, 32), torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        out = d(z_t, torch.tensor([500]), z_lq, lq_image=img, return_aux=True)
    eps = out.sample
    assert eps.shape == (1, 4, 32, 32) and torch.isfinite(eps).all()
    assert [(r["height"], r["width"]) for r in out.routing] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert out.routing[0]["indices"].shape == (1, 1024, 3)


def test_released_recipe_builds_the_released_model():
    """model.recipe='released' reaches every module: task gates on the DA-CLIP attention, zero gates, noise
    floor, uniform prompts, the LayerNorm after the ViT blocks, no renormalisation, noisy inference."""
    d = _build(**{"model.recipe": "released", "model.use_v2t": False})
    pm = d.prompt_module
    assert d.degradation_prior is not None  # the released task gates read the DP (DA-CLIP config)
    assert pm.final_norms is not None and len(pm.final_norms) == 4
    for gen in pm.generators:
        assert gen.attn is not None and gen.dp_attn is None
        r = gen.router
        assert r.config.mode == "task" and r.config.noise_epsilon == 0.01 and not r.config.renormalize
        assert r.config.noisy_gating_in_eval and all(g[0].weight.abs().sum() == 0 for g in r.f_gate)
        assert float(gen.prompts.min()) >= -0.5 and float(gen.prompts.abs().max()) > 0.4
    z_t, t, z_lq, img = _batch()
    labels = torch.tensor([0, 5])
    with torch.no_grad():
        torch.manual_seed(1)
        a = d(z_t, t, z_lq, lq_image=img, task_labels=labels)
        torch.manual_seed(2)
        out = d(z_t, t, z_lq, lq_image=img, task_labels=labels, return_aux=True)
    b = out.sample
    assert a.shape == z_t.shape and not torch.equal(a, b)  # the released router is noisy in eval mode too
    assert (out.routing[0]["gates"].sum(-1) < 1).all()  # kept top-K softmax values


def test_released_v2t_form_reads_the_latent_and_survives_save_and_load(tmp_path):
    """model.v2t_form=released: the context comes from z_lq (decoded by the attached VAE), not from the image;
    a saved denoiser reloads its V2T as the released class, and a pipeline hands it its VAE."""
    from moediffir.models.sd_backbone import build_scheduler, build_vae
    from moediffir.models.visual2text_released import ReleasedVisual2Text
    from moediffir.pipelines.moediffir_pipeline import MoEDiffIRPipeline

    d = _build(**{"model.v2t_form": "released"})
    assert isinstance(d.v2t, ReleasedVisual2Text)
    z_t, t, z_lq, img = _batch()
    with pytest.raises(RuntimeError, match="attach_decoder"):
        d.prepare(z_lq, lq_image=img)
    vae = build_vae("tiny")
    d.attach_vae(vae)
    with torch.no_grad():
        cond = d.prepare(z_lq, lq_image=img)
        assert torch.equal(cond.context, d.v2t(z_lq))
        assert torch.equal(d.prepare(z_lq, lq_image=img.flip(-1)).context, cond.context)  # the image is not read
        assert not torch.equal(d.prepare(z_lq.flip(-1), lq_image=img).context, cond.context)
        out = d(z_t, t, z_lq, lq_image=img)
    save_denoiser(d, tmp_path / "ckpt")
    unet2 = build_unet("tiny")
    unet2.load_state_dict(d.unet.state_dict())
    d2 = load_denoiser(tmp_path / "ckpt", unet2, d.degradation_prior)
    assert isinstance(d2.v2t, ReleasedVisual2Text)
    pipe = MoEDiffIRPipeline.from_denoiser(d2, vae, build_scheduler())
    assert pipe.denoiser.v2t._decoder == [vae]
    with torch.no_grad():
        assert torch.equal(d2(z_t, t, z_lq, lq_image=img), out)
