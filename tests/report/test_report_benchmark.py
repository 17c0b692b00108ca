"""Benchmark summary table and figures (paper §3.5, docs/design.md §7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from repo_paths import REPO_ROOT

from moediffir.config import load_config, resolve_config
from moediffir.data.builder import build_benchmark
from moediffir.data.manifest import read_manifest
from moediffir.report.benchmark import (
    benchmark_summary,
    plot_benchmark_grid,
    write_benchmark_report,
)
from moediffir.report.output import markdown_table


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    repo_root = REPO_ROOT
    cfg = resolve_config("smoke", {
        "data.datasets_dir": str(repo_root / "data" / "smoke"), "data.out_dir": str(tmp / "bench"),
        "data.codecs": ["jpeg", "webp"], "data.max_train_images": 2, "data.workers": 1,
        "results_dir": str(tmp / "results"),
    })
    build_benchmark(cfg, progress=False)
    return cfg


def test_summary_numbers_come_from_the_manifest(built):
    df = read_manifest(built.benchmark_dir)
    s = benchmark_summary(df)
    assert len(s) == df.groupby(["split", "set", "task"]).ngroups
    row = s[(s.split == "test") & (s.task == "jpeg_q10")].iloc[0]
    sub = df[(df.split == "test") & (df.task == "jpeg_q10")]
    assert row.images == 3
    assert row.bpp == pytest.approx(sub.bpp.mean()) and row.lq_psnr == pytest.approx(sub.lq_psnr.mean())
    assert row.weights == "n/a" and row.label == 1
    # train rows first, tasks in label order, unseen after seen
    assert list(s.split.unique()) == ["train", "test"]
    test_tasks = list(s[s.split == "test"].task)
    assert test_tasks.index("jpeg_q5") < test_tasks.index("webp_q5") < test_tasks.index("jpeg_q25")


def test_random_weights_are_flagged(built):
    df = read_manifest(built.benchmark_dir).copy()
    df.loc[df.codec == "webp", "weights"] = "random"  # as an untrained learned codec would report
    out = write_benchmark_report(built, manifest=df)
    md = out["summary_md"].read_text()
    assert "UNTRAINED" in md and "random" in md
    assert "data range 255" in md


def test_report_files(built):
    out = write_benchmark_report(built)
    tables = built.profile_results_dir / "tables"
    figures = built.profile_results_dir / "figures"
    for name in ("benchmark_grid", "bpp_vs_psnr"):
        png, pdf = figures / f"{name}.png", figures / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    csv = pd.read_csv(tables / "benchmark_summary.csv")
    assert list(csv.columns)[:3] == ["split", "set", "task"] and "weights" in csv.columns
    assert len(csv) == len(out["summary"])
    assert load_config(tables / "benchmark_summary.config.json") == built
    assert load_config(figures / "benchmark_figures.config.json") == built
    assert "UNTRAINED" not in out["summary_md"].read_text()  # no learned codec here


def test_grid_has_one_row_per_codec(built):
    df = read_manifest(built.benchmark_dir)
    fig = plot_benchmark_grid(df, built.benchmark_dir, image="kodim24", crop=48)
    axes = np.array(fig.axes).reshape(3, -1)  # JPEG, WebP, AVC rows
    assert axes.shape[1] == 1 + 4  # GT + JPEG q5/q10/q15/q25
    assert [a.get_ylabel() for a in axes[:, 0]] == ["JPEG", "WebP", "AVC"]
    with pytest.raises(ValueError, match="not in"):
        plot_benchmark_grid(df, built.benchmark_dir, image="nope")


def test_markdown_table():
    md = markdown_table(pd.DataFrame({"a": [1.23456, float("nan")], "b": ["x|y", "z"]}), {"a": 2})
    assert md.splitlines()[0] == "| a | b |"
    assert "| 1.23 | x\\|y |" in md and "|  | z |" in md
