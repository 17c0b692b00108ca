"""MoEDiffIRPipeline (docs/design.md §6): input checks, seeding, sizes, tiling, schedulers, routing, batching.

Untrained smoke parts: these tests check the machinery, never restoration quality.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image
from repo_paths import REPO_ROOT

from moediffir.config import resolve_config
from moediffir.models.compensator import build_compensator
from moediffir.pipelines import MoEDiffIRPipeline, load_pipeline
from moediffir.weights.builders import build_backbone, build_denoiser
from moediffir.weights.model_folder import build_fresh_model_folder

SMOKE_TEST = REPO_ROOT / "data" / "smoke" / "smoke_test"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand_uint8(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


def _perturbed(pipe):
    """Untrained zero-init parts are identities: perturb them (same values on every device) so they matter."""
    with torch.no_grad():
        for prm in [*pipe.compensator.fusion.parameters(), *pipe.spade.parameters()]:
            prm.add_(0.05 * torch.randn(prm.shape, generator=_gen(7)).to(prm.device, prm.dtype))
    return pipe


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_fresh_model_folder(tmp_path_factory.mktemp("pipe") / "model", resolve_config("smoke"))


@pytest.fixture
def pipe(folder):
    p = _perturbed(load_pipeline(folder))
    p.set_progress_bar_config(disable=True)
    return p


# ------------------------------------------------------------------------------------------ checks
@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"image": "photo.png"}, TypeError, "expected a PIL image"),
        ({"image": []}, ValueError, "empty list"),
        ({"image": np.zeros((8, 8, 3), np.uint16)}, ValueError, "must be uint8"),
        ({"image": np.zeros((8, 8), np.uint8)}, ValueError, r"\(H, W, 3\)"),
        ({"image": torch.rand(3, 8, 8)}, ValueError, r"\(B, 3, H, W\)"),
        ({"image": torch.zeros(1, 3, 8, 8, dtype=torch.uint8)}, ValueError, "float in \\[0, 1\\]"),
        ({"image": torch.full((1, 3, 8, 8), 2.0)}, ValueError, "values must be in \\[0, 1\\]"),
        ({"num_inference_steps": 0}, ValueError, "num_inference_steps"),
        ({"fusion_weight": 1.5}, ValueError, "fusion_weight must be in"),
        ({"tile_size": 100}, ValueError, "tile_size must be a positive multiple of 64"),
        ({"tile_size": 64, "tile_overlap": 64}, ValueError, "must be smaller than tile_size"),
        ({"tile_overlap": 12}, ValueError, "multiple of 8"),
        ({"tile_blend": "cosine"}, ValueError, "tile_blend"),
        ({"color_fix": "histogram"}, ValueError, "color_fix"),
        ({"output_type": "jpeg"}, ValueError, "output_type"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"generator": [_gen(), _gen()]}, ValueError, "2 generators for 1 images"),
        ({"task_labels": [1, 2]}, ValueError, "2 labels for 1 images"),
    ],
)
def test_check_inputs_errors(pipe, kwargs, error, match):
    args = {"image": _rand_uint8(8, 8), "num_inference_steps": 1, **kwargs}
    with pytest.raises(error, match=match):
        pipe(**args)


# ----------------------------------------------------------------------------------------- behaviour
def test_same_seed_same_image_and_other_seed_differs(pipe):
    img = _rand_uint8(40, 56)
    a = pipe(img, num_inference_steps=2, generator=_gen(1)).images[0]
    b = pipe(img, num_inference_steps=2, generator=_gen(1)).images[0]
    c = pipe(img, num_inference_steps=2, generator=_gen(2)).images[0]
    assert isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.shape == (40, 56, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_calls_run_in_eval_mode_and_restore_the_training_mode(pipe):
    pipe.denoiser.train()  # e.g. the stage-II generator called mid-training: gate noise must stay off
    img = _rand_uint8(40, 56)
    a = pipe(img, num_inference_steps=1, generator=_gen(1))
    assert pipe.denoiser.training and pipe.prompt_module.training  # mode given back
    b = pipe(img, num_inference_steps=1, generator=_gen(1))
    assert np.array_equal(a.images[0], b.images[0])
    assert torch.equal(a.routing[0]["scales"][0]["gates"], b.routing[0]["scales"][0]["gates"])


def test_odd_size_keeps_size_and_output_kind(pipe):
    odd = next(p for p in sorted(SMOKE_TEST.glob("*.png")) if Image.open(p).size == (151, 101))
    pil = Image.open(odd).convert("RGB")
    out = pipe(pil, num_inference_steps=1, generator=_gen()).images
    assert isinstance(out, list) and isinstance(out[0], Image.Image) and out[0].size == (151, 101)
    t = torch.rand(1, 3, 37, 29, generator=_gen())
    out_t = pipe(t, num_inference_steps=1, generator=_gen()).images
    assert torch.is_tensor(out_t) and out_t.shape == (1, 3, 37, 29) and 0 <= out_t.min() and out_t.max() <= 1
    z, routing = pipe.sample_latents(t, num_inference_steps=1, generator=_gen())
    assert len(routing) == 1 and routing[0]["tile"] == (0, 0, 8, 8)
    assert z.shape == (1, 4, 64 // 8, 64 // 8)  # padded to the 64 px latent grid


def test_tiled_equals_untiled_when_one_tile_covers_the_image(pipe):
    img = torch.rand(2, 3, 100, 60, generator=_gen(3))  # padded to 128 x 64: one 128 px tile covers it
    kw = {"num_inference_steps": 2, "tile_size": 128, "tile_overlap": 16, "output_type": "pt", "batch_size": 4}
    untiled = pipe(img, generator=[_gen(4), _gen(5)], tiled=False, **kw)
    assert untiled.tiled == [False, False]
    tiled = pipe(img, generator=[_gen(4), _gen(5)], tiled=True, **kw)
    assert tiled.tiled == [True, True]
    assert [r["tile"] for r in tiled.routing] == [(0, 0, 16, 8)] * 2
    assert torch.allclose(tiled.images, untiled.images, atol=1e-5)


def test_large_image_restores_through_the_tiled_path(pipe):
    img = _rand_uint8(700, 1000, seed=4)
    res = pipe(img, num_inference_steps=2, generator=_gen(), batch_size=32, tile_blend="linear")
    assert res.images[0].shape == (700, 1000, 3)
    assert res.tiled == [True]
    tiles = {r["tile"] for r in res.routing}
    assert len(tiles) > 100 and all(t[2:] == (8, 8) for t in tiles)  # 64 px tiles over the 128 x 88 latent grid
    assert max(t[0] + t[2] for t in tiles) == 88 and max(t[1] + t[3] for t in tiles) == 128


def test_batched_equals_one_by_one_with_per_image_generators(pipe):
    a, b = _rand_uint8(40, 56, 1), _rand_uint8(40, 56, 2)
    batched = pipe([a, b], num_inference_steps=2, generator=[_gen(8), _gen(9)], output_type="pt").images
    one = pipe(a, num_inference_steps=2, generator=_gen(8), output_type="pt").images
    two = pipe(b, num_inference_steps=2, generator=_gen(9), output_type="pt").images
    assert batched.shape == (2, 3, 40, 56)
    assert torch.allclose(batched, torch.cat([one, two]), atol=1e-4)


def test_mixed_sizes_keep_order_and_size(pipe):
    imgs = [_rand_uint8(40, 56), _rand_uint8(24, 30), _rand_uint8(40, 56, 3)]
    out = pipe(imgs, num_inference_steps=1, generator=_gen())
    assert [o.shape for o in out.images] == [(40, 56, 3), (24, 30, 3), (40, 56, 3)]
    assert [r["image"] for r in out.routing] == [0, 1, 2]
    assert out.tiled == [False, False, False]


def test_call_is_sample_latents_then_decode_latents(pipe):
    """The public steps give the call's images bit for bit, per size, with the same routing; decoding
    the same latents twice with other weights needs no second sampling."""
    imgs = [_rand_uint8(40, 56, 1), _rand_uint8(24, 30, 2), _rand_uint8(40, 56, 3)]
    gens = lambda: [_gen(1), _gen(2), _gen(3)]
    kw = {"num_inference_steps": 2, "batch_size": 2}
    full = pipe(imgs, generator=gens(), fusion_weight=0.6, color_fix="adain", **kw)
    z0, routing = pipe.sample_latents(imgs, generator=gens(), **kw)
    assert z0.shape == (3, 4, 8, 8)  # both sizes pad to the same 64 px grid: one tensor
    assert [r["image"] for r in routing] == [r["image"] for r in full.routing] == [0, 1, 2]
    for a, b in zip(routing, full.routing):
        assert torch.equal(a["scales"][0]["gates"], b["scales"][0]["gates"])
    same = pipe.decode_latents(z0[[0, 2]], [imgs[0], imgs[2]], fusion_weight=0.6, color_fix="adain",
                               batch_size=2, output_type="np")
    small = pipe.decode_latents(z0[1:2], imgs[1], fusion_weight=0.6, color_fix="adain", batch_size=2,
                                output_type="np")
    for got, want in zip([same[0], small[0], same[1]], full.images):
        np.testing.assert_array_equal(got, want)
    plain = pipe.decode_latents(z0[1:2], imgs[1], decoder="vae", color_fix="adain", output_type="np")[0]
    assert not np.array_equal(plain, small[0])  # the decoder (compensator vs plain VAE) matters
    with pytest.raises(ValueError, match="do not belong to 1 LQ image"):
        pipe.decode_latents(z0[[0, 2]], imgs[1])  # two latents, one image
    with pytest.raises(ValueError, match="one size"):
        pipe.decode_latents(z0[:2], imgs[:2])


def test_any_scheduler_and_callback_with_routing(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    seen = []

    def callback(step, t, latents, routing):
        seen.append((step, int(t), tuple(latents.shape), len(routing)))

    out = pipe(_rand_uint8(40, 56), num_inference_steps=3, generator=_gen(), callback=callback, output_type="pt").images
    assert out.shape == (1, 3, 40, 56) and torch.isfinite(out).all()
    assert [s[0] for s in seen] == [0, 1, 2]
    assert seen[0][1] > seen[-1][1]  # timesteps run from noisy to clean
    assert all(s[2] == (1, 4, 8, 8) and s[3] == 1 for s in seen)


def test_routing_record_reports_top_k_experts(pipe):
    (rec,) = pipe(_rand_uint8(40, 56), num_inference_steps=1, generator=_gen()).routing
    cfg = pipe.model_config.model
    assert rec["image"] == 0 and rec["tile"] == (0, 0, 8, 8)
    assert len(rec["scales"]) == cfg.num_scales
    first = rec["scales"][0]
    assert first["indices"].shape[0] == 1 and first["indices"].shape[-1] == cfg.top_k
    assert int(first["indices"].max()) < cfg.num_prompts


def test_the_plain_decoder_is_the_compensator_at_w0_and_w_matters(pipe):
    img = _rand_uint8(40, 56)
    kw = {"num_inference_steps": 1, "output_type": "pt"}
    plain = pipe(img, generator=_gen(), decoder="vae", **kw).images
    assert torch.equal(plain, pipe(img, generator=_gen(), decoder="vae", fusion_weight=1.0, **kw).images)
    zero = pipe(img, generator=_gen(), fusion_weight=0.0, **kw).images
    one = pipe(img, generator=_gen(), fusion_weight=1.0, **kw).images
    assert torch.allclose(plain, zero, atol=1e-6)
    assert not torch.allclose(plain, one, atol=1e-3)


def test_color_fix_adain_matches_input_statistics(pipe):
    img = torch.rand(1, 3, 40, 56, generator=_gen(11)) * 0.5 + 0.25
    out = pipe(img, num_inference_steps=1, generator=_gen(), color_fix="adain").images
    assert torch.allclose(out.mean(dim=(-2, -1)), img.mean(dim=(-2, -1)), atol=2e-2)


def test_pipeline_machinery_device_and_components(pipe):
    assert pipe.to("cpu") is pipe and pipe.device.type == "cpu" and pipe.dtype == torch.float32
    assert {"unet", "vae", "scheduler", "prompt_module", "spade", "compensator"} <= set(pipe.components)
    assert pipe.pixel_multiple == 64


def test_the_decoder_is_an_explicit_choice(pipe):
    """``decoder`` picks the compensator (the default where the model has one) or the plain VAE; the compensator
    of a model without one, or an unknown decoder, is refused by name before any sampling."""
    img = _rand_uint8(40, 56)
    kw = {"num_inference_steps": 1, "output_type": "pt", "fusion_weight": 1.0}
    default = pipe(img, generator=_gen(), **kw).images
    assert torch.equal(default, pipe(img, generator=_gen(), decoder="compensator", **kw).images)
    assert not torch.equal(default, pipe(img, generator=_gen(), decoder="vae", **kw).images)
    assert pipe.resolve_arguments(decoder="vae", fusion_weight=0.3)["fusion_weight"] is None
    assert pipe.resolve_arguments()["fusion_weight"] == pipe.sample_defaults.fusion_weight
    with pytest.raises(ValueError, match="decoder must be one of 'compensator', 'vae', got 'plain'"):
        pipe(img, num_inference_steps=1, decoder="plain")
    bare = MoEDiffIRPipeline.from_denoiser(pipe.denoiser, pipe.vae, pipe.scheduler, config=pipe.model_config)
    assert bare.resolve_arguments()["decoder"] == "vae"
    with pytest.raises(ValueError, match="no decoder compensator"):
        bare(img, num_inference_steps=1, decoder="compensator")


def test_task_routing_needs_labels():
    cfg = resolve_config("smoke", {"model.routing": "task"})
    unet, vae, scheduler = build_backbone(cfg)
    pipe = MoEDiffIRPipeline.from_denoiser(build_denoiser(cfg, unet=unet), vae, scheduler, build_compensator(cfg, vae), cfg)
    pipe.set_progress_bar_config(disable=True)
    img = _rand_uint8(40, 56)
    with pytest.raises(ValueError, match="task_labels"):
        pipe(img, num_inference_steps=1)
    a = pipe(img, num_inference_steps=1, generator=_gen(), task_labels=3, output_type="pt").images
    b = pipe(img, num_inference_steps=1, generator=_gen(), task_labels=[5], output_type="pt").images
    assert a.shape == b.shape == (1, 3, 40, 56)
    pipe.denoiser.spade.detach()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_precision_on_cuda_matches_fp32(folder, dtype):
    """fp16/bf16 on CUDA: the half-precision restoration stays close to the fp32 one of the same seed, through the
    padded path (300 x 200 is not a multiple of 8) and the tiled path (a tile smaller than the image)."""
    half = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    lq = _rand_uint8(300, 200)
    outs = {}
    for name in ("fp32", dtype):
        pipe = _perturbed(load_pipeline(folder, device="cuda", dtype=name))
        pipe.set_progress_bar_config(disable=True)
        assert pipe.unet.dtype == (torch.float32 if name == "fp32" else half)
        outs[name] = pipe(lq, num_inference_steps=2, generator=_gen(), output_type="pt").images.float().cpu()
        tiled = pipe(lq, num_inference_steps=2, generator=_gen(), output_type="pt", tile_size=128, tile_overlap=32,
                     tiled=True)
        outs[name + "_tiled"] = tiled.images.float().cpu()
    for key in (dtype, dtype + "_tiled"):
        assert outs[key].shape == (1, 3, 300, 200) and torch.isfinite(outs[key]).all()
    err = (outs[dtype] - outs["fp32"]).abs().mean().item()
    err_tiled = (outs[dtype + "_tiled"] - outs["fp32_tiled"]).abs().mean().item()
    spread = (outs["fp32"] - outs["fp32"].mean()).abs().mean().item()  # how much the image itself varies
    print(f"{dtype} vs fp32 on CUDA: mean |diff| {err:.4f} (tiled {err_tiled:.4f}); image spread {spread:.4f}")
    tol = {"fp16": 0.01, "bf16": 0.03}[dtype]
    assert err < tol and err_tiled < tol
    assert spread > 10 * err  # the agreement is not that of two flat images


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp32_matches_cpu(folder):
    """The same seed restores the same image on CUDA (fp32) as on the CPU (the noise is drawn on the CPU)."""
    lq = _rand_uint8(96, 80)
    outs = {}
    for device in ("cpu", "cuda"):
        pipe = _perturbed(load_pipeline(folder, device=device, dtype="fp32"))
        pipe.set_progress_bar_config(disable=True)
        outs[device] = pipe(lq, num_inference_steps=2, generator=_gen(), output_type="pt").images.float().cpu()
    err = (outs["cuda"] - outs["cpu"]).abs().max().item()
    print(f"CUDA vs CPU fp32: max |diff| {err:.2e}")
    assert err < 2e-3


def test_a_call_checks_and_converts_its_inputs_once(pipe, monkeypatch):
    """Two sizes (two batches) through one call: the inputs are checked once and converted once, and the result
    is what sample_latents + decode_latents give, which check their own inputs."""
    from moediffir.pipelines import moediffir_pipeline as mp

    calls = {"check": 0, "convert": 0}
    real_check, real_convert = mp.check_images, mp.to_tensors

    def check(image):
        calls["check"] += 1
        return real_check(image)

    def convert(image):
        calls["convert"] += 1
        return real_convert(image)

    monkeypatch.setattr(mp, "check_images", check)
    monkeypatch.setattr(mp, "to_tensors", convert)
    imgs = [_rand_uint8(40, 56), _rand_uint8(70, 90)]
    out = pipe(imgs, num_inference_steps=1, generator=[_gen(1), _gen(2)], output_type="np", fusion_weight=0.6)
    assert calls == {"check": 1, "convert": 1}
    z0, _ = pipe.sample_latents(imgs, num_inference_steps=1, generator=[_gen(1), _gen(2)])
    for i, img in enumerate(imgs):
        alone = pipe.decode_latents(z0[i], img, fusion_weight=0.6, output_type="np")[0]
        np.testing.assert_array_equal(alone, out.images[i])
