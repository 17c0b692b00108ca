"""The evaluator: item selection, resumable restoration, external methods, aggregation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from demo_setup import make_demo_setup
from repo_paths import REPO_ROOT

from moediffir import cli
from moediffir.evaluation import evaluator, protocol
from moediffir.evaluation.external import match_external, parse_external
from moediffir.evaluation.protocol import METHOD_LQ, METHOD_MOE, METHOD_NO_COMPENSATOR, EvaluationError
from moediffir.utils.io import atomic_save_png, read_image_rgb

FAST = {"eval.metrics": ["psnr", "ssim", "lpips"], "eval.tasks": ["jpeg_q10", "jpeg_q25"], "eval.max_images": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, repo_root_module):
    root = tmp_path_factory.mktemp("eval")
    cfg = make_demo_setup(root, repo_root_module / "data" / "smoke", codecs=("jpeg",), overrides=FAST)
    return cfg


@pytest.fixture(scope="module")
def repo_root_module():

    return REPO_ROOT


@pytest.fixture(scope="module")
def one_shot(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("one_shot")
    return evaluator.run_evaluation(setup, out_dir=out, log=None)


# ------------------------------------------------------------------------------------------ protocol
def test_select_items_filters_and_limits(setup):
    items = protocol.select_items(setup.benchmark_dir, ["smoke_test"], None, 2)
    assert set(items["task"]) >= {"jpeg_q5", "jpeg_q10", "jpeg_q15", "jpeg_q25", "avc_qp37"}
    assert (items.groupby("task").size() == 2).all()  # max_images per set and task
    # seen tasks in label order, then cross-degree, then cross-type
    assert list(items["task"].drop_duplicates()) == [
        "jpeg_q5", "jpeg_q10", "jpeg_q15", "jpeg_q25", "avc_qp47", "avc_qp42", "avc_qp37"]
    assert items[items.task == "jpeg_q25"]["kind"].unique().tolist() == ["unseen_degree"]
    with pytest.raises(EvaluationError, match="LIVE1"):
        protocol.select_items(setup.benchmark_dir, ["LIVE1"], None, 0)
    with pytest.raises(EvaluationError, match="webp_q10"):
        protocol.select_items(setup.benchmark_dir, ["smoke_test"], ["jpeg_q10", "webp_q10"], 0)
    lenient = protocol.select_items(setup.benchmark_dir, ["smoke_test"], ["jpeg_q10", "webp_q10"], 0, strict=False)
    assert set(lenient["task"]) == {"jpeg_q10"} and lenient.attrs["skipped_tasks"] == ["webp_q10"]


def test_method_slug_and_seed():
    assert protocol.method_slug(METHOD_NO_COMPENSATOR) == "moe-diffir-no-compensator"
    assert protocol.method_slug("Stable SR/v2") == "Stable-SR-v2"
    a = protocol.image_seed(0, "LIVE1", "jpeg_q10", "bike")
    assert a == protocol.image_seed(0, "LIVE1", "jpeg_q10", "bike") != protocol.image_seed(1, "LIVE1", "jpeg_q10", "bike")


def test_missing_model_names_the_training_notebooks(setup, tmp_path):
    with pytest.raises(EvaluationError, match="02.*03"):
        evaluator.run_evaluation(setup, model_dir=tmp_path / "nothing", out_dir=tmp_path, log=None)


# ------------------------------------------------------------------------------------ restoration
def test_shared_decode_equals_the_pipeline(setup):
    """One sampling decoded twice (evaluator) gives exactly what two pipeline calls give."""
    pipe = evaluator.load_model(evaluator.default_model_dir(setup), setup)
    items = protocol.select_items(setup.benchmark_dir, ["smoke_test"], ["jpeg_q10"], 1)
    lq = read_image_rgb(setup.benchmark_dir / items.path[0])
    # make the compensator matter: its fusion convs are zero-initialised, so perturb them
    with torch.no_grad():
        for p in pipe.compensator.fusion.parameters():
            p.add_(0.05 * torch.randn_like(p))
    gen = lambda: [torch.Generator().manual_seed(7)]
    steps = setup.sample.num_steps
    z0, _ = pipe.sample_latents([lq], num_inference_steps=steps, generator=gen(), batch_size=setup.sample.batch_size)
    assert pipe.uses_tiles(lq.shape[:2], setup.sample.tile_size)  # smoke tile_size 64 < image: the tiled path
    for decoder in ("compensator", "vae"):
        ours = pipe.decode_latents(z0, [lq], decoder=decoder, output_type="np")[0]
        out = pipe([lq], num_inference_steps=steps, generator=gen(), decoder=decoder, output_type="np",
                   batch_size=setup.sample.batch_size)
        assert out.tiled == [True]
        assert ours.shape == lq.shape
        np.testing.assert_array_equal(ours, out.images[0])
    a = pipe.decode_latents(z0, [lq], decoder="compensator", fusion_weight=setup.sample.fusion_weight,
                            output_type="np")[0]
    b = pipe.decode_latents(z0, [lq], decoder="vae", output_type="np")[0]
    assert not np.array_equal(a, b)  # the two methods differ only by the decoder, and it does differ


def test_resumed_evaluation_equals_one_shot(setup, one_shot, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_first(i):
        if i == 0:
            raise Stop

    with pytest.raises(Stop):
        evaluator.run_evaluation(setup, out_dir=tmp_path, log=None, on_batch=stop_after_first)
    assert not (tmp_path / "metrics" / "results.csv").exists()
    resumed = evaluator.run_evaluation(setup, out_dir=tmp_path, log=None)
    n_items = len(protocol.select_items(setup.benchmark_dir, ["smoke_test"], FAST["eval.tasks"], 2))
    assert resumed.restore_stats[METHOD_MOE].kept == 1  # the first batch (one image) was kept
    assert resumed.restore_stats[METHOD_MOE].restored == n_items - 1
    for name in ("results.csv", "per_image.csv", "routing.csv", "prompt_similarity.csv"):
        assert (tmp_path / "metrics" / name).read_bytes() == (one_shot.metrics_dir / name).read_bytes(), name
    a = sorted(p.relative_to(one_shot.out_dir) for p in (one_shot.out_dir / "restored").rglob("*.png"))
    b = sorted(p.relative_to(tmp_path) for p in (tmp_path / "restored").rglob("*.png"))
    assert a == b and len(a) == 2 * n_items
    for rel in a:
        assert (tmp_path / rel).read_bytes() == (one_shot.out_dir / rel).read_bytes(), rel

    # a damaged output is found and restored again; intact ones are kept
    png = next((tmp_path / "restored" / "moe-diffir").rglob("*.png"))
    png.write_bytes(b"not a png")
    again = evaluator.run_evaluation(setup, out_dir=tmp_path, log=None)
    assert again.restore_stats[METHOD_MOE].restored == 1
    assert again.restore_stats[METHOD_MOE].kept == n_items - 1
    assert png.read_bytes() == (one_shot.out_dir / png.relative_to(tmp_path)).read_bytes()


def test_results_are_tidy_and_aggregate_consistently(one_shot):
    res = one_shot.results
    assert set(res.method) == {METHOD_MOE, METHOD_NO_COMPENSATOR, METHOD_LQ}
    assert set(res.scope) == {"task", "codec", "kind"}
    assert res.conventions.str.contains("color=rgb").all() and res.model_weights.str.len().gt(0).all()
    assert (res.loc[res.metric == "lpips", "weights"] == "random(seed=0)").all()
    per = one_shot.per_image
    # task rows are the mean over images; codec rows the mean over levels; kind rows over tasks
    for (m, t), g in per.groupby(["method", "task"]):
        row = res[(res.method == m) & (res.task == t) & (res.metric == "psnr") & (res.scope == "task")]
        assert row.value.item() == pytest.approx(g.psnr.mean()) and row.n_images.item() == len(g)
    task_rows = res[(res.scope == "task") & (res.metric == "ssim") & (res.method == METHOD_MOE)]
    kind = res[(res.scope == "kind") & (res.metric == "ssim") & (res.method == METHOD_MOE)].set_index("kind")
    for k, g in task_rows.groupby("kind"):
        assert kind.loc[k, "value"] == pytest.approx(g.value.mean()) and kind.loc[k, "n_tasks"] == len(g)



def test_lq_scores_match_the_manifest(one_shot, setup):
    """``no restoration`` PSNR/SSIM equal the manifest's LQ PSNR/SSIM (two implementations, same convention)."""
    items = protocol.select_items(setup.benchmark_dir, ["smoke_test"], FAST["eval.tasks"], 2)
    lq = one_shot.per_image[one_shot.per_image.method == METHOD_LQ].merge(items, on=["set", "task", "stem"])
    assert len(lq) == len(items)
    np.testing.assert_allclose(lq.psnr, lq.lq_psnr, rtol=1e-9)
    np.testing.assert_allclose(lq.ssim, lq.lq_ssim, atol=1e-6)


def test_routing_numbers_add_up(one_shot, setup):
    routing = pd.read_csv(one_shot.metrics_dir / "routing.csv")
    k = setup.model.top_k
    assert set(routing.method) == {METHOD_MOE, METHOD_NO_COMPENSATOR}
    g = routing[routing.method == METHOD_MOE].groupby(["set", "task", "scale"])
    per = g.agg(count=("count", "sum"), slots=("slots", "first"), gate=("gate_sum", "sum"), tokens=("tokens", "first"))
    assert (per["count"] == per["slots"]).all()  # every token picks exactly K experts
    assert (per["slots"] == k * per["tokens"]).all()
    np.testing.assert_allclose(per["gate"], per["tokens"], rtol=1e-4)  # renormalised gates sum to 1 per token
    sim = pd.read_csv(one_shot.metrics_dir / "prompt_similarity.csv")
    diag = sim[sim.expert_i == sim.expert_j]
    np.testing.assert_allclose(diag.cosine, 1.0, atol=1e-9)
    assert len(sim) == setup.model.num_scales * setup.model.num_prompts**2


def test_evaluate_model_for_sweeps(setup, tmp_path):
    df = evaluator.evaluate_model(evaluator.default_model_dir(setup), setup, tasks=["jpeg_q10"], out_dir=tmp_path)
    assert set(df.method) == {METHOD_MOE, METHOD_NO_COMPENSATOR} and set(df.task) <= {"jpeg_q10", "all"}
    assert list(df.columns) == list(evaluator.scoring.RESULT_COLUMNS)
    assert (tmp_path / "metrics" / "results.csv").is_file() and not (tmp_path / "tables").exists()


# ---------------------------------------------------------------------------------------- externals
def test_external_matching_reports_missing_and_extra(setup, tmp_path):
    items = protocol.select_items(setup.benchmark_dir, ["smoke_test"], ["jpeg_q10", "jpeg_q25"], 2)
    keys = [f"{r.set}/{r.task}/{r.stem}" for r in items.itertuples()]
    ext = tmp_path / "ext"
    img = np.zeros((4, 4, 3), np.uint8)
    atomic_save_png(ext / "test" / f"{keys[0]}.png", img)  # <set>/<task>/<stem> below any prefix
    atomic_save_png(ext / f"{items.task[1]}" / f"{items.stem[1]}.png", img)  # <task>/<stem> (one set evaluated)
    atomic_save_png(ext / "notes" / "unrelated.png", img)
    m = match_external("X", ext, items)
    assert set(m.paths) == {keys[0], keys[1]}
    assert m.missing == keys[2:] and m.extra == ["notes/unrelated.png"]
    assert "missing" in m.summary() and "notes/unrelated.png" in m.summary()
    atomic_save_png(ext / f"{keys[0]}.jpg", img)  # a second file for the first item
    with pytest.raises(EvaluationError, match="several files"):
        match_external("X", ext, items)
    with pytest.raises(EvaluationError, match="NAME=DIR"):
        parse_external("no-equals-sign")
    assert parse_external(f"PromptIR={ext}") == ("PromptIR", ext)


def test_external_is_scored_like_our_methods(setup, tmp_path):
    """A folder holding the compressed inputs themselves must score exactly like ``no restoration``."""
    items = protocol.select_items(setup.benchmark_dir, ["smoke_test"], FAST["eval.tasks"], 2)
    ext = tmp_path / "copy_of_lq"
    for r in items.itertuples():
        dst = ext / r.set / r.task / f"{r.stem}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(setup.benchmark_dir / r.path, dst)
    # through the command line: moediffir evaluate --no-model --external NAME=DIR --set ...
    argv = ["evaluate", "--profile", "smoke", "--no-model", "--external", f"LQ copy={ext}", "--device", "cpu",
            "--set", f"results_dir={tmp_path / 'out'}", "--set", f"data.out_dir={setup.benchmark_dir}",
            "--set", 'eval.metrics=["psnr", "ssim"]', "--set", f"eval.tasks={json.dumps(FAST['eval.tasks'])}"]
    assert cli.main(argv) == 0
    metrics = tmp_path / "out" / "smoke" / "metrics"
    res = pd.read_csv(metrics / "results.csv")
    assert set(res.method) == {METHOD_LQ, "LQ copy"} and set(res.metric) == {"psnr", "ssim"}
    cols = ["set", "task", "scope", "metric", "value", "n_images"]
    a = res[res.method == METHOD_LQ][cols].reset_index(drop=True)
    b = res[res.method == "LQ copy"][cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    report = json.loads((metrics / "evaluation.json").read_text())["externals"]["LQ copy"]
    assert report == {"name": "LQ copy", "matched": len(items), "missing": [], "extra": []}
    assert not (metrics / "routing.csv").exists()  # no model evaluated: no routing numbers
    assert (tmp_path / "out" / "smoke" / "tables" / "table1.md").is_file()
    with pytest.raises(EvaluationError, match="one of ours"):
        evaluator.run_evaluation(setup, externals={METHOD_LQ: ext}, use_model=False, out_dir=tmp_path, log=None)
