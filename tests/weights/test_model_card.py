"""The model card (README.md) of a model folder against the config that produced it (moediffir.weights.model_card)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from repo_paths import REPO_ROOT as REPO

from moediffir.config import resolve_config
from moediffir.evaluation.benchmark_restore import folder_fingerprint
from moediffir.provenance import provenance
from moediffir.utils.revision import git_revision
from moediffir.weights.model_card import evaluation_summary
from moediffir.weights.model_folder import build_fresh_model_folder, read_model_info, record_evaluation


def _card(folder):
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cfg = resolve_config("smoke", {"seed": 7, "data.codecs": ["jpeg", "webp"]})
    folder = build_fresh_model_folder(tmp_path_factory.mktemp("card") / "model", cfg, seed=7)
    return cfg, folder


def test_card_describes_the_config(model):
    cfg, folder = model
    meta, body = _card(folder)
    facts = meta["moediffir"]
    assert facts["profile"] == "smoke" and facts["seed"] == 7 and facts["trained"] is False
    assert facts["codecs"] == ["jpeg", "webp"] and facts["level_preset"] == cfg.data.preset
    assert facts["provenance"] == provenance(cfg, trained=False) == read_model_info(folder)["provenance"]
    assert facts["git_revision"] == git_revision(REPO) != "unknown"
    assert meta["library_name"] == "moediffir" and meta["pipeline_tag"] == "image-to-image"
    assert meta["datasets"] == list(cfg.data.train_sets) and "random-weights" in meta["tags"]
    assert "base_model" not in meta  # tiny random networks: no SD weights behind it
    assert "model-index" not in meta and "Not evaluated yet" in body
    assert "**Random weights**" in body
    for part, value in provenance(cfg, trained=False).items():
        assert f"| `{part}` | {value} |" in body


def test_paper_card_names_its_base_model(tmp_path):
    from moediffir.weights.model_card import card_metadata, render_model_card

    cfg = resolve_config("paper", {"seed": 3})
    info = {"provenance": provenance(cfg), "info": {"stage1": {"steps": 400000}, "stage2": {"steps": 100000}},
            "git_revision": "abc123"}
    meta, body = render_model_card(card_metadata(cfg, info)).split("\n---\n", 1)
    meta = yaml.safe_load(meta[4:])
    assert meta["base_model"] == cfg.model.sd_source and "random-weights" not in meta["tags"]
    assert meta["moediffir"]["steps"] == {"stage1": 400000, "stage2": 100000}
    assert meta["moediffir"]["git_revision"] == "abc123" and "Random weights" not in body


def test_evaluation_numbers_are_added_without_changing_the_model(model):
    folder = model[1]
    before = folder_fingerprint(folder)
    results = pd.DataFrame([
        {"method": "moe-diffir", "set": "smoke_test", "kind": "seen", "scope": "kind", "metric": "psnr",
         "value": 21.25, "n_images": 6, "n_tasks": 3},
        {"method": "moe-diffir", "set": "smoke_test", "kind": "seen", "scope": "task", "metric": "psnr",
         "value": 20.0, "n_images": 2, "n_tasks": 1},
        {"method": "no restoration", "set": "smoke_test", "kind": "seen", "scope": "kind", "metric": "psnr",
         "value": 19.0, "n_images": 6, "n_tasks": 3},
    ])
    record_evaluation(folder, evaluation_summary(results, ["moe-diffir"], "random(seed=0)", "color=rgb"))
    meta, body = _card(folder)
    (res,) = meta["model-index"][0]["results"]
    assert res["dataset"]["name"] == "smoke_test" and res["dataset"]["config"] == "seen"
    assert res["metrics"] == [{"type": "psnr", "value": 21.25, "name": "psnr (moe-diffir, mean of 3 seen tasks)"}]
    assert "| moe-diffir | smoke_test | seen (3) | psnr | 21.2500 | 6 |" in body and "no restoration" not in body
    assert "random(seed=0)" in body
    assert json.loads((folder / "eval_results.json").read_text())["results"][0]["value"] == 21.25
    assert folder_fingerprint(folder) == before  # restorations of this model stay valid
