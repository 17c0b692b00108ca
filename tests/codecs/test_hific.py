"""Tests of the HiFiC codec (paper §3.5, footnote 1) and its networks (moediffir.codecs.hific_nets)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from repo_paths import REPO_ROOT

from moediffir.codecs.base import CodecError, CodecUnavailableError
from moediffir.codecs.hific import (
    CHECKPOINT_FILES,
    CONVERTED_FILES,
    LEVEL_ARCH,
    LEVELS,
    HiFiCCheckpointError,
    HiFiCCodec,
    check_state_dict,
    conditional_tables,
    expected_state_dict_shapes,
    factorized_tables,
    padded_size,
    rans_decode,
    rans_encode,
    scale_indexes,
)
from moediffir.codecs.hific_nets import FactorizedDensity, HiFiCModel, count_parameters, latent_likelihood
from moediffir.utils.io import read_image_rgb

FIXTURE = REPO_ROOT / "moediffir" / "fixtures" / "hific_state_dict_keys.json"


@pytest.fixture(scope="module")
def fixture() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def smoke_image() -> np.ndarray:
    path = REPO_ROOT / "data" / "smoke" / "smoke_test" / "kodim19.png"
    return read_image_rgb(path)  # (192, 128, 3)


@pytest.fixture(scope="module")
def random_codec() -> HiFiCCodec:
    return HiFiCCodec(weights_dir="unused", weights="random", device="cpu")


def _fixture_shapes(fixture: dict) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(s)) for k, s in fixture["model_state_dict"]]


# ----------------------------------------------------------------------------------- state-dict layout
@pytest.mark.parametrize("level", LEVELS)
def test_state_dict_equals_public_checkpoint_layout(fixture, level):
    ours = list(expected_state_dict_shapes(LEVEL_ARCH[level], with_discriminator=True).items())
    assert ours == _fixture_shapes(fixture)  # same keys, same order, same shapes
    spec = fixture["levels"][level]
    arch = LEVEL_ARCH[level]
    assert CHECKPOINT_FILES[level] == spec["file"]
    assert (arch.latent_channels, arch.hyper_channels, arch.n_residual_blocks) == (
        spec["latent_channels"], spec["hyper_channels"], spec["n_residual_blocks"])
    assert (arch.likelihood_type, arch.normalize_input_image) == (
        spec["likelihood_type"], spec["normalize_input_image"])


def test_counts_match_fixture(fixture):
    with torch.device("meta"):
        full = HiFiCModel(LEVEL_ARCH["low"], with_discriminator=True)
        coding = HiFiCModel(LEVEL_ARCH["low"], with_discriminator=False)
    counts = fixture["counts"]
    assert len(full.state_dict()) == counts["keys"] == 168
    assert len(full.state_dict()) - len(coding.state_dict()) == counts["discriminator_keys"]
    assert sum(v.numel() for v in full.state_dict().values()) == counts["numel"]
    assert count_parameters(coding) == counts["coding_numel"]


def test_check_state_dict_accepts_public_and_rejects_mismatch(fixture):
    arch = LEVEL_ARCH["med"]
    sd = {k: torch.empty(s, device="meta") for k, s in _fixture_shapes(fixture)}
    check_state_dict(sd, arch)  # the public layout
    check_state_dict({k: v for k, v in sd.items() if not k.startswith("Discriminator.")}, arch)  # without D

    bad = dict(sd)
    del bad["Generator.resblock_8.conv2.weight"]
    bad["Generator.resblock_9.conv1.weight"] = torch.empty(960, 960, 3, 3, device="meta")
    bad["Encoder.conv_block_out.1.bias"] = torch.empty(192, device="meta")
    with pytest.raises(HiFiCCheckpointError) as err:
        check_state_dict(bad, arch, source="x.pt")
    msg = str(err.value)
    assert "x.pt" in msg
    assert "missing keys (1): [Generator.resblock_8.conv2.weight]" in msg
    assert "unexpected keys (1): [Generator.resblock_9.conv1.weight]" in msg
    assert "Encoder.conv_block_out.1.bias: file (192,) vs expected (220,)" in msg

    partial_d = {k: v for k, v in sd.items() if k != "Discriminator.conv_out.bias"}
    with pytest.raises(HiFiCCheckpointError, match="Discriminator.conv_out.bias"):
        check_state_dict(partial_d, arch)


# --------------------------------------------------------------------------------------- entropy coding
@pytest.mark.parametrize("likelihood_type", ["gaussian", "logistic"])
def test_conditional_rans_is_lossless_and_near_likelihood(likelihood_type):
    g = torch.Generator().manual_seed(1)
    n = 20_000
    mean = torch.randn(n, generator=g) * 3.0
    scale = 0.2 * torch.exp(torch.rand(n, generator=g) * math.log(50.0))
    noise = torch.randn(n, generator=g) if likelihood_type == "gaussian" else torch.logit(torch.rand(n, generator=g))
    sym = torch.floor(noise * scale + 0.5)
    tables = conditional_tables(likelihood_type)
    idx = scale_indexes(scale)
    data = rans_encode(sym, idx, tables)
    assert torch.equal(rans_decode(data, idx, tables).float(), sym)
    lik_bits = -torch.log2(latent_likelihood(sym + mean, mean, scale, likelihood_type)).sum().item()
    assert 0.99 < 8 * len(data) / lik_bits < 1.03  # real coder within a few % of the ideal code length

    far = sym.clone()
    far[:10] = 10**6  # beyond every table: escape-coded, still lossless
    assert torch.equal(rans_decode(rans_encode(far, idx, tables), idx, tables).float(), far)


def test_factorized_rans_is_lossless_and_near_likelihood():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        density = FactorizedDensity(8)
    tables = factorized_tables(density)
    z = torch.randint(-25, 26, (1, 8, 24, 32), generator=torch.Generator().manual_seed(4)).float()
    idx = torch.arange(8, dtype=torch.int32)[:, None, None].expand(8, 24, 32)
    data = rans_encode(z[0], idx, tables)
    assert torch.equal(rans_decode(data, idx, tables).float(), z[0])
    lik_bits = -torch.log2(density.likelihood(z)).sum().item()
    assert 0.99 < 8 * len(data) / lik_bits < 1.03


def test_scale_indexes_pick_next_greater_table_scale():
    idx = scale_indexes(torch.tensor([0.0, 0.11, 0.1101, 255.9, 256.0, 1e6]))
    assert idx.tolist() == [0, 0, 1, 63, 63, 63]


# ------------------------------------------------------------------------------------------ the codec
@pytest.mark.parametrize("level", LEVELS)
def test_round_trip_random_weights(random_codec, smoke_image, level):
    res = random_codec(smoke_image, level)
    assert res.decoded.shape == smoke_image.shape and res.decoded.dtype == np.uint8
    assert res.num_bits > 0 and res.num_bits % 8 == 0
    assert res.num_bits == 8 * (res.info["latent_bytes"] + res.info["hyperlatent_bytes"])
    assert res.info["backend"] == "hific-pytorch"
    assert res.info["weights"] == "random" and res.info["checkpoint"] == "random"
    assert res.info["bits_source"] == "bitstream"
    assert res.info["likelihood_type"] == LEVEL_ARCH[level].likelihood_type
    assert res.info["likelihood_bits"] > 0


def test_odd_size_is_padded_and_cropped(random_codec):
    rgb = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    assert padded_size(37, 50) == (128, 128)
    assert padded_size(130, 200) == (192, 256)
    res = random_codec(rgb, "low")
    assert res.decoded.shape == (37, 50, 3)
    assert res.info["padded_size"] == [128, 128]


def test_deterministic(random_codec, smoke_image):
    crop = np.ascontiguousarray(smoke_image[:128, :128])
    a = random_codec(crop, "high")
    b = random_codec(crop.copy(), "high")
    assert a.num_bits == b.num_bits
    assert np.array_equal(a.decoded, b.decoded)
    # the levels are different random networks
    assert not np.array_equal(a.decoded, random_codec(crop, "low").decoded)


def test_fresh_codec_same_seed_same_result(random_codec, smoke_image):
    crop = np.ascontiguousarray(smoke_image[:128, :128])
    fresh = HiFiCCodec(weights_dir="unused", weights="random", max_cached_levels=1)
    a, b = random_codec(crop, "med"), fresh(crop, "med")
    assert a.num_bits == b.num_bits and np.array_equal(a.decoded, b.decoded)


def test_bad_level_and_weights(random_codec, smoke_image):
    with pytest.raises(CodecError, match="unknown level 'hi'"):
        random_codec(smoke_image, "hi")
    with pytest.raises(CodecError, match="weights='imagenet'"):
        HiFiCCodec("unused", weights="imagenet")


def test_missing_checkpoint_names_file_and_folder(tmp_path, smoke_image):
    codec = HiFiCCodec(weights_dir=tmp_path, weights="pretrained")
    assert codec.missing_checkpoints() == [tmp_path / "hific_low.safetensors", tmp_path / "hific_med.safetensors",
                                           tmp_path / "hific_hi.safetensors"]
    with pytest.raises(CodecUnavailableError) as err:
        codec(smoke_image, "high")
    msg = str(err.value)
    assert "'hific_hi.safetensors'" in msg and str(tmp_path) in msg and "Zenodo record 4026003" in msg
    assert f"moediffir convert-hific {tmp_path / 'hific_hi.pt'}" in msg


def test_mismatching_checkpoint_file_is_rejected_by_the_conversion(tmp_path):
    from moediffir.codecs.hific import convert_checkpoint

    torch.save({"model_state_dict": {"foo.weight": torch.zeros(3)}, "args": {}}, tmp_path / "hific_low.pt")
    with pytest.raises(HiFiCCheckpointError) as err:
        convert_checkpoint(tmp_path / "hific_low.pt")
    msg = str(err.value)
    assert "hific_low.pt" in msg and "missing keys (148)" in msg and "unexpected keys (1): [foo.weight]" in msg
    assert not (tmp_path / "hific_low.safetensors").exists()


class _PublicArgs:
    """Like the public files' ``args`` (an object, not a plain dict): only full unpickling builds it."""

    def __init__(self, **kwargs) -> None:
        self.__dict__.update(kwargs)


def test_public_pickle_converts_once_then_loads_from_safetensors(tmp_path, fixture, smoke_image, capsys):
    """A file laid out like the public hific_med.pt (random values, ``args`` an object) is refused until
    ``moediffir convert-hific`` converts it (saying what it trusts); then the codec reads the converted file."""
    from moediffir.cli import main
    from moediffir.codecs.hific import read_converted
    from moediffir.utils.io import UnsafeWeightsError, load_weights_only

    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) * 0.02 for k, s in _fixture_shapes(fixture)}
    disc = {k[len("Discriminator."):]: v for k, v in sd.items() if k.startswith("Discriminator.")}
    spec = fixture["levels"]["med"]
    args = {k: spec[k] for k in ("latent_channels", "n_residual_blocks", "likelihood_type", "normalize_input_image")}
    args.update(use_channel_norm=True, use_latent_mixture_model=False, sample_noise=False, regime="med",
                model_type="compression_gan", image_dims=[3, 256, 256])
    public = tmp_path / "hific_med.pt"
    torch.save({"model_state_dict": sd, "args": _PublicArgs(**args), "epoch": 1, "steps": 2,
                "compression_optimizer_state_dict": {}, "hyperprior_optimizer_state_dict": {},
                "discriminator_state_dict": disc, "discriminator_optimizer_state_dict": {}}, public)
    probe = "Generator.resblock_8.conv2.weight"
    expected_probe = sd[probe].clone()
    del sd, disc
    with pytest.raises(UnsafeWeightsError):
        load_weights_only(public)  # a full pickle, as the public files are
    with pytest.raises(CodecUnavailableError, match="convert-hific"):
        HiFiCCodec(weights_dir=tmp_path, weights="pretrained")

    assert main(["convert-hific", str(public)]) == 0
    out = capsys.readouterr().out
    assert f"trusting {public}" in out and "sha256" in out and "hific_med.safetensors" in out
    state, arch = read_converted(tmp_path / "hific_med.safetensors")
    assert (arch.likelihood_type, arch.latent_channels) == (spec["likelihood_type"], spec["latent_channels"])
    assert not any(k.startswith("Discriminator.") for k in state)
    del state

    codec = HiFiCCodec(weights_dir=tmp_path, weights="pretrained")
    assert codec.missing_checkpoints() == [tmp_path / "hific_low.safetensors", tmp_path / "hific_hi.safetensors"]
    crop = np.ascontiguousarray(smoke_image[:128, :128])
    res = codec(crop, "med")
    assert res.decoded.shape == crop.shape and res.num_bits > 0
    assert res.info["weights"] == "pretrained" and res.info["checkpoint"] == "hific_med.safetensors"
    model = codec._level("med").model
    assert not hasattr(model, "Discriminator")
    assert torch.equal(model.state_dict()[probe], expected_probe)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())


# ----------------------------------------------------------------------------------------- real weights
def _real_dir() -> Path | None:
    d = os.environ.get("MOEDIFFIR_HIFIC_DIR", "")  # the public files, converted by `moediffir convert-hific`
    if not d or not all((Path(d) / f).is_file() for f in CONVERTED_FILES.values()):
        return None
    return Path(d)


@pytest.mark.skipif(_real_dir() is None,
                    reason="set MOEDIFFIR_HIFIC_DIR to a folder with the public checkpoints, converted")
def test_bpp_ordering_with_public_checkpoints(smoke_image):
    codec = HiFiCCodec(weights_dir=_real_dir(), weights="pretrained", max_cached_levels=1)
    bpp = {}
    for level in LEVELS:
        res = codec(smoke_image, level)
        bpp[level] = res.bpp()
        assert 0.97 < res.num_bits / res.info["likelihood_bits"] < 1.05  # coder close to the model's estimate
        psnr = 10 * np.log10(255.0**2 / np.mean((res.decoded.astype(float) - smoke_image) ** 2))
        assert psnr > 20.0, f"{level}: PSNR {psnr:.2f} dB is too low for a trained HiFiC model"
    assert bpp["low"] < bpp["med"] < bpp["high"], bpp


def test_bits_do_not_depend_on_the_callers_thread_count(random_codec, smoke_image):
    """``data build --workers 1`` codes in a process with every thread, ``--workers 2`` in processes with one:
    the codec runs its networks with one fixed thread count, so both give the same bits."""
    seen = []
    hook = random_codec._level("low").model.Encoder.register_forward_hook(
        lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(random_codec(smoke_image[:64, :64], "low"))
            assert torch.get_num_threads() == threads  # the caller's setting is given back
    finally:
        torch.set_num_threads(before)
        hook.remove()
    assert seen == [random_codec.threads] * 2
    assert results[0].num_bits == results[1].num_bits
    assert np.array_equal(results[0].decoded, results[1].decoded)
