"""The bundled ``mini`` photos: native-resolution crops of Kodak24 and scikit-image photos (paper §3.5, §4.1).

The paper trains on DF2K and tests on full-resolution photos; compression artefacts live at the pixel scale of
the original, so the ``mini`` profile uses crops at native resolution, never downscaled photos. This module
says exactly which crops the bundle in ``data/mini`` holds and rebuilds them from the originals::

    python -m moediffir.data.mini_bundle /path/to/kodak24 data/mini

- ``mini_train/``: :data:`TRAIN_KODAK` (18 Kodak photos), :data:`CROPS_PER_KODAK` crops of
  :data:`TRAIN_CROP` px each at fixed positions (:func:`crop_boxes`), plus two crops of each scikit-image
  photo in :data:`SKIMAGE_PHOTOS` (from the installed ``skimage/data`` folder).
- ``mini_test/``: one centre crop of :data:`TEST_CROP` (width, height) of each of :data:`TEST_KODAK`, held out
  (stage 0 included).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TRAIN_KODAK = (1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19, 20, 22, 24)
TEST_KODAK = (2, 7, 12, 17, 21, 23)
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")
TRAIN_CROP = 128  # square training crops (the prior trains on random 64-px crops of them)
CROPS_PER_KODAK = 4
TEST_CROP = (192, 128)  # (width, height) of the landscape test crops; portraits are (height, width)


def crop_boxes(width: int, height: int, size: int, count: int) -> list[tuple[int, int, int, int]]:
    """``count`` (<= 6) ``size``-px boxes ``(left, top, right, bottom)`` spread over a ``width x height`` photo:
    the centres of a 3x2 (landscape) or 2x3 (portrait) grid of cells, taken in a fixed order."""
    cols, rows = (3, 2) if width >= height else (2, 3)
    order = [(0, 0), (cols - 1, rows - 1), (cols - 1, 0), (0, rows - 1), (1, 0), (1, rows - 1)]
    boxes = []
    for c, r in order[:count]:
        cx, cy = (c + 0.5) * width / cols, (r + 0.5) * height / rows
        left = int(min(max(round(cx - size / 2), 0), width - size))
        top = int(min(max(round(cy - size / 2), 0), height - size))
        boxes.append((left, top, left + size, top + size))
    return boxes


def centre_box(width: int, height: int, crop: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centre box of ``crop`` (landscape ``(w, h)``; swapped for a portrait photo)."""
    cw, ch = crop if width >= height else crop[::-1]
    left, top = (width - cw) // 2, (height - ch) // 2
    return left, top, left + cw, top + ch


def bundle_plan(kodak_dir: str | Path) -> list[tuple[Path, tuple[int, int, int, int], str]]:
    """``(source file, box, bundle path)`` of every crop of the bundle, in a fixed order."""
    from PIL import Image

    kodak_dir = Path(kodak_dir)
    plan = []
    for k in TRAIN_KODAK:
        src = kodak_dir / f"kodim{k:02d}.png"
        with Image.open(src) as im:
            boxes = crop_boxes(im.width, im.height, TRAIN_CROP, CROPS_PER_KODAK)
        plan += [(src, b, f"mini_train/kodim{k:02d}_{i}.png") for i, b in enumerate(boxes)]
    sk = skimage_dir()
    for name in SKIMAGE_PHOTOS:
        with Image.open(sk / name) as im:
            boxes = crop_boxes(im.width, im.height, TRAIN_CROP, 2)
        plan += [(sk / name, b, f"mini_train/skimage_{Path(name).stem}_{i}.png") for i, b in enumerate(boxes)]
    for k in TEST_KODAK:
        src = kodak_dir / f"kodim{k:02d}.png"
        with Image.open(src) as im:
            plan.append((src, centre_box(im.width, im.height, TEST_CROP), f"mini_test/kodim{k:02d}.png"))
    return plan


def skimage_dir() -> Path:
    """The photo folder inside the installed scikit-image package."""
    import skimage

    return Path(skimage.__file__).parent / "data"


def crop_pixels(src: Path, box: tuple[int, int, int, int]) -> np.ndarray:
    """``(h, w, 3)`` uint8 pixels of ``box`` in ``src`` (converted to RGB)."""
    from PIL import Image

    with Image.open(src) as im:
        return np.asarray(im.convert("RGB").crop(box))


def write_bundle(kodak_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write every crop of :func:`bundle_plan` under ``out_dir`` (atomically, as PNG); returns the files."""
    from moediffir.utils.io import atomic_save_png

    out = []
    for src, box, rel in bundle_plan(kodak_dir):
        path = Path(out_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_png(path, crop_pixels(src, box))
        out.append(path)
    return out


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    if len(sys.argv) != 3:
        sys.exit("usage: python -m moediffir.data.mini_bundle KODAK24_DIR OUT_DIR")
    for p in write_bundle(sys.argv[1], sys.argv[2]):
        print(p)
