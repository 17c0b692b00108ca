"""The model card of a model folder: ``README.md`` in the Hugging Face model-card layout (paper §3.4, §4).

A YAML metadata block (``library_name``, ``pipeline_tag``, ``tags``, ``base_model``, ``datasets`` and, once the
model was evaluated, a ``model-index`` of its numbers), then prose: what produced the model (profile, recipe,
training steps, data, seed, git revision of the kit), where the weights of each part come from
(:func:`moediffir.provenance.provenance`, recorded in ``model_info.json``), and the evaluation numbers (paper
§4.2: the mean over a test set's tasks of one kind). So the folder can be shared on a model hub as it is.

:func:`write_model_card` is called by :func:`~moediffir.weights.model_folder.save_model_folder`;
:func:`~moediffir.weights.model_folder.record_evaluation` stores an evaluation's numbers in ``eval_results.json`` beside it and rewrites the
card. Neither file is part of the model's identity (restoration fingerprints skip them: :data:`CARD_FILES`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from moediffir.config import Config
from moediffir.provenance import PRETRAINED, RANDOM, TRAINED, provenance_label
from moediffir.utils import revision
from moediffir.utils.io import atomic_write_text

CARD_FILE = "README.md"
EVAL_FILE = "eval_results.json"
CARD_FILES = (CARD_FILE, EVAL_FILE)  # describe the model; not part of it
PART_TEXT = {
    "unet": "denoising UNet of the latent diffusion prior (paper §3.1; frozen)",
    "vae": "VAE encoder / decoder of the prior (frozen)",
    "degradation_prior": "degradation prior feeding the blind router (§3.3; frozen)",
    "v2t_clip_encoder": "CLIP image encoder of the Visual2Text adapter (§3.3; frozen)",
    "prompt_module": "MoE prompt module: prompt pool and router (§3.2, Eq. 3; stage I)",
    "spade": "SPADE modulation of the UNet by the prompts (§3.2; stage I)",
    "v2t_adapter": "Visual2Text tokens and quality enhancer (§3.3; stage I)",
    "compensator": "decoder compensator (§3.4, Eq. 4; stage II)",
}
EVAL_SCOPE = "kind"  # the paper's "average on 21 tasks" per set (Tables 2-4)


def git_revision() -> str:
    """The kit's git revision (``<sha>[-dirty]`` or ``unknown``)."""
    return revision.git_revision(Path(__file__).resolve().parents[2])


def _steps(info: Mapping[str, Any]) -> dict[str, int]:
    extra = info.get("info", {}) or {}
    return {stage: int(extra[stage]["steps"]) for stage in ("stage1", "stage2")
            if isinstance(extra.get(stage), Mapping) and "steps" in extra[stage]}


def card_metadata(cfg: Config, info: Mapping[str, Any], evaluation: Mapping[str, Any] | None = None) -> dict:
    """The card's facts as one dict (the YAML block and the prose are both written from it)."""
    prov = dict(info.get("provenance", {}))
    trained = (info.get("info", {}) or {}).get("trained", True) is not False
    return {
        "profile": cfg.profile,
        "recipe": getattr(cfg.model, "recipe", None),
        "trained": trained,
        "steps": _steps(info),
        "seed": cfg.seed,
        "git_revision": info.get("git_revision") or "unknown",
        "train_sets": list(cfg.data.train_sets),
        "level_preset": cfg.data.preset,
        "codecs": list(cfg.data.codecs),
        "provenance": prov,
        "random_parts": [p for p, v in prov.items() if v == RANDOM],
        "sd_source": cfg.model.sd_source if prov.get("unet") == PRETRAINED else None,
        "evaluation": dict(evaluation) if evaluation else None,
        # a model imported from other checkpoints (moediffir import-released): where from, and the V2T state
        "imported": {k: str(v) for k, v in (info.get("info", {}) or {}).items() if k in ("source", "v2t")},
    }


def _yaml_block(meta: Mapping[str, Any]) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    results = []
    for r in (meta["evaluation"] or {}).get("results", []):
        results.append(EvalResult(
            task_type="image-to-image", task_name="compressed image restoration", dataset_type=r["set"],
            dataset_name=r["set"], dataset_config=r["kind"], metric_type=r["metric"], metric_value=r["value"],
            metric_name=f"{r['metric']} ({r['method']}, mean of {r['n_tasks']} {r['kind']} tasks)",
        ))
    tags = ["image-restoration", "compressed-image-restoration", "diffusion", "mixture-of-experts", "moe-diffir",
            f"profile-{meta['profile']}"]
    if meta["random_parts"] or not meta["trained"]:
        tags.append("random-weights")
    data = ModelCardData(
        library_name="moediffir", pipeline_tag="image-to-image", license="apache-2.0", tags=tags,
        base_model=meta["sd_source"], datasets=meta["train_sets"], model_name=f"MoE-DiffIR ({meta['profile']})",
        eval_results=results or None,
        moediffir={k: meta[k] for k in ("profile", "recipe", "trained", "steps", "seed", "git_revision",
                                        "level_preset", "codecs", "provenance")},
    )
    return "---\n" + data.to_yaml() + "\n---\n"


def _evaluation_lines(evaluation: Mapping[str, Any] | None) -> list[str]:
    if not evaluation or not evaluation.get("results"):
        return ["Not evaluated yet: `moediffir evaluate --model <this folder>` (or notebook 06) adds the numbers."]
    weights = (f"Metric weights: {evaluation.get('metric_weights', 'unknown')}; conventions: "
               f"{evaluation.get('conventions', 'unknown')}.")
    lines = [weights, "",
             "| method | set | tasks | metric | value | images |", "|---|---|---|---|---|---|"]
    for r in evaluation["results"]:
        lines.append(f"| {r['method']} | {r['set']} | {r['kind']} ({r['n_tasks']}) | {r['metric']} | "
                     f"{r['value']:.4f} | {r['n_images']} |")
    return lines


def render_model_card(meta: Mapping[str, Any]) -> str:
    """``README.md`` text from :func:`card_metadata`."""
    prov = meta["provenance"]
    lines = [_yaml_block(meta), f"# MoE-DiffIR — profile `{meta['profile']}`", ""]
    if meta["random_parts"] or not meta["trained"]:
        why = ", ".join(meta["random_parts"]) if meta["random_parts"] else "every trainable part (not trained)"
        lines += [(f"> **Random weights** ({why}): outputs of this model are not restorations and its numbers "
                   "say nothing about the method."), ""]
    if any(v == TRAINED for k, v in prov.items() if k in ("unet", "vae")):
        lines += ["> The diffusion prior was **trained here** (not SD 2.1-base): numbers are not the paper's.", ""]
    steps = ", ".join(f"{k}: {v}" for k, v in meta["steps"].items()) or "none recorded"
    intro = ("A universal compressed-image restoration model (MoE-DiffIR: task-customized diffusion priors) written "
             "by the `moediffir` kit. Load it with `moediffir.pipelines.moediffir_pipeline.load_pipeline(<folder>)` or "
             "restore images with `moediffir restore INPUT... -o OUT --model <folder>`.")
    lines += [
        intro, "",
        "## What produced it", "",
        "| | |", "|---|---|",
        f"| profile | `{meta['profile']}` |",
        f"| recipe | {meta['recipe'] if meta['recipe'] is not None else 'none (the profile as is)'} |",
        f"| training steps | {steps} |",
        (f"| training data | {', '.join(meta['train_sets'])}: {len(meta['codecs'])} codecs "
         f"({', '.join(meta['codecs'])}), level preset `{meta['level_preset']}` |"),
        f"| seed | {meta['seed']} |",
        *(f"| {'imported from' if k == 'source' else 'Visual2Text'} | {v} |" for k, v in meta.get("imported", {}).items()),
        f"| kit git revision | `{meta['git_revision']}` |",
        "", "The full resolved configuration is `config.json`.", "",
        "## Parts and where their weights come from", "",
        "| part | weights | what it is |", "|---|---|---|",
    ]
    lines += [f"| `{p}` | {v} | {PART_TEXT.get(p, '')} |" for p, v in prov.items()]
    lines += ["", f"In one line: {provenance_label(prov)}.", "", "## Evaluation", ""]
    lines += _evaluation_lines(meta["evaluation"])
    return "\n".join(lines) + "\n"


def read_evaluation(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / EVAL_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_model_card(folder: str | os.PathLike, cfg: Config, info: Mapping[str, Any]) -> Path:
    """Write ``<folder>/README.md`` (atomically) from the config, ``model_info.json`` and any recorded evaluation."""
    folder = Path(folder)
    return atomic_write_text(folder / CARD_FILE, render_model_card(card_metadata(cfg, info, read_evaluation(folder))))


def evaluation_summary(results, methods: list[str], metric_weights: str, conventions: str) -> dict:
    """The card's numbers from a tidy results table: our methods' per-set means over each kind of task."""
    rows = results[(results["scope"] == EVAL_SCOPE) & results["method"].isin(methods)]
    return {
        "metric_weights": metric_weights, "conventions": conventions,
        "results": [{"method": r.method, "set": r.set, "kind": r.kind, "metric": r.metric, "value": float(r.value),
                     "n_images": int(r.n_images), "n_tasks": int(r.n_tasks)} for r in rows.itertuples(index=False)],
    }
