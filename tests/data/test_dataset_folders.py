"""Dataset folders and the import check (data/README.md, paper §4.1)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from moediffir.data.dataset_folders import (
    CHECKSUMS_NAME,
    DATASETS,
    DatasetImportError,
    check_archive,
    check_dataset,
    import_dataset,
    read_checksums,
)
from moediffir.data.sources import DatasetMissingError, list_sources


def _images(folder, names, size=(24, 16), mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for n in names:
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        (img.convert("L") if mode == "L" else img).save(folder / n)
    return folder


def test_known_datasets_are_the_papers():
    assert {"DF2K", "DIV2K_valid", "LIVE1", "Classic5", "BSDS500", "ICB"} == set(DATASETS)
    assert DATASETS["DF2K"].expected_images == 800 + 2650
    assert DATASETS["Classic5"].grayscale
    for info in DATASETS.values():
        for algo, digest, _, source in info.archives.values():
            assert algo == "sha256" and len(digest) == 64 and source  # every checksum names its source


@pytest.mark.parametrize("mode", ["link", "copy"])
def test_import_merges_sources_and_writes_checksums(tmp_path, mode):
    a = _images(tmp_path / "dl" / "DIV2K_train_HR", ["0001.png", "0002.png"])
    b = _images(tmp_path / "dl" / "Flickr2K_HR", ["000001.png"], mode="L")
    check = import_dataset("DF2K", [a, b], tmp_path / "datasets", mode=mode)
    dest = tmp_path / "datasets" / "DF2K"
    assert check.n_images == 3 and check.ok
    assert any("3450" in w for w in check.warnings)  # count differs from the paper's DF2K
    assert sorted(p.name for p in dest.glob("*.png")) == ["000001.png", "0001.png", "0002.png"]
    assert (dest / "0001.png").is_symlink() == (mode == "link")
    sums = read_checksums(dest / CHECKSUMS_NAME)
    assert sums["0001.png"] == hashlib.sha256((a / "0001.png").read_bytes()).hexdigest()
    assert [s.stem for s in list_sources(tmp_path / "datasets", "DF2K")] == ["000001", "0001", "0002"]
    assert check_dataset(dest).ok


def test_check_finds_bad_files_and_changed_files(tmp_path):
    src = _images(tmp_path / "dl", ["a.png", "b.png", "c.png"])
    import_dataset("LIVE1", [src], tmp_path / "datasets", mode="copy")
    dest = tmp_path / "datasets" / "LIVE1"
    (dest / "b.png").write_bytes((dest / "b.png").read_bytes()[:50])  # truncated
    (dest / "c.png").unlink()
    res = check_dataset(dest, decode=True)
    assert not res.ok
    assert any("b.png" in b for b in res.bad)
    assert any("c.png" in c and "missing" in c for c in res.checksum_mismatch)
    assert any("b.png" in c and "differs" in c for c in res.checksum_mismatch)
    assert "29" in " ".join(res.warnings)  # LIVE1 has 29 images
    assert "PROBLEMS" in res.summary()


def test_import_errors(tmp_path):
    with pytest.raises(DatasetImportError, match="not a folder"):
        import_dataset("ICB", [tmp_path / "missing"], tmp_path / "datasets")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetImportError, match="no image files"):
        import_dataset("ICB", [tmp_path / "empty"], tmp_path / "datasets")
    a = _images(tmp_path / "x", ["same.png"])
    b = _images(tmp_path / "y", ["same.png"])
    with pytest.raises(DatasetImportError, match="both become"):
        import_dataset("ICB", [a, b], tmp_path / "datasets")
    with pytest.raises(DatasetImportError, match="mode"):
        import_dataset("ICB", [a], tmp_path / "datasets", mode="move")


def test_missing_set_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DatasetMissingError, match=r"LIVE1.*data/README.md.*moediffir data import LIVE1"):
        list_sources(tmp_path, "LIVE1")
    (tmp_path / "ICB").mkdir()
    with pytest.raises(DatasetMissingError, match="no image files"):
        list_sources(tmp_path, "ICB")


def test_same_stem_twice_is_an_error(tmp_path):
    _images(tmp_path / "S", ["a.png"])
    Image.new("RGB", (4, 4)).save(tmp_path / "S" / "a.jpg")
    with pytest.raises(ValueError, match="same output stem|both map"):
        list_sources(tmp_path, "S")


def test_check_archive(tmp_path):
    f = tmp_path / "toy.zip"
    f.write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    known = {"toy.zip": ("sha256", digest, 3, "unit test")}
    assert "matches" in check_archive(f, known)
    with pytest.raises(DatasetImportError, match="size"):
        check_archive(f, {"toy.zip": ("sha256", digest, 4, "unit test")})
    with pytest.raises(DatasetImportError, match="differs"):
        check_archive(f, {"toy.zip": ("sha256", "0" * 64, None, "unit test")})
    assert "no published checksum" in check_archive(f)  # unknown file: said, not invented


def test_bundled_smoke_set_is_intact(repo_root):
    train = check_dataset(repo_root / "data" / "smoke" / "smoke_train", decode=True)
    test = check_dataset(repo_root / "data" / "smoke" / "smoke_test", decode=True)
    assert train.ok and train.n_images == 6 and test.ok and test.n_images == 3
    assert "151x101" in test.sizes
