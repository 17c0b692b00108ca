"""The training figures, drawn from the logs training wrote (paper §3.4, §4.1; docs/design.md §7).

Notebooks 00, 02 and 03 call these after training, and ``moediffir report`` calls :func:`training_figures` to
redraw every one whose log exists, so the same logs always give the same files:

- :func:`prior_figures` -- stage 0's VAE and UNet losses (``<run dir>/prior/{vae,unet}/log.jsonl``; ``mini``
  only);
- :func:`stage1_figures` -- Eq. 2 per step with the gate entropy, and the expert usage per seen task
  (``<run dir>/stage1/log.jsonl``; the usage where the prompt design has gates);
- :func:`stage2_figures` -- the stage-II losses, and plain against compensated decoding before and after
  (``<run dir>/stage2/log.jsonl`` and ``summary.json``).

Each returns the paths it wrote (PNG first per figure). The figures that show images (a training pair, the
prior's samples, stage II's decodings, the routing checkpoints) need the networks, so only the notebooks draw
them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from moediffir.data.tasks import label_names
from moediffir.provenance import figure_note
from moediffir.report import study_figures
from moediffir.report.training_figures import decoder_comparison, loss_curves, read_log, training_expert_usage
from moediffir.training.prior import PRIOR_PHASES, prior_stage_dir
from moediffir.training.runtime import stage_dir

GATED_DESIGNS = ("moe", "multi")  # prompt designs whose routers log gates


def prior_figures(cfg, out_dir: str | Path) -> list[Path]:
    """``prior_losses`` from the logs of stage 0's two phases."""
    log = pd.DataFrame([r for phase in PRIOR_PHASES for r in read_log(prior_stage_dir(cfg) / phase)])
    return study_figures.prior_losses(log, out_dir)


def stage1_figures(cfg, out_dir: str | Path) -> list[Path]:
    """``stage1_loss`` and, for a gated prompt design, ``stage1_expert_usage`` from the stage-I log."""
    records = read_log(stage_dir(cfg, "stage1"))
    paths = loss_curves(records, out_dir, "stage1_loss", "Stage I: L_SD (Eq. 2)", extra=("loss", "gate_entropy"),
                        weights=figure_note(cfg))
    if cfg.model.prompt_design in GATED_DESIGNS:
        paths += training_expert_usage(records, label_names(cfg.data.preset), out_dir, weights=figure_note(cfg))
    return paths


def stage2_figures(cfg, out_dir: str | Path) -> list[Path]:
    """``stage2_loss`` and ``stage2_decoder`` from the stage-II log and summary."""
    folder = stage_dir(cfg, "stage2")
    paths = loss_curves(read_log(folder), out_dir, "stage2_loss", "Stage II: LPIPS + L1 (+ GAN)",
                        extra=("l1", "lpips", "g_adv", "d_loss"), weights=figure_note(cfg))
    summary = json.loads((folder / "summary.json").read_text())
    return paths + decoder_comparison(summary, out_dir, weights=figure_note(cfg))


def training_figures(cfg, out_dir: str | Path) -> list[Path]:
    """Every training figure whose log exists under ``cfg``'s run folder (none when nothing was trained)."""
    paths: list[Path] = []
    if cfg.prior.enabled and all((prior_stage_dir(cfg) / phase / "log.jsonl").is_file() for phase in PRIOR_PHASES):
        paths += prior_figures(cfg, out_dir)
    if (stage_dir(cfg, "stage1") / "log.jsonl").is_file():
        paths += stage1_figures(cfg, out_dir)
    folder = stage_dir(cfg, "stage2")
    if (folder / "log.jsonl").is_file() and (folder / "summary.json").is_file():
        paths += stage2_figures(cfg, out_dir)
    return paths
