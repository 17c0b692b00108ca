"""Reading a stage-0 prior folder: a missing prior is one error naming the folder and the fix."""

import pytest

from moediffir.errors import MoEDiffIRError
from moediffir.evaluation.prior_quality import load_prior


def test_a_folder_without_a_prior_is_named_with_the_command_that_makes_it(tmp_path):
    with pytest.raises(MoEDiffIRError) as err:
        load_prior(tmp_path / "prior")
    assert isinstance(err.value, FileNotFoundError)
    assert str(err.value).startswith(f"{tmp_path / 'prior'}: no prior here")
    assert "moediffir train prior" in str(err.value)
