"""The notebooks' own figures drawn by the package (moediffir.report.study_figures), and the sampler study
redrawn by ``moediffir report`` from its saved numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from moediffir.config import resolve_config
from moediffir.report import study_figures
from moediffir.report.regenerate import regenerate_report
from moediffir.utils.io import atomic_write_csv


def _study() -> pd.DataFrame:
    return pd.DataFrame({"sampler": ["ddpm", "ddim", "ddim", "dpmpp_2m", "dpmpp_2m"], "steps": [200, 10, 20, 10, 20],
                         "n": 6, "s_per_image": [9.1, 0.5, 1.0, 0.5, 1.0], "psnr": [24.0, 23.1, 23.9, 23.5, 24.01],
                         "lpips": [0.31, 0.36, 0.32, 0.34, 0.31]})


def test_the_sampler_study_is_redrawn_from_its_csv_byte_identically(tmp_path):
    cfg = resolve_config("smoke", {"results_dir": str(tmp_path / "results")})
    out = cfg.profile_results_dir
    atomic_write_csv(out / "metrics" / "results.csv", pd.DataFrame(
        columns=["method", "set", "task", "codec", "level", "kind", "scope", "metric", "value", "n_images", "n_tasks",
                 "conventions", "weights", "model_weights", "note"]))
    atomic_write_csv(out / "tables" / "sampler_study.csv", _study())
    drawn = study_figures.sampler_study(_study(), cfg.eval.sampler_study_task, tmp_path / "notebook")
    written = regenerate_report(cfg, out)
    assert out / "figures" / "sampler_study.png" in written
    for p in drawn:
        assert (out / "figures" / p.name).read_bytes() == p.read_bytes()  # the notebook's figure, from the CSV
    other = _study().assign(psnr=lambda d: d["psnr"] - 1.0)
    changed = study_figures.sampler_study(other, cfg.eval.sampler_study_task, tmp_path / "other")
    assert changed[0].read_bytes() != drawn[0].read_bytes()  # the numbers are what is drawn


def test_image_row_and_prior_figures_draw_what_they_are_given(tmp_path):
    white, black = torch.ones(3, 16, 16), torch.zeros(3, 16, 16)
    a = study_figures.image_row([("LQ", white), ("GT", black)], tmp_path / "a", "pair", height=2.2)
    b = study_figures.image_row([("LQ", black), ("GT", white)], tmp_path / "b", "pair", height=2.2)
    assert [p.suffix for p in a] == [".png", ".pdf"]
    assert a[0].read_bytes() != b[0].read_bytes()
    log = pd.DataFrame({"phase": ["vae"] * 3 + ["unet"] * 3, "step": [1, 2, 3] * 2, "loss": [1.0, 0.5, 0.2, 2, 1, .7]})
    assert study_figures.prior_losses(log, tmp_path)[0].name == "prior_losses.png"
    samples = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    png = study_figures.prior_samples(samples, 18, tmp_path)[0]
    assert np.asarray(Image.open(png)).std() > 0  # the samples are on the canvas, not a blank figure
