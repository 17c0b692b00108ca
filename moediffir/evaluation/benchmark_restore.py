"""Restore the test items with the pipeline: batched, resumable, atomic (paper §4.2, appendix B.1 Table 4).

For each (set, task) the items are cut into batches of ``sample.batch_size`` images of one size, always the same
batches for the same items, and each image gets its own seeded generator
(:func:`~moediffir.evaluation.protocol.image_seed`), so an image's result never depends on what else ran: a
resumed evaluation writes exactly the bytes of a one-shot run.

One diffusion sampling serves both of our methods: the latents ``z_0`` of a batch are decoded once with the
decoder compensator at ``sample.fusion_weight`` (``moe-diffir``) and once with the plain VAE decoder
(``moe-diffir (no compensator)``), so Table 4 compares decoders on identical samples.

Every restored image ``restored/<method>/<set>/<task>/<stem>.png`` has a record
``restored/<method>/_records/<set>/<task>/<stem>.json`` (written after the PNG, both atomically) holding the
fingerprint of the model folder and sampling settings, the PNG's SHA-256 and the routing summary of the image
(:func:`~moediffir.evaluation.analysis.routing_counts`). On a rerun an image whose record, fingerprint and
checksum all match is kept; anything else is restored again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from moediffir.evaluation.analysis import routing_counts
from moediffir.evaluation.protocol import image_seed, method_slug
from moediffir.utils.digests import json_digest, model_fingerprint, output_done, read_record, write_output
from moediffir.utils.io import encode_png, read_image_rgb
from moediffir.weights.model_card import CARD_FILES

RECORDS = "_records"


@dataclass
class RestoreStats:
    restored: int = 0
    kept: int = 0
    seconds: float = 0.0


def folder_fingerprint(folder: str | Path) -> str:
    """The identity of a model folder that its restorations are keyed by: every file but the model card's
    (:data:`~moediffir.weights.model_card.CARD_FILES` describe the model and change after evaluation)."""
    return model_fingerprint(folder, exclude=CARD_FILES)


def restore_fingerprint(model_fp: str, cfg: Any, fusion_weight: float | None) -> str:
    """Fingerprint of one method's outputs: the model, the sampling settings (batch size excluded), the seed."""
    sample = {k: v for k, v in asdict(cfg.sample).items() if k != "batch_size"}
    return json_digest({"model": model_fp, "sample": sample, "fusion_weight": fusion_weight, "seed": cfg.seed})


def output_paths(root: Path, method: str, set_name: str, task: str, stem: str) -> tuple[Path, Path]:
    """``(png, record)`` of one restored image."""
    slug = method_slug(method)
    return (root / slug / set_name / task / f"{stem}.png",
            root / slug / RECORDS / set_name / task / f"{stem}.json")


def _batches(items: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Fixed batches: per (set, task), per image size, in item order, ``batch_size`` at a time."""
    out = []
    for _, grp in items.groupby(["set", "task"], sort=False):
        for _, same in grp.groupby(["height", "width"], sort=False):
            for s in range(0, len(same), batch_size):
                out.append(same.iloc[s : s + batch_size])
    return out


def _image_routing(routing: list[dict], image: int) -> list[dict]:
    """Sum the per-tile routing summaries of one image (``routing``: the pipeline's records of a batch)."""
    total: dict[int, dict] = {}
    for rec in routing:
        if rec["image"] != image:
            continue
        for sc in routing_counts(rec["scales"], 0):
            t = total.get(sc["scale"])
            if t is None:
                total[sc["scale"]] = sc
                continue
            t["tokens"] += sc["tokens"]
            t["count"] = [a + b for a, b in zip(t["count"], sc["count"])]
            t["gate_sum"] = [a + b for a, b in zip(t["gate_sum"], sc["gate_sum"])]
    return [total[s] for s in sorted(total)]


def restore_items(
    pipe: Any,
    items: pd.DataFrame,
    benchmark_dir: str | Path,
    out_root: str | Path,
    methods: Mapping[str, float | None],
    cfg: Any,
    model_fp: str,
    *,
    log: Callable[[str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, RestoreStats]:
    """Restore ``items`` once per batch and decode for every method in ``methods`` (name -> the compensator's
    fusion weight, or None for the plain VAE decoder).

    ``pipe.sample_defaults`` is set to ``cfg.sample``. ``on_batch(i)`` is called after batch ``i`` is written
    (tests use it to interrupt a run). Returns per-method counts of restored and kept images.
    """
    benchmark_dir, out_root = Path(benchmark_dir), Path(out_root)
    pipe.sample_defaults = cfg.sample
    fps = {m: restore_fingerprint(model_fp, cfg, w) for m, w in methods.items()}
    stats = {m: RestoreStats() for m in methods}
    batches = _batches(items, cfg.sample.batch_size)
    t_start = time.perf_counter()
    for b_idx, batch in enumerate(batches):
        todo: dict[str, list[int]] = {}
        for m in methods:
            for j, it in enumerate(batch.itertuples(index=False)):
                png, rec = output_paths(out_root, m, it.set, it.task, str(it.stem))
                record = read_record(rec)
                size = None if record is None else (record.get("width"), record.get("height"))
                if size == (int(it.width), int(it.height)) and output_done(png, record, fps[m]):
                    stats[m].kept += 1
                else:
                    todo.setdefault(m, []).append(j)
        if not todo:
            continue
        rows = list(batch.itertuples(index=False))
        lq = [read_image_rgb(benchmark_dir / it.path) for it in rows]  # uint8 (H, W, 3), one size
        gens = [torch.Generator("cpu").manual_seed(image_seed(cfg.seed, it.set, it.task, str(it.stem))) for it in rows]
        z0, routing_records = pipe.sample_latents(lq, generator=gens)  # (B, 4, h, w)
        tiled = pipe.uses_tiles(lq[0].shape[:2], cfg.sample.tile_size)
        routing = [_image_routing(routing_records, j) for j in range(len(rows))]
        for m, idx in todo.items():
            images = pipe.decode_latents(z0, lq, decoder="vae" if methods[m] is None else "compensator",
                                         fusion_weight=methods[m], output_type="np")  # uint8 (H, W, 3) each
            for j in idx:
                it = rows[j]
                png, rec = output_paths(out_root, m, it.set, it.task, str(it.stem))
                write_output(png, encode_png(images[j]), rec, {
                    "method": m, "set": it.set, "task": it.task, "stem": str(it.stem), "codec": it.codec,
                    "level": str(it.level), "kind": it.kind, "width": int(it.width), "height": int(it.height),
                    "seed": image_seed(cfg.seed, it.set, it.task, str(it.stem)), "fusion_weight": methods[m],
                    "tiled": tiled, "fingerprint": fps[m], "routing": routing[j],
                })
                stats[m].restored += 1
        if log and (b_idx % max(1, len(batches) // 20) == 0 or b_idx == len(batches) - 1):  # ~20 lines a run
            done = sum(len(x) for x in batches[: b_idx + 1])
            log(f"[evaluate] restored {done}/{len(items)} items ({time.perf_counter() - t_start:.0f} s)")
        if on_batch:
            on_batch(b_idx)
    for s in stats.values():
        s.seconds = time.perf_counter() - t_start
    return stats


def restored_paths(items: pd.DataFrame, out_root: str | Path, method: str) -> dict[str, Path]:
    """``<set>/<task>/<stem>`` -> restored PNG for every item whose output exists."""
    out = {}
    for it in items.itertuples(index=False):
        png, _ = output_paths(Path(out_root), method, it.set, it.task, str(it.stem))
        if png.is_file():
            out[f"{it.set}/{it.task}/{it.stem}"] = png
    return out


def routing_records(items: pd.DataFrame, out_root: str | Path, method: str) -> list[dict]:
    """The records (with routing summaries) of ``method``'s restored items."""
    recs = []
    for it in items.itertuples(index=False):
        _, rec = output_paths(Path(out_root), method, it.set, it.task, str(it.stem))
        r = read_record(rec)
        if r is not None:
            recs.append(r)
    return recs
