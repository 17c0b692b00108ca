"""LPIPS / FID / CLIP-IQA+ / MANIQA built offline: file names, fast missing-file errors, random-weight behaviour.

With random weights nothing is asserted about image quality, only what must hold for any weights: identity gives
0, the same seed gives the same number, and the real architectures run on the bundled images. The real LPIPS
weights that ``make setup`` converts (moediffir.metrics.lpips_weights) are checked against known behaviour of the
published metric, on photographs that ship with scikit-image; those tests skip, saying why, before the set-up.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from moediffir.metrics import perceptual as P
from moediffir.utils.io import read_image_rgb


@pytest.fixture(scope="module")
def images(request) -> list[np.ndarray]:
    root = request.config.rootpath / "data" / "smoke" / "smoke_test"
    return [read_image_rgb(p) for p in sorted(root.glob("*.png"))]


@pytest.fixture(scope="module")
def lpips_alex():
    return P.build_lpips("alex", "random", seed=0)


@pytest.fixture(scope="module")
def inception():
    return P.build_fid_inception("random", seed=0)


@pytest.fixture(scope="module")
def features(inception, images) -> np.ndarray:
    return P.inception_features(inception, images)  # (3, 2048)


# ----------------------------------------------------------------------------------------- files
def test_weight_file_names_match_the_installed_packages():
    import torchvision
    from pyiqa.archs import clip_model, clipiqa_arch, maniqa_arch
    from pyiqa.archs import inception as pyiqa_inception
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR

    def cached_name(url: str) -> str:  # exactly how pyiqa's load_file_from_url names its cache file
        return os.path.basename(urlparse(url).path)

    files = P.weight_files()
    hub = Path(torch.hub.get_dir())
    assert Path(DEFAULT_CACHE_DIR) == hub / "pyiqa"  # where pyiqa itself caches
    assert torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url.endswith("/" + files["lpips_alex_backbone"].name)
    assert torchvision.models.VGG16_Weights.IMAGENET1K_V1.url.endswith("/" + files["lpips_vgg_backbone"].name)
    assert files["lpips_alex_backbone"].parent == hub / "checkpoints"
    assert cached_name(pyiqa_inception.FID_WEIGHTS_URL) == files["fid_inception"].name
    assert cached_name(clipiqa_arch.default_model_urls["clipiqa+"]) == P.CLIPIQA_PLUS_FILE
    assert cached_name(clip_model._MODELS["RN50"]) == files["clipiqa_clip_rn50"].name
    assert cached_name(maniqa_arch.default_model_urls["pipal"]) == files["maniqa_pipal"].name
    assert files["lpips_alex_linear"].is_file() and files["lpips_vgg_linear"].is_file()  # shipped with lpips
    other = P.weight_files("somewhere")
    assert other["maniqa_pipal"] == Path("somewhere") / "pyiqa" / P.MANIQA_PIPAL_FILE


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda d: P.build_lpips("alex", "pretrained", weights_dir=d, lpips_dir=d), P.TORCHVISION_FILES["alex"]),
        (lambda d: P.build_lpips("vgg", "pretrained", weights_dir=d, lpips_dir=d), P.TORCHVISION_FILES["vgg"]),
        (lambda d: P.build_fid_inception("pretrained", weights_dir=d), P.FID_INCEPTION_FILE),
        (lambda d: P.build_clipiqa("pretrained", weights_dir=d), P.CLIP_RN50_FILE),
        (lambda d: P.build_maniqa("pretrained", weights_dir=d), P.MANIQA_PIPAL_FILE),
    ],
)
def test_missing_pretrained_file_is_named_before_anything_is_built(tmp_path, build, expected):
    with pytest.raises(P.MissingWeightsError) as info:
        build(tmp_path)
    msg = str(info.value)
    assert expected in msg and str(tmp_path) in msg and "metric_weights=random" in msg
    assert not any(tmp_path.rglob("*")), "nothing may be downloaded or created"


def test_clipiqa_names_both_missing_files(tmp_path):
    with pytest.raises(P.MissingWeightsError) as info:
        P.build_clipiqa("pretrained", weights_dir=tmp_path)
    assert P.CLIP_RN50_FILE in str(info.value) and P.CLIPIQA_PLUS_FILE in str(info.value)
    assert "CLIP-IQA+_learned_prompts" in str(info.value)  # the older cache name is accepted too


def test_older_cache_name_is_found(tmp_path):
    old = tmp_path / "pyiqa" / "CLIP-IQA+_learned_prompts-603f3273.pth"
    old.parent.mkdir()
    old.write_bytes(b"x")
    assert P.weight_files(tmp_path)["clipiqa_prompts"] == old


def test_bad_weights_value_raises():
    with pytest.raises(ValueError, match="weights"):
        P.build_lpips("alex", "imagenet")
    with pytest.raises(ValueError, match="net"):
        P.build_lpips("squeeze", "random")


# ----------------------------------------------------------------------------------------- LPIPS
def test_lpips_random_identity_zero_and_deterministic(images, lpips_alex):
    a, b = images[0], images[0][::-1].copy()
    assert P.lpips_distance(lpips_alex, a, a) == pytest.approx(0.0, abs=1e-7)
    d = P.lpips_distance(lpips_alex, a, b)
    assert d > 0
    again = P.build_lpips("alex", "random", seed=0)
    assert P.lpips_distance(again, a, b) == pytest.approx(d, abs=1e-7)
    other = P.build_lpips("alex", "random", seed=1)
    assert P.lpips_distance(other, a, b) != pytest.approx(d, abs=1e-6)
    state = torch.get_rng_state()
    P.build_lpips("alex", "random", seed=3)
    assert torch.equal(state, torch.get_rng_state()), "building must not disturb the caller's RNG"


def test_lpips_vgg_option_runs(images):
    model = P.build_lpips("vgg", "random", seed=0)
    a = images[2]
    assert P.lpips_distance(model, a, a) == pytest.approx(0.0, abs=1e-7)
    assert P.lpips_distance(model, a, 255 - a) > 0


def test_lpips_shape_mismatch_raises(images, lpips_alex):
    with pytest.raises(Exception, match="shape"):
        P.lpips_distance(lpips_alex, images[0], images[1])


def test_lpips_pretrained_loads_backbone_from_local_file(tmp_path, images):
    """The pretrained path copies torchvision's features.* tensors from the local file into LPIPS."""
    import torchvision

    torch.manual_seed(5)
    feats = torchvision.models.alexnet(weights=None).features.state_dict()
    ckpt = tmp_path / "checkpoints" / P.TORCHVISION_FILES["alex"]
    ckpt.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in feats.items()}, ckpt)  # the classifier is not needed
    model = P.build_lpips("alex", "pretrained", weights_dir=tmp_path, lpips_dir=tmp_path / "not-converted")
    assert model.weights_label == "pretrained" and model.weights_source == str(ckpt)
    assert torch.equal(model.net.slice1[0].weight, feats["0.weight"])
    assert torch.equal(getattr(model.net.slice5, "10").bias, feats["10.bias"])
    assert P.lpips_distance(model, images[0], images[0]) == pytest.approx(0.0, abs=1e-7)
    torch.save({"features.0.weight": feats["0.weight"]}, ckpt)
    with pytest.raises(P.MissingWeightsError, match="features.0.bias"):
        P.build_lpips("alex", "pretrained", weights_dir=tmp_path, lpips_dir=tmp_path / "not-converted")


# ------------------------------------------------------------------------------------ real LPIPS
def _converted_dir(request) -> Path:
    from moediffir.metrics.lpips_weights import NETS, converted_problem

    folder = request.config.rootpath / "data" / "weights" / "lpips"
    problems = [p for net in NETS if (p := converted_problem(folder, net))]
    if problems:
        pytest.skip(f"real LPIPS weights not converted ({problems[0]}); `make setup` converts them")
    return folder


@pytest.fixture(scope="module")
def lpips_real(request) -> dict[str, torch.nn.Module]:
    folder = _converted_dir(request)
    return {net: P.build_lpips(net, "pretrained", weights_dir="no-hub-dir", lpips_dir=folder) for net in ("alex", "vgg")}


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    import skimage.data

    return {name: getattr(skimage.data, name)()[..., :3] for name in ("astronaut", "coffee", "chelsea")}


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _brighter(img: np.ndarray, step: int) -> np.ndarray:
    return np.clip(img.astype(np.int16) + step, 0, 255).astype(np.uint8)


def test_real_lpips_loads_the_converted_files_with_the_wheels_heads(request, lpips_real):
    from moediffir.metrics.lpips_weights import converted_file, shipped_heads_file

    folder = _converted_dir(request)
    for net, model in lpips_real.items():
        assert model.weights_label == "pretrained" and model.weights_source == str(converted_file(folder, net))
        shipped = torch.load(shipped_heads_file(net), map_location="cpu", weights_only=True)
        assert all(torch.equal(getattr(model, f"lin{i}").model[1].weight, shipped[f"lin{i}.model.1.weight"])
                   for i in range(5))
        rnd = P.build_lpips(net, "random", seed=0)
        assert not torch.equal(rnd.net.slice1[0].weight, model.net.slice1[0].weight)


def test_real_lpips_identity_and_jpeg_quality_order(lpips_real, photos):
    """LPIPS-Alex of JPEG QF 10 on natural photos lies where published numbers for such inputs lie (~0.2-0.4)."""
    model = lpips_real["alex"]
    for name, img in photos.items():
        assert P.lpips_distance(model, img, img) == 0.0, name
        d10, d30, d90 = (P.lpips_distance(model, _jpeg(img, q), img) for q in (10, 30, 90))
        assert 0.12 < d10 < 0.6 and d10 > 1.5 * d30 > 1.5 * 2 * d90 > 0, (name, d10, d30, d90)
    # the range is informative: random AlexNet features put the same pair two orders of magnitude lower
    img = photos["astronaut"]
    assert P.lpips_distance(P.build_lpips("alex", "random", seed=0), _jpeg(img, 10), img) < 0.05


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_real_lpips_sees_what_psnr_misses(lpips_real, photos, net):
    """A global +8 brightness step or a 1-pixel shift barely changes a photo for a viewer, JPEG blocking does.

    PSNR rates the shift far worse than JPEG QF 10 and the brightness step like JPEG QF 30; trained LPIPS, as
    published, puts both far below the JPEG versions. A random-weight backbone does not.
    """
    from moediffir.metrics.fidelity import psnr

    img = np.ascontiguousarray(photos["coffee"][72:328, 172:428])  # (256, 256, 3): keeps VGG16 quick on a CPU
    q10, q30, bright, shift = _jpeg(img, 10), _jpeg(img, 30), _brighter(img, 8), np.roll(img, 1, axis=1)
    assert psnr(shift, img) < psnr(q10, img) - 1.0 and abs(psnr(bright, img) - psnr(q30, img)) < 2.0
    model = lpips_real[net]
    d = {k: P.lpips_distance(model, v, img) for k, v in (("q10", q10), ("q30", q30), ("bright", bright),
                                                          ("shift", shift))}
    assert d["bright"] * 10 < d["q30"] and d["shift"] * 3 < d["q10"], d
    if net == "alex":  # (a random VGG16 fails it too, but takes a minute to build on a CPU)
        rnd = P.build_lpips(net, "random", seed=0)
        r = {k: P.lpips_distance(rnd, v, img) for k, v in (("q10", q10), ("q30", q30), ("bright", bright),
                                                             ("shift", shift))}
        assert not (r["bright"] * 10 < r["q30"] or r["shift"] * 3 < r["q10"]), r


def test_suite_reports_pretrained_lpips_from_the_config(request, photos):
    from moediffir.config import resolve_config
    from moediffir.metrics.suite import MetricSuite

    folder = _converted_dir(request)
    overrides = {"eval.metrics": ("psnr", "ssim", "lpips"), "eval.metric_weights": "pretrained",
                 "eval.lpips_dir": str(folder), "eval.metric_weights_dir": str(request.config.rootpath / "no-hub")}
    suite = MetricSuite.from_config(resolve_config("smoke", overrides), device="cpu")
    img = photos["chelsea"]
    row = suite.score_pair(_jpeg(img, 10), img)
    assert row["weights"] == "pretrained" and "weights=pretrained" in row["conventions"]
    assert 0.12 < row["lpips"] < 0.6
    with pytest.raises(P.MissingWeightsError, match="make setup"):  # pretrained asked, nothing converted there
        MetricSuite.from_config(resolve_config("smoke", {**overrides, "eval.lpips_dir": str(request.config.rootpath
                                                                                          / "no-lpips")}))


# ------------------------------------------------------------------------------------------- FID
def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_inception_features_shape_and_determinism(images, inception, features):
    f = features
    assert f.shape == (3, P.FID_DIMS)
    assert np.isfinite(f).all() and f.std() > 1e-3  # random features still vary between images
    g = P.inception_features(inception, images[2:], batch_size=1)
    np.testing.assert_allclose(g, f[2:], rtol=1e-4, atol=1e-6)
    assert _same_weights(P.build_fid_inception("random", seed=0), inception)
    assert not _same_weights(P.build_fid_inception("random", seed=1), inception)


def test_fid_identity_zero_and_positive_between_sets(features):
    f = features
    assert P.fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    assert P.fid_from_features(f[:2], f[1:]) > 0
    with pytest.raises(Exception, match="at least 2"):
        P.fid_from_features(f[:1], f)


@pytest.mark.parametrize(("n1", "n2", "d"), [(20, 30, 64), (100, 80, 16)])
def test_fid_formula_matches_pyiqa_frechet_distance(n1, n2, d):
    """The low-rank form (n < d) and the sqrtm path both equal pyiqa's frechet_distance."""
    from pyiqa.archs.fid_arch import frechet_distance

    rng = np.random.default_rng(d)
    a = rng.normal(size=(n1, d))
    b = 1.3 * rng.normal(size=(n2, d)) + 0.2
    ref = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert P.fid_from_features(a, b) == pytest.approx(ref, rel=1e-6)


def test_fid_reliability_flag():
    assert not P.fid_reliable(29, 29)  # LIVE1-sized sets
    assert P.fid_reliable(5000, 2048)
    assert not P.fid_reliable(5000, 100)


# ------------------------------------------------------------------------------ CLIP-IQA, MANIQA
def test_clipiqa_random_runs_and_is_deterministic(images):
    model = P.build_clipiqa("random", seed=0)
    v = P.nr_score(model, images[0])
    assert 0.0 <= v <= 1.0  # a softmax probability, whatever the weights
    assert not model.clip_model[0].training  # eval mode reaches the CLIP kept outside the module tree
    assert P.nr_score(model, images[0]) == v  # scoring changes no state (BatchNorm running stats)
    again = P.build_clipiqa("random", seed=0)
    assert _same_weights(again.clip_model[0], model.clip_model[0])  # CLIP is kept outside the state dict
    assert _same_weights(again, model)  # the prompt learner


@pytest.fixture(scope="module")
def maniqa():
    return P.build_maniqa("random", seed=0, crops=1)


def test_maniqa_random_runs(images, maniqa):
    assert maniqa.test_sample == 1 and not maniqa.training
    v = P.nr_score(maniqa, images[2])  # the 151x101 image: upscaled to a 224 crop inside MANIQA
    assert np.isfinite(v) and v >= 0.0


@pytest.mark.slow
def test_maniqa_random_is_deterministic(images, maniqa):
    assert _same_weights(P.build_maniqa("random", seed=0, crops=1), maniqa)
    assert P.nr_score(maniqa, images[2]) == P.nr_score(maniqa, images[2])


def test_importing_the_metrics_package_loads_no_metric_library():
    import subprocess
    import sys

    code = "import sys, moediffir.metrics; print(sorted(m for m in ('pyiqa', 'lpips', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
