"""Reading a stage-0 prior folder: a missing prior is one error naming the folder and the fix."""

import pytest

from moediffir.errors import MoEDiffIRError
from moediffir.evaluation.prior_quality import colour_shift, load_prior


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
