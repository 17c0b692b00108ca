"""``moediffir doctor``: every missing dataset and weight file of a profile, with where it goes, before work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from repo_paths import REPO_ROOT as REPO

from moediffir.config import resolve_config
from moediffir.doctor import NEEDS, preflight, require
from moediffir.errors import MissingInputsError


def _paper(tmp_path: Path):
    return resolve_config("paper", {"data.root": str(tmp_path / "data"),
                                    "eval.metric_weights_dir": str(tmp_path / "hub"),
                                    "model.sd_source": str(tmp_path / "sd21")})


def test_paper_profile_lists_every_dataset_and_weight_file_with_its_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = _paper(tmp_path)
    report = preflight(cfg, NEEDS)
    names = [m.name for m in report.missing]
    for dataset in (*cfg.data.train_sets, *cfg.data.test_sets):
        assert f"dataset {dataset}" in names
    text = report.text()
    for expected in ("daclip_ViT-B-32.pt", "RN50.pt", "sd21", "alexnet-owt-7be5be79.pth", "MANIQA_PIPAL",
                     "cheng2020_attn-mse-1", "cheng2020_attn-ms-ssim-3", "hific_low.pt", "hific_hi.pt",
                     str(tmp_path / "data" / "datasets" / "ICB")):
        assert expected in text, expected
    assert len({m.path for m in report.missing}) == len(report.missing)  # each listed once
    assert all(m.path and m.source for m in report.missing)  # where it goes, how to get it


def test_a_present_input_is_not_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = _paper(tmp_path)
    live1 = tmp_path / "data" / "datasets" / "LIVE1"
    live1.mkdir(parents=True)
    (live1 / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "data" / "weights").mkdir()
    (tmp_path / "data" / "weights" / "RN50.pt").write_bytes(b"x")
    names = [m.name for m in preflight(cfg, NEEDS).missing]
    assert "dataset LIVE1" not in names and "dataset ICB" in names
    assert not any("RN50 image encoder" in n for n in names)


def test_smoke_needs_nothing_but_its_benchmark(tmp_path):
    cfg = resolve_config("smoke", {"data.out_dir": str(tmp_path / "bench")})
    assert preflight(cfg, ("datasets", "model_weights", "metric_weights", "codec_weights")).ok
    missing = preflight(cfg, ("benchmark",)).missing
    assert [m.path for m in missing] == [str(tmp_path / "bench" / "manifest.csv")]


def test_require_raises_one_error_naming_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    try:
        require(_paper(tmp_path), ("benchmark", "model_weights"))
    except MissingInputsError as exc:
        first = str(exc).splitlines()[0]
        assert "manifest.csv" in first and "daclip_ViT-B-32.pt" in first and "DF2K" in first
        assert len(exc.missing) >= 8
    else:
        raise AssertionError("nothing reported missing")


def test_doctor_command_reads_no_network_libraries(tmp_path):
    """The preflight is file checks only: it imports neither torch, pandas nor the codec and metric libraries
    (that is what keeps it to a moment; bench/ measures the time)."""
    code = ("import sys; from moediffir.cli import main; rc = main(['doctor', '--profile', 'paper', '--set', "
            f"'data.root={tmp_path}']); heavy = [m for m in ('torch', 'pandas', 'compressai', 'lpips', 'pyiqa') "
            "if m in sys.modules]; print('HEAVY', heavy); sys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=str(REPO), TORCH_HOME=str(tmp_path / "torch"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         check=False)
    assert res.returncode == 2, res.stderr[-2000:]  # something is missing
    assert "HEAVY []" in res.stdout, res.stdout[-500:]
    assert "dataset DF2K" in res.stdout and "hific_low.pt" in res.stdout


def test_hific_is_checked_as_the_converted_files_the_codec_reads(tmp_path):
    """The codec reads ``hific_<level>.safetensors``; a public ``.pt`` alone is named with the command that
    converts it, and a converted file counts as present whatever else lies there."""
    cfg = resolve_config("smoke", {"data.root": str(tmp_path / "data"), "data.codecs": ["hific"],
                                   "data.learned_weights": "pretrained"})
    folder = tmp_path / "data" / "weights" / "hific"
    folder.mkdir(parents=True)
    (folder / "hific_low.pt").write_bytes(b"pickle")
    (folder / "hific_med.safetensors").write_bytes(b"converted")
    missing = {m.path: m for m in preflight(cfg, ("codec_weights",)).missing}
    assert set(missing) == {str(folder / "hific_low.safetensors"), str(folder / "hific_hi.safetensors")}
    low = missing[str(folder / "hific_low.safetensors")].source
    assert f"moediffir convert-hific {folder / 'hific_low.pt'}" in low and "unconverted" in low
    high = missing[str(folder / "hific_hi.safetensors")].source
    assert "hific_hi.pt" in high and f"moediffir convert-hific {folder / 'hific_hi.pt'}" in high
