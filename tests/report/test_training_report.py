"""The training figures drawn from the logs training wrote: what notebooks 00, 02 and 03 show and
``moediffir report`` redraws (the notebook runs check the bytes agree: tests/notebooks/)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from moediffir.config import resolve_config
from moediffir.report.training_report import training_figures
from moediffir.training.prior import prior_stage_dir
from moediffir.training.runtime import stage_dir
from moediffir.training.training_log import TrainingLog


def _stage1_log(cfg) -> None:
    log = TrainingLog(stage_dir(cfg, "stage1"))
    # two logging windows of two steps; label 0 routed to experts 1-2, label 1 to expert 3 (3 experts)
    log.append({"step": 2, "steps": [1, 2], "losses": [0.9, 0.7], "loss": 0.8, "gate_entropy": 1.0,
                "usage": {"0": [0.5, 0.5, 0.0], "1": [0.0, 0.0, 1.0]}, "selected": {"0": [1, 1, 0], "1": [0, 0, 1]},
                "counts": {"0": 3, "1": 1}})
    log.append({"step": 4, "steps": [3, 4], "losses": [0.5, 0.3], "loss": 0.4, "gate_entropy": 0.5,
                "usage": {"0": [0.9, 0.1, 0.0]}, "selected": {"0": [1, 0, 0]}, "counts": {"0": 1}})


def test_nothing_trained_draws_nothing(tmp_path):
    cfg = resolve_config("smoke", {"runs_dir": str(tmp_path / "runs")})
    assert training_figures(cfg, tmp_path / "fig") == []
    assert not (tmp_path / "fig").exists()


def test_stage1_figures_plot_the_logged_numbers(tmp_path):
    cfg = resolve_config("smoke", {"runs_dir": str(tmp_path / "runs")})
    _stage1_log(cfg)
    paths = training_figures(cfg, tmp_path / "fig")
    assert {p.name for p in paths} == {f"{n}.{e}" for n in ("stage1_loss", "stage1_expert_usage")
                                       for e in ("png", "pdf", "csv")} | {"stage1_loss_terms.csv"}
    per_step = pd.read_csv(tmp_path / "fig" / "stage1_loss.csv")
    assert per_step["step"].tolist() == [1, 2, 3, 4]
    assert per_step["loss"].tolist() == pytest.approx([0.9, 0.7, 0.5, 0.3])
    usage = pd.read_csv(tmp_path / "fig" / "stage1_expert_usage.csv").set_index(["label", "expert"])
    assert usage.loc[(0, 1), "mean_gate"] == pytest.approx((3 * 0.5 + 1 * 0.9) / 4)  # count-weighted over windows
    assert usage.loc[(1, 3), "mean_gate"] == pytest.approx(1.0)
    # the same logs, drawn again elsewhere: the same bytes
    again = training_figures(cfg, tmp_path / "again")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_a_design_without_gates_has_no_usage_figure(tmp_path):
    cfg = resolve_config("smoke", {"runs_dir": str(tmp_path / "runs"), "model.prompt_design": "single"})
    _stage1_log(cfg)
    assert "stage1_expert_usage.png" not in {p.name for p in training_figures(cfg, tmp_path / "fig")}


def test_the_prior_losses_come_from_the_logs_of_both_stage0_phases(tmp_path):
    cfg = resolve_config("mini", {"runs_dir": str(tmp_path / "runs")})
    for phase, loss in (("vae", 0.5), ("unet", 0.2)):
        (prior_stage_dir(cfg) / phase).mkdir(parents=True)
        assert training_figures(cfg, tmp_path / "fig") == []  # not before both phases have logged
        row = {"phase": phase, "step": 10, "loss": loss}
        (prior_stage_dir(cfg) / phase / "log.jsonl").write_text(json.dumps(row) + "\n")
    assert [p.name for p in training_figures(cfg, tmp_path / "fig")] == ["prior_losses.png", "prior_losses.pdf"]
