"""How good is the conditional denoiser at each noise level? The one-step estimate of ``z_0`` (paper §3.1, Eq. 2).

Eq. 2 trains the prompted UNet to predict the noise (or ``v``, or ``z_0``) of ``z_t = sqrt(abar_t) z_0 +
sqrt(1 - abar_t) eps``; the sampler chains such predictions from pure noise. Every prediction implies an
estimate of the clean latent, ``ẑ_0(z_t, t, z_lq)``. Decoding it and scoring it against the ground truth says
where a model stands, step by step:

- at ``t`` near the end of the schedule (``z_t`` almost pure noise) ``ẑ_0`` is what the model infers from the
  LQ condition alone: a model that uses ``z_lq`` well is at least as good here as the compressed input;
- at small ``t`` (``z_t`` close to the clean latent) it shows the denoiser's own precision, bounded by the
  autoencoder's ceiling.

``condition="gt"`` conditions on the ground truth's own latent instead of ``z_lq``: the best any degradation could
allow. Near pure noise it measures how much of a condition the prompt module and SPADE carry through the frozen UNet
at all: when it is close to the ``"lq"`` figure, the conditioning path, not the compression, bounds the model.

:func:`z0_estimates` gives one row per image and ``t`` (PSNR of the decoded estimate), beside the input's PSNR
and that of ``D(z_lq)`` (the LQ latent decoded without any diffusion).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from moediffir.metrics.fidelity import psnr
from moediffir.models.latent_scaling import unscale_latents
from moediffir.pipelines.vae_steps import encode_lq
from moediffir.utils.image_tensors import to_tensor01


def _signal_noise(scheduler, t: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``sqrt(abar_t)`` and ``sqrt(1 - abar_t)``, each ``(B, 1, 1, 1)``, from the training schedule (not a
    sampler's own timestep grid)."""
    abar = scheduler.alphas_cumprod.to(device)[t.to(device)].float().view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return abar.sqrt(), (1 - abar).sqrt()


def noised(scheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps`` (Eq. 1's forward process at training timestep ``t``)."""
    a, s = _signal_noise(scheduler, t, z0.device)
    return a * z0 + s * noise


def predicted_z0(scheduler, z_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``ẑ_0`` ``(B, C, h, w)`` implied by a model ``output`` at ``z_t`` and ``t`` (``(B,)``), for the
    scheduler's ``prediction_type`` (``epsilon``, ``v_prediction`` or ``sample``)."""
    a, s = _signal_noise(scheduler, t, z_t.device)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (z_t - s * output) / a
    if kind == "v_prediction":
        return a * z_t - s * output
    if kind == "sample":
        return output
    raise ValueError(f"prediction_type={kind!r}: choose epsilon, v_prediction or sample")


def _to_uint8(vae, z: torch.Tensor) -> np.ndarray:
    x = vae.decode(unscale_latents(vae, z).to(vae.dtype)).sample[0]  # (3, H, W) in [-1, 1]
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def z0_estimates(denoiser, vae, scheduler, pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                 timesteps: Sequence[int] = (999, 800, 600, 400, 200, 50), seed: int = 0,
                 condition: str = "lq") -> pd.DataFrame:
    """Per ``(lq, gt)`` pair of ``(H, W, 3)`` uint8 images (sizes divisible by the VAE's factor) and per ``t``:
    PSNR of ``D(ẑ_0(z_t, t, z_c))`` against ``gt``, where ``z_t`` noises the ground truth's latent to ``t``
    (one seeded noise draw per image) and the condition ``z_c`` is ``z_lq`` (``condition="lq"``) or the ground
    truth's latent (``"gt"``, the module docstring); also the rows ``t = "input"`` (the LQ image) and
    ``"D(z_lq)"``."""
    if condition not in ("lq", "gt"):
        raise ValueError(f"z0_estimates: condition={condition!r}; choose 'lq' or 'gt'")
    device = next(denoiser.parameters()).device
    rows = []
    for i, (lq, gt) in enumerate(pairs):
        lq01, gt01 = to_tensor01(lq)[None].to(device), to_tensor01(gt)[None].to(device)  # (1, 3, H, W) in [0, 1]
        z_lq, z0 = encode_lq(vae, lq01), encode_lq(vae, gt01)  # (1, C, h, w)
        rows += [{"image": i, "t": "input", "psnr": psnr(lq, gt)},
                 {"image": i, "t": "D(z_lq)", "psnr": psnr(_to_uint8(vae, z_lq), gt)}]
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed + i)).to(device)
        for t in timesteps:
            tt = torch.tensor([int(t)], device=device)
            z_t = noised(scheduler, z0, noise, tt)  # (1, C, h, w)
            z_c, x_c = (z_lq, lq01) if condition == "lq" else (z0, gt01)  # the condition: (1, C, h, w), (1, 3, H, W)
            out = denoiser(z_t, tt, z_c, lq_image=x_c)  # (1, C, h, w)
            rows.append({"image": i, "t": int(t), "psnr": psnr(_to_uint8(vae, predicted_z0(scheduler, z_t, tt, out)), gt)})
    return pd.DataFrame(rows)
