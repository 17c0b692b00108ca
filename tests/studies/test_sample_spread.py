"""One sample against the mean of many, and the posterior mean extrapolated from them."""

from __future__ import annotations

import numpy as np
import pytest

from moediffir.metrics import MetricSuite
from moediffir.metrics.conventions import MetricConventions
from moediffir.studies.sample_spread import ESTIMATES, posterior_mean_mse, sample_spread, spread_table

SUITE = MetricSuite(("psnr", "lpips"), MetricConventions(weights="random"))


@pytest.mark.parametrize("n", [2, 8])
def test_the_posterior_means_error_is_recovered_from_samples_around_it(n):
    rng = np.random.default_rng(n)
    truth = rng.normal(0, 50, 200_000)
    bias = rng.normal(0, 4, truth.shape)  # the posterior mean is truth + bias: its error is mean(bias^2)
    samples = truth + bias + rng.normal(0, 9, (n, truth.size))  # spread v = 81 around it
    m_one = np.mean([np.mean((s - truth) ** 2) for s in samples])
    m_mean = np.mean((samples.mean(axis=0) - truth) ** 2)
    assert m_one == pytest.approx(16 + 81, rel=0.02) and m_mean == pytest.approx(16 + 81 / n, rel=0.03)
    assert posterior_mean_mse(m_one, m_mean, n) == pytest.approx(np.mean(bias**2), rel=0.05)


def test_one_sample_has_no_posterior_mean():
    with pytest.raises(ValueError, match="at least 2"):
        posterior_mean_mse(10.0, 10.0, 1)


def test_the_mean_of_samples_scores_between_one_sample_and_the_extrapolation(fresh_pipe, noisy_pair):
    lq, gt = noisy_pair(0)
    rows = sample_spread(fresh_pipe, SUITE, [(lq, gt)], n_samples=3, seed=1)
    assert list(rows["estimate"]) == list(ESTIMATES)
    by = rows.set_index("estimate")
    # random networks sample widely: averaging removes part of that spread (Jensen: never adds error)
    assert by.loc["posterior mean (extrapolated)", "mse"] < by.loc["mean of samples", "mse"] < by.loc["one sample", "mse"]
    assert by.loc["posterior mean (extrapolated)", "mse"] == pytest.approx(
        (3 * by.loc["mean of samples", "mse"] - by.loc["one sample", "mse"]) / 2)
    assert by.loc["input", "psnr"] == pytest.approx(10 * np.log10(255**2 / np.mean((lq.astype(float) - gt) ** 2)))
    assert np.isnan(by.loc["posterior mean (extrapolated)", "lpips"]) and by["lpips"].drop(ESTIMATES[2]).notna().all()
    again = sample_spread(fresh_pipe, SUITE, [(lq, gt)], n_samples=3, seed=1)
    assert again.equals(rows)  # seeded
    other = sample_spread(fresh_pipe, SUITE, [(lq, gt)], n_samples=3, seed=2)
    assert other.loc[0, "mse"] != rows.loc[0, "mse"]


def test_psnr_follows_the_suites_conventions(fresh_pipe, noisy_pair):
    lq, gt = noisy_pair(6)
    luma = MetricSuite(("psnr",), MetricConventions(weights="random", color="y", crop_border=2))
    rows = sample_spread(fresh_pipe, luma, [(lq, gt)], n_samples=2).set_index("estimate")
    assert rows.loc["input", "psnr"] == pytest.approx(luma.score_pair(lq, gt)["psnr"], abs=1e-9)
    assert rows.loc["input", "psnr"] != pytest.approx(SUITE.score_pair(lq, gt)["psnr"], abs=1e-3)


def test_each_decoder_decodes_the_same_samples(fresh_pipe, noisy_pair):
    pairs = [noisy_pair(3), noisy_pair(4)]
    rows = sample_spread(fresh_pipe, SUITE, pairs, n_samples=2, seed=0, decoders=("vae", "compensator"))
    assert list(rows["decoder"].unique()) == ["vae", "compensator"] and len(rows) == 2 * 2 * len(ESTIMATES)
    # an untrained compensator (zero-initialised fusion) decodes as the plain decoder: the same samples give the
    # same scores; different samples would not
    vae, comp = (rows[rows.decoder == d].reset_index(drop=True) for d in ("vae", "compensator"))
    assert np.allclose(vae["mse"], comp["mse"])
    table = spread_table(rows)
    assert list(table.index) == list(ESTIMATES) and list(table.columns) == ["vae", "compensator"]
    assert table.loc["input", "vae"] == pytest.approx(rows[rows.estimate == "input"]["psnr"].mean())
    assert spread_table(rows, "lpips").loc[ESTIMATES[2]].isna().all()


def test_bad_requests_are_refused(fresh_pipe, noisy_pair):
    lq, gt = noisy_pair(5)
    with pytest.raises(ValueError, match="at least 2 samples"):
        sample_spread(fresh_pipe, SUITE, [(lq, gt)], n_samples=1)
    with pytest.raises(ValueError, match="pair 0 has LQ"):
        sample_spread(fresh_pipe, SUITE, [(lq[:32], gt)], n_samples=2)
