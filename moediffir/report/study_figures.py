"""The notebooks' own figures: the prior trained here, the training crops, and the sampler study (docs/design.md
§10; paper §3.1, §3.4, §4.1).

Each function draws what a notebook shows as a visual checkpoint and saves it with
:func:`~moediffir.report.output.save_figure` in the kit's fixed style, returning the paths (the PNG first):

- :func:`prior_losses` -- the stage-0 prior's VAE and UNet losses (notebook 00);
- :func:`prior_samples` -- the prior's unconditional samples (notebook 00);
- :func:`image_row` -- a row of titled images: a training pair (notebook 02), one latent decoded at several
  fusion weights (notebook 03);
- :func:`sampler_study` -- PSNR and LPIPS against sampler steps, DDPM-200 as the reference (notebook 06;
  ``moediffir report`` redraws it from ``tables/sampler_study.csv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from moediffir.report.figures import figure_style, new_figure
from moediffir.report.output import save_figure


def prior_losses(log: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """``prior_losses``: the loss of each stage-0 phase (``vae``, ``unet``) against its step, log scale."""
    with figure_style():
        fig = new_figure(9, 3)
        for ax, phase in zip(fig.subplots(1, 2), ("vae", "unet")):
            part = log[log["phase"] == phase]
            ax.plot(part["step"], part["loss"])
            ax.set(title=f"{phase} loss (trained here)", xlabel="step", yscale="log")
        return save_figure(fig, out_dir, "prior_losses")


def prior_samples(samples: Any, photos: int, out_dir: str | Path) -> list[Path]:
    """``prior_samples``: unconditional samples ``(n, 3, H, W)`` in [0, 1] of a prior trained on ``photos``."""
    with figure_style():
        fig = new_figure(12, 1.9)
        for ax, img in zip(fig.subplots(1, len(samples)), samples):
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.axis("off")
        fig.suptitle(f"unconditional samples of the prior (trained here from scratch on {photos} photos)")
        return save_figure(fig, out_dir, "prior_samples")


def image_row(panels: Sequence[tuple[str, Any]], out_dir: str | Path, name: str, height: float,
              title: str | None = None) -> list[Path]:
    """``<name>``: one titled image per panel (``(title, (3, H, W) tensor in [0, 1])``), 2 in wide each."""
    with figure_style():
        fig = new_figure(2.0 * len(panels), height)
        for ax, (caption, img) in zip(fig.subplots(1, len(panels)), panels):
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_title(caption)
            ax.axis("off")
        if title is not None:
            fig.suptitle(title)
        return save_figure(fig, out_dir, name)


def sampler_study(study: pd.DataFrame, task: str, out_dir: str | Path) -> list[Path]:
    """``sampler_study``: PSNR (and LPIPS) on ``task`` against steps for each sampler, DDPM dashed."""
    with figure_style():
        fig = new_figure(9, 3)
        axes = fig.subplots(1, 2)
        ref = study[study["sampler"] == "ddpm"].iloc[0]
        for ax, metric in zip(axes, [m for m in ("psnr", "lpips") if m in study]):
            for name, part in study[study["sampler"] != "ddpm"].groupby("sampler"):
                ax.plot(part["steps"], part[metric], marker="o", label=name)
            ax.axhline(ref[metric], color="k", ls="--", label=f"ddpm {int(ref['steps'])}")
            ax.set(xlabel="sampler steps", ylabel=metric, title=f"{metric} on {task}")
            ax.legend()
        return save_figure(fig, out_dir, "sampler_study")
