"""Decoding known latents through the compensator and the plain decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moediffir.metrics import MetricSuite
from moediffir.metrics.conventions import MetricConventions
from moediffir.studies.compensator_probe import decoder_estimates, decoder_table

SUITE = MetricSuite(("psnr", "lpips"), MetricConventions(weights="random"))


def test_an_untrained_compensator_decodes_as_the_plain_decoder(fresh_pipe, noisy_pair):
    lq, gt = noisy_pair(0)
    rows = decoder_estimates(fresh_pipe, SUITE, [(lq, gt)])
    assert list(zip(rows["latent"], rows["decoder"])) == [
        ("E(GT)", "compensator"), ("E(GT)", "vae"), ("E(LQ)", "compensator"), ("E(LQ)", "vae")]
    # zero-initialised fusion: both decoders give the same image, so the same scores
    for latent in ("E(GT)", "E(LQ)"):
        by = rows[rows["latent"] == latent].set_index("decoder")
        assert by.loc["compensator", "psnr"] == by.loc["vae", "psnr"]
    # the two latents are different images
    assert rows.loc[0, "psnr"] != rows.loc[2, "psnr"]
    assert rows["input_psnr"].iloc[0] == pytest.approx(10 * np.log10(255**2 / np.mean((lq.astype(float) - gt) ** 2)))
    table = decoder_table(rows)
    assert list(table.index) == ["E(GT)", "E(LQ)"] and list(table.columns) == ["compensator", "vae", "input"]
    assert table.loc["E(LQ)", "vae"] == rows.loc[3, "psnr"]
    assert decoder_table(rows, "lpips").loc["E(GT)", "input"] == rows["input_lpips"].iloc[0]


def test_a_trained_fusion_changes_the_compensator_rows_only(fresh_pipe, noisy_pair):
    pairs = [noisy_pair(1)]
    before = decoder_estimates(fresh_pipe, SUITE, pairs)
    torch.manual_seed(0)
    saved = {k: v.clone() for k, v in fresh_pipe.compensator.fusion.state_dict().items()}
    try:
        with torch.no_grad():
            for p in fresh_pipe.compensator.fusion.parameters():
                p.add_(0.2 * torch.randn_like(p))  # a fusion that writes into the decoder's features
        after = decoder_estimates(fresh_pipe, SUITE, pairs)
        off = decoder_estimates(fresh_pipe, SUITE, pairs, fusion_weight=0.0)
    finally:
        fresh_pipe.compensator.fusion.load_state_dict(saved)
    vae_rows = after["decoder"] == "vae"
    assert after[vae_rows].equals(before[vae_rows])
    assert (after.loc[~vae_rows, "psnr"].to_numpy() != before.loc[~vae_rows, "psnr"].to_numpy()).all()
    assert off[["psnr", "lpips"]].equals(before[["psnr", "lpips"]])  # w = 0 is the plain decoder


def test_pairs_of_different_sizes_are_refused(fresh_pipe, noisy_pair):
    lq, gt = noisy_pair(2)
    with pytest.raises(ValueError, match="pair 0 has LQ"):
        decoder_estimates(fresh_pipe, SUITE, [(lq[:32], gt)])
