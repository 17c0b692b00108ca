"""The evaluation of paper §4.2 and appendix B: restore every test item, score it, save every number.

:func:`run_evaluation` is what ``moediffir evaluate`` and notebook 06 call:

1. select the items (:func:`~moediffir.evaluation.protocol.select_items`: test sets x tasks, seen and unseen);
2. build the metric suite first, so a missing pretrained metric weight fails before any restoration;
3. restore with the model folder's pipeline, resumably (:mod:`moediffir.evaluation.benchmark_restore`), once per batch,
   decoded with the compensator (``moe-diffir``) and with the plain VAE decoder (``moe-diffir (no compensator)``);
4. match every ``--external NAME=DIR`` folder (:mod:`moediffir.evaluation.external`);
5. score every method the same way (:mod:`moediffir.evaluation.scoring`), the compressed input included
   (``no restoration``);
6. save the numbers under ``<results>/<profile>/metrics/``:

   ==========================  =================================================================================
   ``results.csv``             the tidy results: method, set, task, codec, level, kind, scope, metric, value,
                               n_images, n_tasks, conventions, weights, model_weights, note
   ``per_image.csv``           one row per method and image (bpp, PSNR, SSIM, LPIPS, CLIP-IQA, MANIQA)
   ``routing.csv``             expert usage per method, set, task, scale and expert (top-K counts, gate sums)
   ``prompt_similarity.csv``   Fig. 8: cosine similarity of the prompt matrices per scale
   ``visual.json``, ``visual/``  the crops of the visual comparison grids and their scores
   ``evaluation.json``         what ran: items, methods, model, externals (missing / extra files), timings
   ==========================  =================================================================================

7. draw every table and figure from those files (:func:`moediffir.report.regenerate.regenerate_report`).

:func:`evaluate_model` is the reusable core for the ablation sweeps: one model folder, its restorations and
scores in a folder of its own, the tidy results returned.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from moediffir.config import Config, save_config
from moediffir.evaluation import analysis, benchmark_restore, protocol, scoring
from moediffir.evaluation.external import ExternalMatch, match_external
from moediffir.evaluation.protocol import METHOD_LQ, METHOD_MOE, METHOD_NO_COMPENSATOR, EvaluationError
from moediffir.shards import Shard
from moediffir.utils.io import (
    atomic_save_png,
    atomic_write_csv,
    atomic_write_json,
    read_image_rgb,
)

METRICS_DIR = "metrics"
RESTORED_DIR = "restored"
VISUAL_CROP = 128  # side of the visual-comparison crops (pixels)
LQ_WEIGHTS = "n/a (the compressed input)"
EXTERNAL_WEIGHTS = "external method (run by the user)"


@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` produced."""

    results: pd.DataFrame
    per_image: pd.DataFrame
    out_dir: Path
    report_paths: list[Path] = field(default_factory=list)
    externals: dict[str, ExternalMatch] = field(default_factory=dict)
    restore_stats: dict[str, benchmark_restore.RestoreStats] = field(default_factory=dict)
    skipped_tasks: list[str] = field(default_factory=list)

    @property
    def metrics_dir(self) -> Path:
        return self.out_dir / METRICS_DIR


# --------------------------------------------------------------------------------------------- model
def default_model_dir(cfg: Config) -> Path:
    """``<runs>/<profile>/model``: where notebook 03 (stage II) leaves the trained model."""
    return cfg.run_dir / "model"


def require_model_dir(model_dir: str | Path | None, cfg: Config) -> Path:
    """The model folder to evaluate; a clear error naming the notebooks that write it when it is absent."""
    folder = Path(model_dir) if model_dir is not None else default_model_dir(cfg)
    if not (folder / "config.json").is_file():
        raise EvaluationError(
            f"{folder}: no trained model folder (config.json missing). Train it first: run notebooks "
            f"02_stage1_training then 03_stage2_training (or `moediffir train stage1 --profile {cfg.profile}`, "
            f"`moediffir stage2-data --profile {cfg.profile}`, `moediffir train stage2 --profile {cfg.profile}`), "
            f"which write {default_model_dir(cfg)}; or pass --model DIR"
        )
    return folder


def model_weights_label(model_dir: str | Path) -> str:
    """``model_weights`` of our rows: which parts of the model have random weights (model_info.json)."""
    from moediffir.pipelines.model_folder import read_model_info

    info = read_model_info(model_dir)
    random_parts = info.get("random_weights") or []
    if random_parts:
        return "random weights: " + ", ".join(random_parts)
    if (info.get("provenance") or {}).get("unet") == "trained here":
        return f"diffusion prior and MoE-DiffIR parts trained here ({info.get('profile', 'unknown')} profile)"
    return f"pretrained backbone + trained MoE-DiffIR parts ({info.get('profile', 'unknown')} profile)"


def load_model(model_dir: str | Path, cfg: Config, device: str | None = None):
    """The pipeline of a model folder with ``cfg.sample`` as its sampling settings, progress bars off."""
    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    overrides = {f"sample.{k}": v for k, v in asdict(cfg.sample).items()}
    pipe = load_pipeline(model_dir, device=device or cfg.device, dtype=cfg.sample.dtype, overrides=overrides)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -------------------------------------------------------------------------------------------- helpers
def write_csv(df: pd.DataFrame, path: Path) -> Path:
    return atomic_write_csv(path, df)


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV written by :func:`write_csv` (floats round-trip exactly; keys stay strings)."""
    return pd.read_csv(path, float_precision="round_trip", dtype={"level": str, "stem": str, "task": str},
                       keep_default_na=False, na_values=[""])


def _rel(path: Path, base: Path) -> str:
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).name


def _crop_box(h: int, w: int, crop: int) -> tuple[int, int, int, int]:
    c = min(crop, h, w)
    return ((h - c) // 2, (w - c) // 2, c, c)


def save_visual_crops(
    items: pd.DataFrame,
    per_image: pd.DataFrame,
    paths: Mapping[str, Mapping[str, Path]],
    benchmark_dir: Path,
    metrics_dir: Path,
    crop: int = VISUAL_CROP,
) -> dict:
    """Crops for the Fig. 4 grids: per codec one image, per task LQ / every method / GT; returns ``visual.json``.

    ``paths``: method -> item key -> image (``no restoration`` maps to the LQ files).
    """
    vis_dir = metrics_dir / "visual"
    shutil.rmtree(vis_dir, ignore_errors=True)
    scores = per_image.set_index(["method", "set", "task", "stem"]) if len(per_image) else None
    methods = [METHOD_LQ] + [m for m in paths if m != METHOD_LQ]
    entries = []
    for codec in dict.fromkeys(items["codec"]):
        sub = items[items["codec"] == codec]
        first = sub.iloc[0]
        pick = sub[(sub["set"] == first["set"]) & (sub["stem"] == first["stem"])]
        for it in pick.itertuples(index=False):
            box = _crop_box(int(it.height), int(it.width), crop)
            key = f"{it.set}/{it.task}/{it.stem}"
            panels = []
            for m in methods:
                if key not in paths.get(m, {}):
                    continue
                img = read_image_rgb(paths[m][key])[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]
                rel = f"visual/{it.task}/{protocol.method_slug(m)}.png"
                atomic_save_png(metrics_dir / rel, img)
                p: dict[str, Any] = {"label": "LQ" if m == METHOD_LQ else m, "method": m, "file": rel}
                if scores is not None and (m, it.set, it.task, str(it.stem)) in scores.index:
                    s = scores.loc[(m, it.set, it.task, str(it.stem))]
                    for k in ("psnr", "lpips"):
                        if k in s and pd.notna(s[k]):
                            p[k] = float(s[k])
                if m == METHOD_LQ:
                    p["bpp"] = float(it.bpp)
                panels.append(p)
            gt = read_image_rgb(benchmark_dir / it.gt_path)[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]
            atomic_save_png(metrics_dir / f"visual/{it.task}/gt.png", gt)
            panels.append({"label": "GT", "method": "ground truth", "file": f"visual/{it.task}/gt.png"})
            entries.append({"codec": it.codec, "task": it.task, "level": str(it.level), "kind": it.kind,
                            "set": it.set, "stem": str(it.stem), "box": list(box), "panels": panels})
    index = {"crop": crop, "entries": entries}
    atomic_write_json(metrics_dir / "visual.json", index)
    return index


# ------------------------------------------------------------------------------------------- the run
def _log(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)


@dataclass
class Scored:
    """The numbers of one evaluation (or one shard of it) before they are written: per-image scores and the FID
    features of every method, by item key."""

    per_image: pd.DataFrame
    features: dict[str, dict[str, Any]]  # method -> "<set>/<task>/<stem>" -> (2048,) InceptionV3 feature
    gt_features: dict[str, Any]  # gt_path -> (2048,)
    weights_of: dict[str, str]  # method -> the model_weights label of its rows
    ours: list[str]  # our methods (restored by the model), in order
    similarity: pd.DataFrame | None = None
    stats: dict[str, benchmark_restore.RestoreStats] = field(default_factory=dict)


def _restore_ours(cfg: Config, folder: Path, share: pd.DataFrame, restored_root: Path, device: str | None,
                  log, on_batch) -> tuple[dict[str, benchmark_restore.RestoreStats], pd.DataFrame, list[str]]:
    pipe = load_model(folder, cfg, device)
    methods: dict[str, float | None] = {}
    if pipe.compensator is not None:
        methods[METHOD_MOE] = cfg.sample.fusion_weight
    else:
        _log(log, f"[evaluate] {folder} has no decoder compensator (stage II not run): only "
                  f"{METHOD_NO_COMPENSATOR!r} is evaluated")
    methods[METHOD_NO_COMPENSATOR] = None
    stats = benchmark_restore.restore_items(pipe, share, cfg.benchmark_dir, restored_root, methods, cfg,
                                            benchmark_restore.folder_fingerprint(folder), log=log,
                                            on_batch=on_batch)
    return stats, analysis.prompt_similarity(pipe), list(methods)


def method_paths(items: pd.DataFrame, bench: Path, restored_root: Path, ours: Sequence[str],
                 matches: Mapping[str, ExternalMatch]) -> dict[str, dict[str, Path]]:
    """method -> item key -> image, for the compressed input, our restorations on disk and the externals."""
    paths = {METHOD_LQ: {protocol.item_key(r): bench / r.path for r in items.itertuples(index=False)}}
    for m in ours:
        paths[m] = benchmark_restore.restored_paths(items, restored_root, m)
    for name, match in matches.items():
        paths[name] = match.paths
    return paths


def score_share(
    cfg: Config, share: pd.DataFrame, folder: Path | None, matches: Mapping[str, ExternalMatch], suite, out: Path,
    *, cache: pd.DataFrame | None, device: str | None, log, on_batch, include_lq: bool,
) -> Scored:
    """Restore (resumably) and score the items of ``share``: every number an evaluation needs of them."""
    bench, restored_root = cfg.benchmark_dir, out / RESTORED_DIR
    weights_of = {METHOD_LQ: LQ_WEIGHTS}
    stats, similarity, ours = {}, None, []
    if folder is not None:
        stats, similarity, ours = _restore_ours(cfg, folder, share, restored_root, device, log, on_batch)
        weights_of.update({m: model_weights_label(folder) for m in ours})
    weights_of.update({name: EXTERNAL_WEIGHTS for name in matches})
    keys = {protocol.item_key(r) for r in share.itertuples(index=False)}
    paths = method_paths(share, bench, restored_root, ours, matches)
    per_image, features = [], {}
    for method, mpaths in paths.items():
        if method == METHOD_LQ and not include_lq:
            continue
        mpaths = {k: p for k, p in mpaths.items() if k in keys}
        t = time.perf_counter()
        rel_to = matches[method].folder if method in matches else (bench if method == METHOD_LQ else restored_root)
        per_image.append(scoring.score_images(suite, share, mpaths, bench, method, rel_to=rel_to, cache=cache))
        if "fid" in suite.metrics:
            features[method] = scoring.image_features(suite, mpaths)
        _log(log, f"[evaluate] scored {method!r}: {len(mpaths)} images ({time.perf_counter() - t:.0f} s)")
    gt_feats = scoring.gt_features(suite, share, bench) if "fid" in suite.metrics else {}
    return Scored(pd.concat(per_image, ignore_index=True), features, gt_feats,
                  {m: w for m, w in weights_of.items() if m in paths}, ours, similarity, stats)


def run_evaluation(
    cfg: Config,
    model_dir: str | Path | None = None,
    externals: Mapping[str, str | Path] | None = None,
    *,
    use_model: bool = True,
    out_dir: str | Path | None = None,
    sets: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = print,
    on_batch: Callable[[int], None] | None = None,
    write_report: bool = True,
    include_lq: bool = True,
    shard: Shard | None = None,
) -> EvaluationResult:
    """Evaluate the model (both decoders), the compressed input and every external method; write all numbers,
    tables and figures (see the module docstring).

    Args:
        cfg: resolved config (``eval.*`` chooses sets, tasks, images and metrics; ``sample.*`` the sampling).
        model_dir: model folder (default ``<runs>/<profile>/model``). use_model: False scores only the
            compressed input and the externals (no model needed).
        externals: ``{name: folder}`` of other methods' restored images.
        out_dir: results folder (default ``<results>/<profile>``). sets / tasks: restrict (default ``eval.*``).
        device: overrides ``cfg.device``. log: progress messages (None: silent).
        on_batch: called with the batch index after each restored batch (tests interrupt runs with it).
        write_report: draw the tables and figures at the end. include_lq: also score ``no restoration``.
        shard: evaluate only this shard's items and write its part (:mod:`moediffir.evaluation.shards`;
            ``moediffir evaluate --merge`` or ``moediffir report`` assembles the results).
    """
    from moediffir.data.shards import merge_if_sharded
    from moediffir.evaluation import shards

    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else cfg.profile_results_dir
    merge_if_sharded(cfg)  # a benchmark built in shards gets its manifest first
    folder = require_model_dir(model_dir, cfg) if use_model else None
    request = {"sets": list(sets or cfg.eval.test_sets), "tasks": list(tasks or cfg.eval.tasks) or None,
               "strict": tasks is not None}
    items = protocol.select_items(cfg.benchmark_dir, request["sets"], request["tasks"], cfg.eval.max_images,
                                  cfg.data.preset, strict=request["strict"])
    skipped = list(items.attrs.get("skipped_tasks", []))
    if skipped:
        _log(log, f"[evaluate] tasks not in the benchmark, skipped: {', '.join(skipped)}")
    share = items if shard is None else shards.share_of(items, shard)
    _log(log, f"[evaluate] {len(share)} items: {share['set'].nunique()} set(s) x {share['task'].nunique()} "
              f"task(s)" + (f" (shard {shard} of {len(items)} items)" if shard is not None else ""))

    from moediffir.metrics import MetricSuite

    suite = MetricSuite.from_config(cfg, device=device)  # checks pretrained metric weights before restoring
    matches: dict[str, ExternalMatch] = {}  # matched before restoring: a bad folder fails at once
    for name, ext_dir in (externals or {}).items():
        if name in protocol.BUILTIN_METHODS:
            raise EvaluationError(f"--external {name}: that name is one of ours {protocol.BUILTIN_METHODS}; rename it")
        matches[name] = match_external(name, ext_dir, items)
        _log(log, "[evaluate] " + matches[name].summary())
    cache_file = (shards.part_folder(out, shard) if shard is not None else out / METRICS_DIR) / "per_image.csv"
    cache = read_csv(cache_file) if cache_file.is_file() else None
    scored = score_share(cfg, share, folder, matches, suite, out, cache=cache, device=device, log=log,
                         on_batch=on_batch, include_lq=include_lq)
    if shard is not None:
        part = shards.write_part(cfg, out, shard, share, scored, suite, folder, matches, skipped, include_lq, request)
        _log(log, f"[evaluate] shard {shard}: wrote {part}; merge with `moediffir evaluate --merge`")
        return EvaluationResult(pd.DataFrame(columns=list(scoring.RESULT_COLUMNS)), scored.per_image, out,
                                externals=matches, restore_stats=scored.stats, skipped_tasks=skipped)
    res = write_evaluation(cfg, out, items, scored, suite, folder, matches, skipped, t0=t0,
                           write_report=write_report, log=log)
    shards.remove_parts(out)  # parts of an earlier sharded run are superseded by these results
    return res


def write_evaluation(
    cfg: Config, out: Path, items: pd.DataFrame, scored: Scored, suite, folder: Path | None,
    matches: Mapping[str, ExternalMatch], skipped: Sequence[str], *, t0: float, write_report: bool = True,
    log: Callable[[str], None] | None = print,
) -> EvaluationResult:
    """Aggregate ``scored`` over ``items`` and write every file of the module docstring (and the model card)."""
    metrics_dir, restored_root, bench = out / METRICS_DIR, out / RESTORED_DIR, cfg.benchmark_dir
    per_image_df = scored.per_image
    fid = [scoring.score_fid(suite, items, feats, m, scored.gt_features) for m, feats in scored.features.items()]
    fid_df = pd.concat(fid, ignore_index=True) if fid else pd.DataFrame(columns=["method", "set", "task", "fid"])
    results = scoring.aggregate(per_image_df, fid_df, items, suite, scored.weights_of)

    metrics_dir.mkdir(parents=True, exist_ok=True)
    write_csv(results, metrics_dir / "results.csv")
    write_csv(per_image_df, metrics_dir / "per_image.csv")
    routing_recs = [r for m in scored.ours for r in benchmark_restore.routing_records(items, restored_root, m)]
    routing = analysis.routing_table(routing_recs)
    for name, df in (("routing.csv", routing if len(routing) else None), ("prompt_similarity.csv", scored.similarity)):
        if df is not None and len(df):
            write_csv(df, metrics_dir / name)
        else:  # numbers of a model that was not evaluated now must not linger beside the new ones
            (metrics_dir / name).unlink(missing_ok=True)
    paths = method_paths(items, bench, restored_root, scored.ours, matches)
    save_visual_crops(items, per_image_df, paths, bench, metrics_dir)
    save_config(cfg, metrics_dir)
    atomic_write_json(metrics_dir / "evaluation.json", {
        "profile": cfg.profile,
        "benchmark": str(bench),
        "sets": list(dict.fromkeys(items["set"])),
        "tasks": protocol.sort_tasks(items["task"], cfg.data.preset),
        "skipped_tasks": list(skipped),
        "max_images": cfg.eval.max_images,
        "n_items": len(items),
        "model": folder.name if folder is not None else None,
        "model_weights": dict(scored.weights_of),
        "methods": list(dict.fromkeys(per_image_df["method"])),
        "externals": {n: m.to_json() for n, m in matches.items()},
        "restore": {m: asdict(s) | {"seconds": round(s.seconds, 1)} for m, s in scored.stats.items()},
        "conventions": suite.conventions_text,
        "metric_weights": suite.conventions.weights_label,
        "seconds": round(time.perf_counter() - t0, 1),
    })
    if folder is not None and scored.ours:  # the model card carries the numbers of its last evaluation
        from moediffir.pipelines.model_card import evaluation_summary
        from moediffir.pipelines.model_folder import record_evaluation

        try:
            record_evaluation(folder, evaluation_summary(results, scored.ours, suite.conventions.weights_label,
                                                         suite.conventions_text))
        except OSError as exc:  # a read-only model folder keeps its card; the results are written all the same
            _log(log, f"[evaluate] {folder}: model card not updated ({exc})")
    report_paths: list[Path] = []
    if write_report:
        from moediffir.report.regenerate import regenerate_report

        report_paths = regenerate_report(cfg, out)
        _log(log, f"[evaluate] wrote {len(report_paths)} table and figure files under {out}")
    _log(log, f"[evaluate] done in {time.perf_counter() - t0:.0f} s")
    return EvaluationResult(results, per_image_df, out, report_paths, dict(matches), scored.stats, list(skipped))


def evaluate_model(
    model_dir: str | Path,
    cfg: Config,
    sets: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    *,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Restore and score one trained model (for the ablation sweeps, one call per variant).

    Writes the restored images and the numbers (``metrics/``) under ``out_dir`` (default
    ``<results>/<profile>``), skips images already restored by the same model and settings, and returns the
    tidy results (:data:`~moediffir.evaluation.scoring.RESULT_COLUMNS`) of our method(s) only: ``moe-diffir``
    (decoder compensator; absent when the model has none) and ``moe-diffir (no compensator)``.
    """
    res = run_evaluation(cfg, model_dir, None, out_dir=out_dir, sets=sets, tasks=tasks, device=device, log=log,
                         write_report=False, include_lq=False)
    return res.results


def read_results(out_dir: str | Path) -> pd.DataFrame:
    """``metrics/results.csv`` of an evaluation folder."""
    path = Path(out_dir) / METRICS_DIR / "results.csv"
    if not path.is_file():
        raise EvaluationError(f"{path}: no saved results; run `moediffir evaluate` (or notebook 06) first")
    return read_csv(path)
