"""Shared by the study tests: an untrained ``smoke`` model and noisy image pairs of a size off the latent grid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from moediffir.config import resolve_config


@pytest.fixture(scope="session")
def fresh_pipe(tmp_path_factory):
    """The pipeline of a freshly built ``smoke`` model folder (random weights, zero-initialised fusion)."""
    from moediffir.pipelines import load_pipeline
    from moediffir.weights.model_folder import build_fresh_model_folder

    folder = build_fresh_model_folder(tmp_path_factory.mktemp("studies") / "model", resolve_config("smoke"))
    return load_pipeline(folder)


@pytest.fixture(scope="session")
def noisy_pair() -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``make(seed) -> (lq, gt)``: a random 40x56 uint8 photo and a copy with uniform noise of +-30 levels
    (not a multiple of the latent grid: the pipeline pads and crops)."""

    def make(seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        gt = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        lq = np.clip(gt.astype(int) + rng.integers(-30, 31, gt.shape), 0, 255).astype(np.uint8)
        return lq, gt

    return make
