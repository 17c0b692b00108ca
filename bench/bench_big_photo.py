"""Restoring big photos: seconds per megapixel and peak memory of ``moediffir restore``'s pipeline call
(paper §3.1-3.4 sampling on the tiled path of docs/design.md §6).

Builds a smoke model folder (untrained parts, RANDOM weights: speed and memory do not depend on weight values,
so the outputs are not restorations) and restores one photo-shaped (3:2) image of each size, each in a fresh
interpreter, so every size has its own peak resident set size (``ru_maxrss`` only grows). Per size it prints the
latent tiles per pass, the wall seconds of the pipeline call and per megapixel, the peak RSS and the peak RSS
above the RSS once the model is loaded (what the image adds), per megapixel too. The last line gives the ratios
of the largest size to the smallest one measured in the same run: ``s/MP`` near 1 means time grows linearly with
the pixel count; the memory an added megapixel costs is the slope between the two sizes.

    python bench/bench_big_photo.py                          # 1 and 4 MP, CPU, smoke model
    python bench/bench_big_photo.py --megapixels 1 4 24 --out results/bench_big_photo.json
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def photo_size(megapixels: float) -> tuple[int, int]:
    """``(width, height)`` of a 3:2 photo of about ``megapixels`` (6000 x 4000 for 24)."""
    height = round(math.sqrt(megapixels * 1e6 / 1.5))
    return round(1.5 * height), height


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(model: str, width: int, height: int, threads: int) -> dict:
    """One restoration in this process: the numbers of one size (run by the parent in a fresh interpreter)."""
    import numpy as np
    import torch

    from moediffir.pipelines.moediffir_pipeline import load_pipeline
    from moediffir.pipelines.tiling import num_tiles

    torch.set_num_threads(threads)
    pipe = load_pipeline(model, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)  # a smooth random photo: JPEG-like content matters not for speed
    coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:height, :width]  # (H, W, 3) uint8
    loaded = _peak_rss_mb()
    d, f, m = pipe.sample_defaults, pipe.vae_scale_factor, pipe.pixel_multiple
    tiles = num_tiles(math.ceil(height / m) * m // f, math.ceil(width / m) * m // f, d.tile_size // f,
                      d.tile_overlap // f)
    start = time.perf_counter()
    out = pipe(image, generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    seconds = time.perf_counter() - start
    assert out.shape == (height, width, 3)
    return {"width": width, "height": height, "megapixels": width * height / 1e6, "tiles": tiles,
            "steps": d.num_steps, "tile_size": d.tile_size, "tile_overlap": d.tile_overlap, "threads": threads,
            "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "rss_after_load_mb": loaded}


def measure(model: Path, megapixels: float, threads: int) -> dict:
    """:func:`child` in a fresh interpreter."""
    width, height = photo_size(megapixels)
    proc = subprocess.run([sys.executable, __file__, "--child", str(model), str(width), str(height), str(threads)],
                          cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{width}x{height} failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["s_per_mp"] = row["seconds"] / row["megapixels"]
    row["image_mb_per_mp"] = (row["peak_rss_mb"] - row["rss_after_load_mb"]) / row["megapixels"]
    return row


def _print(row: dict) -> None:
    print(f"{row['width']:5d}x{row['height']:<5d} {row['megapixels']:5.1f} MP  {row['tiles']:6d} tiles  "
          f"{row['seconds']:8.1f} s  {row['s_per_mp']:6.1f} s/MP  peak RSS {row['peak_rss_mb']:7.0f} MB "
          f"({row['peak_rss_mb'] - row['rss_after_load_mb']:6.0f} MB above the loaded model, "
          f"{row['image_mb_per_mp']:5.0f} MB/MP)", flush=True)


def _print_ratios(small: dict, big: dict) -> None:
    """The largest size against the smallest, both measured in this run."""
    added = [r["peak_rss_mb"] - r["rss_after_load_mb"] for r in (small, big)]
    print(f"ratios {big['megapixels']:.2g} MP / {small['megapixels']:.2g} MP: pixels "
          f"{big['megapixels'] / small['megapixels']:.1f}x, time {big['seconds'] / small['seconds']:.1f}x, "
          f"s/MP {big['s_per_mp'] / small['s_per_mp']:.2f}x, RSS above the loaded model {added[1] / max(added[0], 1):.1f}x "
          f"({(added[1] - added[0]) / (big['megapixels'] - small['megapixels']):.0f} MB per added MP)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megapixels", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the restoring process")
    ap.add_argument("--out", default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    from moediffir.config import resolve_config
    from moediffir.utils.io import atomic_write_json
    from moediffir.weights.model_folder import build_fresh_model_folder

    with tempfile.TemporaryDirectory() as tmp:
        model = build_fresh_model_folder(Path(tmp) / "model", resolve_config("smoke"))
        print(f"smoke model (random weights), CPU, {args.threads} thread(s); pipeline call only (no file I/O)")
        rows = []
        for mp in args.megapixels:
            rows.append(measure(model, mp, args.threads))
            _print(rows[-1])
    if len(rows) > 1:
        _print_ratios(rows[0], rows[-1])
    if args.out:
        atomic_write_json(args.out, {"rows": rows})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
    else:
        main()
