"""Ablation sweeps (paper §4.3): run keys, reuse, resume after an interruption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from repo_paths import REPO_ROOT

from moediffir.ablation import sweep as sw
from moediffir.ablation import sweep_plan as plan
from moediffir.ablation.variants import build_sweep
from moediffir.config import ConfigError, apply_overrides, resolve_config

TASKS = ["jpeg_q10", "webp_q10", "jpeg_q25", "avc_qp37"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A tiny real CIR benchmark (smoke images, four tasks: two seen, one cross-degree, one cross-type)."""
    from moediffir.data.builder import build_benchmark

    out = tmp_path_factory.mktemp("bench") / "benchmark"
    cfg = resolve_config("smoke", {"data.datasets_dir": str(REPO_ROOT / "data" / "smoke"), "data.out_dir": str(out),
                                   "data.tasks": TASKS, "data.workers": 1})
    build_benchmark(cfg, progress=False)
    return out


def smoke_cfg(bench: Path, tmp: Path, **extra):
    return resolve_config("smoke", {"data.out_dir": str(bench), "runs_dir": str(tmp / "runs"),
                                    "results_dir": str(tmp / "results"), "device": "cpu", **extra})


class FakeTrainer:
    """Stands in for train_stage1: writes a model folder where the trainer would; counts calls."""

    def __init__(self, fail_on: int | None = None, checkpoint_then_fail: bool = False):
        self.calls: list[tuple[int, bool]] = []  # (num_prompts, resume)
        self.fail_on = fail_on
        self.checkpoint_then_fail = checkpoint_then_fail

    def __call__(self, cfg, resume: bool = False, progress: bool = True) -> Path:
        self.calls.append((cfg.model.num_prompts, resume))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            if self.checkpoint_then_fail:  # killed half-way: a checkpoint exists, no model folder
                ck = cfg.run_dir / "stage1" / "checkpoints" / "step_000002"
                ck.mkdir(parents=True)
                (ck / "checkpoint.json").write_text("{}")
            raise RuntimeError("injected failure in training")
        folder = cfg.run_dir / "model"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"num_prompts": cfg.model.num_prompts}))
        return folder


class FakeEvaluator:
    """Stands in for evaluate_model: per-task rows whose value depends on the variant's N, K and design."""

    def __init__(self, fail_on: int | None = None, images: int = 0, stale: bool = False):
        self.calls: list[tuple[int, int, tuple[str, ...], tuple[str, ...]]] = []
        self.fail_on = fail_on
        self.images = images  # > 0: also write the per-image rows (value -/+ 0.5 per image) where the evaluator does
        self.stale = stale  # the per-image rows disagree with the returned means (a file left by another model)

    def __call__(self, model_dir, cfg, sets=None, tasks=None, out_dir=None) -> pd.DataFrame:
        self.calls.append((cfg.model.num_prompts, cfg.model.top_k, tuple(sets), tuple(tasks)))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("injected failure in evaluation")
        assert Path(model_dir, "config.json").is_file()
        rows = []
        design = {"none": 0, "single": 1, "multi": 2, "moe": 3}[cfg.model.prompt_design]
        for s in sets:
            for i, t in enumerate(tasks):
                for m in cfg.eval.metrics:
                    value = 20 + cfg.model.num_prompts + 0.1 * cfg.model.top_k + design + i + cfg.model.use_dp
                    rows.append({"method": "moe-diffir (no compensator)", "set": s, "task": t, "codec": t.split("_")[0],
                                 "level": t.split("_")[-1], "kind": "seen", "scope": "task", "metric": m,
                                 "value": value if m == "psnr" else value / 100, "n_images": 1, "n_tasks": 1,
                                 "conventions": "color=rgb", "weights": "random(seed=0)",
                                 "model_weights": "random weights: backbone", "note": ""})
                    # an aggregate row, which the sweep must not keep (the report averages exactly per spec)
                    rows.append({**rows[-1], "scope": "kind", "task": "all", "value": -1.0})
        if self.images:
            self._write_per_image(rows, Path(out_dir))
        return pd.DataFrame(rows)

    def _write_per_image(self, rows: list[dict], out_dir: Path) -> None:
        per_task = [r for r in rows if r["scope"] == "task"]
        for r in per_task:
            r["n_images"] = self.images
        images = []
        for (s, t) in dict.fromkeys((r["set"], r["task"]) for r in per_task):
            for i in range(self.images):
                rec = {"method": "moe-diffir (no compensator)", "set": s, "task": t, "stem": f"img{i}", "label": 3}
                for r in per_task:
                    if (r["set"], r["task"]) == (s, t):
                        offset = (i - (self.images - 1) / 2) * (1.0 if r["metric"] == "psnr" else 0.01)
                        rec[r["metric"]] = r["value"] + offset + (0.25 if self.stale else 0.0)
                images.append(rec)
        (out_dir / "metrics").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(images).to_csv(out_dir / "metrics" / "per_image.csv", index=False)


# ------------------------------------------------------------------------------------------ keys
def test_run_key_ignores_paths_but_not_results(bench, tmp_path):
    cfg = smoke_cfg(bench, tmp_path)
    sweep = build_sweep("prompts_nk", cfg)

    def keys(c):
        s = build_sweep("prompts_nk", c)  # sized by c's ablation section
        vc = plan.variant_config(c, s, s.variant("N4"))
        return plan.run_key(vc, plan.plan_evaluations(vc, s)), plan.train_key(vc)

    base = keys(cfg)
    moved = tmp_path / "moved_benchmark"
    shutil.copytree(bench, moved)  # the same benchmark content somewhere else
    only_paths = apply_overrides(cfg, {"runs_dir": str(tmp_path / "elsewhere"), "results_dir": "r2",
                                       "stage1.out_dir": "x", "data.out_dir": str(moved), "device": "auto",
                                       "data.workers": 7, "stage1.log_every": 1, "stage1.checkpoint_every": 3})
    assert keys(only_paths) == base
    # evaluation-only changes: a new run key, the same trained model
    for ov in ({"sample.num_steps": 3}, {"ablation.max_images": 2}, {"eval.crop_border": 4}):
        rk, tk = keys(apply_overrides(cfg, ov))
        assert rk != base[0] and tk == base[1], ov
    # training changes: both keys change
    for ov in ({"stage1.lr": 2e-3}, {"model.spade_hidden": 8}, {"seed": 1}, {"ablation.train_steps": 11}):
        rk, tk = keys(apply_overrides(cfg, ov))
        assert rk != base[0] and tk != base[1], ov
    # the variant's own parameter is in the key: N=4 and N=7 differ, N=7 and K=3 are one run
    vc7 = plan.variant_config(cfg, sweep, sweep.variant("N7"))
    vk3 = plan.variant_config(cfg, sweep, sweep.variant("K3"))
    k7 = plan.run_key(vc7, plan.plan_evaluations(vc7, sweep))
    assert k7 != base[0]
    assert k7 == plan.run_key(vk3, plan.plan_evaluations(vk3, sweep))


def test_key_follows_the_benchmark_content(bench, tmp_path):
    cfg = smoke_cfg(bench, tmp_path)
    other = tmp_path / "other_benchmark"
    shutil.copytree(bench, other)
    man = other / "manifest.csv"
    df = pd.read_csv(man, dtype=str, keep_default_na=False)
    first = df.index[(df["split"] == "train") & (df["kind"] == "seen")][0]
    df.loc[first, "sha256"] = "0" * 64  # one training image changed
    df.to_csv(man, index=False)
    assert plan.train_key(cfg) != plan.train_key(apply_overrides(cfg, {"data.out_dir": str(other)}))


def test_missing_benchmark_names_the_build_command(tmp_path):
    cfg = smoke_cfg(tmp_path / "nothing_here", tmp_path)
    with pytest.raises(plan.SweepError, match="moediffir data build --profile smoke"):
        sw.plan_sweep(cfg, build_sweep("prompts_nk", cfg))


def test_sweep_definitions_are_checked(bench, tmp_path):
    spec = (plan.EvalSpec("seen", ("smoke_test",)),)
    with pytest.raises(plan.SweepError, match="appear twice"):
        plan.Sweep("s", "t", (plan.Variant("a", {}), plan.Variant("a", {})), spec)
    with pytest.raises(plan.SweepError, match="lower-case"):
        plan.Sweep("_models", "t", (plan.Variant("a", {}),), spec)
    with pytest.raises(plan.SweepError, match="reference 'b' is not one of its variants"):
        plan.Sweep("s", "t", (plan.Variant("a", {}),), spec, reference="b")
    bad = plan.Sweep("s", "t", (plan.Variant("a", {"model.no_such_field": 1}),), spec)
    with pytest.raises(ConfigError, match="no_such_field"):
        sw.plan_sweep(smoke_cfg(bench, tmp_path), bad)


# ------------------------------------------------------------------------------------------ running
def test_interrupted_sweep_resumes_with_remaining_variants_only(bench, tmp_path):
    cfg = smoke_cfg(bench, tmp_path)
    sweep = build_sweep("prompts_nk", cfg)  # N in (1, 4, 7), K in (1, 3, 7): 6 variants, 5 unique runs
    runs = sw.plan_sweep(cfg, sweep)
    assert len(sweep.variants) == 6 and len(runs) == 5
    train, evaluate = FakeTrainer(), FakeEvaluator(fail_on=2)  # dies evaluating the 2nd run (after training it)
    with pytest.raises(RuntimeError, match="injected failure in evaluation"):
        sw.run_sweep(cfg, sweep, train_fn=train, evaluate_fn=evaluate, log=lambda _: None)
    assert [r.state for r in runs] == ["done", "trained", "pending", "pending", "pending"]
    first_result = runs[0].folder / sw.RESULT_JSON
    mtime = first_result.stat().st_mtime_ns

    train2, evaluate2 = FakeTrainer(), FakeEvaluator()
    report = sw.run_sweep(cfg, sweep, train_fn=train2, evaluate_fn=evaluate2, log=lambda _: None)
    assert report.reused == [runs[0].key]
    assert report.ran == [r.key for r in runs[1:]]
    assert [n for n, _ in train2.calls] == [7, 7, 7]  # N=4's model was trained before the failure: not again
    assert all(resume for _, resume in train2.calls)
    assert len(evaluate2.calls) == 4  # every run but the first, one evaluator call each
    assert first_result.stat().st_mtime_ns == mtime  # the finished run was not rewritten

    # a third call redoes nothing
    train3, evaluate3 = FakeTrainer(), FakeEvaluator()
    report3 = sw.run_sweep(cfg, sweep, train_fn=train3, evaluate_fn=evaluate3, log=lambda _: None)
    assert train3.calls == [] and evaluate3.calls == [] and len(report3.reused) == 5

    df = pd.read_csv(sw.results_path(cfg, "prompts_nk"))
    assert list(dict.fromkeys(df["variant"])) == ["N1", "N4", "N7", "K1", "K3", "K7"]
    assert {"num_prompts", "top_k", "group", "key", "train_key", "evaluation", "weights_label"} <= set(df.columns)
    assert (df["scope"] == "task").all()  # aggregates of the evaluator are dropped
    n7 = df[df["variant"] == "N7"].reset_index(drop=True)
    k3 = df[df["variant"] == "K3"].reset_index(drop=True)
    assert n7["key"].iloc[0] == k3["key"].iloc[0] and n7["value"].tolist() == k3["value"].tolist()
    psnr = df[(df["metric"] == "psnr") & (df["task"] == "jpeg_q10")].set_index("variant")["value"]
    assert psnr["N1"] == pytest.approx(24.1) and psnr["K7"] == pytest.approx(30.7)  # N=1 ran at K=1
    assert "says nothing about the method" in df["weights_label"].iloc[0]
    meta = json.loads(sw.results_path(cfg, "prompts_nk").with_suffix(".json").read_text())
    assert [v["state"] for v in meta["variants"]] == ["done"] * 6


def test_half_trained_variant_is_resumed_not_restarted(bench, tmp_path):
    cfg = smoke_cfg(bench, tmp_path, **{"ablation.n_values": [1, 4], "ablation.k_values": [3]})
    sweep = build_sweep("prompts_nk", cfg)
    train = FakeTrainer(fail_on=2, checkpoint_then_fail=True)
    with pytest.raises(RuntimeError, match="injected failure in training"):
        sw.run_sweep(cfg, sweep, train_fn=train, evaluate_fn=FakeEvaluator(), log=lambda _: None)
    states = sw.sweep_status(cfg, sweep).set_index("variant")["state"]
    assert states["N1"] == "done" and states["N4"] == "partial"
    train2 = FakeTrainer()
    sw.run_sweep(cfg, sweep, train_fn=train2, evaluate_fn=FakeEvaluator(), log=lambda _: None)
    assert train2.calls[0] == (4, True)  # the half-trained N=4 model continues from its checkpoint


def test_specs_on_the_same_sets_share_one_evaluator_call(bench, tmp_path):
    cfg = smoke_cfg(bench, tmp_path)
    sweep = build_sweep("prompt_design", cfg)  # smoke: seen, cross-degree and cross-type all on smoke_test
    evaluate = FakeEvaluator()
    report = sw.run_sweep(cfg, sweep, train_fn=FakeTrainer(), evaluate_fn=evaluate, log=lambda _: None)
    assert len(evaluate.calls) == 4
    assert evaluate.calls[0][3] == ("jpeg_q10", "webp_q10", "jpeg_q25", "avc_qp37")
    df = report.results
    by_eval = df.groupby("evaluation")["task"].agg(lambda s: sorted(set(s))).to_dict()
    assert by_eval == {"seen": ["jpeg_q10", "webp_q10"], "cross_degree": ["jpeg_q25"], "cross_type": ["avc_qp37"]}
    assert set(df["prompt_design"]) == {"none", "single", "multi", "moe"}


def test_table3_reuses_the_model_table2_trained(bench, tmp_path):
    cfg = smoke_cfg(bench, tmp_path)
    train = FakeTrainer()
    sw.run_sweep(cfg, build_sweep("prompt_design", cfg), train_fn=train, evaluate_fn=FakeEvaluator(),
                 log=lambda _: None)
    assert len(train.calls) == 4
    train2, evaluate2 = FakeTrainer(), FakeEvaluator()
    sw.run_sweep(cfg, build_sweep("v2t_dp", cfg), train_fn=train2, evaluate_fn=evaluate2, log=lambda _: None)
    assert len(train2.calls) == 3  # MoE-Prompt without V2T and DP is Table 2's MoE model
    assert len(evaluate2.calls) == 4  # but it is evaluated for Table 3's own columns


def test_per_image_rows_are_kept_with_each_run_and_gathered(bench, tmp_path):
    from moediffir.ablation.per_image import PER_IMAGE_CSV, load_per_image, per_image_path

    cfg = smoke_cfg(bench, tmp_path, **{"ablation.n_values": [1, 7], "ablation.k_values": [3]})
    sweep = build_sweep("prompts_nk", cfg)
    assert sweep.reference == "K3"
    report = sw.run_sweep(cfg, sweep, train_fn=FakeTrainer(), evaluate_fn=FakeEvaluator(images=3), log=lambda _: None)
    runs = sw.plan_sweep(cfg, sweep)
    tasks = ["jpeg_q10", "webp_q10"]  # the seen tasks of the smoke benchmark
    for run in runs:
        kept = pd.read_csv(run.folder / PER_IMAGE_CSV)
        assert len(kept) == 3 * len(tasks) and set(kept["evaluation"]) == {"seen"}
        info = json.loads((run.folder / sw.RESULT_JSON).read_text())
        assert info["per_image_rows"] == len(kept)
    gathered = load_per_image(cfg, "prompts_nk")
    assert per_image_path(cfg, "prompts_nk").is_file()
    assert list(gathered.columns[:3]) == ["sweep", "variant", "key"] and "label" in gathered.columns
    assert list(dict.fromkeys(gathered["variant"])) == ["N1", "N7", "K3"]  # N7 and K3 share one run's rows
    n7, k3 = (gathered[gathered["variant"] == v].reset_index(drop=True) for v in ("N7", "K3"))
    assert n7["psnr"].tolist() == k3["psnr"].tolist()
    means = gathered.groupby(["variant", "task"])["psnr"].mean()
    res = report.results[report.results["metric"] == "psnr"].set_index(["variant", "task"])["value"]
    assert means.to_dict() == pytest.approx(res.to_dict())  # the rows behind each table mean
    meta = json.loads(sw.results_path(cfg, "prompts_nk").with_suffix(".json").read_text())
    assert meta["reference"] == "K3"


def test_a_stale_per_image_file_is_refused(bench, tmp_path):
    cfg = smoke_cfg(bench, tmp_path, **{"ablation.n_values": [1], "ablation.k_values": [1]})
    sweep = build_sweep("prompts_nk", cfg)
    with pytest.raises(plan.SweepError, match="stale"):
        sw.run_sweep(cfg, sweep, train_fn=FakeTrainer(), evaluate_fn=FakeEvaluator(images=2, stale=True),
                     log=lambda _: None)
    assert [r.state for r in sw.plan_sweep(cfg, sweep)] == ["trained", "pending"]  # not finished on bad rows


def test_a_run_finished_without_per_image_rows_is_evaluated_again_not_retrained(bench, tmp_path):
    cfg = smoke_cfg(bench, tmp_path, **{"ablation.n_values": [1], "ablation.k_values": [1]})
    sweep = build_sweep("prompts_nk", cfg)
    sw.run_sweep(cfg, sweep, train_fn=FakeTrainer(), evaluate_fn=FakeEvaluator(), log=lambda _: None)
    run = sw.plan_sweep(cfg, sweep)[0]
    info = json.loads((run.folder / sw.RESULT_JSON).read_text())
    assert info["per_image_rows"] == 0 and run.done  # the evaluator wrote none: finished all the same
    del info["per_image_rows"]  # as an older kit wrote it
    (run.folder / sw.RESULT_JSON).write_text(json.dumps(info))
    assert run.state == "trained"
    train, evaluate = FakeTrainer(), FakeEvaluator(images=2)
    report = sw.run_sweep(cfg, sweep, train_fn=train, evaluate_fn=evaluate, log=lambda _: None)
    assert train.calls == [] and len(evaluate.calls) == 1 and report.ran == [run.key]
    assert run.done and (run.folder / "per_image.csv").is_file()


def test_cli_status_and_errors(bench, tmp_path, capsys):
    from moediffir.cli import main

    args = ["--profile", "smoke", "--set", f"data.out_dir={bench}", "--set", f"runs_dir={tmp_path / 'runs'}"]
    assert main(["sweep", "v2t_dp", "--status", *args]) == 0
    out = capsys.readouterr().out
    assert "MoE-Prompt+V2T Adapter+DP" in out and "pending" in out
    assert main(["sweep", "prompts_nk", *args, "--set", "ablation.k_values=[9]"]) == 2
    assert "exceed model.num_prompts" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ real run
def test_real_sweep_resumes_a_killed_training(bench, tmp_path):
    """train_stage1 + evaluate_model for real: the 2nd variant is killed after 2 of 4 steps, then resumed."""
    from moediffir.evaluation.evaluator import evaluate_model
    from moediffir.training.stage1 import train_stage1

    cfg = smoke_cfg(bench, tmp_path, **{"ablation.n_values": [1, 7], "ablation.k_values": [3],
                                        "ablation.train_steps": 4, "ablation.tasks": ["jpeg_q10"],
                                        "stage1.checkpoint_every": 2, "stage1.batch_size": 2})
    sweep = build_sweep("prompts_nk", cfg)
    trained: list[int] = []

    def killed_halfway(c, resume=True, progress=True):
        trained.append(c.model.num_prompts)
        if len(trained) == 2:
            train_stage1(apply_overrides(c, {"stage1.max_steps": 2}), resume=resume, progress=False)
            raise KeyboardInterrupt  # as if the process were stopped after the step-2 checkpoint
        return train_stage1(c, resume=resume, progress=False)

    with pytest.raises(KeyboardInterrupt):
        sw.run_sweep(cfg, sweep, train_fn=killed_halfway, evaluate_fn=evaluate_model, progress=False,
                     log=lambda _: None)
    runs = sw.plan_sweep(cfg, sweep)
    assert [r.state for r in runs] == ["done", "partial"]
    done_mtime = (runs[0].folder / sw.RESULT_CSV).stat().st_mtime_ns

    calls: list[int] = []

    def counted(c, resume=True, progress=True):
        calls.append(c.model.num_prompts)
        return train_stage1(c, resume=resume, progress=False)

    report = sw.run_sweep(cfg, sweep, train_fn=counted, evaluate_fn=evaluate_model, progress=False,
                          log=lambda _: None)
    assert calls == [7] and report.reused == [runs[0].key]
    assert (runs[0].folder / sw.RESULT_CSV).stat().st_mtime_ns == done_mtime
    summary = json.loads((runs[1].model_root / "smoke" / "stage1" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["steps_this_run"] == 2  # resumed at step 2, not restarted
    df = report.results
    assert set(df["variant"]) == {"N1", "N7", "K3"}
    assert set(df["metric"]) == {"psnr", "ssim", "lpips"} and df["value"].notna().all()
    assert (runs[1].folder / sw.ROUTING_CSV).is_file()  # MoE routing kept with the run
    from moediffir.ablation.per_image import load_per_image

    images = load_per_image(cfg, "prompts_nk")  # the real evaluator's per-image rows, kept for the bootstrap
    assert set(images["variant"]) == {"N1", "N7", "K3"} and images[["psnr", "ssim", "lpips"]].notna().all().all()
    per_task = df[df["metric"] == "psnr"].groupby(["variant", "task"])["value"].first()
    assert images.groupby(["variant", "task"])["psnr"].mean().to_dict() == pytest.approx(per_task.to_dict())


def test_training_config_keeps_the_profiles_stage0_prior(tmp_path):
    """A variant trained under sweeps/_models/<key> loads the prior stage 0 trained for the profile's run."""
    base = resolve_config("mini", overrides={"runs_dir": str(tmp_path / "runs")})
    moved = sw.training_config(base, base, "abc123")
    assert moved.run_dir != base.run_dir
    assert moved.prior_dir == base.prior_dir
    smoke = resolve_config("smoke", overrides={"runs_dir": str(tmp_path / "runs")})
    assert sw.training_config(smoke, smoke, "abc123").prior.out_dir == ""  # no stage 0: nothing pinned
