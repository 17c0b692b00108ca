"""The CIR benchmark builder (paper §3.5): layout, manifest, resume, atomicity under kill -9, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from moediffir.config import load_config, resolve_config
from moediffir.data.builder import BuildError, build_benchmark, plan_benchmark
from moediffir.data.manifest import MANIFEST_COLUMNS, read_manifest, verify_manifest
from moediffir.data.sources import DatasetMissingError, tile_boxes
from moediffir.metrics.fidelity import psnr, ssim
from moediffir.utils.io import read_image_rgb, sha256_file

FAST = ["jpeg", "webp"]


def _cfg(tmp_path: Path, repo_root: Path, **over):
    base = {
        "data.datasets_dir": str(repo_root / "data" / "smoke"),
        "data.out_dir": str(tmp_path / "bench"),
        "data.codecs": FAST,
        "data.unseen": True,
        "data.workers": 1,
    }
    base.update(over)
    return resolve_config("smoke", base)


def _odd_inputs(folder: Path) -> dict[str, Path]:
    """Inputs of every awkward kind, plus three broken files."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    smooth = np.clip(np.cumsum(rng.normal(0, 3, (37, 45, 3)), axis=1) + 120, 0, 255).astype(np.uint8)
    files = {}
    files["odd"] = folder / "odd_45x37.png"
    Image.fromarray(smooth).save(files["odd"])
    files["gray"] = folder / "gray.png"
    Image.fromarray(smooth[..., 0]).save(files["gray"])
    files["rgba"] = folder / "rgba.png"
    rgba = np.dstack([smooth, np.full(smooth.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(files["rgba"])
    files["deep"] = folder / "deep16.png"
    Image.fromarray(smooth[..., 1].astype(np.uint16) * 257).save(files["deep"])  # 16-bit grayscale
    files["truncated"] = folder / "truncated.png"
    data = (folder / "odd_45x37.png").read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty"] = folder / "empty.png"
    files["empty"].write_bytes(b"")
    files["text"] = folder / "notes.jpg"
    files["text"].write_text("not an image")
    return files


def test_layout_manifest_and_metrics(tmp_path, repo_root):
    cfg = _cfg(tmp_path, repo_root)
    report = build_benchmark(cfg, progress=False)
    root = cfg.benchmark_dir
    assert report.complete and report.n_failed == 0
    # train: 6 images x 6 seen tasks; test: 3 images x (6 seen + jpeg_q25 + 3 AVC)
    assert report.n_outputs == 6 * 6 + 3 * 10
    df = read_manifest(root)
    assert tuple(df.columns) == MANIFEST_COLUMNS
    assert len(df) == report.n_outputs == report.n_built
    assert verify_manifest(root, strict=True) == []
    assert set(df[df.split == "train"].kind) == {"seen"}
    assert set(df[df.split == "test"].kind) == {"seen", "unseen_degree", "unseen_type"}
    assert set(df[df.kind == "seen"].label) <= set(range(21)) and set(df[df.kind != "seen"].label) == {-1}
    np.testing.assert_allclose(df.bpp, df.bits / (df.width * df.height))
    assert (df.bits > 0).all()
    # the odd 151x101 test image keeps its size everywhere
    odd = df[df.stem == "kodim24"]
    assert set(zip(odd.width, odd.height)) == {(151, 101)}
    row = odd[odd.task == "jpeg_q10"].iloc[0]
    gt, lq = read_image_rgb(root / row.gt_path), read_image_rgb(root / row.path)
    assert gt.shape == lq.shape == (101, 151, 3)
    assert row.lq_psnr == pytest.approx(psnr(lq, gt), abs=1e-9) and row.lq_ssim == pytest.approx(ssim(lq, gt), abs=1e-6)
    assert row.sha256 == sha256_file(root / row.path)
    # GT equals the source pixels
    assert np.array_equal(gt, read_image_rgb(repo_root / "data/smoke/smoke_test/kodim24.png"))
    # stronger compression -> fewer bits, on every image
    piv = df[df.codec == "jpeg"].pivot_table(index=["split", "stem"], columns="level", values="bits")
    assert (piv["5"] < piv["10"]).all() and (piv["10"] < piv["15"]).all()
    assert load_config(root / "config.json") == cfg
    assert (root / "failures.csv").read_text().startswith("split,set,image,task")
    summary = json.loads((root / "build_summary.json").read_text())
    assert summary["n_built"] == report.n_outputs


def test_rerun_verifies_and_redoes_only_broken_items(tmp_path, repo_root):
    cfg = _cfg(tmp_path, repo_root, **{"data.test_sets": [], "data.max_train_images": 2, "data.codecs": ["jpeg"]})
    first = build_benchmark(cfg, progress=False)
    assert first.n_built == 2 * 3
    again = build_benchmark(cfg, progress=False)
    assert again.n_built == 0 and again.n_skipped == 6
    root = cfg.benchmark_dir
    df = read_manifest(root)
    (root / df.path[0]).write_bytes(b"garbage")  # corrupted output
    (root / "records" / df.path[1].replace(".png", ".json")).unlink()  # lost record
    third = build_benchmark(cfg, progress=False)
    assert third.n_built == 2 and third.n_skipped == 4
    assert verify_manifest(root) == []
    # a codec setting change invalidates the fingerprints -> everything is coded again
    changed = resolve_config("smoke", {**{k: v for k, v in _flat(cfg).items()}, "data.x265_preset": "fast"})
    assert build_benchmark(changed, progress=False).n_built == 6


def _flat(cfg):
    d = cfg.data
    return {"data.datasets_dir": d.datasets_dir, "data.out_dir": d.out_dir, "data.codecs": list(d.codecs),
            "data.test_sets": list(d.test_sets), "data.max_train_images": d.max_train_images, "data.workers": 1}


def test_bad_inputs_are_named_and_the_rest_is_built(tmp_path, repo_root):
    files = _odd_inputs(tmp_path / "ds" / "weird")
    cfg = _cfg(tmp_path, repo_root, **{"data.datasets_dir": str(tmp_path / "ds"), "data.train_sets": [],
                                       "data.test_sets": ["weird"], "data.codecs": ["jpeg", "hevc"],
                                       "data.unseen": False})
    report = build_benchmark(cfg, progress=False)
    bad = {f["image"] for f in report.failures}
    assert bad == {"weird/truncated.png", "weird/empty.png", "weird/notes.jpg"}
    for name in ("truncated.png", "empty.png", "notes.jpg"):
        assert name in report.summary()
    failures = pd.read_csv(cfg.benchmark_dir / "failures.csv")
    assert set(failures.image) == bad and (failures.error.str.contains("weird")).all()
    df = read_manifest(cfg.benchmark_dir)
    assert set(df.stem) == {"odd_45x37", "gray", "rgba", "deep16"}
    assert len(df) == 4 * 6 and verify_manifest(cfg.benchmark_dir) == []
    assert set(zip(df.width, df.height)) == {(45, 37)}
    gray_gt = read_image_rgb(cfg.benchmark_dir / df[df.stem == "gray"].gt_path.iloc[0])
    assert (gray_gt[..., 0] == gray_gt[..., 1]).all() and (gray_gt[..., 1] == gray_gt[..., 2]).all()
    deep = df[df.stem == "deep16"]
    deep_gt = read_image_rgb(cfg.benchmark_dir / deep.gt_path.iloc[0])
    expected = np.asarray(Image.open(files["odd"]))[..., 1]
    assert np.array_equal(deep_gt[..., 0], expected)  # 16-bit v*257 scaled back to v
    assert set(df[df.codec == "hevc"].qp_used.astype(int)) == {37, 42, 47}
    assert not report.complete


def test_missing_dataset_and_empty_selection(tmp_path, repo_root):
    cfg = _cfg(tmp_path, repo_root, **{"data.test_sets": ["LIVE1"]})
    with pytest.raises(DatasetMissingError, match="LIVE1.*data/README.md"):
        build_benchmark(cfg, progress=False)
    cfg = _cfg(tmp_path, repo_root, **{"data.codecs": [], "data.unseen": False})
    with pytest.raises(BuildError, match="no task selected"):
        build_benchmark(cfg, progress=False)


def test_unavailable_codec_is_reported_not_fatal(tmp_path, repo_root):
    over = {"data.hevc_backend": "hm", "data.hm_encoder": str(tmp_path / "no" / "TAppEncoderStatic"),
            "data.test_sets": [], "data.max_train_images": 1}
    cfg = _cfg(tmp_path, repo_root, **over, **{"data.codecs": ["jpeg", "hevc"]})
    report = build_benchmark(cfg, progress=False)
    assert set(report.unavailable) == {"hevc"}
    assert "hevc NOT AVAILABLE" in report.summary()
    df = read_manifest(cfg.benchmark_dir)
    assert set(df.codec) == {"jpeg"} and len(df) == 3
    assert "hevc_qp37" in (cfg.benchmark_dir / "failures.csv").read_text()
    only_missing = _cfg(tmp_path, repo_root, **over, **{"data.codecs": ["hevc"]})
    with pytest.raises(BuildError, match="not available"):  # asked only for the missing codec
        build_benchmark(only_missing, progress=False)
    with pytest.raises(BuildError, match="not available"):  # the same with a pool of workers
        build_benchmark(only_missing, workers=2, progress=False)
    assert read_manifest(only_missing.benchmark_dir).equals(df)  # refused before the folder was touched
    strict = _cfg(tmp_path, repo_root, **over, **{"data.codecs": ["jpeg", "hevc"], "data.allow_missing_codecs": False})
    with pytest.raises(BuildError, match="allow_missing_codecs"):
        build_benchmark(strict, progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_refused_build_leaves_an_existing_benchmark_byte_identical(tmp_path, repo_root, workers):
    """Every codec unavailable is known before the folder is touched: the manifest, config.json and every other
    file of the benchmark already there stay as they were (one process or a pool)."""
    over = {"data.test_sets": [], "data.max_train_images": 1, "data.hevc_backend": "hm",
            "data.hm_encoder": str(tmp_path / "no" / "TAppEncoderStatic")}
    build_benchmark(_cfg(tmp_path, repo_root, **over, **{"data.codecs": ["jpeg"]}), progress=False)
    root = tmp_path / "bench"
    before = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert "manifest.csv" in before and "config.json" in before
    refused = _cfg(tmp_path, repo_root, **over, **{"data.codecs": ["hevc"], "data.workers": workers})
    with pytest.raises(BuildError, match="not available"):
        build_benchmark(refused, progress=False)
    after = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert after == before


def test_training_tiles(tmp_path, repo_root):
    assert tile_boxes(128, 192, 64) == [(y, x, 64, 64) for y in (0, 64) for x in (0, 64, 128)]
    assert tile_boxes(100, 150, 64) == [(y, x, 64, 64) for y in (0, 36) for x in (0, 64, 86)]
    assert tile_boxes(40, 30, 64) == [(0, 0, 40, 30)]
    cfg = _cfg(tmp_path, repo_root, **{"data.train_tile": 64, "data.max_train_images": 1, "data.test_sets": [],
                                       "data.codecs": ["jpeg"]})
    plan = plan_benchmark(cfg, ["train"])
    assert len(plan.sources["train"]) == 6
    build_benchmark(cfg, splits=["train"], progress=False)
    df = read_manifest(cfg.benchmark_dir)
    assert set(df.stem) == {f"kodim01_y{y}_x{x}" for y in (0, 64) for x in (0, 64, 128)}
    assert set(zip(df.width, df.height)) == {(64, 64)}
    src = read_image_rgb(repo_root / "data/smoke/smoke_train/kodim01.png")
    tile = read_image_rgb(cfg.benchmark_dir / "train/smoke_train/gt/kodim01_y64_x128.png")
    assert np.array_equal(tile, src[64:128, 128:192])


def test_parallel_equals_serial(tmp_path, repo_root):
    over = {"data.codecs": ["jpeg", "webp"], "data.unseen": False, "data.max_train_images": 3}
    serial = _cfg(tmp_path / "a", repo_root, **over)
    parallel = _cfg(tmp_path / "b", repo_root, **over)
    build_benchmark(serial, progress=False)
    rep = build_benchmark(parallel, workers=2, progress=False)
    assert rep.workers == 2 and rep.codec_s > 0
    a = read_manifest(serial.benchmark_dir).set_index(["split", "stem", "task"]).sort_index()
    b = read_manifest(parallel.benchmark_dir).set_index(["split", "stem", "task"]).sort_index()
    assert a.index.equals(b.index)
    assert (a.sha256 == b.sha256).all() and (a.bits == b.bits).all()


_KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from moediffir.config import resolve_config
from moediffir.data import builder

def descendants(pid):
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parents.items() if p in frontier]
        found += kids
        frontier = kids
    return found

class KillAfterTwoUnits:
    # the build's progress bar: after its second finished unit (of many), the build SIGKILLs itself
    def __init__(self, *args, **kwargs):
        self.units = 0
    def update(self, n=1):
        self.units += 1
        if self.units == 2:
            Path(sys.argv[4]).write_text(" ".join(map(str, descendants(os.getpid()))))
            os.kill(os.getpid(), signal.SIGKILL)
    def close(self):
        pass

if __name__ == "__main__":
    builder._progress = KillAfterTwoUnits
    cfg = resolve_config("smoke", {"data.datasets_dir": sys.argv[1], "data.out_dir": sys.argv[2],
                                   "data.codecs": ["jpeg", "webp", "hevc", "vvc"], "data.unseen": True})
    builder.build_benchmark(cfg, workers=int(sys.argv[3]), progress=False)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_midway_then_rerun_is_complete(tmp_path, repo_root, workers):
    if not sys.platform.startswith("linux"):
        pytest.skip("kill -9 test uses /proc")
    script = tmp_path / "build.py"
    script.write_text(_KILL_SCRIPT)
    ds = tmp_path / "ds"  # 2 training and 1 test image: 2 x 12 + 1 x 18 outputs
    for split, names in (("smoke_train", ["kodim01.png", "kodim03.png"]), ("smoke_test", ["kodim24.png"])):
        (ds / split).mkdir(parents=True)
        for n in names:
            (ds / split / n).write_bytes((repo_root / "data" / "smoke" / split / n).read_bytes())
    out, pids = tmp_path / "bench", tmp_path / "workers.txt"
    proc = subprocess.run([sys.executable, str(script), str(ds), str(out), str(workers), str(pids)],
                          cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False)
    assert proc.returncode == -signal.SIGKILL, "the build was to kill itself after its second unit"
    children = [int(p) for p in pids.read_text().split()]
    if workers > 1:
        assert len(children) >= workers, "the worker processes were not seen"
    # the workers die with their parent (PR_SET_PDEATHSIG), no orphan keeps writing
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(c) for c in children):
        time.sleep(0.1)
    orphans = [c for c in children if _alive(c)]
    assert not orphans, f"workers {orphans} outlived the killed build"
    assert not (out / "manifest.csv").exists()
    cfg = resolve_config("smoke", {"data.datasets_dir": str(ds), "data.out_dir": str(out),
                                   "data.codecs": ["jpeg", "webp", "hevc", "vvc"], "data.unseen": True})
    report = build_benchmark(cfg, workers=1, progress=False)
    assert report.complete and report.n_skipped >= 4 and report.n_built > 0
    assert report.n_built + report.n_skipped == report.n_outputs == 2 * 12 + 1 * 18
    assert verify_manifest(out, strict=True) == []
    assert not [p for p in out.rglob("*.tmp")]
    for p in out.rglob("*.png"):  # every PNG decodes completely
        read_image_rgb(p)


def test_building_one_split_keeps_the_other_in_the_manifest(tmp_path, repo_root):
    cfg = _cfg(tmp_path, repo_root, **{"data.codecs": ["jpeg"], "data.unseen": False, "data.max_train_images": 2})
    build_benchmark(cfg, splits=["train"], progress=False)
    assert set(read_manifest(cfg.benchmark_dir).split) == {"train"}
    rep = build_benchmark(cfg, splits=["test"], progress=False)
    df = read_manifest(cfg.benchmark_dir)
    assert rep.n_built == 3 * 3 and len(df) == 2 * 3 + 3 * 3
    assert set(df.split) == {"train", "test"} and verify_manifest(cfg.benchmark_dir, strict=True) == []


# a `moediffir data build` that, once it holds the folder's lock, waits for the test's go before it builds
_HELD_BUILD = """
import sys
import time
from pathlib import Path

import moediffir.data.builder as builder
from moediffir.cli import main

go, run_units = Path(sys.argv[1]), builder._run_units


def after_go(*args, **kwargs):
    while not go.exists():
        time.sleep(0.02)
    return run_units(*args, **kwargs)


builder._run_units = after_go
sys.exit(main(sys.argv[2:]))
"""
_SMALL_BUILD = ["data", "build", "--profile", "smoke", "--out", "bench", "--split", "train", "--workers", "1",
                "--no-progress", "--set", "data.codecs=[\"jpeg\"]", "--set", "data.max_train_images=2",
                "--set", "data.unseen=false"]


def _cli_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")


def _one_line_refusal(proc: subprocess.CompletedProcess, holder_pid: int) -> str:
    import socket

    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("moediffir:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"benchmark folder in use by another run (PID {holder_pid} on {socket.gethostname()}, since " in errors[0]
    return errors[0]


def _build_outputs(root: Path) -> dict[str, object]:
    """Every file of a build, as bytes; the JSON files that hold timings without their timings."""
    timings = {"codec_s", "wall_s", "worker_s", "items_per_s", "outside_codec_share"}
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            if p.suffix == ".json" and rel != "config.json":
                out[rel] = {k: v for k, v in json.loads(p.read_text()).items() if k not in timings}
            else:
                out[rel] = p.read_bytes()
    return out


def test_a_build_into_a_locked_folder_is_refused_at_once(tmp_path, repo_root):
    from moediffir.utils.locks import folder_lock

    argv = [*_SMALL_BUILD, "--set", f"data.datasets_dir={repo_root / 'data' / 'smoke'}"]
    with folder_lock(tmp_path / "bench"):  # as a first build holds it
        proc = subprocess.run([sys.executable, "-m", "moediffir.cli", *argv], cwd=tmp_path, env=_cli_env(),
                              capture_output=True, text=True, timeout=600, check=False)
        assert [p.name for p in (tmp_path / "bench").iterdir()] == [".moediffir.lock"]  # nothing written
    _one_line_refusal(proc, os.getpid())


def test_two_builds_started_together_give_one_build_and_one_refusal(tmp_path, repo_root, monkeypatch):
    from moediffir.utils.locks import read_holder

    argv = [*_SMALL_BUILD, "--set", f"data.datasets_dir={repo_root / 'data' / 'smoke'}"]
    race = tmp_path / "race"
    race.mkdir()
    script, go = tmp_path / "held_build.py", tmp_path / "go"
    script.write_text(_HELD_BUILD)
    first = subprocess.Popen([sys.executable, str(script), str(go), *argv], cwd=race, env=_cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while read_holder(race / "bench") is None:  # the first build has taken the folder's lock
            if first.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the first build never took the lock: " + first.communicate()[1][-3000:])
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "moediffir.cli", *argv], cwd=race, env=_cli_env(),
                                capture_output=True, text=True, timeout=600, check=False)
        go.touch()
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    _one_line_refusal(second, first.pid)
    assert first.returncode == 0, out[-2000:] + err[-2000:]
    assert "6 built" in out

    lone = tmp_path / "lone"
    lone.mkdir()
    monkeypatch.chdir(lone)  # the same relative --out, so that config.json is the same too
    cfg = resolve_config("smoke", {"data.datasets_dir": str(repo_root / "data" / "smoke"), "data.out_dir": "bench",
                                   "data.codecs": ["jpeg"], "data.max_train_images": 2, "data.unseen": False,
                                   "data.workers": 1})
    build_benchmark(cfg, splits=("train",), progress=False)
    assert _build_outputs(race / "bench") == _build_outputs(lone / "bench")  # the lock file is gone as well
