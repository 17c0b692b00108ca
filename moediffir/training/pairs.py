"""Training pairs of the CIR benchmark: aligned (LQ crop, GT crop, task label) with resumable sampling (§3.4, §4.1).

The paper trains on the 21 seen tasks of the DF2K benchmark with 256 px inputs, "random flipping and rotation"
(§4.1). Here one manifest row *is* one training pair, so the label travels with its own image and path: the
released code kept images and labels in separate shuffled pools that fell out of step (docs/design.md §8).

- :class:`PairedCropDataset` reads the LQ image and its GT, draws **one** crop box and one of the 8 dihedral
  transforms (horizontal flip x rotation by 0/90/180/270 degrees) from a per-item seed and applies the same to
  both, returning ``lq``/``gt`` ``(3, c, c)`` floats in [0, 1], the ``label`` of that row and its ``index``.
- :class:`ResumableBatchSampler` is an endless, seeded batch sampler: epoch ``e`` visits a permutation drawn
  from ``(seed, e)``; each process of a distributed run takes its own slice of every global batch; every key
  carries its augmentation seed, epoch and batch number, so a run restarted at any batch sees exactly the
  batches (and crops) an uninterrupted run would see, whatever the number of DataLoader workers.

Images smaller than the crop are padded by mirroring (the benchmark's images are larger in both profiles).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from moediffir.data.manifest import ManifestError, read_manifest
from moediffir.errors import MoEDiffIRError
from moediffir.utils.image_tensors import to_tensor01
from moediffir.utils.io import read_image_rgb


class BenchmarkMissingError(MoEDiffIRError, FileNotFoundError):
    """The CIR benchmark (or its training split) is not there; the message names the build command."""


def _build_hint(cfg) -> str:
    extra = f" --set data.out_dir={cfg.data.out_dir}" if cfg.data.out_dir else ""
    return f"build it first with `moediffir data build --profile {cfg.profile}{extra}` (or run notebook 01)"


def training_pairs(cfg, split: str = "train") -> pd.DataFrame:
    """The seen-task rows of ``split`` in ``<cfg.benchmark_dir>/manifest.csv`` (one row per LQ/GT pair).

    Raises:
        BenchmarkMissingError: no manifest, or no seen pair in ``split``; the message names the build command.
        ManifestError: a label does not match its task id under ``cfg.data.preset``.
    """
    from moediffir.data.tasks import seen_tasks

    root = cfg.benchmark_dir
    try:
        df = read_manifest(root)
    except ManifestError as exc:
        raise BenchmarkMissingError(
            f"{root / 'manifest.csv'}: no finished CIR benchmark for profile {cfg.profile!r}; {_build_hint(cfg)}"
        ) from exc
    rows = df[(df["split"] == split) & (df["kind"] == "seen") & (df["label"] >= 0)].reset_index(drop=True)
    if rows.empty:
        raise BenchmarkMissingError(
            f"{root / 'manifest.csv'}: no seen-task pairs in split {split!r}; {_build_hint(cfg)}"
        )
    expected = {t.id: t.label for t in seen_tasks(cfg.data.preset)}
    bad = rows[[expected.get(t, -2) != int(lb) for t, lb in zip(rows["task"], rows["label"])]]
    if not bad.empty:
        r = bad.iloc[0]
        raise ManifestError(
            f"{root / 'manifest.csv'}: task {r['task']!r} has label {int(r['label'])}, preset "
            f"{cfg.data.preset!r} gives {expected.get(r['task'])}; rebuild the benchmark with this data.preset"
        )
    return rows


# ------------------------------------------------------------------------------------------ augmentation
@dataclass(frozen=True)
class Augment:
    """One crop box and dihedral transform, applied identically to LQ and GT."""

    top: int
    left: int
    flip: bool  # horizontal flip (after cropping)
    rot: int  # quarter turns counter-clockwise (after the flip), 0..3


def draw_augment(rng: np.random.Generator, height: int, width: int, crop: int, augment: bool) -> Augment:
    """A uniformly random ``crop`` x ``crop`` box inside ``height`` x ``width`` and (if ``augment``) a transform."""
    top = int(rng.integers(0, height - crop + 1))
    left = int(rng.integers(0, width - crop + 1))
    if not augment:
        return Augment(top, left, False, 0)
    return Augment(top, left, bool(rng.integers(0, 2)), int(rng.integers(0, 4)))


def apply_augment(img: np.ndarray, aug: Augment, crop: int) -> np.ndarray:
    """Crop and transform an ``(H, W, C)`` array."""
    out = img[aug.top : aug.top + crop, aug.left : aug.left + crop]  # (c, c, C)
    if aug.flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(np.rot90(out, aug.rot))  # (c, c, C)


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Mirror-pad an ``(H, W, C)`` array on the bottom/right until both sides are at least ``size``."""
    while img.shape[0] < size or img.shape[1] < size:
        ph, pw = max(0, size - img.shape[0]), max(0, size - img.shape[1])
        img = np.pad(img, ((0, min(ph, img.shape[0])), (0, min(pw, img.shape[1])), (0, 0)), mode="symmetric")
    return img


# -------------------------------------------------------------------------------------------- dataset
class SampleKey(NamedTuple):
    """What the sampler hands the dataset: the row, its augmentation seed and where the batch sits."""

    index: int
    seed: int
    epoch: int
    batch: int


class PairedCropDataset(Dataset):
    """Aligned (LQ crop, GT crop, label) triples from manifest rows (see the module docstring).

    Args:
        root: the benchmark folder (``cfg.benchmark_dir``); ``path``/``gt_path`` are relative to it.
        rows: manifest rows (:func:`training_pairs`).
        crop_size: side of the square crop in pixels.
        augment: draw flips and rotations (``stage1.augment``); crops are always random.
    """

    def __init__(self, root: str | Path, rows: pd.DataFrame, crop_size: int, augment: bool = True) -> None:
        if crop_size <= 0:
            raise ValueError(f"PairedCropDataset: crop_size={crop_size} must be positive (stage1.crop_size)")
        missing = [c for c in ("path", "gt_path", "label") if c not in rows.columns]
        if missing:
            raise ValueError(f"PairedCropDataset: manifest rows lack columns {missing}")
        self.root = Path(root)
        self.rows = rows.reset_index(drop=True)
        self.crop_size = int(crop_size)
        self.augment = bool(augment)
        self._paths = list(zip(self.rows["path"], self.rows["gt_path"]))
        self._labels = [int(x) for x in self.rows["label"]]
        self._tasks = [str(x) for x in self.rows["task"]] if "task" in self.rows.columns else [""] * len(self.rows)

    def __len__(self) -> int:
        return len(self._paths)

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole LQ and GT images of row ``index`` as ``(H, W, 3)`` uint8 (sizes checked)."""
        lq_rel, gt_rel = self._paths[index]
        lq, gt = read_image_rgb(self.root / lq_rel), read_image_rgb(self.root / gt_rel)
        if lq.shape != gt.shape:
            raise ValueError(
                f"{self.root / lq_rel}: LQ is {lq.shape[:2]} but its GT {self.root / gt_rel} is {gt.shape[:2]}; "
                "rebuild the benchmark"
            )
        return lq, gt

    def augment_of(self, key: SampleKey | int, height: int, width: int) -> Augment:
        """The crop and transform that ``key`` selects for an image of that size (after padding)."""
        seed = key.seed if isinstance(key, tuple) else 0
        h, w = max(height, self.crop_size), max(width, self.crop_size)
        return draw_augment(np.random.default_rng(seed), h, w, self.crop_size, self.augment)

    def __getitem__(self, key: SampleKey | int) -> dict[str, torch.Tensor | int | str]:
        k = key if isinstance(key, tuple) else SampleKey(int(key), 0, 0, 0)
        k = SampleKey(*k)
        lq, gt = self.load_pair(k.index)
        lq, gt = pad_to(lq, self.crop_size), pad_to(gt, self.crop_size)
        aug = self.augment_of(k, lq.shape[0], lq.shape[1])
        return {
            "lq": to_tensor01(apply_augment(lq, aug, self.crop_size)),  # (3, c, c)
            "gt": to_tensor01(apply_augment(gt, aug, self.crop_size)),  # (3, c, c)
            "label": self._labels[k.index],
            "index": k.index,
            "task": self._tasks[k.index],
            "epoch": k.epoch,
            "batch": k.batch,
        }


# -------------------------------------------------------------------------------------------- sampler
def item_seed(seed: int, epoch: int, position: int) -> int:
    """Augmentation seed of the item at ``position`` of epoch ``epoch`` (independent of workers and ranks)."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class ResumableBatchSampler:
    """Endless seeded batches of :class:`SampleKey`, sharded over processes, restartable at any batch.

    Epoch ``e`` is a permutation of the ``n`` items drawn from ``(seed, e)`` (several concatenated when ``n`` is
    smaller than one global batch); global batch ``b`` is positions ``[b*G, (b+1)*G)`` with
    ``G = batch_size * world_size``, and process ``rank`` takes its ``batch_size`` slice. Incomplete last
    global batches are dropped. Start with ``start_epoch``/``start_batch`` to resume.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        start_epoch: int = 0,
        start_batch: int = 0,
    ) -> None:
        if n <= 0:
            raise ValueError("ResumableBatchSampler: the dataset is empty")
        if batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"ResumableBatchSampler: batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.global_batch = batch_size * world_size
        self.repeats = max(1, math.ceil(self.global_batch / n))
        self.batches_per_epoch = (n * self.repeats) // self.global_batch
        self.start_epoch, self.start_batch = self.normalize(start_epoch, start_batch)

    def normalize(self, epoch: int, batch: int) -> tuple[int, int]:
        """``(epoch, batch)`` with ``batch`` wrapped into ``0 .. batches_per_epoch - 1``."""
        return epoch + batch // self.batches_per_epoch, batch % self.batches_per_epoch

    def next_position(self, epoch: int, batch: int) -> tuple[int, int]:
        """Where to restart after consuming global batch ``batch`` of ``epoch``."""
        return self.normalize(epoch, batch + 1)

    def order(self, epoch: int) -> np.ndarray:
        """Item order of ``epoch`` (the same on every process)."""
        if not self.shuffle:
            return np.tile(np.arange(self.n), self.repeats)
        rng = np.random.default_rng([self.seed, epoch, 0x5EED])
        return np.concatenate([rng.permutation(self.n) for _ in range(self.repeats)])

    def __iter__(self) -> Iterator[list[SampleKey]]:
        epoch, batch = self.start_epoch, self.start_batch
        while True:
            order = self.order(epoch)
            for b in range(batch, self.batches_per_epoch):
                start = b * self.global_batch + self.rank * self.batch_size
                yield [
                    SampleKey(int(order[p]), item_seed(self.seed, epoch, p), epoch, b)
                    for p in range(start, start + self.batch_size)
                ]
            epoch, batch = epoch + 1, 0
