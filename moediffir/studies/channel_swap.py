"""Which latent channels stage I's samples get wrong (paper §3.1, the latent space; §3.4, sampling Eq. 2).

Stage I restores in the latent space and the plain decoder draws what it samples. When a sample decodes worse
than its input, the error sits in some of the latent's channels and not others. Replacing one group of a
sample's channels with the ground truth's own (``E(GT)``) measures what that group costs; replacing it with the
compressed image's (``E(LQ)``) measures whether stage I even keeps what the input already had there.

In ``mini``'s latent space (:class:`~moediffir.models.patch_autoencoder.PatchAutoencoder`) the channels are
principal components of 4x4 RGB patches, ordered by energy: channel 1 is the patch's mean colour and the last
ones its finest detail, so contiguous groups are frequency bands (:func:`channel_groups`). In SD's VAE the
channels have no such order and the groups are only positions.

:func:`channel_swaps` gives one row per image and swapped latent; :func:`swap_table` the means. Swapping
everything but the finest group for ``E(LQ)`` asks the plainest question: would a stage I that merely kept the
input's coarse content, and drew its own fine detail, beat the input?
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from moediffir.studies.compensator_probe import LATENTS, own_latents, pair_scores

SOURCES = LATENTS  # the ground truth's and the LQ image's own latents, encoded as the compensator probe does
SAMPLE = "stage I's sample"


def channel_groups(num_channels: int) -> list[tuple[int, ...]]:
    """Three contiguous groups of channel indices (0-based) covering ``num_channels`` once, in order: the
    coarsest quarter, the middle, and the finest three eighths (8 channels: ``(0, 1), (2, 3, 4), (5, 6, 7)``)."""
    if num_channels < 3:
        raise ValueError(f"channel_groups: {num_channels} latent channels; three groups need at least 3")
    coarse = max(1, num_channels // 4)
    fine = max(1, round(num_channels * 3 / 8))
    middle = num_channels - coarse - fine  # >= 1 from 3 channels up
    edges = (0, coarse, coarse + middle, num_channels)
    return [tuple(range(edges[k], edges[k + 1])) for k in range(3)]


def default_swaps(num_channels: int) -> list[tuple[int, ...]]:
    """The groups :func:`channel_swaps` swaps unless told: the three bands of :func:`channel_groups`, then the
    coarse and middle ones together (everything but the finest detail)."""
    coarse, middle, fine = channel_groups(num_channels)
    return [coarse, middle, fine, coarse + middle]


def group_label(group: Sequence[int]) -> str:
    """``channels a-b`` (1-based, as the docs count them) of a contiguous group; listed one by one otherwise."""
    ids = [c + 1 for c in group]
    if ids == list(range(ids[0], ids[-1] + 1)) and len(ids) > 1:
        return f"channels {ids[0]}-{ids[-1]}"
    return ("channel " if len(ids) == 1 else "channels ") + ", ".join(map(str, ids))


def _check_groups(groups: Sequence[Sequence[int]], num_channels: int) -> list[tuple[int, ...]]:
    out = []
    for g in groups:
        g = tuple(int(c) for c in g)
        if not g:
            raise ValueError("channel_swaps: an empty channel group; give at least one channel per group")
        bad = [c for c in g if not 0 <= c < num_channels]
        if bad:
            raise ValueError(f"channel_swaps: channel(s) {bad} of group {g} are outside the latent's "
                             f"{num_channels} channels (0-based indices 0..{num_channels - 1})")
        out.append(g)
    return out


@torch.no_grad()
def channel_swaps(pipe, suite, pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                  groups: Sequence[Sequence[int]] | None = None, seed: int = 0) -> pd.DataFrame:
    """Per ``(lq, gt)`` pair of ``(H, W, 3)`` uint8 images: one stage-I sample of ``lq`` (the pipeline's sampler
    and steps; seed ``seed * 1000 + i`` for pair ``i``), decoded by the plain decoder as it is and with each
    group of its channels (``groups``, 0-based indices; None: :func:`default_swaps`) replaced by that group of
    ``E(GT)`` or of ``E(LQ)`` (encoded as the pipeline encodes its condition). Every latent is decoded as the
    pipeline decodes stage I's output (padding, the pipeline's colour fix against ``lq``). Columns: ``image``,
    ``channels`` (the group's label; ``"none"`` for the sample itself), ``source`` (:data:`SAMPLE` or one of
    :data:`SOURCES`), ``suite``'s metrics, and ``input_<metric>`` (the LQ image itself)."""
    num_channels = int(pipe.vae.config.latent_channels)
    groups = _check_groups(default_swaps(num_channels) if groups is None else groups, num_channels)
    rows = []
    for i, (lq, gt) in enumerate(pairs):
        if lq.shape != gt.shape:
            raise ValueError(f"channel_swaps: pair {i} has LQ {lq.shape} and GT {gt.shape}; give equal sizes")
        inputs = {f"input_{m}": v for m, v in pair_scores(suite, lq, gt).items()}
        z, _ = pipe.sample_latents([lq], generator=[torch.Generator().manual_seed(seed * 1000 + i)])  # (1, C, h, w)
        own = own_latents(pipe, gt, lq)  # E(GT), E(LQ): (1, C, h, w) each
        latents = [("none", SAMPLE, z)]
        for g in groups:
            for name, source in own.items():
                swapped = z.clone()  # (1, C, h, w)
                swapped[:, list(g)] = source[:, list(g)]
                latents.append((group_label(g), name, swapped))
        for label, name, latent in latents:
            out = pipe.decode_latents(latent, [lq], decoder="vae", output_type="np")[0]  # uint8 (H, W, 3)
            rows.append({"image": i, "channels": label, "source": name, **pair_scores(suite, out, gt), **inputs})
    return pd.DataFrame(rows)


def swap_table(rows: pd.DataFrame, metric: str = "psnr") -> pd.DataFrame:
    """Mean ``metric`` of :func:`channel_swaps`'s rows: one row per swapped channel group, one column per source
    of the swapped channels (:data:`SOURCES`), then the sample as it is and the input, the same in every row."""
    swapped = rows[rows["source"] != SAMPLE]
    table = swapped.pivot_table(index="channels", columns="source", values=metric, aggfunc="mean", sort=False)
    table = table.reindex(columns=[c for c in SOURCES if c in table.columns])
    table[SAMPLE] = float(rows.loc[rows["source"] == SAMPLE, metric].mean())
    table["input"] = float(rows[f"input_{metric}"].mean())
    table.columns.name = None
    return table
