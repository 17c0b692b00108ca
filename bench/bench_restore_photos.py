"""Photos the model never saw, at their own size, through ``moediffir restore`` (paper §4.2).

Compresses each photo with JPEG at ``--qf`` (libjpeg 4:2:0), restores the decoded inputs with the command line
(tiling photos larger than one tile), and prints per photo and on average the PSNR and LPIPS (AlexNet) of the
input and of the restoration against the clean photo, and the gain. Default photos: the first ``--count``
photos of ``shared/datasets/bsds500_trainval`` beside the repository (none of them is in the ``mini`` bundle).

    python bench/bench_restore_photos.py --model runs/mini/model [--photos DIR] [--count 8] [--qf 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moediffir.data.sources import IMAGE_SUFFIXES
from moediffir.studies.restore_check import restore_check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "runs" / "mini" / "model")
    ap.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "datasets" / "bsds500_trainval")
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--qf", type=int, default=10)
    ap.add_argument("--csv", type=Path, default=None, help="also write the per-photo table here")
    args = ap.parse_args()
    photos = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: args.count]
    if not photos:
        sys.exit(f"{args.photos}: no photos")
    with tempfile.TemporaryDirectory() as tmp:
        table = restore_check(args.model, photos, Path(tmp), qf=args.qf)
    table["psnr_gain"] = table["psnr_restored"] - table["psnr_input"]
    table["lpips_gain"] = table["lpips_input"] - table["lpips_restored"]
    print(f"model {args.model} (networks trained here), JPEG QF {args.qf}, {len(photos)} photos of {args.photos}")
    print(table.round(4).to_string(index=False))
    mean = table.mean(numeric_only=True)
    print(f"mean: PSNR {mean['psnr_input']:.2f} -> {mean['psnr_restored']:.2f} dB ({mean['psnr_gain']:+.2f}), "
          f"LPIPS {mean['lpips_input']:.4f} -> {mean['lpips_restored']:.4f} ({-mean['lpips_gain']:+.4f}); "
          f"better PSNR on {(table['psnr_gain'] > 0).sum()}/{len(table)}, "
          f"better LPIPS on {(table['lpips_gain'] > 0).sum()}/{len(table)}")
    if args.csv:
        table.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
