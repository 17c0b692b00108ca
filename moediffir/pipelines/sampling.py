"""The reverse diffusion loop with one small contract (paper §3.1, Eq. 1-2; docs/design.md §6).

MoE-DiffIR samples like StableSR: start from pure Gaussian noise ``z_T`` and run the reverse process of the
noise schedule the model was trained with, predicting ``eps(z_t, t)`` with the prompted UNet at each step.
The paper (and the default here) uses DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with 200 steps;
any diffusers scheduler can stand in (DDIM, DPM-Solver++, Euler, ...), because the loop only calls the
scheduler's own ``scale_model_input`` and ``step``.

Contract (k-diffusion style): :func:`sample_loop` takes a noise-prediction callable ``eps_fn(z_t, t)``, a
scheduler whose timesteps are set, the initial latents, and an optional ``callback(step, t, latents)`` that
sees the intermediate state after every step (a notebook plots latents or router choices from it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

SCHEDULERS: dict[str, type] = {
    "ddpm": DDPMScheduler,  # ancestral DDPM (paper, StableSR)
    "ddim": DDIMScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], Any]
GeneratorArg = torch.Generator | list[torch.Generator] | None


def make_scheduler(name: str, base_config: Any):
    """A fresh scheduler of kind ``name`` (keys of :data:`SCHEDULERS`) with the noise schedule of ``base_config``."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler {name!r} (sample.scheduler): choose one of {sorted(SCHEDULERS)}")
    return SCHEDULERS[name].from_config(base_config)


def initial_noise(
    shape: tuple[int, ...], scheduler, generator: GeneratorArg, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Pure noise ``z_T ~ N(0, sigma_T^2 I)`` of ``shape`` (a list of generators draws one image each)."""
    noise = randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)  # (B, 4, h, w)
    return noise * scheduler.init_noise_sigma


def step_kwargs(scheduler, generator: GeneratorArg, eta: float | None = None) -> dict[str, Any]:
    """The keyword arguments this scheduler's ``step`` accepts (generator, and eta for DDIM)."""
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "generator" in params:
        kwargs["generator"] = generator
    if eta is not None and "eta" in params:
        kwargs["eta"] = eta
    return kwargs


def sample_loop(
    eps_fn: EpsFn,
    scheduler,
    latents: torch.Tensor,
    generator: GeneratorArg = None,
    callback: StepCallback | None = None,
    progress: Any = None,
    eta: float | None = None,
) -> torch.Tensor:
    """Run the scheduler's reverse process from ``latents`` over ``scheduler.timesteps``; return ``z_0``.

    Args:
        eps_fn: noise prediction ``eps_fn(z_t, t) -> (B, 4, h, w)`` (``z_t`` already scaled by the scheduler).
        scheduler: a diffusers scheduler after ``set_timesteps``.
        latents: ``(B, 4, h, w)`` initial state (pure noise times ``init_noise_sigma``); kept in float32.
        generator: for the stochastic steps of ancestral samplers (one per image, or one for the batch).
        callback: ``callback(step_index, t, latents)`` after each step.
        progress: an object with ``update()`` (a tqdm bar), or None.
        eta: DDIM's eta (ignored by schedulers without it).
    """
    extra = step_kwargs(scheduler, generator, eta)
    latents = latents.float()
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(latents, t)  # (B, 4, h, w)
        eps = eps_fn(model_in, t).float()  # (B, 4, h, w)
        latents = scheduler.step(eps, t, latents, **extra).prev_sample.float()  # (B, 4, h, w)
        if callback is not None:
            callback(i, t, latents)
        if progress is not None:
            progress.update()
    return latents
