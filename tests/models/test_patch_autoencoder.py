"""The ``mini`` prior's patch-PCA autoencoder: closed-form fit, zero-initialised refinements, the VAE interface
stage I / the pipeline / the compensator use, and the ceiling it starts at on the bundled photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from repo_paths import REPO_ROOT as REPO

from moediffir.models.compensator import DecoderCompensator
from moediffir.models.patch_autoencoder import PatchAutoencoder, autoencoder_class
from moediffir.weights.loading import autoencoder_class_in


def _low_rank_images(ae: PatchAutoencoder, n: int, size: int, rank: int, seed: int = 0) -> torch.Tensor:
    """Images whose ``f x f`` patches all lie in a ``rank``-dimensional affine subspace."""
    g = torch.Generator().manual_seed(seed)
    p = ae.patch_mean.numel()
    basis = torch.linalg.qr(torch.randn(p, rank, generator=g))[0].T  # (rank, P) orthonormal rows
    scales = torch.linspace(0.5, 0.05, rank)
    coef = torch.randn(n, rank, size // ae.factor, size // ae.factor, generator=g) * scales.view(1, -1, 1, 1)
    u = torch.einsum("bchw,cp->bphw", coef, basis) + 0.1  # (n, P, h, w)
    return F.pixel_shuffle(u, ae.factor)  # (n, 3, size, size)


def test_pca_fit_reconstructs_images_of_its_rank_exactly_and_whitens_each_channel():
    ae = PatchAutoencoder(latent_channels=6, block_out_channels=(8, 8, 8))
    x = _low_rank_images(ae, 4, 32, rank=6)
    ae.fit_pca(ae.image_patches(x))
    torch.testing.assert_close(ae.components @ ae.components.T, torch.eye(6), atol=1e-5, rtol=0)
    with torch.no_grad():
        z = ae.encode(x).latent_dist.mode()  # (4, 6, 8, 8)
        rec = ae.decode(z).sample
    assert float((rec - x).abs().max()) < 1e-4  # rank 6 in, 6 components kept: lossless
    std = z.permute(1, 0, 2, 3).reshape(6, -1).std(dim=1)
    torch.testing.assert_close(std, torch.ones(6), atol=2e-3, rtol=0)  # per-channel whitening
    assert float(ae.component_scale[0] / ae.component_scale[-1]) > 5  # the raw components really differ in scale


def test_keeping_fewer_components_than_the_rank_loses_detail():
    ae = PatchAutoencoder(latent_channels=3, block_out_channels=(8, 8, 8))
    x = _low_rank_images(ae, 4, 32, rank=6)
    ae.fit_pca(ae.image_patches(x))
    with torch.no_grad():
        err = float((ae(x) - x).abs().mean())
    assert err > 1e-3


def test_untrained_refinements_are_exactly_the_linear_codec_and_training_moves_them():
    ae = PatchAutoencoder(latent_channels=8, block_out_channels=(8, 8, 8))
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    ae.fit_pca(ae.image_patches(torch.rand(8, 3, 32, 32) * 2 - 1))
    with torch.no_grad():
        assert torch.equal(ae.encode(x).latent_dist.mode(), ae.pca_encode(x))
        z = ae.pca_encode(x)
        assert torch.equal(ae.decode(z).sample, ae.pca_decode(z))
    loss = (ae(x) - x).abs().mean()
    loss.backward()
    assert float(ae.dec_out.weight.grad.abs().sum()) > 0 and float(ae.enc_out.weight.grad.abs().sum()) > 0


def test_posterior_is_deterministic_and_sizes_are_checked():
    ae = PatchAutoencoder(latent_channels=8, block_out_channels=(8, 8, 8))
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    dist = ae.encode(x).latent_dist
    assert float(dist.std.detach().max()) < 1e-6
    assert float((dist.sample() - dist.mode()).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="not divisible by 4"):
        ae.encode(torch.rand(1, 3, 18, 16))
    with pytest.raises(ValueError, match=r"expected \(B, 8, H, W\)"):
        ae.decode(torch.rand(1, 4, 4, 4))
    with pytest.raises(ValueError, match="latent_channels=49"):
        PatchAutoencoder(latent_channels=49, block_out_channels=(8, 8, 8))


def test_save_and_load_keep_the_fitted_codec_and_name_the_class(tmp_path):
    ae = PatchAutoencoder(latent_channels=8, block_out_channels=(8, 8, 8))
    ae.fit_pca(ae.image_patches(torch.rand(8, 3, 32, 32) * 2 - 1))
    torch.nn.init.normal_(ae.dec_out.weight, std=0.01)
    ae.save_pretrained(tmp_path / "prior" / "vae")
    cls = autoencoder_class_in(tmp_path / "prior")
    assert cls is PatchAutoencoder
    back = cls.from_pretrained(tmp_path / "prior" / "vae")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(back(x), ae(x))
    from diffusers import AutoencoderKL

    assert autoencoder_class_in(tmp_path / "nothing") is AutoencoderKL  # SD folders and hub ids
    with pytest.raises(ValueError, match="unknown autoencoder class 'Foo'"):
        autoencoder_class("Foo")


def test_compensator_fuses_at_the_declared_levels_of_the_patch_autoencoder(tmp_path):
    ae = PatchAutoencoder(latent_channels=8, block_out_channels=(8, 16, 16)).eval()
    ae.fit_pca(ae.image_patches(torch.rand(8, 3, 32, 32) * 2 - 1))
    torch.nn.init.normal_(ae.dec_out.weight, std=0.05)  # a trained decoder branch (at init it adds nothing)
    comp = DecoderCompensator.from_vae(ae)
    assert comp.fusion_levels == (0, 1) and comp.config.vae_class == "PatchAutoencoder"
    lq = torch.rand(2, 3, 16, 16) * 2 - 1
    feats = comp.encode_features(lq)
    assert [tuple(f.shape) for f in feats] == [(2, 8, 16, 16), (2, 16, 8, 8)]
    z = ae.encode(lq).latent_dist.mode()
    with torch.no_grad():
        plain = ae.decode(z).sample
        assert torch.equal(comp.decode(z, lq_image=lq, w=1.0), plain)  # zero-initialised SFT: the plain decoder
        for p in comp.fusion.parameters():
            torch.nn.init.normal_(p, std=0.05)
        fused = comp.decode(z, lq_image=lq, w=1.0)
        other = comp.decode(z, lq_image=-lq, w=1.0)
        assert float((fused - plain).abs().mean()) > 1e-4  # the LQ features reach the output
        assert float((fused - other).abs().mean()) > 1e-5  # and which LQ matters
        assert torch.equal(comp.decode(z, lq_image=lq, w=0.0), plain)
    comp.save_pretrained(tmp_path / "comp")
    back = DecoderCompensator.from_pretrained(tmp_path / "comp")
    with torch.no_grad():
        assert torch.equal(back.decode(z, lq_image=lq, w=1.0), fused)


def test_pca_fitted_on_the_bundled_training_crops_clears_jpeg_qf10_on_the_held_out_photos():
    """The closed-form start alone (no training) already beats the compressed input it will restore."""
    from moediffir.codecs.pillow_codecs import JPEGCodec
    from moediffir.metrics.fidelity import psnr
    from moediffir.studies.prior_quality import vae_ceiling
    from moediffir.training.prior import fit_patch_pca
    from moediffir.utils.io import read_image_rgb

    train = [read_image_rgb(p) for p in sorted((REPO / "data/mini/mini_train").glob("*.png"))]
    test = {p.stem: read_image_rgb(p) for p in sorted((REPO / "data/mini/mini_test").glob("*.png"))}
    ae = PatchAutoencoder(latent_channels=8, block_out_channels=(16, 32, 64)).eval()
    fit_patch_pca(ae, train)
    ceiling = vae_ceiling(ae, test)
    jpeg = JPEGCodec()
    lq_psnr = np.mean([psnr(jpeg(im, 10).decoded, im) for im in test.values()])
    assert ceiling["vae_psnr"].min() > lq_psnr
    assert ceiling["vae_psnr"].mean() > 29.0
    assert ceiling["vae_colour_shift"].max() < 2.0
