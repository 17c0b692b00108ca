"""Source images of the CIR benchmark: which files of a dataset folder become GT items (paper §3.5).

A dataset named ``X`` is the folder ``<datasets_dir>/X`` (docs/design.md §3, ``data/README.md``); every image file
under it (searched recursively, sorted) is one source. Its *stem* names every output derived from it: the path
relative to the set folder without the suffix, with folder separators written as ``__``. Training images may be
cut into tiles (``data.train_tile``): the tiles cover the whole image (the last row/column is aligned to the
edge) and their stems gain ``_y<top>_x<left>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moediffir.errors import MoEDiffIRError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


class DatasetMissingError(MoEDiffIRError, FileNotFoundError):
    """A configured dataset folder does not exist or holds no images."""


class DuplicateStemError(MoEDiffIRError, ValueError):
    """Two source files of a set map to the same output stem (e.g. ``a.png`` and ``a.jpg``)."""


@dataclass(frozen=True)
class SourceImage:
    """One GT item: a file (or a tile of it) of one dataset."""

    set_name: str
    path: Path  # the file on disk
    rel: str  # path relative to the set folder, POSIX separators (recorded in the manifest)
    stem: str  # unique within the set; names every output
    box: tuple[int, int, int, int] | None = None  # (top, left, height, width) of a tile, None = whole image


def list_image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted; hidden files and folders skipped)."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel_parts = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel_parts):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
    return out


def stem_of(rel: Path) -> str:
    return "__".join(rel.with_suffix("").parts)


def list_sources(datasets_dir: Path, set_name: str, max_images: int = 0) -> list[SourceImage]:
    """Sources of one set, sorted; ``max_images > 0`` keeps the first ones.

    Raises:
        DatasetMissingError: the folder is missing or has no image files (the message says how to get it).
        DuplicateStemError: two files map to the same stem (e.g. ``a.png`` and ``a.jpg``).
    """
    folder = Path(datasets_dir) / set_name
    hint = (f"see data/README.md for how to obtain {set_name!r}, then check it with "
            f"`moediffir data import {set_name} DIR`, or set data.datasets_dir / data.train_sets / data.test_sets")
    if not folder.is_dir():
        raise DatasetMissingError(f"{folder}: dataset folder not found; {hint}")
    files = list_image_files(folder)
    if not files:
        raise DatasetMissingError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found; {hint}")
    if max_images > 0:
        files = files[:max_images]
    seen: dict[str, Path] = {}
    out = []
    for f in files:
        rel = f.relative_to(folder)
        stem = stem_of(rel)
        if stem in seen:
            raise DuplicateStemError(f"{folder}: {seen[stem].name} and {f.name} both map to output stem {stem!r}; "
                                     "keep one of them")
        seen[stem] = f
        out.append(SourceImage(set_name, f, rel.as_posix(), stem))
    return out


def tile_boxes(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Boxes ``(top, left, h, w)`` of ``tile`` x ``tile`` tiles covering an image (edge tiles overlap).

    An image smaller than ``tile`` in a dimension keeps its full size in that dimension.
    """
    if tile <= 0:
        return [(0, 0, height, width)]

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        s = list(range(0, n - tile + 1, tile))
        if s[-1] + tile < n:
            s.append(n - tile)
        return s

    th, tw = min(tile, height), min(tile, width)
    return [(y, x, th, tw) for y in starts(height) for x in starts(width)]


def tile_stem(stem: str, box: tuple[int, int, int, int]) -> str:
    return f"{stem}_y{box[0]}_x{box[1]}"
