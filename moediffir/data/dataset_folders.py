"""Dataset folders of the CIR benchmark: what the kit expects, and the import check (paper §3.5, §4.1).

The paper trains on DF2K (DIV2K train, 800 images + Flickr2K, 2650 images = 3450) and tests on LIVE1,
Classic5, BSDS500, the DIV2K validation set and ICB. A dataset named ``X`` is the folder
``<datasets_dir>/X`` (default ``data/datasets/X``) holding its image files (any depth, any common format).
How to download each one is in ``data/README.md``; this module holds no URLs.

``import_dataset`` places a downloaded set there (per-file symbolic links, or copies), checks every file opens
as an image, compares the count with the expected one, and writes ``SHA256SUMS`` (``sha256sum -c`` format)
into the folder so later checks (``check_dataset``) notice a changed or missing file. ``check_archive``
compares a downloaded archive with the checksums known for it (only those published by a named source).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from moediffir.data.sources import list_image_files
from moediffir.errors import MoEDiffIRError
from moediffir.utils.io import atomic_write_text, sha256_file

CHECKSUMS_NAME = "SHA256SUMS"


@dataclass(frozen=True)
class DatasetInfo:
    """What the kit knows about one dataset (no URLs: see data/README.md)."""

    name: str
    role: str  # "train" or "test"
    expected_images: int | None  # None: not fixed (the paper does not say which images)
    content: str  # what goes into the folder
    grayscale: bool = False  # coded as RGB with equal channels (docs/design.md §3)
    # archive file name -> (algorithm, hex digest, size in bytes or None, who recorded it)
    archives: dict[str, tuple[str, str, int | None, str]] = field(default_factory=dict)


DATASETS: dict[str, DatasetInfo] = {
    "DF2K": DatasetInfo(
        "DF2K", "train", 3450,
        "DIV2K train HR (0001-0800.png) and Flickr2K HR (000001-002650.png) together, 3450 PNG files",
        archives={
            "DIV2K_train_HR.zip": ("sha256", "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
                                   3530603713, "TensorFlow Datasets url_checksums/div2k.txt"),
        },
    ),
    "DIV2K_valid": DatasetInfo(
        "DIV2K_valid", "test", 100, "DIV2K validation HR images 0801-0900.png",
        archives={
            "DIV2K_valid_HR.zip": ("sha256", "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
                                   448993893, "TensorFlow Datasets url_checksums/div2k.txt"),
        },
    ),
    "LIVE1": DatasetInfo("LIVE1", "test", 29, "the 29 reference images of the LIVE IQA database (release 2)"),
    "Classic5": DatasetInfo("Classic5", "test", 5, "5 grayscale 512x512 images (baboon, barbara, boats, lena, "
                            "peppers)", grayscale=True),
    "BSDS500": DatasetInfo("BSDS500", "test", None, "BSDS500 images; the paper does not say which split, the kit "
                           "suggests the 200 test images (BSR/BSDS500/data/images/test)"),
    "ICB": DatasetInfo("ICB", "test", 14, "Image Compression Benchmark, the 14 8-bit RGB images (rgb8bit/*.ppm)"),
}


class DatasetImportError(MoEDiffIRError, RuntimeError):
    """A dataset could not be imported (the message names the file and the fix)."""


@dataclass
class DatasetCheck:
    """Result of checking one dataset folder."""

    name: str
    folder: Path
    n_images: int = 0
    bad: list[str] = field(default_factory=list)  # "<file>: <reason>"
    warnings: list[str] = field(default_factory=list)
    checksum_mismatch: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> count
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode -> count

    @property
    def ok(self) -> bool:
        return self.n_images > 0 and not self.bad and not self.checksum_mismatch

    def summary(self) -> str:
        lines = [f"{self.name}: {self.folder}: {self.n_images} image(s) — {'OK' if self.ok else 'PROBLEMS'}"]
        if self.modes:
            lines.append("  modes: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.modes.items())))
        if self.sizes:
            top = sorted(self.sizes.items(), key=lambda kv: -kv[1])[:5]
            lines.append("  sizes: " + ", ".join(f"{k} x{v}" for k, v in top) + (" ..." if len(self.sizes) > 5 else ""))
        lines += [f"  warning: {w}" for w in self.warnings]
        lines += [f"  unreadable: {b}" for b in self.bad]
        lines += [f"  checksum: {c}" for c in self.checksum_mismatch]
        return "\n".join(lines)


def _check_image(path: Path, decode: bool) -> tuple[str, tuple[int, int]]:
    with Image.open(path) as im:
        mode, size = im.mode, im.size
        if decode:
            im.load()
        else:
            im.verify()  # structure and CRCs, without decoding the pixels
    if size[0] == 0 or size[1] == 0:
        raise ValueError(f"zero size {size}")
    return mode, size


def read_checksums(path: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum`` style file."""
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition("  ")
        out[name.strip().lstrip("*")] = digest.strip().lower()
    return out


def write_checksums(folder: Path, files: Iterable[Path]) -> Path:
    """Write ``SHA256SUMS`` for ``files`` (paths inside ``folder``), atomically."""
    lines = [f"{sha256_file(f)}  {f.relative_to(folder).as_posix()}" for f in files]
    return atomic_write_text(folder / CHECKSUMS_NAME, "\n".join(lines) + ("\n" if lines else ""))


def check_dataset(folder: str | Path, name: str | None = None, decode: bool = False,
                  verify_checksums: bool = True) -> DatasetCheck:
    """Check a dataset folder: every image opens, the count matches, ``SHA256SUMS`` (if present) holds.

    Args:
        folder: the dataset folder.
        name: dataset name for the expected count (default: the folder name).
        decode: fully decode every image (slow for DF2K); otherwise check file structure only.
        verify_checksums: compare with ``SHA256SUMS`` in the folder when it exists.
    """
    folder = Path(folder)
    name = name or folder.name
    res = DatasetCheck(name, folder)
    if not folder.is_dir():
        res.bad.append(f"{folder}: folder not found (see data/README.md)")
        return res
    files = list_image_files(folder)
    res.n_images = len(files)
    for f in files:
        try:
            mode, (w, h) = _check_image(f, decode)
        except Exception as exc:  # noqa: BLE001 - every unreadable file is reported by name
            res.bad.append(f"{f}: {type(exc).__name__}: {exc}")
            continue
        res.modes[mode] = res.modes.get(mode, 0) + 1
        res.sizes[f"{w}x{h}"] = res.sizes.get(f"{w}x{h}", 0) + 1
    info = DATASETS.get(name)
    if res.n_images == 0:
        res.bad.append(f"{folder}: no image files found")
    if info and info.expected_images is not None and res.n_images != info.expected_images:
        res.warnings.append(f"{res.n_images} images, the paper's {name} has {info.expected_images} "
                            f"({info.content})")
    sums = folder / CHECKSUMS_NAME
    if verify_checksums and sums.is_file():
        recorded = read_checksums(sums)
        present = {f.relative_to(folder).as_posix(): f for f in files}
        for rel, digest in sorted(recorded.items()):
            if rel not in present:
                res.checksum_mismatch.append(f"{folder / rel}: listed in {CHECKSUMS_NAME} but missing")
            elif sha256_file(present[rel]) != digest:
                res.checksum_mismatch.append(f"{folder / rel}: SHA-256 differs from {CHECKSUMS_NAME}")
        for rel in sorted(set(present) - set(recorded)):
            res.warnings.append(f"{folder / rel}: not listed in {CHECKSUMS_NAME}")
    return res


def check_archive(path: str | Path, known: dict[str, tuple[str, str, int | None, str]] | None = None) -> str:
    """Compare a downloaded archive with the checksum known for its file name.

    Returns a one-line verdict; raises :class:`DatasetImportError` on a mismatch. Archives without a known
    checksum return a verdict saying so (nothing is invented).
    """
    path = Path(path)
    if known is None:
        known = {k: v for info in DATASETS.values() for k, v in info.archives.items()}
    if not path.is_file():
        raise DatasetImportError(f"{path}: archive not found")
    entry = known.get(path.name)
    if entry is None:
        return f"{path.name}: no published checksum known to the kit (not checked)"
    algo, digest, size, source = entry
    if size is not None and path.stat().st_size != size:
        raise DatasetImportError(f"{path}: size {path.stat().st_size} bytes, expected {size} ({source}); "
                                 "the download is incomplete or a different file — download it again")
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != digest:
        raise DatasetImportError(f"{path}: {algo} {h.hexdigest()} differs from {digest} ({source}); "
                                 "download it again")
    return f"{path.name}: {algo} matches ({source})"


def _place(src: Path, dst: Path, mode: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    if mode == "link":
        os.symlink(src.resolve(), tmp)
    else:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def import_dataset(
    name: str,
    sources: Iterable[str | Path],
    datasets_dir: str | Path,
    mode: str = "link",
    decode: bool = True,
) -> DatasetCheck:
    """Place the image files of ``sources`` into ``<datasets_dir>/<name>``, check them and write SHA256SUMS.

    Several source folders are merged (e.g. DF2K = ``DIV2K_train_HR`` + ``Flickr2K_HR``); each keeps its
    relative layout, and two files landing on the same path is an error.

    Args:
        name: dataset name (``DATASETS`` keys are known; other names are accepted without a count check).
        sources: folders holding the downloaded images (archives must be extracted first).
        datasets_dir: the kit's datasets folder (``cfg.datasets_dir``).
        mode: ``"link"`` (symbolic links to the files, no extra space) or ``"copy"``.
        decode: fully decode every image while checking (default: a truncated file is found now, not when the
            benchmark is built); False checks the file headers only.
    """
    if mode not in ("link", "copy"):
        raise DatasetImportError(f"import mode {mode!r}: choose 'link' or 'copy'")
    dest = Path(datasets_dir) / name
    plan: dict[Path, Path] = {}
    for src in map(Path, sources):
        if not src.is_dir():
            raise DatasetImportError(f"{src}: not a folder; extract the archive first (see data/README.md)")
        files = list_image_files(src)
        if not files:
            raise DatasetImportError(f"{src}: no image files found")
        for f in files:
            target = dest / f.relative_to(src)
            if target in plan:
                raise DatasetImportError(f"{plan[target]} and {f} would both become {target}; "
                                         "import them under different names")
            plan[target] = f
    if dest.resolve() in {Path(s).resolve() for s in sources}:
        raise DatasetImportError(f"{dest}: the source already is the dataset folder; use `moediffir data check`")
    for target, f in sorted(plan.items()):
        _place(f, target, mode)
    write_checksums(dest, sorted(plan))
    return check_dataset(dest, name, decode=decode, verify_checksums=False)
