"""The bundled ``mini`` photos are the native-resolution crops that moediffir.data.mini_bundle names."""

from __future__ import annotations

import numpy as np
from repo_paths import REPO_ROOT as REPO

from moediffir.data import mini_bundle as B
from moediffir.utils.io import read_image_rgb

MINI = REPO / "data" / "mini"


def test_crop_boxes_lie_inside_the_photo_and_do_not_repeat():
    for width, height in ((768, 512), (512, 768), (451, 300), (128, 128)):
        boxes = B.crop_boxes(width, height, 128, 4)
        assert len(boxes) == 4
        for left, top, right, bottom in boxes:
            assert 0 <= left and right <= width and 0 <= top and bottom <= height
            assert (right - left, bottom - top) == (128, 128)
        if min(width, height) >= 256:
            assert len(set(boxes)) == 4
    assert B.centre_box(768, 512, (192, 128)) == (288, 192, 480, 320)
    assert B.centre_box(512, 768, (192, 128)) == (192, 288, 320, 480)  # portrait: turned


def test_bundle_holds_the_planned_files_and_keeps_the_test_photos_out_of_training():
    train = sorted(p.name for p in (MINI / "mini_train").glob("*.png"))
    test = sorted(p.name for p in (MINI / "mini_test").glob("*.png"))
    assert len(train) == len(B.TRAIN_KODAK) * B.CROPS_PER_KODAK + 2 * len(B.SKIMAGE_PHOTOS)
    assert test == [f"kodim{k:02d}.png" for k in B.TEST_KODAK]
    assert not {f"kodim{k:02d}" for k in B.TEST_KODAK} & {n.split("_")[0] for n in train}
    for name in train:
        assert read_image_rgb(MINI / "mini_train" / name).shape == (B.TRAIN_CROP, B.TRAIN_CROP, 3)
    for name in test:
        assert sorted(read_image_rgb(MINI / "mini_test" / name).shape[:2]) == sorted(B.TEST_CROP)
    size = sum(p.stat().st_size for p in MINI.rglob("*.png"))
    assert size < 5 * 2**20  # a few MB


def test_bundle_is_the_native_resolution_crops_of_the_originals(shared_datasets):
    plan = B.bundle_plan(shared_datasets / "kodak24")
    assert len(plan) == len(list(MINI.rglob("*.png")))
    for src, box, rel in plan:
        assert np.array_equal(read_image_rgb(MINI / rel), B.crop_pixels(src, box)), rel
