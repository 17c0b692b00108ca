"""The benchmark built in shards and merged (moediffir.data.sharded_build, moediffir.sharding): the same manifest as one
build, and every missing or stale part named."""

from __future__ import annotations

from pathlib import Path

import pytest
from repo_paths import REPO_ROOT as REPO

from moediffir.cli import main as cli_main
from moediffir.config import resolve_config
from moediffir.data.builder import build_benchmark
from moediffir.data.manifest import MANIFEST_NAME, read_manifest, verify_manifest
from moediffir.data.sharded_build import merge_benchmark, merge_if_sharded, parts_root
from moediffir.sharding import Shard, ShardError, bucket


def _cfg(out: Path, **extra):
    return resolve_config("smoke", {"data.datasets_dir": str(REPO / "data" / "smoke"), "data.out_dir": str(out),
                                    "data.codecs": ["jpeg"], "data.max_train_images": 2,
                                    "data.max_test_images": 2, **extra})


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for split in ("train", "test") for p in sorted((root / split).rglob("*.png"))}


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    build_benchmark(_cfg(root), workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    cfg = _cfg(root)
    for k in (1, 2):
        report = build_benchmark(cfg, workers=1, progress=False, shard=Shard(k, 2))
        assert report.manifest_path == parts_root(cfg) / f"{k}-of-2" / MANIFEST_NAME
        assert not (root / MANIFEST_NAME).exists()  # a shard never writes the manifest
    return root, cfg


def test_shard_keys_are_stable_and_cover_everything():
    keys = [f"test/set/img{i:03d}" for i in range(200)]
    owners = [[Shard(k, 3).owns(key) for k in (1, 2, 3)] for key in keys]
    assert all(sum(o) == 1 for o in owners)  # each item in exactly one shard
    assert all(50 <= sum(o[k] for o in owners) <= 84 for k in range(3))  # roughly even
    assert [bucket(k, 3) for k in keys[:5]] == [bucket(k, 3) for k in keys[:5]]
    assert bucket("test/set/img000", 3) == int.from_bytes(
        __import__("hashlib").sha256(b"test/set/img000").digest()[:8], "big") % 3  # no process-seeded hash()
    with pytest.raises(ShardError, match="3/2"):
        Shard.parse("3/2")
    with pytest.raises(ShardError, match="'two'"):
        Shard.parse("two")


def test_merged_shards_equal_one_run(one_run, two_shards):
    root, cfg = two_shards
    parts = [read_manifest(parts_root(cfg) / f"{k}-of-2") for k in (1, 2)]
    assert len(parts[0]) and len(parts[1])  # both shards did some of the work
    assert not set(parts[0]["path"]) & set(parts[1]["path"])
    path = merge_benchmark(cfg)
    assert path.read_bytes() == (one_run / MANIFEST_NAME).read_bytes()  # same rows, order, checksums
    assert _files(root) == _files(one_run)  # same files, same bytes
    assert verify_manifest(root) == []
    assert (root / "failures.csv").read_bytes() == (one_run / "failures.csv").read_bytes()
    before = path.read_bytes()
    merge_benchmark(cfg, 2)  # idempotent
    assert path.read_bytes() == before


def test_missing_and_stale_parts_are_named(two_shards, tmp_path):
    root, cfg = two_shards
    more = _cfg(root, **{"data.max_test_images": 3})  # one more test image: only its shard goes stale
    with pytest.raises(ShardError, match=r"stale part\(s\) [12]/2 \(items, n_items changed\)") as err:
        merge_benchmark(more)
    assert "1/2 (" not in str(err.value) or "2/2 (" not in str(err.value)
    with pytest.raises(ShardError, match=r"missing part\(s\) 3/3"):
        build_benchmark(cfg, workers=1, progress=False, shard=Shard(1, 3))
        build_benchmark(cfg, workers=1, progress=False, shard=Shard(2, 3))
        merge_benchmark(cfg, 3)
    with pytest.raises(ShardError, match=r"parts of \[2, 3\] shards; say which with --shards N"):
        merge_benchmark(cfg)
    assert not (root / MANIFEST_NAME).exists()  # a shard build started: the old manifest is gone
    merge_benchmark(cfg, 2)  # the two-shard parts are still current
    assert merge_if_sharded(cfg) is None  # a manifest exists: nothing to do


def test_cli_builds_a_shard_and_merge_names_the_missing_one(tmp_path, capsys):
    args = ["--profile", "smoke", "--out", str(tmp_path), "--set", f"data.datasets_dir={REPO / 'data' / 'smoke'}",
            "--set", 'data.codecs=["webp"]', "--set", "data.max_test_images=2", "--set", "data.max_train_images=1", "--set", "data.unseen=false"]
    assert cli_main(["data", "build", *args, "--shard", "2/2", "--no-progress", "--workers", "1"]) == 0
    assert "shard 2/2" in capsys.readouterr().out
    assert cli_main(["data", "merge", *args]) == 2
    assert "missing part(s) 1/2" in capsys.readouterr().err
    assert cli_main(["data", "build", *args, "--shard", "1/2", "--no-progress", "--workers", "1"]) == 0
    assert cli_main(["data", "merge", *args]) == 0
    assert len(read_manifest(tmp_path)) == 2 * 3 + 1 * 3  # 2 test + 1 train image x 3 WebP levels
