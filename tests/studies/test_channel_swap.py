"""Swapping groups of a stage-I sample's latent channels for the ground truth's or the input's own."""

from __future__ import annotations

import pytest
import torch

from moediffir.metrics import MetricSuite
from moediffir.metrics.conventions import MetricConventions
from moediffir.studies.channel_swap import (
    SAMPLE,
    SOURCES,
    channel_groups,
    channel_swaps,
    default_swaps,
    group_label,
    swap_table,
)

SUITE = MetricSuite(("psnr", "lpips"), MetricConventions(weights="random"))


def test_the_groups_are_bands_that_cover_every_channel_once():
    for n in range(3, 17):
        groups = channel_groups(n)
        assert [c for g in groups for c in g] == list(range(n)) and all(groups)
    assert channel_groups(8) == [(0, 1), (2, 3, 4), (5, 6, 7)]
    assert default_swaps(8)[-1] == (0, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="at least 3"):
        channel_groups(2)
    assert [group_label(g) for g in ((0, 1), (4,), (0, 2))] == ["channels 1-2", "channel 5", "channels 1, 3"]


def test_the_sample_row_is_stage_i_as_the_pipeline_restores_it(fresh_pipe, noisy_pair):
    lq, gt = noisy_pair(0)
    rows = channel_swaps(fresh_pipe, SUITE, [(lq, gt)], seed=3)
    restored = fresh_pipe(lq, generator=torch.Generator().manual_seed(3000), decoder="vae", output_type="np")
    expected = SUITE.score_pair(restored.images[0], gt)
    sample = rows[rows["source"] == SAMPLE].iloc[0]
    assert sample["channels"] == "none"
    assert sample["psnr"] == expected["psnr"] and sample["lpips"] == expected["lpips"]
    # every default group (smoke's 4 channels: 1, 2, 3-4 and 1-2) swapped from each source, after the sample
    labels = [group_label(g) for g in default_swaps(4)]
    assert list(zip(rows["channels"], rows["source"]))[1:] == [(lab, s) for lab in labels for s in SOURCES]


def test_swapping_every_channel_decodes_the_source_whatever_was_sampled(fresh_pipe, noisy_pair):
    pairs = [noisy_pair(1)]
    everything = [tuple(range(fresh_pipe.vae.config.latent_channels))]
    a = channel_swaps(fresh_pipe, SUITE, pairs, groups=everything, seed=0)
    b = channel_swaps(fresh_pipe, SUITE, pairs, groups=everything, seed=1)
    own = a["source"] != SAMPLE
    # two seeds sample different latents, yet a latent replaced whole is the source's own
    assert a.loc[~own, "psnr"].iloc[0] != b.loc[~own, "psnr"].iloc[0]
    assert a[own].equals(b[own])
    # and E(GT) and E(LQ) of different images decode to different images
    assert a.loc[own, "psnr"].nunique() == 2


def test_one_group_swapped_from_identical_images_gives_identical_rows(fresh_pipe, noisy_pair):
    _, gt = noisy_pair(2)
    rows = channel_swaps(fresh_pipe, SUITE, [(gt, gt)], groups=[(0,), (2, 3)])
    by = rows.set_index(["channels", "source"])
    for label in ("channel 1", "channels 3-4"):
        assert by.loc[(label, "E(GT)"), "psnr"] == by.loc[(label, "E(LQ)"), "psnr"]
        assert by.loc[(label, "E(GT)"), "psnr"] != by.loc[("none", SAMPLE), "psnr"]  # the swap changed the sample
    table = swap_table(rows)
    assert list(table.index) == ["channel 1", "channels 3-4"]
    assert list(table.columns) == [*SOURCES, SAMPLE, "input"]
    assert table.loc["channel 1", "E(GT)"] == by.loc[("channel 1", "E(GT)"), "psnr"]
    assert (table[SAMPLE] == by.loc[("none", SAMPLE), "psnr"]).all()
    assert (table["input"] == rows["input_psnr"].iloc[0]).all()


def test_bad_groups_and_pairs_are_refused(fresh_pipe, noisy_pair):
    lq, gt = noisy_pair(3)
    with pytest.raises(ValueError, match=r"channel\(s\) \[4\] of group \(3, 4\) are outside the latent's 4"):
        channel_swaps(fresh_pipe, SUITE, [(lq, gt)], groups=[(3, 4)])
    with pytest.raises(ValueError, match="empty channel group"):
        channel_swaps(fresh_pipe, SUITE, [(lq, gt)], groups=[()])
    with pytest.raises(ValueError, match="pair 0 has LQ"):
        channel_swaps(fresh_pipe, SUITE, [(lq[:32], gt)])
