"""Tests of moediffir.codecs.learned: C_PSNR / C_SSIM (compressai cheng2020_attn) with real entropy coding.

Networks here have random weights (labelled so in every result) unless the real zoo checkpoints are in the
torch hub cache (slow test). Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from moediffir.codecs import (
    CodecError,
    CodecUnavailableError,
    learned,
    make_codec,
)
from moediffir.codecs.learned import CompressAICodec
from moediffir.config import resolve_config
from moediffir.metrics.fidelity import psnr


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Direct model calls below run single-threaded like the codec (tiny ops; the cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def c_psnr() -> CompressAICodec:
    return CompressAICodec("c_psnr", weights="random")


def test_factory_follows_config():
    smoke = resolve_config("smoke").data
    codec = make_codec("c_psnr", smoke)
    assert codec.name == "c_psnr" and codec.metric == "mse" and codec.weights == "random"
    codec = make_codec("c_ssim", resolve_config("paper").data)
    assert codec.metric == "ms-ssim" and codec.weights == "pretrained"


def test_round_trip_even_and_odd_sizes(c_psnr, photo):
    for img in (photo[:64, :64], photo[:75, :101]):
        res = c_psnr(img, 1)
        assert res.decoded.shape == img.shape and res.decoded.dtype == np.uint8
        assert res.num_bits > 0 and res.num_bits % 8 == 0
        assert res.info["weights"] == "random" and "untrained" in res.info["note"]
        assert res.info["bits_source"] == "bitstream"
        assert res.info["backend"] == "compressai-cheng2020-attn/mse"
    odd = c_psnr(photo[:75, :101], 1)
    assert odd.info["coded_size"] == "128x128"  # padded to multiples of 64
    padded = np.pad(photo[:75, :101], ((0, 128 - 75), (0, 128 - 101), (0, 0)), mode="edge")
    whole = c_psnr(padded, 1)
    assert whole.num_bits == odd.num_bits  # the same edge-padded picture is what is coded ...
    np.testing.assert_array_equal(odd.decoded, whole.decoded[:75, :101])  # ... and its top-left is what comes back


def test_fast_coder_is_bit_exact_with_compressai(c_psnr, photo):
    """ar_compress writes model.compress()'s bytes; ar_decompress returns model.decompress()'s image."""
    model = c_psnr.model(2)
    tables = c_psnr._tables[2]
    x = torch.from_numpy(np.array(photo[:64, :128])).permute(2, 0, 1)[None].float() / 255  # (1, 3, 64, 128)
    with torch.inference_mode():
        ref = model.compress(x)
        ours = learned.ar_compress(model, x, tables)
        assert ours["strings"] == ref["strings"] and tuple(ours["shape"]) == tuple(ref["shape"])
        x_ref = model.decompress(ref["strings"], ref["shape"])["x_hat"]
        x_ours = learned.ar_decompress(model, ref["strings"], ref["shape"], tables)
    assert torch.equal(x_ref, x_ours)
    scales = torch.rand(4096) * 300
    gc = model.gaussian_conditional
    assert torch.equal(gc.build_indexes(scales), learned.scale_indexes(gc, scales))


@pytest.fixture(scope="module")
def c_ssim() -> CompressAICodec:
    return CompressAICodec("c_ssim", weights="random")


def test_fast_and_compressai_coders_agree(c_ssim, photo):
    img = photo[:64, :64]
    fast = c_ssim(img, 1)
    reference = CompressAICodec("c_ssim", weights="random", coder="compressai")
    reference._models, reference._tables = c_ssim._models, c_ssim._tables  # same networks, other coder
    ref = reference(img, 1)
    assert fast.info["coder"] == "fast" and ref.info["coder"] == "compressai"
    assert fast.num_bits == ref.num_bits and np.array_equal(fast.decoded, ref.decoded)


def test_bits_match_the_model_entropy_estimate(c_psnr, photo):
    """The rANS length is close to -log2 of the model's own likelihoods (real coding, counted in bits)."""
    img = photo[:64, :128]
    res = c_psnr(img, 1)
    model = c_psnr.model(1)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        likelihoods = model(x)["likelihoods"]
    estimate = sum(float(-torch.log2(v).sum()) for v in likelihoods.values())
    assert abs(res.num_bits - estimate) < 0.25 * estimate + 256, (res.num_bits, estimate)


def test_random_weights_are_seeded(c_psnr, c_ssim, photo):
    img = photo[:64, :64]
    a = c_psnr(img, 1)
    b = CompressAICodec("c_psnr", weights="random")(img, 1)  # a fresh network from the same seed
    assert a.num_bits == b.num_bits and np.array_equal(a.decoded, b.decoded)
    other = c_ssim(img, 1)
    assert not np.array_equal(other.decoded, a.decoded)  # the two metrics get different networks


def test_models_are_cached_and_threads_restored(c_psnr, photo):
    first = c_psnr.model(1)
    torch.set_num_threads(2)
    try:
        c_psnr(photo[:64, :64], 1)  # runs with one thread inside...
        assert torch.get_num_threads() == 2  # ...and gives the caller's setting back
    finally:
        torch.set_num_threads(1)
    assert c_psnr.model(1) is first


def test_grayscale_as_rgb(c_psnr, photo):
    gray = np.repeat(photo[:64, :64, 1:2], 3, axis=2)
    assert c_psnr(gray, 1).decoded.shape == gray.shape


@pytest.mark.parametrize("level", [0, 7, "1", 1.5, True])
def test_bad_levels(c_psnr, photo, level):
    with pytest.raises(CodecError, match="c_psnr"):
        c_psnr(photo[:64, :64], level)


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8)])
def test_bad_inputs(c_psnr, bad):
    with pytest.raises(CodecError, match="c_psnr"):
        c_psnr(bad, 1)


def test_bad_constructor_values():
    with pytest.raises(CodecError, match="learned_weights"):
        CompressAICodec("c_psnr", weights="imagenet")
    with pytest.raises(CodecError):
        CompressAICodec("c_lpips")


# --------------------------------------------------------------------------------------- pretrained
@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_missing_pretrained_weights_name_file_and_folder(empty_hub, photo):
    codec = CompressAICodec("c_psnr", weights="pretrained")
    name = learned.checkpoint_file_name("mse", 1)
    assert name.startswith("cheng2020_attn-mse-1-") and name.endswith(".pth.tar")
    with pytest.raises(CodecUnavailableError) as err:
        codec(photo[:64, :64], 1)
    assert name in str(err.value) and str(empty_hub) in str(err.value)
    assert "learned_weights='random'" in str(err.value)
    missing = codec.missing_checkpoints((1, 2, 3))
    assert [p.name for p in missing] == [learned.checkpoint_file_name("mse", q) for q in (1, 2, 3)]
    assert learned.checkpoint_file_name("ms-ssim", 2).startswith("cheng2020_attn-ms-ssim-2-")


def test_pretrained_loading_path_with_a_local_checkpoint(c_psnr, empty_hub, photo):
    """A checkpoint in the hub folder under the zoo's file name is loaded (here: the seeded random network)."""
    random_codec = c_psnr
    empty_hub.mkdir(parents=True)
    torch.save(random_codec.model(1).state_dict(), empty_hub / learned.checkpoint_file_name("mse", 1))
    loaded = CompressAICodec("c_psnr", weights="pretrained")
    assert loaded.missing_checkpoints((1,)) == []
    img = photo[:64, :64]
    a, b = random_codec(img, 1), loaded(img, 1)
    assert b.info["weights"] == "pretrained"
    assert a.num_bits == b.num_bits and np.array_equal(a.decoded, b.decoded)


def test_corrupt_checkpoint_is_named(empty_hub, photo):
    empty_hub.mkdir(parents=True)
    path = empty_hub / learned.checkpoint_file_name("mse", 1)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CodecError, match="cannot read checkpoint"):
        CompressAICodec("c_psnr", weights="pretrained")(photo[:64, :64], 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["c_psnr", "c_ssim"])
def test_real_zoo_weights_if_cached(name, photo):
    codec = CompressAICodec(name, weights="pretrained")
    if codec.missing_checkpoints((1, 2, 3)):
        pytest.skip("compressai zoo checkpoints are not in the torch hub cache")
    results = [codec(photo, q) for q in (1, 2, 3)]
    bpp = [r.bpp() for r in results]
    assert bpp[0] < bpp[1] < bpp[2]
    assert psnr(results[0].decoded, photo) > 24.0


def test_zoo_file_names_known_without_compressai_match_its_urls():
    """The preflight names the checkpoints from a table; the table says what compressai's own model_urls say."""
    from compressai.zoo import image as zoo

    from moediffir.codecs import learned

    for (metric, quality), name in learned.ZOO_FILES.items():
        assert zoo.model_urls[learned.ARCHITECTURE][metric][quality].rsplit("/", 1)[-1] == name
