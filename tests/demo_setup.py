"""A small, untrained setup for the tests of the evaluation of §4.2 (no training needed).

:func:`make_demo_setup` builds, under one folder, a CIR benchmark of the bundled smoke images restricted to
fast codecs (``data/benchmark``-like, with the real builder) and an *untrained* smoke model folder (tiny random
backbone, fresh MoE-Prompt module and decoder compensator, written by the real ``save_model_folder``). Every
number measured on it comes from random weights and is labelled so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moediffir.config import Config, resolve_config


def demo_config(root: str | Path, datasets_dir: str | Path, codecs: Sequence[str] = ("jpeg",),
                overrides: Mapping[str, Any] | None = None) -> Config:
    """The smoke config with every output under ``root`` (benchmark, runs, results) and only ``codecs``."""
    root = Path(root)
    base = {
        "data.datasets_dir": str(datasets_dir),
        "data.out_dir": str(root / "benchmark"),
        "data.codecs": list(codecs),
        "data.workers": 1,
        "runs_dir": str(root / "runs"),
        "results_dir": str(root / "results"),
        "device": "cpu",
    }
    return resolve_config("smoke", {**base, **dict(overrides or {})})


def make_demo_setup(root: str | Path, datasets_dir: str | Path, codecs: Sequence[str] = ("jpeg",),
                    overrides: Mapping[str, Any] | None = None, seed: int = 0) -> Config:
    """Build the test split of the benchmark and an untrained model at ``<runs>/smoke/model``; return the config.

    ``datasets_dir``: a folder holding the smoke test set (``data/smoke`` of the repository).
    """
    import torch

    from moediffir.data.builder import build_benchmark
    from moediffir.models.compensator import build_compensator
    from moediffir.weights.builders import build_backbone, build_denoiser
    from moediffir.weights.model_folder import save_model_folder

    cfg = demo_config(root, datasets_dir, codecs, overrides)
    build_benchmark(cfg, splits=("test",), progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae, scheduler = build_backbone(cfg)
        denoiser = build_denoiser(cfg, unet=unet)
        compensator = build_compensator(cfg, vae)
    save_model_folder(cfg.run_dir / "model", cfg, denoiser, vae, scheduler, compensator,
                      info={"note": "untrained demo model (demo_setup)"})
    return cfg
