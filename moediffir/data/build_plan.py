"""The plan of a CIR benchmark build: every unit of work and where each output goes, before any image is coded
(paper §3.5; layout in docs/design.md §3).

A unit is one source image (or training tile) x one codec with all its levels; ``tasks == ()`` converts the GT.
:func:`plan_benchmark` lists the units of a config (missing dataset folders raise early);
:mod:`moediffir.data.work` runs them and :mod:`moediffir.data.builder` drives a whole build.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from PIL import Image

from moediffir.config import Config, DataConfig
from moediffir.data.sources import SourceImage, list_sources, tile_boxes, tile_stem
from moediffir.data.tasks import Task, select_tasks
from moediffir.errors import MoEDiffIRError

SPLITS = ("train", "test")
GT = "gt"
RECORDS_DIR = "records"
SUMMARY_NAME = "build_summary.json"

# DataConfig fields that choose *what* is built, not *how* a codec codes; every other field is a codec
# setting and enters each output's fingerprint (so changing, e.g., x265_preset redoes the outputs).
_BUILD_FIELDS = frozenset({
    "root", "datasets_dir", "preset", "train_sets", "test_sets", "codecs", "unseen", "train_tile",
    "max_train_images", "max_test_images", "workers", "out_dir", "tasks", "allow_missing_codecs",
    "png_compress_level",
})
# Rough relative cost of one task per pixel (CPU, measured on the smoke set), used only to start slow units
# first so that the last units to finish are short ones.
_CODEC_COST = {"hific": 20.0, "c_psnr": 10.0, "c_ssim": 10.0, "vvc": 3.0, "hevc": 1.0, "avc": 0.3,
               "webp": 0.3, "jpeg": 0.1}


class BuildError(MoEDiffIRError, RuntimeError):
    """The benchmark cannot be built as configured (the message says what to change)."""


# ------------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Unit:
    """One source image (or tile) and the tasks of one codec; ``tasks == ()`` converts the GT."""

    split: str
    source: SourceImage
    tasks: tuple[Task, ...]
    cost: float = 0.0

    @property
    def codec(self) -> str:
        return self.tasks[0].codec if self.tasks else GT


@dataclass
class Plan:
    """Everything a build will produce, before any work is done."""

    benchmark_dir: Path
    datasets_dir: Path
    units: list[Unit]
    tasks: dict[str, list[Task]]  # split -> tasks
    sources: dict[str, list[SourceImage]]  # split -> GT items
    failures: list[dict] = field(default_factory=list)  # inputs that failed already while planning

    @property
    def codecs(self) -> list[str]:
        """Codecs that some unit will call."""
        return sorted({u.codec for u in self.units if u.tasks})

    @property
    def n_outputs(self) -> int:
        return sum(len(u.tasks) for u in self.units)


def codec_settings(data: DataConfig) -> dict[str, Any]:
    """The DataConfig fields that change how codecs code (part of every output's fingerprint)."""
    return {f.name: getattr(data, f.name) for f in fields(data) if f.name not in _BUILD_FIELDS}


def _split_sets(cfg: Config, split: str) -> tuple[tuple[str, ...], int]:
    d = cfg.data
    return (d.train_sets, d.max_train_images) if split == "train" else (d.test_sets, d.max_test_images)


def plan_benchmark(cfg: Config, splits: Iterable[str] = SPLITS) -> Plan:
    """List the units of work for ``cfg`` (no image is coded). Missing dataset folders raise early."""
    d = cfg.data
    splits = tuple(splits)
    for s in splits:
        if s not in SPLITS:
            raise BuildError(f"unknown split {s!r}; choose from {SPLITS}")
    selected = select_tasks(d.preset, d.codecs, d.unseen, d.tasks)
    tasks = {"train": [t for t in selected if t.seen], "test": list(selected)}
    units: list[Unit] = []
    sources: dict[str, list[SourceImage]] = {}
    failures: list[dict] = []
    for split in splits:
        set_names, max_images = _split_sets(cfg, split)
        sources[split] = []
        for set_name in set_names:
            for src in list_sources(cfg.datasets_dir, set_name, max_images):
                if split == "train" and d.train_tile > 0:
                    try:
                        with Image.open(src.path) as im:
                            w, h = im.size
                    except Exception as exc:  # noqa: BLE001 - reported by name, the run goes on
                        failures.append(failure_row(split, src, "*", exc))
                        continue
                    items = [SourceImage(src.set_name, src.path, src.rel, tile_stem(src.stem, b), b)
                             for b in tile_boxes(h, w, d.train_tile)]
                else:
                    items = [src]
                sources[split].extend(items)
    for split, items in sources.items():
        by_codec: dict[str, list[Task]] = {}
        for t in tasks[split]:
            by_codec.setdefault(t.codec, []).append(t)
        for src in items:
            units.append(Unit(split, src, ()))
            for codec, ts in by_codec.items():
                units.append(Unit(split, src, tuple(ts), _CODEC_COST.get(codec, 5.0) * len(ts)))
    return Plan(cfg.benchmark_dir, cfg.datasets_dir, units, {s: tasks[s] for s in splits}, sources, failures)


# ---------------------------------------------------------------------------------------------- paths
def output_rel(split: str, set_name: str, task: str, stem: str) -> str:
    """Path of an output (or GT when ``task == "gt"``) relative to ``benchmark_dir``."""
    return f"{split}/{set_name}/{task}/{stem}.png"


def record_rel(split: str, set_name: str, task: str, stem: str) -> str:
    return f"{RECORDS_DIR}/{split}/{set_name}/{task}/{stem}.json"


def failure_row(split: str, src: SourceImage, task: str, exc: BaseException) -> dict:
    """The ``failures.csv`` row of one input that failed (its first error line)."""
    return {"split": split, "set": src.set_name, "image": f"{src.set_name}/{src.rel}", "task": task,
            "error_type": type(exc).__name__, "error": str(exc).splitlines()[0] if str(exc) else repr(exc)}

