"""MetricSuite: per-pair and per-set scoring, conventions applied and labelled, networks built once."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from moediffir.config import resolve_config
from moediffir.metrics import perceptual
from moediffir.metrics.conventions import MetricConventions
from moediffir.metrics.fidelity import psnr, ssim
from moediffir.metrics.perceptual import MissingWeightsError
from moediffir.metrics.suite import MetricSuite
from moediffir.utils.io import read_image_rgb


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def gts(request) -> list[np.ndarray]:
    root = request.config.rootpath / "data" / "smoke" / "smoke_test"
    return [read_image_rgb(p) for p in sorted(root.glob("*.png"))]


@pytest.fixture(scope="module")
def suite() -> MetricSuite:
    conv = MetricConventions(weights="random", seed=0)
    return MetricSuite(("psnr", "ssim", "lpips", "clipiqa", "fid"), conv)


def test_pair_scores_and_labels(suite, gts):
    gt = gts[0]
    same = suite.score_pair(gt, gt.copy())
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0) and same["lpips"] == pytest.approx(0.0)
    assert same["weights"] == "random(seed=0)"
    assert same["conventions"] == suite.conventions_text and "weights=random(seed=0)" in same["conventions"]
    lq = _jpeg(gt, 10)
    row = suite.score_pair(lq, gt)
    assert row["psnr"] == pytest.approx(psnr(lq, gt)) and row["ssim"] == pytest.approx(ssim(lq, gt))
    assert row["lpips"] > 0 and 0 <= row["clipiqa"] <= 1
    assert "fid" not in row  # a set metric
    assert set(row) == {"psnr", "ssim", "lpips", "clipiqa", "weights", "conventions"}


def test_networks_are_built_once(monkeypatch, gts):
    calls = []
    real = perceptual.build_lpips

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(perceptual, "build_lpips", counting)
    s = MetricSuite(("lpips",), MetricConventions(weights="random"))
    for gt in gts:
        s.score_pair(_jpeg(gt, 20), gt)
    assert len(calls) == 1


def test_set_score_fid_flags_few_images(suite, gts):
    lqs = [_jpeg(g, 5) for g in gts[:2]]
    out = suite.score_set(lqs, gts[:2])
    assert out["fid"] > 0 and out["fid_n"] == 2 and out["fid_reliable"] is False
    assert out["weights"] == "random(seed=0)"
    f_gt = suite.features(gts[:2])  # (2, 2048), cacheable per image
    assert f_gt.shape == (2, 2048)
    assert suite.score_features(f_gt, f_gt)["fid"] == pytest.approx(0.0, abs=1e-6)


def test_y_and_crop_conventions_are_applied(gts):
    gt = gts[1]
    lq = _jpeg(gt, 10)
    s = MetricSuite(("psnr", "ssim"), MetricConventions(color="y", crop_border=4))
    row = s.score_pair(lq, gt)
    assert row["psnr"] == pytest.approx(psnr(lq, gt, color="y", crop_border=4))
    assert row["ssim"] == pytest.approx(ssim(lq, gt, color="y", crop_border=4))
    assert row["psnr"] != pytest.approx(psnr(lq, gt))
    assert "color=y; crop=4" in row["conventions"]


def test_from_config_and_errors(tmp_path):
    smoke = MetricSuite.from_config(resolve_config("smoke"), metrics=("psnr", "lpips"))
    assert smoke.conventions.weights == "random" and smoke.metrics == ("psnr", "lpips")
    with pytest.raises(ValueError, match="unknown metrics"):
        MetricSuite(("psnr", "niqe"))
    with pytest.raises(MissingWeightsError) as info:
        MetricSuite.from_config(
            resolve_config("paper", {"eval.metric_weights_dir": str(tmp_path), "eval.lpips_dir": str(tmp_path)}),
            device="cpu",
        )
    for name in ("alexnet-owt-7be5be79.pth", perceptual.FID_INCEPTION_FILE, perceptual.CLIP_RN50_FILE,
                 perceptual.CLIPIQA_PLUS_FILE, perceptual.MANIQA_PIPAL_FILE):
        assert name in str(info.value)  # one error listing every missing file
