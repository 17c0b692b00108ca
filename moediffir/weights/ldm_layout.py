"""The original (CompVis/LDM) single-file layout of Stable Diffusion 2.x weights (docs/design.md §2; paper §4.1).

MoE-DiffIR starts from SD 2.1-base (§4.1), published as one LDM checkpoint, ``v2-1_512-ema-pruned.ckpt``: the
denoiser under ``model.diffusion_model.*`` (an ``openaimodel.UNetModel``) and the autoencoder under
``first_stage_model.*``, wrapped in ``{"state_dict": ...}``. diffusers reads that file with
``from_single_file``; this module maps the other way, diffusers names -> LDM names, for two uses:

- :func:`moediffir.weights.checkpoint_files.load_single_file_components` lists, before loading, every tensor a
  checkpoint lacks or holds with the wrong shape, under the names the file itself uses;
- :func:`save_original_single_file` writes a diffusers UNet and VAE as such a file (export; the round-trip
  tests in ``tests/weights/test_loading.py`` build their checkpoints with it from tiny random networks).

Layout facts this module encodes (``L`` = ``layers_per_block``, ``B`` = number of resolution levels):

UNet
    ``conv_in`` -> ``input_blocks.0.0``; ``time_embedding.linear_{1,2}`` -> ``time_embed.{0,2}``;
    ``conv_norm_out``/``conv_out`` -> ``out.0``/``out.2``.
    Level ``b`` of the encoder fills ``L + 1`` consecutive ``input_blocks`` starting at ``1 + b * (L + 1)``:
    ``L`` of them hold ``(resnet, transformer)`` as sub-modules ``.0``/``.1``; the last holds the downsampler
    as ``.0.op`` (the deepest level has none, so it uses only ``L`` slots).
    ``mid_block`` is ``middle_block.{0,1,2}`` = resnet, transformer, resnet.
    Level ``b`` of the decoder (diffusers order, deepest first) fills ``output_blocks`` ``b * (L + 1)`` to
    ``b * (L + 1) + L``: resnet ``.0``, transformer ``.1`` where the level has attention, and the upsampler on
    the level's last slot, as the sub-module after them (``.1.conv`` without attention, ``.2.conv`` with it).
    Resnet leaves are renamed: ``norm1``/``conv1`` -> ``in_layers.0``/``in_layers.2``, ``time_emb_proj`` ->
    ``emb_layers.1``, ``norm2``/``conv2`` -> ``out_layers.0``/``out_layers.3``, ``conv_shortcut`` ->
    ``skip_connection``. Transformer (``SpatialTransformer``) names are identical in both layouts.
VAE
    ``encoder.down_blocks.i.resnets.j`` -> ``encoder.down.i.block.j``, downsampler ``encoder.down.i.downsample``;
    ``decoder.up_blocks.i`` -> ``decoder.up.(B - 1 - i)`` (LDM numbers decoder levels from the full resolution
    up, diffusers from the latent down), upsampler ``.upsample``; ``mid_block.resnets.{0,1}`` ->
    ``mid.block_{1,2}``, ``mid_block.attentions.0`` -> ``mid.attn_1`` with ``group_norm``/``to_q``/``to_k``/
    ``to_v``/``to_out.0`` -> ``norm``/``q``/``k``/``v``/``proj_out``. Those four projections are 1x1
    convolutions in LDM: weights ``(C, C, 1, 1)`` there, ``(C, C)`` linear weights in diffusers.
    ``conv_norm_out`` -> ``norm_out``; ``conv_shortcut`` -> ``nin_shortcut``; ``quant_conv`` and
    ``post_quant_conv`` keep their names.

Any key these rules do not cover raises ``KeyError`` (a silent gap would write an incomplete checkpoint).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
VAE_PREFIXES = (VAE_PREFIX, "vae.")  # diffusers also reads the VAE of a checkpoint from "vae.*"

_UNET_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET_LEAVES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET_LEAVES = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
_VAE_ATTENTION_LEAVES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_CONV1X1 = ("q", "k", "v", "proj_out")  # linear in diffusers, 1x1 conv in LDM


def _split_leaf(rest: str, leaves: Mapping[str, str], key: str) -> str:
    """``rest`` = ``<module>.<weight|bias>`` with ``<module>`` renamed through ``leaves``."""
    module, _, param = rest.rpartition(".")
    if module not in leaves:
        raise KeyError(f"{key}: no LDM name for sub-module {module!r}")
    return f"{leaves[module]}.{param}"


def unet_to_ldm(state: Mapping[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel`` state dict renamed to ``openaimodel.UNetModel`` keys (no prefix)."""
    if not isinstance(layers_per_block, int):
        raise TypeError(f"layers_per_block must be one int for the LDM layout, got {layers_per_block!r}")
    slots = layers_per_block + 1  # input/output_blocks per resolution level
    with_attention = {int(m.group(1)) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if module in _UNET_TOP:
            out[f"{_UNET_TOP[module]}.{param}"] = tensor
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = 1 + level * slots + j
            if kind == "resnets":
                out[f"input_blocks.{index}.0.{_split_leaf(rest, _UNET_RESNET_LEAVES, key)}"] = tensor
            else:
                out[f"input_blocks.{index}.1.{rest}"] = tensor
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
            index = 1 + int(m[1]) * slots + layers_per_block
            out[f"input_blocks.{index}.0.op.{m[2]}"] = tensor
        elif m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
            kind, j, rest = m[1], int(m[2]), m[3]
            if kind == "resnets":  # resnets 0, 1 around the one transformer
                out[f"middle_block.{2 * j}.{_split_leaf(rest, _UNET_RESNET_LEAVES, key)}"] = tensor
            else:
                out[f"middle_block.1.{rest}"] = tensor
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = level * slots + j
            if kind == "resnets":
                out[f"output_blocks.{index}.0.{_split_leaf(rest, _UNET_RESNET_LEAVES, key)}"] = tensor
            else:
                out[f"output_blocks.{index}.1.{rest}"] = tensor
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
            level = int(m[1])
            position = 2 if level in with_attention else 1  # after the resnet (and the transformer)
            out[f"output_blocks.{level * slots + layers_per_block}.{position}.conv.{m[2]}"] = tensor
        else:
            raise KeyError(f"{key}: no LDM name for this UNet tensor")
    if len(out) != len(state):
        raise ValueError("two UNet tensors were given the same LDM key (is this an SD-style UNet?)")
    return out


def vae_to_ldm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict renamed to LDM ``AutoencoderKL`` keys (no prefix)."""
    levels = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k)))
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if m := re.fullmatch(r"(quant_conv|post_quant_conv)\.(weight|bias)", key):
            out[key] = tensor
        elif m := re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.(weight|bias)", key):
            name = "norm_out" if m[2] == "conv_norm_out" else m[2]
            out[f"{m[1]}.{name}.{m[3]}"] = tensor
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"encoder.down.{m[1]}.block.{m[2]}.{_split_leaf(m[3], _VAE_RESNET_LEAVES, key)}"] = tensor
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
            out[f"encoder.down.{m[1]}.downsample.conv.{m[2]}"] = tensor
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            level = levels - 1 - int(m[1])
            out[f"decoder.up.{level}.block.{m[2]}.{_split_leaf(m[3], _VAE_RESNET_LEAVES, key)}"] = tensor
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
            out[f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"] = tensor
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            block = int(m[2]) + 1
            out[f"{m[1]}.mid.block_{block}.{_split_leaf(m[3], _VAE_RESNET_LEAVES, key)}"] = tensor
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            leaf = _split_leaf(m[2], _VAE_ATTENTION_LEAVES, key)
            if leaf.endswith(".weight") and leaf[: -len(".weight")] in _VAE_CONV1X1:
                tensor = tensor.reshape(*tensor.shape, 1, 1)  # (C, C) linear -> (C, C, 1, 1) conv
            out[f"{m[1]}.mid.attn_1.{leaf}"] = tensor
        else:
            raise KeyError(f"{key}: no LDM name for this VAE tensor")
    if len(out) != len(state):
        raise ValueError("two VAE tensors were given the same LDM key (is this an SD-style VAE?)")
    return out


def original_single_file_state_dict(unet, vae) -> dict[str, torch.Tensor]:
    """The flat state dict of an original SD 2.x single file holding ``unet`` and ``vae`` (diffusers models):
    ``model.diffusion_model.*`` and ``first_stage_model.*`` keys, as in ``v2-1_512-ema-pruned.ckpt``."""
    ldm_unet = unet_to_ldm(unet.state_dict(), unet.config.layers_per_block)
    ldm_vae = vae_to_ldm(vae.state_dict())
    state = {UNET_PREFIX + k: v for k, v in ldm_unet.items()}
    state.update({VAE_PREFIX + k: v for k, v in ldm_vae.items()})
    return state


def is_vae_attention_projection(ldm_vae_key: str) -> bool:
    """Whether an LDM VAE key (without prefix) is a mid-block attention projection weight: a ``(C, C, 1, 1)``
    conv in LDM checkpoints, which diffusers also accepts as a ``(C, C)`` matrix."""
    module, _, param = ldm_vae_key.rpartition(".")
    return param == "weight" and ".mid.attn_1." in f".{module}" and module.rsplit(".", 1)[-1] in _VAE_CONV1X1


def save_original_single_file(unet, vae, path: str | Path) -> Path:
    """Write ``unet`` and ``vae`` (diffusers models) as an original SD 2.x single file at ``path``:
    flat keys for ``.safetensors``, ``{"state_dict": ..., "global_step": 0}`` for a torch pickle (``.ckpt``).

    The file holds no text encoder (the original checkpoints also carry ``cond_stage_model.*``).
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in original_single_file_state_dict(unet, vae).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"format": "pt"})
    else:
        torch.save({"state_dict": state, "global_step": 0}, path)
    return path
