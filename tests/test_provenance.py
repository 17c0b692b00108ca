"""One rule for where each part's weights come from (moediffir.provenance), and everything that asks it."""

from __future__ import annotations

import pandas as pd
import pytest

from moediffir.config import resolve_config
from moediffir.provenance import (
    PRETRAINED,
    PRIOR_TRAINED_LABEL,
    RANDOM,
    TRAINED,
    backbone_provenance,
    figure_note,
    frozen_parts_random,
    provenance,
    provenance_label,
    random_parts,
    uses_degradation_prior,
)
from moediffir.weights.model_folder import dp_is_random
from moediffir.weights.weight_checks import check_paper_weights, dp_weight_check, v2t_weight_check


def test_smoke_is_random_frozen_parts_and_trained_rest():
    prov = provenance(resolve_config("smoke"))
    assert prov == {"unet": RANDOM, "vae": RANDOM, "degradation_prior": RANDOM, "v2t_clip_encoder": RANDOM,
                    "prompt_module": TRAINED, "spade": TRAINED, "v2t_adapter": TRAINED, "compensator": TRAINED}
    assert frozen_parts_random(resolve_config("smoke"))


def test_paper_is_pretrained_frozen_parts():
    cfg = resolve_config("paper")
    prov = provenance(cfg)
    assert [prov[p] for p in ("unet", "vae", "degradation_prior", "v2t_clip_encoder")] == [PRETRAINED] * 4
    assert not frozen_parts_random(cfg) and random_parts(cfg) == []
    assert not cfg.model.random_weights


def test_tiny_backbone_is_random_even_with_the_pretrained_flag():
    cfg = resolve_config("paper", {"model.backbone": "tiny", "model.random_backbone": False,
                                   "model.dp_backend": "tiny", "model.v2t_backend": "clip_rn50"})
    assert backbone_provenance(cfg) == RANDOM and cfg.model.random_weights
    prov = provenance(cfg)
    assert prov["unet"] == prov["vae"] == prov["degradation_prior"] == RANDOM
    assert prov["v2t_clip_encoder"] == PRETRAINED  # a real RN50 is still asked for
    assert [w.path for w in check_paper_weights(cfg)] == [w.path for w in v2t_weight_check(cfg)]
    assert len(v2t_weight_check(cfg)) == 1  # and nothing else: no SD, no DA-CLIP file


def test_random_backbone_makes_every_frozen_part_random():
    cfg = resolve_config("paper", {"model.random_backbone": True})
    assert random_parts(cfg) == ["unet", "vae", "degradation_prior", "v2t_clip_encoder"]
    assert check_paper_weights(cfg) == [] and dp_is_random(cfg)


@pytest.mark.parametrize("over, used", [
    ({}, True), ({"model.use_dp": False}, False), ({"model.routing": "task"}, True),  # released task gates read it
    ({"model.prompt_design": "single"}, False),
])
def test_one_rule_for_the_degradation_prior(over, used, tmp_path):
    cfg = resolve_config("paper", {"data.root": str(tmp_path), **over})
    assert uses_degradation_prior(cfg) is used
    assert ("degradation_prior" in provenance(cfg)) is used
    assert bool(dp_weight_check(cfg)) is used  # the DA-CLIP file is asked for exactly when the prior is used


def test_optional_parts_and_untrained_models():
    cfg = resolve_config("smoke", {"model.use_v2t": False})
    prov = provenance(cfg, trained=False, compensator=False)
    assert "v2t_clip_encoder" not in prov and "v2t_adapter" not in prov and "compensator" not in prov
    assert prov["prompt_module"] == prov["spade"] == RANDOM
    assert provenance_label(prov) == "unet, vae, degradation_prior, prompt_module, spade: random"


def test_a_prior_trained_here_is_labelled_so():
    cfg = resolve_config("paper")
    prior = type("Prior", (), {"enabled": True})()

    class WithPrior:  # a profile with stage 0 (a prior trained by the kit) has cfg.prior.enabled
        model, data = cfg.model, cfg.data

    WithPrior.prior = prior
    assert backbone_provenance(WithPrior) == TRAINED
    assert provenance(WithPrior)["vae"] == TRAINED


def test_figure_titles_name_random_weights_and_a_prior_trained_here():
    """smoke: random (the title says the numbers mean nothing); mini: the prior trained here; paper: nothing."""
    import pandas as pd

    from moediffir.report.figures import RANDOM_TITLE, weights_note
    from moediffir.report.table_notes import trained_here_note

    assert figure_note(resolve_config("smoke")) is True
    assert figure_note(resolve_config("mini")) == f"{PRIOR_TRAINED_LABEL} (mini profile)"
    assert figure_note(resolve_config("paper")) == ""
    assert weights_note(True) == RANDOM_TITLE and weights_note("") == "" and weights_note(False) == ""
    assert weights_note(figure_note(resolve_config("mini"))).startswith(PRIOR_TRAINED_LABEL)
    rows = pd.DataFrame({"model_weights": ["n/a (the compressed input)", f"{PRIOR_TRAINED_LABEL} (mini profile)"]})
    assert trained_here_note(rows) == f"{PRIOR_TRAINED_LABEL} (mini profile)"
    assert trained_here_note(rows.iloc[:1]) == ""


def test_one_test_of_a_random_weights_label():
    """Every weights label the kit writes for random weights names them; pretrained and trained ones do not."""
    from moediffir.ablation.sweep import weights_label
    from moediffir.metrics.conventions import MetricConventions
    from moediffir.provenance import label_is_random
    from moediffir.report.table_notes import is_random

    smoke, paper = resolve_config("smoke"), resolve_config("paper")
    assert label_is_random(weights_label(smoke)) and not label_is_random(weights_label(paper))
    assert label_is_random("random weights: unet, vae") and not label_is_random(PRIOR_TRAINED_LABEL)
    assert not label_is_random(float("nan")) and not label_is_random(None)
    rows = pd.DataFrame({"weights": ["pretrained", "pretrained"], "model_weights": [PRIOR_TRAINED_LABEL, None]})
    assert not is_random(rows)
    assert is_random(rows.assign(weights_label=["", weights_label(smoke)]))  # an ablation's own label counts
    assert is_random(rows.assign(weights=["pretrained", MetricConventions.from_config(smoke).weights_label]))
