"""Photos from elsewhere through ``moediffir restore``: does a model beat its compressed input (paper §4.2)?

The benchmark scores a model on its own test split. A user restores their own photos, at their own size, with
the command line. This check does exactly that: it compresses clean photos with a real codec (JPEG at ``qf``,
libjpeg 4:2:0 as in the benchmark), writes the decoded inputs as PNG, runs ``moediffir restore`` on them in a
subprocess (tiling whatever does not fit one tile), and scores input and output against the clean photo with
the benchmark's PSNR (RGB, 0-255) and LPIPS (AlexNet)::

    python bench/bench_restore_photos.py --model runs/mini/model --photos /path/to/photos
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from moediffir.utils.io import atomic_save_png, read_image_rgb


def compress_photos(photos: list[Path], qf: int, out_dir: Path) -> dict[str, np.ndarray]:
    """JPEG-``qf`` round trips of ``photos`` saved as ``out_dir/<stem>.png``; returns the clean photos by stem."""
    from moediffir.codecs.pillow_codecs import JPEGCodec

    jpeg = JPEGCodec()
    clean = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in photos:
        img = read_image_rgb(path)
        clean[path.stem] = img
        atomic_save_png(out_dir / f"{path.stem}.png", jpeg(img, qf).decoded)
    return clean


def run_restore(model: Path, inputs: Path, outputs: Path, extra: list[str] | None = None) -> None:
    """``moediffir restore inputs -o outputs --model model --device cpu`` in a subprocess (the user's path)."""
    cmd = [sys.executable, "-m", "moediffir.cli", "restore", str(inputs), "-o", str(outputs), "--model", str(model),
           "--device", "cpu", *(extra or [])]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"moediffir restore failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def score_restorations(clean: dict[str, np.ndarray], inputs: Path, outputs: Path, lpips_weights: str = "pretrained",
                       ) -> pd.DataFrame:
    """Per photo: PSNR and LPIPS of the compressed input and of the restoration against the clean photo."""
    from moediffir.metrics.fidelity import psnr
    from moediffir.metrics.perceptual import build_lpips, lpips_distance

    lpips = build_lpips("alex", weights=lpips_weights)
    rows = []
    for stem, gt in clean.items():
        lq, out = read_image_rgb(inputs / f"{stem}.png"), read_image_rgb(outputs / f"{stem}.png")
        if out.shape != gt.shape:
            raise ValueError(f"{outputs / f'{stem}.png'}: size {out.shape[:2]} differs from the photo's {gt.shape[:2]}")
        rows.append({"photo": stem, "height": gt.shape[0], "width": gt.shape[1],
                     "psnr_input": psnr(lq, gt), "psnr_restored": psnr(out, gt),
                     "lpips_input": lpips_distance(lpips, lq, gt), "lpips_restored": lpips_distance(lpips, out, gt)})
    return pd.DataFrame(rows)


def restore_check(model: Path, photos: list[Path], work_dir: Path, qf: int = 10, extra: list[str] | None = None,
                  lpips_weights: str = "pretrained") -> pd.DataFrame:
    """Compress ``photos`` (JPEG ``qf``), restore them with ``moediffir restore`` and score both (one row each)."""
    inputs, outputs = work_dir / f"jpeg_q{qf}", work_dir / "restored"
    clean = compress_photos(photos, qf, inputs)
    run_restore(model, inputs, outputs, extra)
    return score_restorations(clean, inputs, outputs, lpips_weights)
