"""MoE-DiffIR restoration pipeline: LQ image(s) in, restored image(s) out (paper §3, Fig. 2a/3a; docs/design.md §6).

Inference as in the paper (§3.4, §4.1) and StableSR, which it follows:

1. check the inputs (:meth:`MoEDiffIRPipeline.check_inputs`: short, exact errors);
2. turn them into ``(1, 3, H, W)`` float images in ``[0, 1]``; group images of one size into batches;
3. pad each batch by repeating edge pixels to the latent grid (64 px for SD: VAE factor x UNet downsampling);
4. encode the LQ image with the frozen VAE encoder, posterior mean (deterministic), scaled (:func:`.encode_lq`);
5. prepare the prompt conditions once per image (or tile): degradation prior, MoE-Prompt Module, SPADE
   modulations and the Visual2Text context (:meth:`MoEDiffIRDenoiser.prepare`);
6. prepare latents from pure noise ``z_T ~ N(0, I)`` (seeded by ``generator``);
7. run the reverse process of the scheduler (DDPM, 200 steps by default; any diffusers scheduler and step
   count) with the prompted UNet (:func:`~moediffir.pipelines.sampling.sample_loop`);
8. decode ``z_0`` with the chosen ``decoder``: the decoder compensator at fusion weight ``w`` (the default where
   the model has one) or the plain VAE decoder (``decoder="vae"``);
9. crop back to the input size and colour fix against the LQ image (``none``, ``wavelet``, ``adain``);
10. convert to the output type.

Images larger than ``tile_size`` take the tiled path (:mod:`.tiling`): tiled VAE encoding, noise predictions
blended over overlapping latent tiles at every step, tiled (compensated) decoding.

The components are registered with diffusers (``unet``, ``vae``, ``scheduler``, ``prompt_module``, ``spade``,
optionally ``degradation_prior``, ``v2t``, ``compensator``): ``pipe.to(device, dtype)``, ``pipe.device`` and
``pipe.progress_bar`` work; ``pipe.denoiser`` is the stage-I model. Saving and loading: :mod:`moediffir.weights`.

Where each step lives: 1, 2, 10 in :mod:`.inputs`; 3-7 for one batch in
:class:`.batch_sampling.BatchSampling` (a part of this class, which inherits it); 4, 8 in :mod:`.vae_steps`; 9 in
:mod:`.colorfix`. The call checks and converts its inputs once, then runs ``_sample``
(2-7) and ``_decode`` (3, 8-10), which :meth:`~MoEDiffIRPipeline.sample_latents` and
:meth:`~MoEDiffIRPipeline.decode_latents` also run after their own checks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from moediffir.config import SampleConfig
from moediffir.models.denoiser import MoEDiffIRDenoiser
from moediffir.pipelines import vae_steps
from moediffir.pipelines.batch_sampling import BatchSampling, RoutingCallback
from moediffir.pipelines.colorfix import apply_color_fix
from moediffir.pipelines.inputs import (
    OUTPUT_TYPES,
    check_arguments,
    check_images,
    convert_output,
    resolve_decoder,
    size_groups,
    to_tensors,
    to_uint8_images,
)
from moediffir.pipelines.sampling import make_scheduler
from moediffir.pipelines.tiling import pad_to_multiple
from moediffir.weights.model_folder import load_model_parts, save_model_folder

__all__ = ["OUTPUT_TYPES", "MoEDiffIRPipeline", "MoEDiffIRPipelineOutput", "load_pipeline", "to_uint8_images"]


@dataclass
class MoEDiffIRPipelineOutput(BaseOutput):
    """``images``: a list of PIL images (``pil``), a list of uint8 ``(H, W, 3)`` arrays (``np``), or a
    ``(B, 3, H, W)`` float tensor in [0, 1] (``pt``; a list of ``(1, 3, H, W)`` when sizes differ), or the
    latents ``z_0`` (``latent``; ``(B, 4, h, w)`` on the padded grid, a list when sizes differ).

    ``routing``: one record per (image, tile), in image order: ``{"image": i, "tile": (top, left, h, w)`` in
    latent cells ``, "scales": [per-scale routing dicts of the MoE-Prompt Module, batch dim 1]}``.
    ``tiled``: one bool per image, whether it took the tiled path."""

    images: Any
    routing: list[dict[str, Any]] | None = None
    tiled: list[bool] | None = None


# ------------------------------------------------------------------------------------------ helpers
def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


# --------------------------------------------------------------------------------------------- pipeline
class MoEDiffIRPipeline(DiffusionPipeline, BatchSampling):
    """Restore compressed images with MoE-DiffIR (see the module docstring for the numbered steps).

    ``pipe.sample_defaults`` (a :class:`~moediffir.config.SampleConfig`) supplies every argument left as None;
    :func:`load_pipeline` sets it from the model's profile.

    A call is two public steps, which other code (benchmark restoration, the stage-II data generator) calls
    on their own: :meth:`sample_latents` (steps 1-7: ``z_0`` and the routing) and :meth:`decode_latents`
    (steps 3 and 8-10). The call returns everything it computed in :class:`MoEDiffIRPipelineOutput`.
    """

    _optional_components = ["degradation_prior", "v2t", "compensator"]  # noqa: RUF012 (diffusers' convention)
    model_cpu_offload_seq = None

    def __init__(self, unet, vae, scheduler, prompt_module, spade, degradation_prior=None, v2t=None,
                 compensator=None) -> None:
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler, prompt_module=prompt_module, spade=spade,
                              degradation_prior=degradation_prior, v2t=v2t, compensator=compensator)
        if spade.attached:  # e.g. parts of an existing denoiser: move its hooks to the pipeline's denoiser
            spade.detach()
        self.denoiser = MoEDiffIRDenoiser(unet, prompt_module, spade, degradation_prior=degradation_prior, v2t=v2t)
        self.denoiser.attach_vae(vae)  # the released V2T form decodes z_lq with the pipeline's VAE
        self.sample_defaults = SampleConfig()
        self.model_config = None  # the resolved moediffir Config when loaded from a model folder

    @classmethod
    def from_denoiser(cls, denoiser: MoEDiffIRDenoiser, vae, scheduler, compensator=None, config=None) -> MoEDiffIRPipeline:
        """A pipeline around an existing stage-I model (e.g. during training); ``config``: its resolved Config."""
        pipe = cls(
            unet=denoiser.unet,
            vae=vae,
            scheduler=scheduler,
            prompt_module=denoiser.prompt_module,
            spade=denoiser.spade,
            degradation_prior=denoiser.degradation_prior,
            v2t=denoiser.v2t,
            compensator=compensator,
        )
        pipe.denoiser = denoiser  # same parts; keeps its null context
        if config is not None:
            pipe.model_config = config
            pipe.sample_defaults = config.sample
        return pipe

    # -- geometry ----------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_multiple(self) -> int:
        """Latent sizes must be multiples of this (prompt-module scales and UNet downsampling)."""
        pm = 2 ** (self.prompt_module.config.num_scales - 1)
        un = 2 ** (len(self.unet.config.block_out_channels) - 1)
        return _lcm(pm, un)

    @property
    def pixel_multiple(self) -> int:
        """Images are padded to multiples of this many pixels (64 for SD)."""
        return self.vae_scale_factor * self.latent_multiple

    # -- saving / loading: the model folder --------------------------------------------------------
    def save_pretrained(self, save_directory, **kwargs) -> None:  # type: ignore[override]
        """Write the model folder (:func:`~moediffir.weights.model_folder.save_model_folder`)."""
        if kwargs:
            raise TypeError(f"MoEDiffIRPipeline.save_pretrained: unsupported arguments {sorted(kwargs)}")
        if self.model_config is None:
            raise ValueError("MoEDiffIRPipeline.save_pretrained: set pipe.model_config (the resolved Config) first")
        save_model_folder(save_directory, self.model_config, self.denoiser, self.vae, self.scheduler, self.compensator)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> MoEDiffIRPipeline:  # type: ignore[override]
        """Load a model folder (:func:`load_pipeline`); kwargs: device, dtype, overrides."""
        return load_pipeline(pretrained_model_name_or_path, **kwargs)

    # -- 1. inputs ---------------------------------------------------------------------------------
    def check_inputs(self, image: Any, **args: Any) -> None:
        """Raise a short, exact error for a bad image or argument, before any work is done (``args``: the
        resolved arguments of the call by name, :meth:`resolve_arguments`; only those given are checked)."""
        n_images = check_images(image)
        check_arguments(args, n_images, self.pixel_multiple, self.vae_scale_factor, self.prompt_module.uses_task_labels)

    def resolve_arguments(
        self,
        num_inference_steps: int | None = None,
        decoder: str | None = None,
        fusion_weight: float | None = None,
        color_fix: str | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_blend: str | None = None,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        """The sampling arguments with every one left as None taken from :attr:`sample_defaults` (the decoder:
        :func:`~moediffir.pipelines.inputs.resolve_decoder`); the keys are the argument names of :meth:`__call__`."""
        d = self.sample_defaults
        decoder, fusion_weight = resolve_decoder(decoder, fusion_weight, self.compensator is not None,
                                                 d.fusion_weight)
        return {
            "num_inference_steps": d.num_steps if num_inference_steps is None else num_inference_steps,
            "decoder": decoder,
            "fusion_weight": fusion_weight,
            "color_fix": d.color_fix if color_fix is None else color_fix,
            "tile_size": d.tile_size if tile_size is None else tile_size,
            "tile_overlap": d.tile_overlap if tile_overlap is None else tile_overlap,
            "tile_blend": d.tile_blend if tile_blend is None else tile_blend,
            "batch_size": d.batch_size if batch_size is None else batch_size,
        }

    def uses_tiles(self, size: Sequence[int], tile_size: int, tiled: bool | None = None) -> bool:
        """Whether an image of ``size`` ``(H, W)`` is tiled: ``tiled`` if given, else padded size > ``tile_size``."""
        if tiled is not None:
            return bool(tiled)
        m = self.pixel_multiple
        return max(math.ceil(int(x) / m) * m for x in size) > tile_size

    @property
    def progress_enabled(self) -> bool:
        """Whether progress bars show (``set_progress_bar_config``): denoising steps and, tiled, tiles of each pass."""
        return not getattr(self, "_progress_bar_config", {}).get("disable", False)

    @contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Inference: the denoiser and the compensator (with the VAE it holds) in eval mode, so no gate noise even
        when called mid-training (docs/design.md §8); their modes are given back afterwards."""
        modes = {m: m.training for m in (self.denoiser, self.compensator) if m is not None}
        for m in modes:
            m.eval()
        try:
            yield
        finally:
            for m, was_training in modes.items():
                m.train(was_training)

    # -- steps 1-7 ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_latents(
        self,
        image: Any,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        *,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_blend: str | None = None,
        tiled: bool | None = None,
        batch_size: int | None = None,
        task_labels: int | Sequence[int] | torch.Tensor | None = None,
        callback: RoutingCallback | None = None,
        eta: float | None = None,
    ) -> tuple[torch.Tensor | list[torch.Tensor], list[dict[str, Any]]]:
        """Steps 1-7 for LQ image(s) (arguments as in :meth:`__call__`): ``(z_0, routing)``.

        ``z_0``: ``(B, 4, H'/8, W'/8)`` on the execution device (``H'``, ``W'`` padded to :attr:`pixel_multiple`;
        a list of ``(1, 4, h, w)`` when sizes differ); ``routing``: the records of
        :attr:`MoEDiffIRPipelineOutput.routing`. The stage-II data generator trains on these latents (paper §3.4).
        """
        a = self.resolve_arguments(num_inference_steps, None, None, None, tile_size, tile_overlap, tile_blend,
                                   batch_size)
        del a["decoder"], a["fusion_weight"], a["color_fix"]
        self.check_inputs(image, **a, generator=generator, task_labels=task_labels, callback=callback)
        return self._sample(to_tensors(image)[0], a, generator, tiled, task_labels, callback, eta)

    def _sample(self, images: list[torch.Tensor], a: dict[str, Any], generator: Any, tiled: bool | None,
                task_labels: Any, callback: RoutingCallback | None, eta: float | None) -> tuple[Any, list[dict]]:
        """Steps 2-7 of checked, converted ``(1, 3, H, W)`` images with the resolved arguments ``a``."""
        steps, batch_size = a["num_inference_steps"], a["batch_size"]
        labels_all = None
        if task_labels is not None:
            labels_all = torch.as_tensor(task_labels, dtype=torch.long).reshape(-1)
            if labels_all.numel() == 1:
                labels_all = labels_all.expand(len(images))
        groups = size_groups(images, batch_size)

        device = self._execution_device
        if self.denoiser.null_context.device != device:
            self.denoiser.null_context = self.denoiser.null_context.to(device)
        self.scheduler.set_timesteps(steps, device=device)
        results: dict[int, torch.Tensor] = {}
        routing: list[dict[str, Any]] = []
        with self._eval_mode(), self.progress_bar(total=len(self.scheduler.timesteps) * len(groups)) as progress:
            for ids in groups:
                # 3.-7. pad, encode, conditions, noise, denoise (BatchSampling._sample_batch)
                self.scheduler.set_timesteps(steps, device=device)  # multistep schedulers keep state: reset
                gen = [generator[i] for i in ids] if isinstance(generator, (list, tuple)) else generator
                z0, recs = self._sample_batch(torch.cat([images[i] for i in ids]), ids,
                                              None if labels_all is None else labels_all[ids], gen, tiled, a, eta,
                                              callback, progress)
                for j, i in enumerate(ids):
                    results[i] = z0[j : j + 1]
                routing.extend(recs)
        routing.sort(key=lambda r: r["image"])
        return convert_output([results[i] for i in range(len(images))], "latent"), routing

    # -- steps 3, 8-10 --------------------------------------------------------------------------------
    @torch.no_grad()
    def decode_latents(
        self,
        z0: torch.Tensor,
        lq: Any,
        *,
        decoder: str | None = None,
        fusion_weight: float | None = None,
        color_fix: str | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_blend: str | None = None,
        tiled: bool | None = None,
        batch_size: int | None = None,
        output_type: str = "pt",
    ) -> Any:
        """Images from sampled latents ``z0`` ``(B, 4, h, w)`` (:meth:`sample_latents`) of the LQ images ``lq``
        (one size, unpadded, any input kind of :meth:`__call__`): pad, decode (``decoder``: the compensator at
        ``fusion_weight``, or the plain ``"vae"`` decoder), crop back, colour fix against ``lq``, convert.

        ``output_type``: ``pt`` (default; ``(B, 3, H, W)`` in [0, 1]), ``np`` or ``pil``. Other arguments as in
        :meth:`__call__`; ``tiled`` must be what sampling used (None: the same rule).
        """
        a = self.resolve_arguments(None, decoder, fusion_weight, color_fix, tile_size, tile_overlap, tile_blend,
                                   batch_size)
        del a["num_inference_steps"]
        self.check_inputs(lq, **a, output_type=output_type)
        if output_type == "latent":
            raise ValueError("output_type='latent': decode_latents returns images (pt, np or pil)")
        images, _ = to_tensors(lq)
        if len({tuple(x.shape) for x in images}) != 1:
            raise ValueError("lq: decode_latents takes images of one size (decode each size on its own)")
        return self._decode(z0, torch.cat(images), a, tiled, output_type)

    def _decode(self, z0: torch.Tensor, x: torch.Tensor, a: dict[str, Any], tiled: bool | None,
                output_type: str) -> Any:
        """Steps 3, 8-10 for checked LQ images ``x`` ``(B, 3, H, W)`` of one size, arguments ``a`` resolved."""
        device = self._execution_device
        x = x.to(device)  # (B, 3, H, W)
        f = self.vae_scale_factor
        # 3. pad to the latent grid, as sampling did
        lq_pad, (h, w) = pad_to_multiple(x, self.pixel_multiple)  # (B, 3, H', W')
        grid = (z0.shape[0], *z0.shape[-2:])
        if z0.ndim != 4 or grid != (x.shape[0], lq_pad.shape[-2] // f, lq_pad.shape[-1] // f):
            raise ValueError(
                f"z0: latents {tuple(z0.shape)} do not belong to {x.shape[0]} LQ image(s) of {h}x{w} px "
                f"(expected (B, C, {lq_pad.shape[-2] // f}, {lq_pad.shape[-1] // f}) from sample_latents)"
            )
        tiled = self.uses_tiles((h, w), a["tile_size"], tiled)
        with self._eval_mode():
            # 8. decode (compensator at w, or the plain VAE decoder)
            out = vae_steps.decode(self.vae, self.compensator, z0.to(device), lq_pad, a["fusion_weight"], f, tiled,
                                   a["tile_size"] // f, a["tile_overlap"] // f, a["tile_blend"],
                                   a["batch_size"], progress=self.progress_enabled)  # (B, 3, H', W')
        # 9. crop back, colour fix against the LQ input
        out = apply_color_fix(out[..., :h, :w], x, a["color_fix"])  # (B, 3, H, W)
        if output_type == "pt":
            return out
        # 10. output
        return convert_output([out[i : i + 1] for i in range(out.shape[0])], output_type)

    # -- the call: steps 1-10 -------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        image: Any,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        decoder: str | None = None,
        fusion_weight: float | None = None,
        color_fix: str | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tile_blend: str | None = None,
        tiled: bool | None = None,
        batch_size: int | None = None,
        task_labels: int | Sequence[int] | torch.Tensor | None = None,
        output_type: str | None = None,
        return_dict: bool = True,
        callback: RoutingCallback | None = None,
        eta: float | None = None,
    ) -> MoEDiffIRPipelineOutput | tuple:
        """Restore LQ image(s): :meth:`sample_latents`, then :meth:`decode_latents` per batch of one size.

        Args:
            image: a PIL image, a uint8 ``(H, W, 3)``/``(B, H, W, 3)`` array, a float ``(B, 3, H, W)`` tensor in
                [0, 1], or a list of these; any size.
            num_inference_steps: sampler steps (default ``sample_defaults.num_steps``: 200 for the paper).
            generator: a ``torch.Generator`` or one per image (same seed -> same image).
            decoder: ``"compensator"`` (the decoder compensator, paper §3.4) or ``"vae"`` (the plain VAE decoder);
                None: the compensator where the model has one.
            fusion_weight: the compensator's weight ``w`` in [0, 1] (default ``sample_defaults.fusion_weight``).
            color_fix: ``none``, ``wavelet`` or ``adain``. tile_size / tile_overlap: pixels; tile_blend:
                ``gaussian`` or ``linear``. tiled: force the tiled (True) or whole-image (False) path; None
                tiles images larger than ``tile_size``.
            batch_size: images (or tiles) per network call. task_labels: only for ``routing='task'`` models.
            output_type: ``pil``, ``np``, ``pt`` or ``latent``; None returns the input's kind.
            callback: ``callback(step, t, latents, routing)`` after every denoising step of every batch.
            eta: DDIM's eta (other schedulers ignore it).

        Returns :class:`MoEDiffIRPipelineOutput` (images, routing, tiled), or ``(images,)`` without ``return_dict``.
        """
        a = self.resolve_arguments(num_inference_steps, decoder, fusion_weight, color_fix, tile_size, tile_overlap,
                                   tile_blend, batch_size)
        # 1. check inputs (all of them, before any work)
        self.check_inputs(image, **a, output_type=output_type, generator=generator, task_labels=task_labels,
                          callback=callback)
        # 2. inputs -> (1, 3, H, W) float tensors in [0, 1], converted once for the whole call
        images, kind = to_tensors(image)
        output_type = output_type or kind
        # 3.-7. z_0 and the routing
        z0, routing = self._sample(images, a, generator, tiled, task_labels, callback, eta)
        if output_type == "latent":
            output = z0
        else:
            rows = list(z0) if isinstance(z0, list) else [z0[i : i + 1] for i in range(z0.shape[0])]
            results: dict[int, torch.Tensor] = {}
            for ids in size_groups(images, a["batch_size"]):
                # 3., 8.-9. pad, decode, crop, colour fix: the batches sampling used
                out = self._decode(torch.cat([rows[i] for i in ids]), torch.cat([images[i] for i in ids]), a, tiled, "pt")
                for j, i in enumerate(ids):
                    results[i] = out[j : j + 1]
            # 10. output
            output = convert_output([results[i] for i in range(len(images))], output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (output,)
        tiled_by_image = [self.uses_tiles(x.shape[-2:], a["tile_size"], tiled) for x in images]
        return MoEDiffIRPipelineOutput(images=output, routing=routing, tiled=tiled_by_image)


def load_pipeline(
    folder: str | os.PathLike,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> MoEDiffIRPipeline:
    """A ready :class:`MoEDiffIRPipeline` from a model folder (:mod:`moediffir.weights.model_folder`), frozen,
    in eval mode, with the folder's profile as :attr:`~MoEDiffIRPipeline.sample_defaults`.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``. dtype: ``"fp32"``/``"fp16"``/``"bf16"`` or a
            torch dtype (None: ``sample.dtype`` of the config); half types on CUDA only.
        overrides: config overrides of the sampling settings and weight sources (``{"sample.num_steps": 50}``).
    """
    parts = load_model_parts(folder, device, dtype, overrides)
    scheduler = make_scheduler(parts.config.sample.scheduler, parts.scheduler.config)
    pipe = MoEDiffIRPipeline.from_denoiser(parts.denoiser, parts.vae, scheduler, compensator=parts.compensator,
                                           config=parts.config)
    pipe.to(parts.device) if parts.dtype == torch.float32 else pipe.to(parts.device, parts.dtype)
    return pipe
