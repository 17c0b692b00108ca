"""The CIR benchmark manifest: one row per compressed output (paper §3.5, docs/design.md §3).

``<benchmark_dir>/manifest.csv`` lists, for every (image, task): the split and set, the source image (relative
to the datasets folder), the task (codec, level, seen label or -1, kind), the image size, the real number of
bits and bits per pixel (over the original width x height), the LQ PSNR/SSIM against the GT (RGB, data
range 255, see :mod:`moediffir.metrics.fidelity`), the output and GT paths (relative to ``benchmark_dir``), their
SHA-256 checksums and the codec's backend, weights, bits source and QP used.

The manifest is written only at the end of a complete build (it is removed when a build starts), so its
presence means the last build finished; :func:`verify_manifest` checks it against the files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from moediffir.errors import MoEDiffIRError
from moediffir.utils.io import atomic_write_text, csv_text, sha256_file

MANIFEST_NAME = "manifest.csv"
FAILURES_NAME = "failures.csv"

if TYPE_CHECKING:  # pandas is imported where it is used: build workers never need it
    import pandas as pd

MANIFEST_COLUMNS: tuple[str, ...] = (
    "split", "set", "image", "stem", "task", "codec", "level", "label", "kind", "width", "height",
    "bits", "bpp", "lq_psnr", "lq_ssim", "path", "gt_path", "sha256", "gt_sha256",
    "backend", "weights", "bits_source", "qp_used",
)
FAILURE_COLUMNS: tuple[str, ...] = ("split", "set", "image", "task", "error_type", "error")


class ManifestError(MoEDiffIRError, ValueError):
    """A manifest is missing, malformed or does not match the files."""


def _csv_text(rows: Iterable[Mapping], columns: tuple[str, ...]) -> str:
    import pandas as pd

    return csv_text(pd.DataFrame(list(rows), columns=list(columns)))


def write_manifest(rows: Iterable[Mapping], path: str | Path) -> Path:
    """Write manifest rows (dicts with :data:`MANIFEST_COLUMNS`) as CSV, atomically."""
    return atomic_write_text(path, _csv_text(rows, MANIFEST_COLUMNS))


def write_failures(rows: Iterable[Mapping], path: str | Path) -> Path:
    """Write failure rows (dicts with :data:`FAILURE_COLUMNS`) as CSV, atomically (header only if none)."""
    return atomic_write_text(path, _csv_text(rows, FAILURE_COLUMNS))


def read_manifest(benchmark_dir: str | Path) -> pd.DataFrame:
    """Read ``<benchmark_dir>/manifest.csv``; ``level`` is read as text (``"10"``, ``"low"``)."""
    import pandas as pd

    path = Path(benchmark_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest; build the benchmark first (`moediffir data build`), "
                            "or let an interrupted build finish by running it again")
    # only empty cells are missing values ("n/a" in the weights column is a value)
    df = pd.read_csv(path, dtype={"level": str, "image": str, "stem": str, "weights": str},
                     keep_default_na=False, na_values=[""])
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: missing columns {missing}; rebuild with `moediffir data build`")
    return df


def verify_manifest(benchmark_dir: str | Path, check_hashes: bool = True, strict: bool = False) -> list[str]:
    """Problems found when checking the manifest against the files ([] = every file present and intact).

    Args:
        check_hashes: recompute each file's SHA-256 (otherwise presence only).
        strict: also report PNGs under the split folders that the manifest does not list (e.g. left by a
            build with other settings).
    """
    root = Path(benchmark_dir)
    df = read_manifest(root)
    problems: list[str] = []
    checked: set[str] = set()
    for row in df.itertuples(index=False):
        for rel, sha in ((row.path, row.sha256), (row.gt_path, row.gt_sha256)):
            if rel in checked:
                continue
            checked.add(rel)
            f = root / rel
            if not f.is_file():
                problems.append(f"{f}: listed in the manifest but missing")
            elif check_hashes and sha256_file(f) != sha:
                problems.append(f"{f}: SHA-256 differs from the manifest")
    if strict:
        for split in sorted(set(df["split"])):
            for f in sorted((root / split).rglob("*.png")):
                if f.relative_to(root).as_posix() not in checked:
                    problems.append(f"{f}: on disk but not in the manifest")
    return problems


def pairs(df: pd.DataFrame, split: str | None = None, seen_only: bool = False) -> pd.DataFrame:
    """Rows of a manifest usable as (LQ, GT, label) training/test pairs, optionally filtered."""
    out = df
    if split is not None:
        out = out[out["split"] == split]
    if seen_only:
        out = out[out["kind"] == "seen"]
    return out.reset_index(drop=True)
