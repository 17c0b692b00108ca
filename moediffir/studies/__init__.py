"""The notebook studies: what bounds a model trained here, and how it is best sampled (docs/design.md §10).

None of these is in the paper; each answers a question a prior trained for minutes raises, next to the
evaluation of §4.2 (:mod:`moediffir.evaluation`), with the same metrics:

* :mod:`.prior_quality` -- the prior's unconditional samples and its VAE ceiling (notebook 00);
* :mod:`.cnn_baseline` -- a plain residual CNN trained on the same pairs for as long as stage I;
* :mod:`.yardsticks` -- the VAE ceiling and that CNN scored as external methods (notebook 06);
* :mod:`.sampler_study` -- PSNR and LPIPS against sampler steps (notebook 06);
* :mod:`.denoiser_probe` -- the one-step estimate of ``z_0`` at each noise level (notebook 06);
* :mod:`.compensator_probe` -- latents of known quality through the compensator and the plain decoder (notebook 06);
* :mod:`.sample_spread` -- one sample against the mean of many and the posterior mean (notebook 06);
* :mod:`.channel_swap` -- groups of a stage-I sample's latent channels swapped for the ground truth's or the
  input's own (notebook 06);
* :mod:`.restore_check` -- photos from elsewhere through ``moediffir restore`` against their JPEG input.

Import the functions from their modules; importing this package loads nothing.
"""
