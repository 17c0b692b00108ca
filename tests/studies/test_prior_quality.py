"""Reading a stage-0 prior folder: a missing prior is one error naming the folder and the fix."""

import pytest

from moediffir.errors import MoEDiffIRError
from moediffir.studies.prior_quality import colour_shift, load_prior


def test_a_folder_without_a_prior_is_named_with_the_command_that_makes_it(tmp_path):
    with pytest.raises(MoEDiffIRError) as err:
        load_prior(tmp_path / "prior")
    assert isinstance(err.value, FileNotFoundError)
    assert str(err.value).startswith(f"{tmp_path / 'prior'}: no prior here")
    assert "moediffir train prior" in str(err.value)


def test_colour_shift_is_the_largest_change_of_a_channel_mean_in_levels():
    import numpy as np

    rng = np.random.default_rng(0)
    ref = rng.integers(20, 200, size=(32, 48, 3)).astype(np.uint8)
    assert colour_shift(ref, ref) == 0.0
    redder = ref.copy()
    redder[..., 0] += 12  # no overflow: values stay below 212
    assert colour_shift(redder, ref) == pytest.approx(12.0)
    assert colour_shift(ref, redder) == pytest.approx(12.0)
    noisy = np.clip(ref.astype(int) + rng.choice([-3, 3], size=ref.shape), 0, 255).astype(np.uint8)
    assert colour_shift(noisy, ref) < 0.2  # texture noise with zero mean moves no channel's mean


def test_blockiness_is_one_without_a_grid_and_grows_with_block_edges():
    import numpy as np

    from moediffir.studies.prior_quality import blockiness

    rng = np.random.default_rng(0)
    smooth = rng.normal(128, 20, (64, 64, 3))
    assert blockiness(smooth, 4) == pytest.approx(1.0, abs=0.05)
    blocks = np.kron(rng.normal(128, 20, (16, 16, 3)), np.ones((4, 4, 1)))  # constant 4x4 cells
    mixed = smooth * 0.5 + blocks * 0.5
    assert blockiness(mixed, 4) > 1.3
    assert blockiness(mixed, 4) > blockiness(mixed, 3)  # the 4-px grid, not any grid


def test_decoded_blockiness_shows_the_patch_grid_of_a_linear_decoder():
    import torch

    from moediffir.models.patch_autoencoder import PatchAutoencoder
    from moediffir.studies.prior_quality import decoded_blockiness

    ae = PatchAutoencoder(latent_channels=8, block_out_channels=(8, 8, 8)).eval()
    smooth = torch.nn.functional.interpolate(torch.rand(8, 3, 6, 6) * 2 - 1, size=(32, 32), mode="bicubic")
    ae.fit_pca(ae.image_patches(smooth))  # smooth photos: smooth components
    z = torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(0))  # latents off the data: block edges
    table = decoded_blockiness(ae, z)
    assert list(table.columns) == ["sample", "decoder_blockiness", "linear_decoder_blockiness"]
    assert (table["linear_decoder_blockiness"] > 1.1).all()
    assert (table["decoder_blockiness"] == table["linear_decoder_blockiness"]).all()  # untrained: the same decoder
