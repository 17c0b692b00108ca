"""Atomic writes and image reading (moediffir.utils.io)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from moediffir.utils.io import (
    ImageReadError,
    atomic_save_png,
    atomic_write_bytes,
    atomic_write_json,
    read_image_rgb,
    sha256_file,
)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(p, b"old")
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    assert [q.name for q in p.parent.iterdir()] == ["f.bin"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f.json"
    atomic_write_json(p, {"a": 1})
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_json(p, {"a": 2})
    monkeypatch.undo()
    assert p.read_text().strip().startswith("{") and '"a": 1' in p.read_text()
    assert not list(tmp_path.glob("*.tmp"))


def test_png_round_trip_and_checksum(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    p = atomic_save_png(tmp_path / "a.png", img)
    assert np.array_equal(read_image_rgb(p), img)
    q = atomic_save_png(tmp_path / "b.png", img)
    assert sha256_file(p) == sha256_file(q)  # deterministic encoding


def test_grayscale_rgba_16bit_palette(tmp_path):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_image_rgb(tmp_path / "g.png")
    assert out.shape == (12, 10, 3) and np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)

    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0  # fully transparent -> white background
    rgba[0, 0, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image_rgb(tmp_path / "a.png")
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[1, 1]) == (255, 255, 255)

    g16 = (np.arange(6 * 7, dtype=np.uint16).reshape(6, 7) * 1500).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = read_image_rgb(tmp_path / "g16.png")
    assert out.dtype == np.uint8
    assert np.array_equal(out[..., 1], np.round(g16 / 65535 * 255).astype(np.uint8))

    pal = Image.fromarray(gray, "L").convert("P")
    pal.save(tmp_path / "p.png")
    assert read_image_rgb(tmp_path / "p.png").shape == (12, 10, 3)


@pytest.mark.parametrize(
    "content, needle",
    [(b"", "empty"), (b"this is not an image", "not a readable image"), (None, "file not found")],
)
def test_bad_files_are_named(tmp_path, content, needle):
    p = tmp_path / "bad.png"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ImageReadError, match=needle) as exc:
        read_image_rgb(p)
    assert "bad.png" in str(exc.value)


def test_truncated_png_is_named(tmp_path):
    rng = np.random.default_rng(1)
    p = atomic_save_png(tmp_path / "t.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png"):
        read_image_rgb(p)


def test_csv_text_and_atomic_write_csv(tmp_path):
    import pandas as pd

    from moediffir.utils.io import atomic_write_csv, csv_text

    df = pd.DataFrame({"task": ["jpeg_q10", "hevc_qp37"], "psnr": [1 / 3, float("nan")]}, index=[5, 9])
    text = csv_text(df)
    assert text == "task,psnr\njpeg_q10,0.3333333333333333\nhevc_qp37,\n"  # no index, "\n" endings, full digits
    path = atomic_write_csv(tmp_path / "t.csv", df)
    assert path.read_bytes() == text.encode()
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_files_get_the_mode_a_plain_open_gives(tmp_path, umask):
    """Atomic writes go through an owner-only temporary file; the result must still be readable by others
    as the umask allows (a shared cluster machine: the benchmark, restored images and models)."""
    from moediffir.utils.io import atomic_directory, atomic_write_json

    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
        (tmp_path / "plain_dir").mkdir()
        png = atomic_save_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
        js = atomic_write_json(tmp_path / "config.json", {"a": 1})
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "w.bin").write_bytes(b"w")
    finally:
        os.umask(old)
    plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert plain == 0o666 & ~umask
    assert png.stat().st_mode & 0o777 == plain and js.stat().st_mode & 0o777 == plain
    assert (tmp_path / "model").stat().st_mode & 0o777 == (tmp_path / "plain_dir").stat().st_mode & 0o777


def _modes(folder) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mode & 0o777 for p in folder.rglob("*")}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_safetensors_written_in_an_atomic_directory_get_the_umask_mode(tmp_path, umask):
    """safetensors' ``save_file`` (and so diffusers' ``save_pretrained``) writes owner-only files whatever the
    umask; written through :func:`atomic_directory`, every file and folder gets the mode the umask gives."""
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from moediffir.utils.io import atomic_directory

    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), norm_num_groups=8, latent_channels=2)
    old = os.umask(umask)
    try:
        save_file({"x": torch.zeros(2)}, str(tmp_path / "bare.safetensors"))
        with atomic_directory(tmp_path / "model") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp / "null_context.safetensors"))
            vae.save_pretrained(tmp / "backbone" / "vae")
    finally:
        os.umask(old)
    assert (tmp_path / "bare.safetensors").stat().st_mode & 0o777 == 0o600  # what the writer alone gives
    modes = _modes(tmp_path / "model")
    assert {"null_context.safetensors", "backbone/vae/diffusion_pytorch_model.safetensors"} <= set(modes)
    for name, mode in modes.items():
        expected = 0o777 & ~umask if (tmp_path / "model" / name).is_dir() else 0o666 & ~umask
        assert mode == expected, f"{name}: {oct(mode)}"


def test_every_file_of_a_model_folder_gets_the_umask_mode(tmp_path):
    from moediffir.config import resolve_config
    from moediffir.weights.model_folder import build_fresh_model_folder

    old = os.umask(0o022)
    try:
        folder = build_fresh_model_folder(tmp_path / "model", resolve_config("smoke"))
    finally:
        os.umask(old)
    modes = _modes(folder)
    weights = [n for n in modes if n.endswith(".safetensors")]
    assert len(weights) >= 5, weights  # null context, denoiser parts, compensator, backbone, ...
    assert {n: m for n, m in modes.items() if (folder / n).is_file() and m != 0o644} == {}


def test_check_writable_dir_names_the_folder_and_leaves_no_trace(tmp_path):
    from moediffir.utils.io import OutputNotWritableError, check_writable_dir

    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputNotWritableError, match="afile is a file"):
        check_writable_dir(tmp_path / "afile" / "out")
    assert check_writable_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the check made nothing that stays


def test_check_writable_dir_survives_a_second_process_checking_the_same_new_folder(tmp_path, monkeypatch):
    """Two ranks check one new output folder at once: whichever removes it first, neither check fails."""
    import shutil
    import tempfile

    from moediffir.utils import io

    target = tmp_path / "runs" / "smoke"
    real_mkstemp = tempfile.mkstemp
    calls = {"n": 0}

    def other_rank_removes_it_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:  # the other rank's check finished and removed the folder between mkdir and probe
            shutil.rmtree(tmp_path / "runs")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(io.tempfile, "mkstemp", other_rank_removes_it_first)
    assert io.check_writable_dir(target) == target
    assert calls["n"] == 2  # made the folder again and probed it

    real_rmdir = io.Path.rmdir

    def already_gone(self):
        real_rmdir(self)
        raise FileNotFoundError(2, "No such file or directory", str(self))

    monkeypatch.setattr(io.tempfile, "mkstemp", real_mkstemp)
    monkeypatch.setattr(io.Path, "rmdir", already_gone)
    assert io.check_writable_dir(tmp_path / "other" / "smoke") == tmp_path / "other" / "smoke"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused_before_work(tmp_path):
    from moediffir.utils.io import OutputNotWritableError, check_writable_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputNotWritableError, match="cannot write there"):
            check_writable_dir(ro / "bench")
    finally:
        ro.chmod(0o755)
