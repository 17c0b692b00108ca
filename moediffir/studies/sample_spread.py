"""One sample against the mean of many: what sampling costs in PSNR (paper §3.4, sampling from Eq. 2).

MoE-DiffIR restores by drawing *one* sample of ``p(z_0 | z_lq)`` from pure noise. When the sampler draws from the
true posterior, the sample and the ground truth are two independent draws given the LQ image, so a sample's
expected squared error is twice that of the posterior mean ``E[x | y]``, the best any restorer can do in MSE:
a faithful sampler loses 3 dB of PSNR to the posterior mean (Blau and Michaeli's perception-distortion
trade-off). Its LPIPS, on the other hand, is that of a plausible photo, not of a blurred average.

Drawing ``N`` samples of one LQ image measures this on a model: with ``m_1`` the mean squared error of one
sample (averaged over the ``N`` draws) and ``m_N`` that of the mean of the ``N`` decoded samples,
``E[m_1] = a + v`` and ``E[m_N] = a + v / N``, where ``a`` is the error of the model's posterior mean and ``v``
the samples' spread around it. So ``a = (N m_N - m_1) / (N - 1)``, the PSNR the sampler's own average would reach
with infinitely many draws. When that is under the input, no single sample of the model can beat the input in
PSNR; when the gap between ``m_1`` and ``a`` is about 3 dB, the model samples about as widely as a true
posterior does.

:func:`sample_spread` gives one row per image; :func:`spread_table` the means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from moediffir.metrics.fidelity import mse, psnr_from_mse

ESTIMATES = ("one sample", "mean of samples", "posterior mean (extrapolated)", "input")


def _psnr(err: float) -> float:
    """PSNR in dB of a mean squared error on the 0-255 scale; NaN where it is not positive (an extrapolated
    error can be)."""
    return psnr_from_mse(err, 255.0) if err > 0 else float("nan")


def posterior_mean_mse(mse_one: float, mse_mean: float, n: int) -> float:
    """The squared error ``a`` of the sampler's posterior mean, from the mean squared error ``mse_one`` of single
    samples and ``mse_mean`` of the mean of ``n`` samples (``E[m_1] = a + v``, ``E[m_n] = a + v / n``)."""
    if n < 2:
        raise ValueError(f"posterior_mean_mse: n={n}; the mean of at least 2 samples is needed")
    return (n * mse_mean - mse_one) / (n - 1)


@torch.no_grad()
def sample_spread(pipe, suite, pairs: Sequence[tuple[np.ndarray, np.ndarray]], n_samples: int, seed: int = 0,
                  decoders: Sequence[str] = ("vae",)) -> pd.DataFrame:
    """Per ``(lq, gt)`` pair of ``(H, W, 3)`` uint8 images: ``n_samples`` samples of the pipeline (its sampler,
    steps and colour fix; seeds ``seed * 1000 + k``), each decoded by every one of ``decoders`` (``"vae"``: stage
    I alone; ``"compensator"``: the full method). Columns: ``image``, ``decoder``, ``estimate``
    (:data:`ESTIMATES`), ``mse``, ``psnr`` (both under ``suite``'s colour and border conventions, on the 0-255
    scale) and ``suite``'s other metrics. ``mse`` of "one sample" is the mean over the ``N`` draws (its other
    metrics too), that of "mean of samples" the error of the unrounded average (its other metrics score the
    average rounded to uint8); the extrapolated mean is an error, not an image, so it has no other metrics."""
    if n_samples < 2:
        raise ValueError(f"sample_spread: n_samples={n_samples}; at least 2 samples are needed")
    metrics = [m for m in suite.metrics if m != "psnr"]
    c = suite.conventions

    def error(image: np.ndarray, gt: np.ndarray) -> float:
        """Squared error on the 0-255 scale under the suite's PSNR conventions (colour, border)."""
        return mse(image, gt, data_range=255.0, crop_border=c.crop_border, color=c.color)

    rows = []
    for i, (lq, gt) in enumerate(pairs):
        if lq.shape != gt.shape:
            raise ValueError(f"sample_spread: pair {i} has LQ {lq.shape} and GT {gt.shape}; give equal sizes")
        gens = [torch.Generator().manual_seed(seed * 1000 + k) for k in range(n_samples)]
        z, _ = pipe.sample_latents([lq] * n_samples, generator=gens)  # (N, C, h, w)
        lq_scores = {m: float(suite.score_pair(lq, gt)[m]) for m in metrics}
        for decoder in decoders:
            outs = np.stack(pipe.decode_latents(z, [lq] * n_samples, decoder=decoder, output_type="np"))  # (N,H,W,3)
            average = outs.astype(np.float64).mean(axis=0)  # (H, W, 3), unrounded
            mean = np.clip(np.round(average), 0, 255).astype(np.uint8)  # (H, W, 3): what the other metrics score
            m_one = float(np.mean([error(o, gt) for o in outs]))
            m_mean = error(average, gt)
            one = {m: float(np.mean([suite.score_pair(o, gt)[m] for o in outs])) for m in metrics}
            for name, err, scores in (
                ("one sample", m_one, one),
                ("mean of samples", m_mean, {m: float(suite.score_pair(mean, gt)[m]) for m in metrics}),
                ("posterior mean (extrapolated)", posterior_mean_mse(m_one, m_mean, n_samples),
                 {m: float("nan") for m in metrics}),
                ("input", error(lq, gt), lq_scores),
            ):
                rows.append({"image": i, "decoder": decoder, "estimate": name, "mse": err, "psnr": _psnr(err),
                             **scores})
    return pd.DataFrame(rows)


def spread_table(rows: pd.DataFrame, metric: str = "psnr") -> pd.DataFrame:
    """Mean ``metric`` of :func:`sample_spread`'s rows over the images: one row per estimate, in
    :data:`ESTIMATES`' order, one column per decoder. PSNR is the mean of the images' PSNRs, as in the
    evaluation's tables."""
    table = rows.pivot_table(index="estimate", columns="decoder", values=metric, aggfunc="mean", sort=False,
                             dropna=False)
    table = table.reindex(index=list(ESTIMATES), columns=list(dict.fromkeys(rows["decoder"])))
    table.columns.name = None
    return table
