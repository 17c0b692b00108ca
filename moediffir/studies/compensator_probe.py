"""What the decoder compensator takes from the latent it decodes (paper §3.4 stage II, Eq. 4).

Stage II trains the compensator to turn a *sampled* latent ``z_0`` and the LQ image into the HQ image, with
``L_Decoder = L_lpips[z_lq, z0, hr]`` (Eq. 4). It has two inputs, and nothing in Eq. 4 says how much it should
lean on each. Decoding latents whose quality is known, instead of sampled ones, measures it:

- ``E(GT)``, the ground truth's own latent: through the plain decoder this is the VAE ceiling. A compensator that
  reads its latent gets close to the ceiling here;
- ``E(LQ)``, the compressed image's latent: through the plain decoder this is about the input.

When the compensator scores about the same on both, it has learned to ignore the latent and restores from the LQ
features alone: it is then a small CNN on the LQ image, and the full method's fidelity is bounded by that CNN,
however good stage I's latents become. When it beats the plain decoder on ``E(LQ)`` but stays far under the
ceiling on ``E(GT)``, it trusts the LQ features more than the latent. Both cases say that stage I's samples
were too poor, during stage II's training, for the compensator to learn to use them.

:func:`decoder_estimates` gives one row per image, latent and decoder, beside the input's own scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from moediffir.pipelines.tiling import pad_to_multiple
from moediffir.pipelines.vae_steps import encode_lq
from moediffir.utils.image_tensors import to_tensor01

LATENTS = ("E(GT)", "E(LQ)")
DECODERS = ("compensator", "vae")


def pair_scores(suite, image: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """``suite``'s metrics of one image against ``gt`` (its labels left out)."""
    return {m: float(v) for m, v in suite.score_pair(image, gt).items() if m in suite.metrics}


def own_latents(pipe, gt: np.ndarray, lq: np.ndarray) -> dict[str, torch.Tensor]:
    """``{"E(GT)": z, "E(LQ)": z}`` (:data:`LATENTS`): each ``(1, C, H'/f, W'/f)`` latent of one ``(H, W, 3)``
    uint8 image, padded to the pipeline's grid and encoded as the pipeline encodes its condition, so scaled as
    sampling leaves a latent."""
    device = pipe._execution_device
    latents = {}
    for name, img in zip(LATENTS, (gt, lq)):
        padded, _ = pad_to_multiple(to_tensor01(img)[None].to(device), pipe.pixel_multiple)  # (1, 3, H', W')
        latents[name] = encode_lq(pipe.vae, padded)  # (1, C, H'/f, W'/f)
    return latents


@torch.no_grad()
def decoder_estimates(pipe, suite, pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                      fusion_weight: float | None = None) -> pd.DataFrame:
    """Per ``(lq, gt)`` pair of ``(H, W, 3)`` uint8 images of one size each: the scores (``suite``'s pair metrics,
    e.g. PSNR and LPIPS) against ``gt`` of the latents ``E(GT)`` and ``E(LQ)`` decoded by the compensator (at
    ``fusion_weight``; None: the pipeline's default) and by the plain decoder, each read together with the LQ
    image exactly as the pipeline decodes a sampled latent (padding, no colour fix). Columns: ``image``,
    ``latent``, ``decoder``, the metrics, and ``input_<metric>`` (the LQ image itself)."""
    rows = []
    for i, (lq, gt) in enumerate(pairs):
        if lq.shape != gt.shape:
            raise ValueError(f"decoder_estimates: pair {i} has LQ {lq.shape} and GT {gt.shape}; give equal sizes")
        inputs = {f"input_{m}": v for m, v in pair_scores(suite, lq, gt).items()}
        for name, z in own_latents(pipe, gt, lq).items():
            for decoder in DECODERS:
                out = pipe.decode_latents(z, [lq], decoder=decoder, fusion_weight=fusion_weight, color_fix="none",
                                          output_type="np")[0]  # uint8 (H, W, 3)
                rows.append({"image": i, "latent": name, "decoder": decoder, **pair_scores(suite, out, gt), **inputs})
    return pd.DataFrame(rows)


def decoder_table(rows: pd.DataFrame, metric: str = "psnr") -> pd.DataFrame:
    """Mean ``metric`` of :func:`decoder_estimates`'s rows: one row per latent, one column per decoder, and the
    input's mean beside them."""
    table = rows.pivot_table(index="latent", columns="decoder", values=metric, aggfunc="mean", sort=False)
    table = table.reindex(index=list(LATENTS), columns=list(DECODERS))
    table["input"] = float(rows[f"input_{metric}"].mean())
    table.columns.name = None
    return table
