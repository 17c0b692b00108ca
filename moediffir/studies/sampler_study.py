"""How many sampler steps a trained model needs: PSNR and LPIPS against steps per sampler (paper §4.1 uses 200).

The paper samples with 200 DDPM steps; on a CPU that is most of the evaluation's time. :func:`sampler_study`
restores the same test items with DDPM at ``ddpm_steps`` and with DDIM and DPM-Solver++ (2M) at each of
``steps``, seeded per image, and records the mean PSNR, LPIPS and seconds per image of each setting;
:func:`fewest_steps_within` names the cheapest setting whose PSNR is within ``tol_db`` of the DDPM reference.
The scheduler is swapped with :func:`~moediffir.pipelines.sampling.make_scheduler` on the model's own noise
schedule (and prediction type), nothing else changes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from moediffir.evaluation.protocol import image_seed
from moediffir.pipelines.sampling import make_scheduler
from moediffir.utils.io import read_image_rgb


def sampler_settings(ddpm_steps: int = 200, steps: Sequence[int] = (10, 20, 50),
                     samplers: Sequence[str] = ("ddim", "dpmpp_2m")) -> list[tuple[str, int]]:
    """``[("ddpm", ddpm_steps), (sampler, n) for each sampler and n]``: the reference first."""
    return [("ddpm", int(ddpm_steps))] + [(s, int(n)) for s in samplers for n in steps]


def sampler_study(pipe, suite, items: pd.DataFrame, bench, settings: Sequence[tuple[str, int]], seed: int = 0,
                  decoder: str | None = None, log=print) -> pd.DataFrame:
    """One row per (sampler, steps): mean ``psnr``, ``lpips`` (if the suite has it), ``s_per_image``, ``n``.

    ``pipe`` is a loaded :class:`~moediffir.pipelines.MoEDiffIRPipeline`; its scheduler is restored afterwards.
    """
    lqs = [read_image_rgb(bench / r.path) for r in items.itertuples(index=False)]
    gts = [read_image_rgb(bench / r.gt_path) for r in items.itertuples(index=False)]
    seeds = [image_seed(seed, r.set, r.task, r.stem) for r in items.itertuples(index=False)]
    original = pipe.scheduler
    rows = []
    try:
        for name, n in settings:
            pipe.scheduler = make_scheduler(name, original.config)
            t0 = time.perf_counter()
            out = pipe(lqs, num_inference_steps=n, generator=[torch.Generator().manual_seed(s) for s in seeds],
                       decoder=decoder, output_type="np").images
            dt = (time.perf_counter() - t0) / len(lqs)
            scores = [suite.score_pair(o, g) for o, g in zip(out, gts)]
            row = {"sampler": name, "steps": n, "n": len(lqs), "s_per_image": dt,
                   "psnr": float(np.mean([s["psnr"] for s in scores]))}
            if "lpips" in scores[0]:
                row["lpips"] = float(np.mean([s["lpips"] for s in scores]))
            rows.append(row)
            if log:
                log(f"[sampler study] {name} {n} steps: {row['psnr']:.2f} dB, {dt:.2f} s/image")
    finally:
        pipe.scheduler = original
    return pd.DataFrame(rows)


def fewest_steps_within(study: pd.DataFrame, tol_db: float = 0.1, reference: str = "ddpm") -> dict | None:
    """The cheapest non-reference row (fewest steps, then least time) with ``psnr >= ref - tol_db``, or None."""
    ref = study[study["sampler"] == reference]
    if ref.empty:
        return None
    target = float(ref["psnr"].max()) - tol_db
    ok = study[(study["sampler"] != reference) & (study["psnr"] >= target)]
    if ok.empty:
        return None
    best = ok.sort_values(["steps", "s_per_image"]).iloc[0]
    return {"sampler": best["sampler"], "steps": int(best["steps"]), "psnr": float(best["psnr"]),
            "reference_psnr": float(ref["psnr"].max()), "tol_db": tol_db}
