"""SPADE injection of the prompted maps into the frozen UNet (paper §3.4, Fig. 3a; SPADE [69], StableSR [66]).

Each site is a UNet resnet: the first resnet of the mid block and every resnet of every up block (13 sites in
SD 2.1-base: 1280 (mid), 1280 x3, 1280 x3, 640 x3, 320 x3). Sites, channel counts and spatial scales are
derived from the UNet config (and checked against its module tree on attach), never typed in. A site whose
resolution is ``latent / 2**s`` takes the prompt map of scale ``s``.

Two forms, chosen by ``SpadeInjector(form=...)`` (``model.spade_form``):

- ``residual`` (default; SPADE [69] as the released code's ``ResBlockDual`` applies it): the UNet's own
  feature ``h`` at the end of the resnet's residual branch (the output of ``conv2``) is normalised by a
  32-group GroupNorm with its own affine parameters (trained with SPADE) and modulated *before* the skip is
  added: ``out = skip(x) + GN(h) * (1 + gamma) + beta``. ``gamma``/``beta`` come from the prompt map alone:
  ``a = ReLU(conv3x3(p))`` (``C -> 128``), ``gamma = conv3x3(a)``, ``beta = conv3x3(a)``, all with PyTorch's
  default initialisation (the released code's): the injected UNet differs from the stock one from step 0.
  Parameters are named as in the released ``ldm.modules.spade.SPADE`` (``param_free_norm``, ``mlp_shared.0``,
  ``mlp_gamma``, ``mlp_beta``), so a released ``...output_blocks.K.0.spade.`` prefix maps to ``layers.I.``.
- ``output`` (the identity-initialised form): ``a = ReLU(conv3x3(GroupNorm(p)))``, the GroupNorm on the
  *prompt map*, and the whole resnet output becomes ``h * (1 + gamma) + beta``; ``gamma``/``beta`` convs are
  zero-initialised, so the injected UNet is *exactly* the stock UNet at initialisation.

The UNet is not forked: :class:`SpadeInjector` (a separate ``ModelMixin``) registers forward hooks (on the
resnet's ``conv2`` for ``residual``, on the resnet for ``output``), so ``unet.state_dict()`` keys, its class
and its hub layout stay stock (diffusers' ``ResnetBlock2D`` adds ``conv2``'s output to the shortcut, with
``output_scale_factor`` 1 in SD). Modulations are computed once by :meth:`SpadeInjector.set_maps` (so a
sampler can reuse them across steps) and read by the hooks; they stay set after the UNet call so
gradient-checkpointed blocks recompute correctly in the backward pass.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


@dataclass(frozen=True)
class SpadeSite:
    """One injection point: the module path in the UNet, its output channels and its scale index."""

    name: str  # e.g. "up_blocks.2.resnets.1"
    channels: int
    scale: int  # the site's resolution is latent_size / 2**scale


_OWNER_ATTR = "_moediffir_spade_owner"  # set on a UNet while an injector's hooks are on it
SPADE_FORMS = ("residual", "output")


def _as_list(value: Any, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def spade_sites_from_config(config: Mapping[str, Any]) -> list[SpadeSite]:
    """Sites of a ``UNet2DConditionModel`` config (dict or FrozenDict): first mid resnet + every up resnet.

    Mirrors how diffusers builds the UNet: block ``i`` of ``n`` down blocks downsamples unless it is the last,
    the mid block runs at ``2**(n-1)`` and up block ``i`` at ``2**(n-1-i)`` times below the latent, with
    ``reversed(layers_per_block)[i] + 1`` resnets of ``reversed(block_out_channels)[i]`` channels.
    """
    channels = list(config["block_out_channels"])
    n = len(channels)
    up_types = list(config.get("up_block_types", ()))
    if len(up_types) != n:
        raise ValueError(
            f"UNet config: {len(up_types)} up blocks for {n} block_out_channels; not a standard UNet"
        )
    layers = _as_list(config.get("layers_per_block", 2), n)
    sites: list[SpadeSite] = []
    mid_type = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid_type is not None:
        sites.append(SpadeSite("mid_block.resnets.0", channels[-1], n - 1))
    rev_channels, rev_layers = channels[::-1], layers[::-1]
    for i in range(n):
        for j in range(rev_layers[i] + 1):
            sites.append(SpadeSite(f"up_blocks.{i}.resnets.{j}", rev_channels[i], n - 1 - i))
    return sites


def spade_sites_from_unet(unet: nn.Module) -> list[SpadeSite]:
    """Sites of a built UNet: derived from ``unet.config`` and checked against its module tree."""
    sites = spade_sites_from_config(unet.config)
    _check_sites(unet, sites)
    return sites


def _check_sites(unet: nn.Module, sites: Sequence[SpadeSite]) -> None:
    modules = dict(unet.named_modules())
    for site in sites:
        module = modules.get(site.name)
        if module is None:
            raise ValueError(f"SPADE site {site.name!r} is not a module of this {type(unet).__name__}")
        out_ch = getattr(module, "out_channels", None)
        if out_ch is not None and out_ch != site.channels:
            raise ValueError(
                f"SPADE site {site.name!r}: the UNet has {out_ch} channels there, the injector "
                f"{site.channels}"
            )


def _group_count(channels: int, max_groups: int = 32) -> int:
    """Most groups <= max_groups dividing ``channels`` with >= 4 channels each (32 for 256 channels), so
    even a 1x1 prompt map (the deepest scale of a 64 px image) has several values per group."""
    limit = max(1, min(max_groups, channels // 4))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


class SPADE(nn.Module):
    """``output`` form: modulation ``(gamma, beta)`` of a whole resnet output; see the module docstring."""

    def __init__(
        self, feature_channels: int, prompt_dim: int, hidden_dim: int = 128, norm_groups: int = 32
    ) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_group_count(prompt_dim, norm_groups), prompt_dim)
        self.shared = nn.Sequential(nn.Conv2d(prompt_dim, hidden_dim, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden_dim, feature_channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden_dim, feature_channels, 3, padding=1)
        for conv in (self.gamma, self.beta):  # zero init: the injected UNet equals the stock one at start
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def modulation(self, prompt_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.shared(self.norm(prompt_map))  # (B, hidden, h_s, w_s)
        return self.gamma(a), self.beta(a)  # (B, C_site, h_s, w_s) each

    def apply(self, h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return h * (1 + gamma.to(h.dtype)) + beta.to(h.dtype)  # (B, C_site, h_s, w_s)

    def forward(self, h: torch.Tensor, prompt_map: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.modulation(prompt_map)
        return self.apply(h, gamma, beta)


class ResidualSPADE(nn.Module):
    """``residual`` form: ``GN(h) * (1 + gamma(p)) + beta(p)`` on a resnet's residual branch ``h``.

    Parameter names follow the released ``SPADE`` (``param_free_norm`` despite its affine parameters).
    """

    def __init__(
        self, feature_channels: int, prompt_dim: int, hidden_dim: int = 128, norm_groups: int = 32
    ) -> None:
        super().__init__()
        # 32 groups at every SD 2.1 site (as released); a narrow tiny-UNet site keeps >= 4 channels per group
        self.param_free_norm = nn.GroupNorm(_group_count(feature_channels, norm_groups), feature_channels)
        self.mlp_shared = nn.Sequential(nn.Conv2d(prompt_dim, hidden_dim, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden_dim, feature_channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden_dim, feature_channels, 3, padding=1)

    def modulation(self, prompt_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.mlp_shared(prompt_map)  # (B, hidden, h_s, w_s)
        return self.mlp_gamma(a), self.mlp_beta(a)  # (B, C_site, h_s, w_s) each

    def apply(self, h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        normed = self.param_free_norm(h.float()).to(h.dtype)  # (B, C_site, h_s, w_s) GN in fp32, as released
        return normed * (1 + gamma.to(h.dtype)) + beta.to(h.dtype)

    def forward(self, h: torch.Tensor, prompt_map: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.modulation(prompt_map)
        return self.apply(h, gamma, beta)


_LAYER_CLASSES = {"residual": ResidualSPADE, "output": SPADE}


class SpadeInjector(ModelMixin, ConfigMixin):
    """All SPADE layers of one UNet, attached by forward hooks (the UNet stays a stock diffusers model)."""

    @register_to_config
    def __init__(
        self,
        sites: list[dict[str, Any]] | None = None,
        prompt_dim: int = 256,
        hidden_dim: int = 128,
        norm_groups: int = 32,
        form: str = "residual",
    ) -> None:
        super().__init__()
        if form not in SPADE_FORMS:
            raise ValueError(f"SpadeInjector: form={form!r}; choose one of {SPADE_FORMS} (model.spade_form)")
        if not sites:
            raise ValueError(
                "SpadeInjector: no sites; build it with SpadeInjector.from_unet(unet, prompt_dim)"
            )
        self.sites = [SpadeSite(**dict(s)) for s in sites]
        layer_cls = _LAYER_CLASSES[form]
        self.layers = nn.ModuleList(
            layer_cls(s.channels, prompt_dim, hidden_dim, norm_groups) for s in self.sites
        )
        self._handles: list[Any] = []
        self._unet_ref: weakref.ref | None = None
        self._modulation: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def from_unet(
        cls,
        unet: nn.Module,
        prompt_dim: int,
        hidden_dim: int = 128,
        norm_groups: int = 32,
        form: str = "residual",
    ) -> SpadeInjector:
        """Derive the sites from ``unet`` (its config, checked on its module tree)."""
        sites = [asdict(s) for s in spade_sites_from_unet(unet)]
        return cls(sites=sites, prompt_dim=prompt_dim, hidden_dim=hidden_dim, norm_groups=norm_groups, form=form)

    @property
    def num_scales_needed(self) -> int:
        return max(s.scale for s in self.sites) + 1

    # ------------------------------------------------------------------------------------- attach / detach
    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self, unet: nn.Module) -> SpadeInjector:
        """Register the hooks on ``unet``'s site resnets (its parameters and state dict are untouched)."""
        if self.attached:
            raise RuntimeError("SpadeInjector.attach: already attached; call detach() first")
        owner = getattr(unet, _OWNER_ATTR, None)
        if owner is not None and owner() is not None and owner() is not self and owner().attached:
            raise RuntimeError(
                "SpadeInjector.attach: this UNet already carries another injector's SPADE hooks (both would "
                "modulate it); detach that one first (e.g. old_denoiser.spade.detach()) or use another UNet"
            )
        _check_sites(unet, self.sites)
        modules = dict(unet.named_modules())
        for i, site in enumerate(self.sites):
            self._handles.append(self._hooked_module(modules, site).register_forward_hook(self._make_hook(i)))
        self._unet_ref = weakref.ref(unet)
        object.__setattr__(unet, _OWNER_ATTR, weakref.ref(self))  # a marker, not a parameter or buffer
        return self

    def detach(self) -> None:
        """Remove the hooks; the UNet is the stock model again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        unet = self._unet_ref() if self._unet_ref is not None else None
        if unet is not None and unet.__dict__.get(_OWNER_ATTR, lambda: None)() is self:
            del unet.__dict__[_OWNER_ATTR]
        self._unet_ref = None

    def _hooked_module(self, modules: Mapping[str, nn.Module], site: SpadeSite) -> nn.Module:
        """The resnet itself (``output``) or the last conv of its residual branch (``residual``)."""
        if self.config.form == "output":
            return modules[site.name]
        conv = modules.get(f"{site.name}.conv2")
        if conv is None:
            raise ValueError(
                f"SPADE site {site.name!r}: no conv2 (the end of the residual branch of a diffusers "
                "ResnetBlock2D); the residual SPADE form needs one, or use model.spade_form='output'"
            )
        return conv

    def _make_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            if self._modulation is None:
                raise RuntimeError(
                    f"SPADE site {self.sites[index].name}: the injector is attached but no prompt maps are "
                    f"set; "
                    "call SpadeInjector.set_maps(maps) (MoEDiffIRDenoiser does this) or detach() it"
                )
            gamma, beta = self._modulation[index]
            if gamma.shape[-2:] != output.shape[-2:]:
                raise RuntimeError(
                    f"SPADE site {self.sites[index].name}: UNet feature is {tuple(output.shape[-2:])}, the "
                    f"prompt "
                    f"map of scale {self.sites[index].scale} is {tuple(gamma.shape[-2:])}; z_lq and z_t "
                    f"must have "
                    "the same size"
                )
            return self.layers[index].apply(output, gamma, beta)

        return hook

    # ------------------------------------------------------------------------------------------ modulation
    def modulations(self, maps: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(gamma, beta)`` per site from the prompt maps of every scale."""
        if len(maps) < self.num_scales_needed:
            raise ValueError(
                f"SpadeInjector: {len(maps)} prompt scales given, the UNet sites need "
                f"{self.num_scales_needed} "
                "(model.num_scales)"
            )
        for i, m in enumerate(maps[: self.num_scales_needed]):
            if m.shape[1] != self.config.prompt_dim:
                raise ValueError(
                    f"SpadeInjector: prompt map {i} has {m.shape[1]} channels, expected "
                    f"{self.config.prompt_dim}"
                )
        return [layer.modulation(maps[site.scale]) for site, layer in zip(self.sites, self.layers)]

    def set_maps(self, maps: Sequence[torch.Tensor]) -> None:
        """Compute and hold the modulations the hooks apply on the next UNet calls."""
        self._modulation = self.modulations(maps)

    def set_modulations(self, modulation: list[tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        """Hold precomputed modulations (e.g. reused across sampling steps); ``None`` clears them."""
        if modulation is not None and len(modulation) != len(self.sites):
            raise ValueError(f"SpadeInjector: {len(modulation)} modulations for {len(self.sites)} sites")
        self._modulation = modulation

    def clear(self) -> None:
        self._modulation = None

    def forward(self, maps: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.modulations(maps)
