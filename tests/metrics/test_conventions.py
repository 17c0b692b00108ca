"""The conventions string written beside every metric value: content, round trip, validation."""

from __future__ import annotations

import pytest

from moediffir.config import resolve_config
from moediffir.metrics.conventions import ConventionsError, MetricConventions


def test_text_names_every_convention():
    text = MetricConventions(color="y", crop_border=4, lpips_net="vgg", weights="random", seed=7).to_text()
    for part in ("color=y", "crop=4", "range=0-255", "ssim=gauss11-s1.5", "lpips=vgg", "weights=random(seed=7)",
                 "clipiqa=clipiqa+", "maniqa=maniqa-pipal/crops20", "fid=inception-pool3-clean"):
        assert part in text
    assert "weights=pretrained" in MetricConventions().to_text()


@pytest.mark.parametrize(
    "conv",
    [
        MetricConventions(),
        MetricConventions(color="y", crop_border=8, data_range=1.0, lpips_net="vgg", weights="random", seed=3,
                          maniqa_crops=1),
    ],
)
def test_round_trip(conv):
    assert MetricConventions.from_text(conv.to_text()) == conv
    assert str(conv) == conv.to_text()


def test_profiles_give_their_conventions():
    smoke = MetricConventions.from_config(resolve_config("smoke"))
    paper = MetricConventions.from_config(resolve_config("paper"))
    assert smoke.weights == "random" and smoke.weights_label == "random(seed=0)" and smoke.maniqa_crops == 1
    assert paper.weights == "pretrained" and paper.color == "rgb" and paper.lpips_net == "alex"
    assert paper.maniqa_crops == 20
    y = MetricConventions.from_config(resolve_config("paper", {"eval.color_space": "y", "eval.crop_border": 4}))
    assert (y.color, y.crop_border) == ("y", 4)


def test_bad_values_and_text_raise():
    with pytest.raises(ConventionsError, match="color"):
        MetricConventions(color="yiq")
    with pytest.raises(ConventionsError, match="weights"):
        MetricConventions(weights="imagenet")
    with pytest.raises(ConventionsError, match="crop_border"):
        MetricConventions(crop_border=-2)
    with pytest.raises(ConventionsError, match="missing key"):
        MetricConventions.from_text("color=rgb; crop=0")
    with pytest.raises(ConventionsError, match="key=value"):
        MetricConventions.from_text("rgb")
