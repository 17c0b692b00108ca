"""``moediffir restore`` (moediffir.restore_images): odd sizes, a corrupt file among good ones, no overwrite.

The model folder holds untrained smoke parts: these tests check the command, not restoration quality.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from repo_paths import REPO_ROOT

from moediffir.cli import main
from moediffir.config import resolve_config
from moediffir.restore_images import collect_inputs
from moediffir.weights.model_folder import build_fresh_model_folder

SMOKE_TEST = REPO_ROOT / "data" / "smoke" / "smoke_test"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_fresh_model_folder(tmp_path_factory.mktemp("restore") / "model", resolve_config("smoke"))


def _run(*argv: str) -> int:
    return main(list(argv))


@pytest.fixture
def inputs(tmp_path) -> Path:
    """Two bundled smoke images (one 151 x 101), a grayscale JPEG of odd size and a corrupt PNG."""
    folder = tmp_path / "in"
    folder.mkdir()
    pngs = sorted(SMOKE_TEST.glob("*.png"))
    odd = next(p for p in pngs if Image.open(p).size == (151, 101))
    other = next(p for p in pngs if p != odd)
    shutil.copy(odd, folder / "odd.png")
    shutil.copy(other, folder / "b.png")
    Image.fromarray((np.random.RandomState(0).rand(33, 70) * 255).astype(np.uint8)).save(folder / "gray.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    return folder


def test_restores_every_readable_image_at_its_size_and_names_the_corrupt_one(model, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = _run("restore", str(inputs), "-o", str(out), "--model", str(model), "--steps", "1", "--device", "cpu",
                "--seed", "3", "--color-fix", "wavelet")
    err = capsys.readouterr().err
    assert code == 1  # one input failed
    assert sorted(p.name for p in out.iterdir()) == ["b.png", "gray.png", "odd.png"]
    for name in ("b", "gray", "odd"):
        src = next(inputs.glob(f"{name}.*"))
        with Image.open(src) as a, Image.open(out / f"{name}.png") as b:
            assert a.size == b.size and b.mode == "RGB"
    assert f"skipping {inputs / 'broken.png'}" in err
    assert "restored 3 of 4" in err and "1 failed" in err
    assert "random weights" in err  # an untrained/random model is never passed off as a restorer


def test_same_seed_reproduces_and_no_overwrite_without_flag(model, inputs, tmp_path, capsys):
    (inputs / "broken.png").unlink()
    out = tmp_path / "out"
    base = ["restore", str(inputs / "b.png"), str(inputs / "odd.png"), "-o", str(out), "--model", str(model),
            "--steps", "1", "--device", "cpu"]
    assert _run(*base) == 0
    first = (out / "odd.png").read_bytes()
    capsys.readouterr()
    assert _run(*base) == 2  # refuses before any work, naming the file
    assert f"output exists (pass --overwrite to replace): {out / 'b.png'}" in capsys.readouterr().err
    assert (out / "odd.png").read_bytes() == first
    assert _run(*base, "--overwrite") == 0
    assert (out / "odd.png").read_bytes() == first  # same seed, same image
    assert _run(*base, "--overwrite", "--seed", "9") == 0
    assert (out / "odd.png").read_bytes() != first


def test_bad_arguments_and_name_clashes_fail_before_work(model, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    Image.open(inputs / "b.png").save(inputs / "b.jpg")
    assert _run("restore", str(inputs), "-o", str(out), "--model", str(model)) == 2
    assert "same output" in capsys.readouterr().err
    assert _run("restore", str(inputs / "b.png"), "-o", str(out), "--model", str(tmp_path / "no_model")) == 2
    assert "no_model" in capsys.readouterr().err
    assert _run("restore", str(inputs / "b.png"), "-o", str(out), "--model", str(model), "--tile-size", "100") == 2
    assert "tile_size" in capsys.readouterr().err
    assert _run("restore", str(inputs / "b.png"), "-o", str(out), "--model", str(model), "--steps", "0") == 2
    assert _run("restore", str(tmp_path / "missing.png"), "-o", str(out), "--model", str(model)) == 2
    assert "input not found" in capsys.readouterr().err
    assert not out.exists()


def test_plain_decoder_and_collect_inputs(model, inputs, tmp_path):
    sub = inputs / "sub"
    sub.mkdir()
    shutil.copy(inputs / "b.png", sub / "c.png")
    (inputs / "notes.txt").write_text("not an image")
    found = collect_inputs([inputs])
    assert [p.name for p in found] == ["b.png", "broken.png", "gray.jpg", "odd.png"]  # folders: image suffixes only
    assert "c.png" in [p.name for p in collect_inputs([inputs], recursive=True)]
    out = tmp_path / "out"
    assert _run("restore", str(sub / "c.png"), "-o", str(out), "--model", str(model), "--steps", "1",
                "--decoder", "vae", "--tile-size", "128") == 0
    assert (out / "c.png").is_file()


def _digests(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_folder_holding_the_inputs_is_refused_and_the_originals_kept(model, inputs, capsys, overwrite):
    """``restore inplace -o inplace --overwrite`` replaced the photos with their restorations: an output folder
    that is an input folder, or that holds an input file (even in a sub-folder), is refused, naming both."""
    (inputs / "broken.png").unlink()
    sub = inputs / "sub"
    sub.mkdir()
    shutil.copy(inputs / "b.png", sub / "c.png")
    before = _digests(inputs)
    flag = ["--overwrite"] if overwrite else []
    argv = ["--model", str(model), "--steps", "1", "--device", "cpu", *flag]
    assert _run("restore", str(inputs), "-o", str(inputs), *argv) == 2
    assert f"output folder {inputs} is the input folder {inputs}" in capsys.readouterr().err
    assert _run("restore", str(inputs / "b.png"), "-o", str(inputs), *argv) == 2
    assert f"input {inputs / 'b.png'} lies inside the output folder {inputs}" in capsys.readouterr().err
    assert _run("restore", str(sub), "-o", str(inputs), *argv) == 2  # the output folder holds the input folder
    assert f"input {sub / 'c.png'} lies inside the output folder {inputs}" in capsys.readouterr().err
    assert _digests(inputs) == before


def test_restore_images_refuses_in_place_before_touching_the_pipeline(inputs):
    from moediffir.restore_images import RestoreError, restore_images

    with pytest.raises(RestoreError, match="is the input folder"):
        restore_images([inputs], inputs, pipe=None, overwrite=True)  # pipe=None: it never gets that far


def test_half_precision_on_the_cpu_is_one_line_before_the_model_loads(model, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    for dtype in ("fp16", "bf16"):
        assert _run("restore", str(inputs / "b.png"), "-o", str(out), "--model", str(model), "--device", "cpu",
                    "--dtype", dtype) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--dtype {dtype} needs a CUDA device" in err[0], err
    from moediffir.errors import DeviceError
    from moediffir.weights.model_folder import load_model_parts

    with pytest.raises(DeviceError, match="needs a CUDA device"):  # the loader says so too, as the kit's error
        load_model_parts(model, device="cpu", dtype="fp16")
    assert not out.exists()


def test_each_image_is_seeded_as_the_evaluation_seeds_it_and_the_profile_finds_the_model(model, inputs, tmp_path):
    """``--profile`` (with ``--set runs_dir=``) finds ``runs/<profile>/model``; ``--set sample.*`` reaches the model
    folder's config; each image's noise comes from ``--seed`` and its stem, whichever images run beside it."""
    import torch

    from moediffir.pipelines import load_pipeline
    from moediffir.restore_images import restore_seed
    from moediffir.utils.io import read_image_rgb

    runs = tmp_path / "runs"
    shutil.copytree(model, runs / "smoke" / "model")
    alone, together = tmp_path / "alone", tmp_path / "together"
    args = ("--steps", "1", "--device", "cpu", "--tile-size", "128", "--profile", "smoke", "--set", f"runs_dir={runs}",
            "--set", "sample.color_fix=none")
    assert _run("restore", str(inputs / "b.png"), "-o", str(alone), *args) == 0
    assert _run("restore", str(inputs / "odd.png"), str(inputs / "b.png"), "-o", str(together), *args) == 0
    assert (alone / "b.png").read_bytes() == (together / "b.png").read_bytes()
    pipe = load_pipeline(model, device="cpu", overrides={"sample.color_fix": "none"})
    pipe.set_progress_bar_config(disable=True)
    want = pipe(read_image_rgb(inputs / "b.png"), num_inference_steps=1, tile_size=128, output_type="np",
                generator=torch.Generator().manual_seed(restore_seed(0, "b"))).images[0]
    np.testing.assert_array_equal(read_image_rgb(alone / "b.png"), want)
    assert restore_seed(0, "b") != restore_seed(0, "odd") != restore_seed(1, "odd")
    assert _run("restore", str(inputs / "b.png"), "-o", str(tmp_path / "none"), "--profile", "smoke",
                "--set", f"runs_dir={tmp_path / 'nowhere'}") != 0  # no model folder there: refused, by name
