"""Aligned (LQ, GT, label) training pairs and the resumable sampler (moediffir/training/pairs.py; paper §4.1).

The released code lost the label <-> image alignment (docs/design.md §8). The synthetic benchmark below makes every
LQ image ``(GT + 37 * label) mod 256``, so one subtraction checks that an item's LQ crop, GT crop and label
belong together after random crops, flips, rotations, shuffling and DataLoader workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from repo_paths import REPO_ROOT as REPO
from torch.utils.data import DataLoader

from moediffir.config import resolve_config
from moediffir.data.manifest import MANIFEST_COLUMNS, ManifestError, write_manifest
from moediffir.training.pairs import (
    BenchmarkMissingError,
    PairedCropDataset,
    ResumableBatchSampler,
    SampleKey,
    apply_augment,
    training_pairs,
)
from moediffir.utils.io import atomic_save_png, read_image_rgb

OFFSET = 37


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x.permute(1, 2, 0).numpy() * 255.0).round().astype(np.int64)  # (H, W, 3)


@pytest.fixture(scope="module")
def synthetic_bench(tmp_path_factory) -> Path:
    """3 GT images x 4 seen tasks; LQ = (GT + 37 * label) mod 256, different sizes per image."""
    root = tmp_path_factory.mktemp("synthetic_bench")
    rng = np.random.default_rng(0)
    tasks = [("jpeg_q5", "jpeg", "5", 0), ("jpeg_q15", "jpeg", "15", 2), ("webp_q10", "webp", "10", 10),
             ("hevc_qp37", "hevc", "37", 8)]
    rows = []
    for i, (h, w) in enumerate([(40, 52), (48, 48), (33, 61)]):
        gt = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        gt_rel = f"train/syn/gt/img{i}.png"
        atomic_save_png(root / gt_rel, gt)
        for tid, codec, level, label in tasks:
            lq = ((gt.astype(np.int64) + OFFSET * label) % 256).astype(np.uint8)
            rel = f"train/syn/{tid}/img{i}.png"
            atomic_save_png(root / rel, lq)
            row = {c: "" for c in MANIFEST_COLUMNS}
            row.update(split="train", set="syn", image=f"syn/img{i}.png", stem=f"img{i}", task=tid, codec=codec,
                       level=level, label=label, kind="seen", width=w, height=h, path=rel, gt_path=gt_rel)
            rows.append(row)
    # an unseen row and a test row that training must ignore
    extra = dict(rows[0], task="jpeg_q25", level="25", label=-1, kind="unseen_degree")
    rows += [extra, dict(rows[1], split="test")]
    write_manifest(rows, root / "manifest.csv")
    return root


def _cfg(bench: Path, **extra):
    return resolve_config("smoke", {"data.out_dir": str(bench), **extra})


def test_training_pairs_keeps_seen_train_rows(synthetic_bench):
    rows = training_pairs(_cfg(synthetic_bench))
    assert len(rows) == 12
    assert set(rows["split"]) == {"train"} and set(rows["kind"]) == {"seen"} and (rows["label"] >= 0).all()


def test_label_image_alignment_through_shuffled_workers(synthetic_bench):
    ds = PairedCropDataset(synthetic_bench, training_pairs(_cfg(synthetic_bench)), crop_size=24, augment=True)
    sampler = ResumableBatchSampler(len(ds), batch_size=5, seed=3)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, generator=torch.Generator())
    transforms, seen_labels, n = set(), set(), 0
    for b, batch in zip(range(8), loader):  # 40 items: more than 3 epochs of 12 pairs
        assert batch["lq"].shape == (5, 3, 24, 24) and batch["gt"].shape == (5, 3, 24, 24)
        for j in range(5):
            label = int(batch["label"][j])
            diff = (_u8(batch["lq"][j]) - _u8(batch["gt"][j])) % 256
            assert (diff == (OFFSET * label) % 256).all(), f"batch {b} item {j}: LQ crop is not its label's image"
            row = ds.rows.iloc[int(batch["index"][j])]
            assert int(row["label"]) == label and row["task"] == batch["task"][j]
            seen_labels.add(label)
            n += 1
        for key in next(iter(ResumableBatchSampler(len(ds), 5, 3, start_batch=b))):
            aug = ds.augment_of(key, *ds.load_pair(key.index)[0].shape[:2])
            transforms.add((aug.flip, aug.rot))
    assert n == 40 and seen_labels == {0, 2, 8, 10}
    assert len(transforms) >= 4, "flips and rotations should vary between items"


def test_crop_is_the_same_transform_of_the_stored_files(synthetic_bench):
    ds = PairedCropDataset(synthetic_bench, training_pairs(_cfg(synthetic_bench)), crop_size=32, augment=True)
    for idx, seed in [(0, 11), (5, 12), (9, 13), (11, 14)]:
        key = SampleKey(idx, seed, 0, 0)
        item = ds[key]
        lq, gt = ds.load_pair(idx)
        aug = ds.augment_of(key, *lq.shape[:2])
        assert (_u8(item["lq"]) == apply_augment(lq, aug, 32)).all()
        assert (_u8(item["gt"]) == apply_augment(gt, aug, 32)).all()


def test_small_images_are_mirror_padded(synthetic_bench):
    ds = PairedCropDataset(synthetic_bench, training_pairs(_cfg(synthetic_bench)), crop_size=64, augment=False)
    item = ds[SampleKey(0, 1, 0, 0)]  # image 0 is 40 x 52
    assert item["lq"].shape == (3, 64, 64)
    diff = (_u8(item["lq"]) - _u8(item["gt"])) % 256
    assert (diff == 0).all()  # row 0 has label 0


def test_missing_benchmark_names_the_build_command(tmp_path):
    with pytest.raises(BenchmarkMissingError, match=r"moediffir data build --profile smoke"):
        training_pairs(_cfg(tmp_path / "nothing"))


def test_label_that_contradicts_its_task_is_rejected(synthetic_bench, tmp_path):
    import pandas as pd

    df = pd.read_csv(synthetic_bench / "manifest.csv", dtype=str, keep_default_na=False)
    df.loc[0, "label"] = "5"  # jpeg_q5 is label 0 in the paper preset
    df.to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(ManifestError, match="jpeg_q5"):
        training_pairs(_cfg(tmp_path))


# --------------------------------------------------------------------------------------------- sampler
def _take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_sampler_restart_matches_uninterrupted():
    full = _take(ResumableBatchSampler(10, 3, seed=5), 9)  # 3 batches per epoch
    for k in range(8):
        epoch, batch = full[k][0].epoch, full[k][0].batch
        e, b = ResumableBatchSampler(10, 3, seed=5).next_position(epoch, batch)
        assert _take(ResumableBatchSampler(10, 3, seed=5, start_epoch=e, start_batch=b), 9 - k - 1) == full[k + 1 :]


def test_sampler_epochs_are_permutations_and_differ():
    s = ResumableBatchSampler(12, 4, seed=0)
    e0 = [k.index for b in _take(s, 3) for k in b]
    e1 = [k.index for b in _take(ResumableBatchSampler(12, 4, seed=0, start_epoch=1), 3) for k in b]
    assert sorted(e0) == list(range(12)) and sorted(e1) == list(range(12)) and e0 != e1


def test_sampler_shards_global_batches_across_ranks():
    ranks = [_take(ResumableBatchSampler(20, 3, seed=1, rank=r, world_size=2), 5) for r in range(2)]
    single = _take(ResumableBatchSampler(20, 6, seed=1), 5)
    for b in range(5):
        assert [k.index for k in ranks[0][b] + ranks[1][b]] == [k.index for k in single[b]]
        assert [k.seed for k in ranks[0][b] + ranks[1][b]] == [k.seed for k in single[b]]


def test_sampler_dataset_smaller_than_batch():
    s = ResumableBatchSampler(3, 4, seed=0, world_size=2)
    batches = _take(s, 4)
    assert all(len(b) == 4 for b in batches)
    assert s.batches_per_epoch == 1


# ------------------------------------------------------------------------------------- real benchmark
def test_builder_benchmark_pairs_match_their_files(tmp_path):
    from moediffir.data.builder import build_benchmark

    cfg = resolve_config("smoke", {"data.datasets_dir": str(REPO / "data" / "smoke"), "data.out_dir": str(tmp_path),
                                   "data.codecs": ["jpeg", "webp"], "data.unseen": False, "data.max_train_images": 2})
    build_benchmark(cfg, workers=1, progress=False, splits=("train",))
    rows = training_pairs(cfg)
    assert len(rows) == 12 and sorted(set(rows["label"])) == [0, 1, 2, 9, 10, 11]
    ds = PairedCropDataset(cfg.benchmark_dir, rows, 64, augment=True)
    for idx in range(len(ds)):
        key = SampleKey(idx, 100 + idx, 0, 0)
        item = ds[key]
        row = rows.iloc[idx]
        lq = read_image_rgb(cfg.benchmark_dir / row["path"])
        assert row["path"].split("/")[2] == row["task"] and item["label"] == int(row["label"])
        assert (_u8(item["lq"]) == apply_augment(lq, ds.augment_of(key, *lq.shape[:2]), 64)).all()
