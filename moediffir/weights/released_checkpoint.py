"""Import the released code's stage-I Lightning checkpoint into the kit's model folder (paper §3.2-§3.3;
docs/fidelity.md §3).

The released ``MoE-DiffIR_DACLIP.ckpt`` holds ``ckpt["state_dict"]`` with one prefix per part
(``moediffir/fixtures/released_moediffir_keys.json`` lists every key and shape). Each key is mapped by a prefix
rule to a kit module built with ``model.recipe=released`` (paper sizes, ``model.v2t_form=released``)::

    structcond_stage_model.conv_first.0.*            -> prompt_module.conv_in.*
    structcond_stage_model.downsample{s}.op.*        -> prompt_module.downsamplers.{s-1}.*
    structcond_stage_model.blocks{s}.{b}.attn.qkv.*  -> prompt_module.blocks.{s-1}.{b}.attn.to_q|to_k|to_v.*
                                                        (rows [0:C] q, [C:2C] k, [2C:3C] v)
    structcond_stage_model.blocks{s}.{b}.attn.proj.* -> prompt_module.blocks.{s-1}.{b}.attn.to_out.*
    structcond_stage_model.blocks{s}.{b}.<rest>      -> prompt_module.blocks.{s-1}.{b}.<rest>
    structcond_stage_model.norm{s}.*                 -> prompt_module.final_norms.{s-1}.*
    structcond_stage_model.Prompt_model{s}.prompt_param -> prompt_module.generators.{s-1}.prompts
    structcond_stage_model.Prompt_model{s}.f_gate.*  -> prompt_module.generators.{s-1}.router.f_gate.*
    structcond_stage_model.Prompt_model{s}.attn.*    -> prompt_module.generators.{s-1}.attn.*
    model.diffusion_model.middle_block.0.spade.*     -> spade.layers.0.*
    model.diffusion_model.output_blocks.{K}.0.spade.* -> spade.layers.{K+1}.*
    structcond_stage_model.DACLIP_model.visual_control.* -> degradation_prior.visual_control.*
    cond_stage_model.{conv1-3, bn1-3, layer1-4, attnpool}.* -> v2t.clip_visual.*   (same open_clip RN50 names)
    cond_stage_model.conv.0.*                        -> v2t.grid_conv.*
    cond_stage_model.prompt_model_semantic.prompt_param -> v2t.learned_tokens     (1, 49, 1024) in both
    cond_stage_model.adapter1.fc.{0,2}.weight        -> v2t.adapter.{0,2}.weight
    transformer_encoder.0.*                          -> v2t.latent_enhancer.conv_in.*
    transformer_encoder.{1,2}.<leaf>                 -> v2t.latent_enhancer.blocks.{0,1}.<leaf>
    transformer_decoder.{0,1}.<leaf>                 -> v2t.latent_enhancer.blocks.{2,3}.<leaf>
                                                        (<leaf>: norm{1,2}.body.* -> norm{1,2}.norm.*)
    transformer_decoder.2.*                          -> v2t.latent_enhancer.conv_out.*

The frozen SD 2.1-base UNet (``model.diffusion_model.*`` without ``.spade.``) and VAE (``first_stage_model.*``)
are checked by name and shape against SD 2.1-base in the original (LDM) layout and not copied: the folder reads
them from ``model.sd_source``, as the released training kept them frozen. Keys the kit does not use are reported
by name and group (:data:`UNUSED_GROUPS`). The Visual2Text adapter and its latent enhancer
(``cond_stage_model.*`` except the stale ``adapter2.*``, ``transformer_encoder/decoder.*``) convert into the
released V2T form (:mod:`moediffir.models.visual2text_released`), so the folder has V2T on; overrides that turn
V2T off or pick the kit's form (``model.use_v2t=false``, ``model.v2t_form=kit``) leave them unconverted,
reported by name, and the folder with V2T off (both said in ``model_info.json`` and the card).
The stage-II decoder checkpoint (``Decoder_Finetuned.ckpt``, optional) converts into the compensator with
``stage2.fusion_block=rrdb``: ``decoder.fusion_layer_{1,2}.*`` -> ``fusion.{1,2}.*`` (same leaf names), its VAE
(``encoder.*``, the rest of ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``) -> the compensator's VAE copy
through diffusers' LDM-to-diffusers VAE conversion; ``loss.*`` is reported unused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moediffir.errors import MoEDiffIRError

STATE_KEY = "state_dict"
SD_UNET = "model.diffusion_model."
SD_VAE = "first_stage_model."
PROMPT = "structcond_stage_model."
DP_SUBTREE = "structcond_stage_model.DACLIP_model.visual_control."
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")
FUSION = "decoder.fusion_layer_"
STAGE2_VAE = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
NOT_CONVERTIBLE = "not converted: needs model.use_v2t=true and model.v2t_form=released"
V2T_ON = "on: the released form (model.v2t_form=released), converted from cond_stage_model.* and transformer_*coder.*"
V2T_GROUPS = ("cond_stage_model.*", "transformer_encoder.* / transformer_decoder.*")  # unused only when not converted
# (pattern, group name, what it is) for keys the kit does not use; first match wins.
UNUSED_GROUPS: tuple[tuple[str, str, str], ...] = (
    (r"cond_stage_model\.adapter2\.", "cond_stage_model.adapter2.*",
     "not created by the released code (a checkpoint of an earlier version); the released code drops it"),
    (r"structcond_stage_model\.task_embedding$", "structcond_stage_model.task_embedding",
     "not created by the released code (an earlier version); the task label picks one of the f_gate layers"),
    (r"structcond_stage_model\.conv_middle\.", "structcond_stage_model.conv_middle.*",
     "not created by the released code (an earlier version); dropped by its strict=False load"),
    (r"cond_stage_model\.", V2T_GROUPS[0],
     f"released Visual2Text (CLIP RN50, conv, semantic prompt, adapter1): {NOT_CONVERTIBLE}"),
    (r"transformer_(en|de)coder\.", V2T_GROUPS[1],
     f"released latent quality enhancer of the V2T input: {NOT_CONVERTIBLE}"),
    (r"structcond_stage_model\.DACLIP_model\.", "structcond_stage_model.DACLIP_model.{clip,visual,logit_scale}",
     "DA-CLIP towers the kit does not run (only visual_control feeds the router)"),
    (r"loss\.", "loss.*", "training loss (logvar, LPIPS, discriminator): not needed for sampling"),
)


class ReleasedCheckpointError(MoEDiffIRError, ValueError):
    """A released checkpoint cannot be converted; the message names the file, the key and the shapes."""


@dataclass
class ReleasedImport:
    """The outcome of mapping a stage-I state dict: kit tensors per part and every key not used, by group."""

    prompt_module: dict[str, torch.Tensor] = field(default_factory=dict)
    spade: dict[str, torch.Tensor] = field(default_factory=dict)
    degradation_prior: dict[str, torch.Tensor] = field(default_factory=dict)
    v2t: dict[str, torch.Tensor] = field(default_factory=dict)  # released V2T form (empty when not converted)
    checked_not_copied: dict[str, list[str]] = field(default_factory=dict)  # group -> keys (SD parts, schedule)
    unused: dict[str, list[str]] = field(default_factory=dict)  # group -> keys

    def report(self) -> dict[str, Any]:
        """JSON-ready: converted counts per kit part, and every other key by name with what it is."""
        what = {group: text for _, group, text in UNUSED_GROUPS}
        converted = {"prompt_module": len(self.prompt_module), "spade": len(self.spade),
                     "degradation_prior": len(self.degradation_prior)}
        if self.v2t:
            converted["v2t"] = len(self.v2t)
        return {
            "converted": converted,
            "checked_not_copied": {g: {"what": _CHECKED_WHAT[g], "num_keys": len(k), "keys": k}
                                   for g, k in self.checked_not_copied.items()},
            "unused": {g: {"what": what[g], "num_keys": len(k), "keys": k} for g, k in self.unused.items()},
            "v2t": V2T_ON if self.v2t else ("off: " + NOT_CONVERTIBLE if any(g in self.unused for g in V2T_GROUPS)
                                            else "off"),
        }


_CHECKED_WHAT = {
    SD_UNET + "*": "frozen SD 2.1-base UNet, checked by name and shape; read from model.sd_source",
    SD_VAE + "*": "frozen SD 2.1-base VAE, checked by name and shape; read from model.sd_source",
    "schedule buffers": "DDPM schedule (1000,), recomputed by the kit's scheduler",
}


def read_released_state(path: str | Path) -> dict[str, torch.Tensor]:
    """``ckpt["state_dict"]`` of a Lightning checkpoint, read with ``weights_only=True`` (a file that needs more is
    refused unread: :class:`~moediffir.utils.io.UnsafeWeightsError`)."""
    from moediffir.utils.io import UnsafeWeightsError, load_weights_only

    path = Path(path)
    if not path.is_file():
        raise ReleasedCheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = load_weights_only(path)
    except UnsafeWeightsError:
        raise
    except Exception as exc:  # pickle / zip errors of every kind: name the file
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise ReleasedCheckpointError(f"{path}: cannot read as a torch checkpoint ({type(exc).__name__}: {reason})") from exc
    state = ckpt.get(STATE_KEY, ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ReleasedCheckpointError(f"{path}: expected a Lightning checkpoint with a '{STATE_KEY}' of tensors")
    return dict(state)


def _prompt_key(rest: str, tensor: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Kit prompt-module key(s) of ``structcond_stage_model.<rest>``; None when no rule applies."""
    if m := re.fullmatch(r"conv_first\.0\.(weight|bias)", rest):
        return {f"conv_in.{m[1]}": tensor}
    if m := re.fullmatch(r"downsample(\d+)\.op\.(weight|bias)", rest):
        return {f"downsamplers.{int(m[1]) - 1}.{m[2]}": tensor}
    if m := re.fullmatch(r"norm(\d+)\.(weight|bias)", rest):
        return {f"final_norms.{int(m[1]) - 1}.{m[2]}": tensor}
    if m := re.fullmatch(r"blocks(\d+)\.(\d+)\.(.+)", rest):
        head, leaf = f"blocks.{int(m[1]) - 1}.{m[2]}", m[3]
        if q := re.fullmatch(r"attn\.qkv\.(weight|bias)", leaf):
            if tensor.dim() == 0 or tensor.shape[0] % 3:
                raise ReleasedCheckpointError(f"{PROMPT}{rest} has shape {tuple(tensor.shape)}; expected (3C, ...): "
                                              "q, k and v stacked")
            q_, k_, v_ = tensor.chunk(3, dim=0)  # (3C, ...) -> q, k, v rows (heads contiguous in each)
            return {f"{head}.attn.to_q.{q[1]}": q_, f"{head}.attn.to_k.{q[1]}": k_, f"{head}.attn.to_v.{q[1]}": v_}
        if p := re.fullmatch(r"attn\.proj\.(weight|bias)", leaf):
            return {f"{head}.attn.to_out.{p[1]}": tensor}
        return {f"{head}.{leaf}": tensor}
    if m := re.fullmatch(r"Prompt_model(\d+)\.(.+)", rest):
        head, leaf = f"generators.{int(m[1]) - 1}", m[2]
        if leaf == "prompt_param":
            return {f"{head}.prompts": tensor}  # (N, C, C): tokens @ P_i in both
        if leaf.startswith("f_gate."):
            return {f"{head}.router.{leaf}": tensor}  # (2N, C): rows [:N] clean, [N:] noise in both
        if leaf.startswith("attn."):
            return {f"{head}.{leaf}": tensor}
    return None


def _prompt_key_of(path: str | Path, key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """:func:`_prompt_key` of a full ``structcond_stage_model.*`` key; a misshapen tensor is named with the file."""
    try:
        return _prompt_key(key[len(PROMPT):], tensor)
    except ReleasedCheckpointError as exc:
        raise ReleasedCheckpointError(f"{path}: {exc}") from exc


def _spade_key(rest: str) -> str | None:
    """Kit SPADE key of ``model.diffusion_model.<rest>`` holding ``.spade.``; None when no rule applies."""
    if m := re.fullmatch(r"middle_block\.0\.spade\.(.+)", rest):
        return f"layers.0.{m[1]}"
    if m := re.fullmatch(r"output_blocks\.(\d+)\.0\.spade\.(.+)", rest):
        return f"layers.{int(m[1]) + 1}.{m[2]}"
    return None


RELEASED_ENCODER_BLOCKS = 2  # Restormer blocks in transformer_encoder (after its conv); as many in the decoder


def _v2t_key(key: str) -> str | None:
    """Key of the released V2T form for a released ``cond_stage_model.*`` / ``transformer_*coder.*`` key; None when
    no rule applies (``adapter2.*``, anything unknown)."""
    if m := re.fullmatch(r"cond_stage_model\.((?:conv[123]|bn[123]|layer[1-4]|attnpool)\..+)", key):
        return f"clip_visual.{m[1]}"  # CLIP's ModifiedResNet and open_clip's share every name
    if m := re.fullmatch(r"cond_stage_model\.conv\.0\.(weight|bias)", key):
        return f"grid_conv.{m[1]}"
    if key == "cond_stage_model.prompt_model_semantic.prompt_param":
        return "learned_tokens"
    if m := re.fullmatch(r"cond_stage_model\.adapter1\.fc\.([02])\.weight", key):
        return f"adapter.{m[1]}.weight"
    if m := re.fullmatch(r"transformer_encoder\.0\.(weight|bias)", key):
        return f"latent_enhancer.conv_in.{m[1]}"
    if m := re.fullmatch(rf"transformer_decoder\.{RELEASED_ENCODER_BLOCKS}\.(weight|bias)", key):
        return f"latent_enhancer.conv_out.{m[1]}"
    m = (re.fullmatch(r"transformer_(en)coder\.([12])\.(.+)", key)
         or re.fullmatch(r"transformer_(de)coder\.([01])\.(.+)", key))
    if m:
        block = int(m[2]) - 1 if m[1] == "en" else int(m[2]) + RELEASED_ENCODER_BLOCKS
        leaf = re.sub(r"^(norm[12])\.body\.", r"\1.norm.", m[3])  # Restormer's LayerNorm wrapper: body -> norm
        return f"latent_enhancer.blocks.{block}.{leaf}"
    return None


def _unused_group(key: str, v2t_converted: bool = False) -> str | None:
    return next((group for pattern, group, _ in UNUSED_GROUPS
                 if re.match(pattern, key) and not (v2t_converted and group in V2T_GROUPS)), None)


def map_released_stage1(
    state: Mapping[str, torch.Tensor], path: str | Path, convert_v2t: bool = True
) -> ReleasedImport:
    """Map every key of a stage-I state dict by the prefix rules; a key no rule knows raises, naming it.

    ``convert_v2t``: map the Visual2Text keys into the released V2T form (else report them unused)."""
    if any(k.startswith(FUSION) for k in state):
        raise ReleasedCheckpointError(f"{path}: a stage-II decoder checkpoint ({FUSION}*); pass it as the decoder")
    out, unknown = ReleasedImport(), []
    for key, tensor in state.items():
        mapped = None
        if key.startswith(DP_SUBTREE):
            out.degradation_prior["visual_control." + key[len(DP_SUBTREE):]] = tensor
            continue
        if key.startswith(PROMPT) and (mapped := _prompt_key_of(path, key, tensor)) is not None:
            out.prompt_module.update(mapped)
            continue
        if key.startswith(SD_UNET) and ".spade." in key:
            if (spade_key := _spade_key(key[len(SD_UNET):])) is not None:
                out.spade[spade_key] = tensor
                continue
        elif key.startswith((SD_UNET, SD_VAE)):
            out.checked_not_copied.setdefault((SD_UNET if key.startswith(SD_UNET) else SD_VAE) + "*", []).append(key)
            continue
        elif key in SCHEDULE_BUFFERS:
            out.checked_not_copied.setdefault("schedule buffers", []).append(key)
            continue
        if convert_v2t and (v2t_key := _v2t_key(key)) is not None:
            out.v2t[v2t_key] = tensor
            continue
        if (group := _unused_group(key, convert_v2t)) is not None:
            out.unused.setdefault(group, []).append(key)
            continue
        unknown.append(f"{key} {tuple(tensor.shape)}")
    if unknown:
        raise ReleasedCheckpointError(f"{path}: {len(unknown)} key(s) no rule maps (unexpected): "
                                      + ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else ""))
    return out


def released_config(overrides: Mapping[str, Any] | None = None):
    """The kit config the released stage-I model fits: paper sizes, ``model.recipe=released`` (V2T on in the
    released form); V2T is turned off when the overrides ask for the kit's form, which the keys do not fit."""
    from moediffir.config import apply_overrides, resolve_config

    cfg = resolve_config("paper", {"model.recipe": "released", **dict(overrides or {})})
    if cfg.model.use_v2t and cfg.model.v2t_form != "released":
        cfg = apply_overrides(cfg, {"model.use_v2t": False})
    return cfg


def _as_kit(tensor: torch.Tensor) -> torch.Tensor:
    """Floating tensors in float32 (the kit's parts load in fp32); integer ones (BatchNorm counters) as they are."""
    return tensor.to(torch.float32) if tensor.is_floating_point() else tensor


def _check_part(path: Path, what: str, found: Mapping[str, torch.Tensor], module: torch.nn.Module) -> None:
    """Raise naming every missing, unexpected or misshapen tensor of ``found`` against ``module``'s state."""
    from moediffir.utils.layout import layout_diff

    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    diff = layout_diff({k: tuple(v.shape) for k, v in found.items()}, expected)
    if diff:
        raise ReleasedCheckpointError(f"{path}: the {what} does not fit the kit's (model.recipe=released): "
                                      + "; ".join(diff.problems(8)))


def _check_sd_parts(path: Path, state: Mapping[str, torch.Tensor], components: tuple[str, ...] = ("unet", "vae")) -> None:
    """The frozen UNet and VAE against SD 2.1-base in the LDM layout (names and shapes; no copy)."""
    from moediffir.weights.checkpoint_files import check_single_file_tensors, sd21_single_file_configs

    configs = sd21_single_file_configs()
    for component in components:
        try:
            check_single_file_tensors(path, state, component, configs[component], "SD 2.1-base")
        except ValueError as exc:
            raise ReleasedCheckpointError(" ".join(str(exc).split())) from exc


def convert_released_stage2(path: str | Path):
    """``(compensator, unused)``: the released stage-II decoder checkpoint in the kit's ``DecoderCompensator``
    (``fusion_block="rrdb"``, SD 2.1-base VAE config); ``unused`` maps ``loss.*`` to its keys."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from moediffir.models.compensator import DecoderCompensator
    from moediffir.weights.checkpoint_files import sd21_single_file_configs

    path = Path(path)
    state = read_released_state(path)
    fusion, vae, unused, unknown = {}, {}, {}, []
    for key, tensor in state.items():
        if m := re.fullmatch(r"decoder\.fusion_layer_(\d+)\.(.+)", key):
            fusion[f"{m[1]}.{m[2]}"] = tensor  # released layer 1 (256 ch) / 2 (512 ch) = kit VAE levels 1 / 2
        elif key.startswith(STAGE2_VAE):
            vae[key] = tensor
        elif _unused_group(key) == "loss.*":
            unused.setdefault("loss.*", []).append(key)
        else:
            unknown.append(f"{key} {tuple(tensor.shape)}")
    if unknown or not fusion:
        raise ReleasedCheckpointError(f"{path}: not the released stage-II decoder; "
                                      + (f"unexpected keys: {', '.join(unknown[:8])}" if unknown
                                         else f"no {FUSION}* keys"))
    config = sd21_single_file_configs()["vae"]
    _check_sd_parts(path, {SD_VAE + k: v for k, v in vae.items()}, components=("vae",))
    compensator = DecoderCompensator(vae_config=config, fusion_block="rrdb")
    _check_part(path, f"fusion blocks ({FUSION}*)", fusion, compensator.fusion)
    compensator.fusion.load_state_dict({k: _as_kit(v) for k, v in fusion.items()}, strict=True)
    diffusers_vae = convert_ldm_vae_checkpoint(vae, dict(config))
    _check_part(path, "VAE (encoder.*, decoder.*, quant_conv.*, post_quant_conv.*)", diffusers_vae, compensator.vae)
    compensator.vae.load_state_dict({k: _as_kit(v) for k, v in diffusers_vae.items()}, strict=True)
    return compensator, unused


def build_kit_parts(cfg, mapped: ReleasedImport, path: str | Path):
    """``(unet, prompt_module, spade, dp, v2t)``: the kit modules of ``cfg`` (UNet on the meta device: structure
    only) with the mapped tensors loaded (``v2t`` None when V2T is off); every misfit raises
    :class:`ReleasedCheckpointError` first."""
    from diffusers import UNet2DConditionModel

    from moediffir.models.degradation_prior import DegradationPrior
    from moediffir.models.denoiser import build_prompt_module
    from moediffir.models.spade import SpadeInjector
    from moediffir.weights.checkpoint_files import sd21_single_file_configs

    path = Path(path)
    with torch.device("meta"):  # the frozen UNet is read from model.sd_source later: only its structure here
        unet = UNet2DConditionModel.from_config(sd21_single_file_configs()["unet"])
    dp = DegradationPrior.for_backend(cfg.model.dp_backend)
    prompt_module = build_prompt_module(cfg, in_channels=unet.config.in_channels, dp_dim=int(dp.token_dim))
    spade = SpadeInjector.from_unet(unet, prompt_dim=cfg.model.prompt_dim, hidden_dim=cfg.model.spade_hidden,
                                    form=cfg.model.spade_form)
    parts = [("MoE-Prompt module (structcond_stage_model.*)", mapped.prompt_module, prompt_module),
             ("SPADE layers (model.diffusion_model.*.spade.*)", mapped.spade, spade),
             (f"degradation prior ({DP_SUBTREE}*)", mapped.degradation_prior, dp)]
    v2t = None
    if cfg.model.use_v2t:
        from moediffir.weights.builders import build_visual2text

        v2t = build_visual2text(cfg, unet.config.cross_attention_dim, load_weights=False,
                                latent_channels=unet.config.in_channels)
        parts.append(("Visual2Text, released form (cond_stage_model.*, transformer_encoder/decoder.*)", mapped.v2t, v2t))
    for what, found, module in parts:
        _check_part(path, what, found, module)
        module.load_state_dict({k: _as_kit(v) for k, v in found.items()}, strict=True)
    return unet, prompt_module, spade, dp, v2t


def import_released(
    ckpt: str | Path,
    out: str | Path,
    overrides: Mapping[str, Any] | None = None,
    null_context: torch.Tensor | None = None,
    decoder: str | Path | None = None,
) -> dict[str, Any]:
    """Convert the released stage-I checkpoint ``ckpt`` into a model folder at ``out`` (written atomically).

    ``null_context``: the V2T-off UNet context (the empty prompt's encoding); by default, and only when V2T is off
    (``overrides``), encoded from ``model.sd_source``'s text encoder
    (:func:`~moediffir.weights.empty_prompt.empty_prompt_context`).
    ``decoder``: the released stage-II checkpoint, converted into the folder's compensator.
    Returns the report (also in ``out/model_info.json``, ``info.released_import``): converted parts, keys checked but not
    copied, and every unused key by group with what it is.
    """
    from moediffir.models.denoiser import MoEDiffIRDenoiser
    from moediffir.weights.model_folder import save_model_folder

    ckpt = Path(ckpt)
    cfg = released_config(overrides)
    state = read_released_state(ckpt)
    mapped = map_released_stage1(state, ckpt, convert_v2t=cfg.model.use_v2t)
    _check_sd_parts(ckpt, state)
    compensator, stage2_unused = convert_released_stage2(decoder) if decoder is not None else (None, {})
    unet, prompt_module, spade, dp, v2t = build_kit_parts(cfg, mapped, ckpt)
    denoiser = MoEDiffIRDenoiser(unet, prompt_module, spade, degradation_prior=dp, v2t=v2t)
    if null_context is None and v2t is None:  # with V2T on the UNet reads the V2T context: no text encoder needed
        from moediffir.weights.empty_prompt import empty_prompt_context

        null_context = empty_prompt_context(cfg, unet.config.cross_attention_dim)
    if null_context is not None:
        denoiser.set_null_context(null_context)
    mapped.unused.update(stage2_unused)
    report = mapped.report()
    if compensator is not None:
        report["converted"]["compensator"] = len(compensator.state_dict())
    source = f"released stage-I checkpoint {ckpt.name}" + (f", stage-II {Path(decoder).name}" if decoder else "")
    info = {"trained": True, "source": source, "released_import": report,
            "v2t": report["v2t"]}
    try:
        save_model_folder(out, cfg, denoiser, None, None, compensator, info=info, save_dp=True)
    finally:
        spade.detach()
    return report
