"""The empty-prompt context used without Visual2Text (moediffir/weights/empty_prompt.py; paper §3.3)."""

from __future__ import annotations

import json

import torch

from moediffir.config import resolve_config
from moediffir.weights.empty_prompt import (
    clip_tokenizer,
    empty_prompt_context,
    encode_text,
    tiny_text_encoder,
    write_clip_tokenizer_files,
)


def test_tokenizer_is_clips_bpe_built_offline(tmp_path):
    write_clip_tokenizer_files(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    tok = clip_tokenizer()
    ids = tok(["a photo of a cat", ""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP's ids for this caption
    assert ids[1].tolist() == [49406, 49407] + [0] * 75  # "": BOS, EOS, then "!" pads (SD 2.1's pad token)


def test_smoke_context_is_the_random_text_towers_output_for_the_empty_prompt():
    cfg = resolve_config("smoke")
    ctx = empty_prompt_context(cfg, 32)
    assert ctx.shape == (1, 77, 32) and ctx.abs().sum() > 0
    assert torch.equal(ctx, encode_text(clip_tokenizer(), tiny_text_encoder(32), ""))
    assert not torch.allclose(ctx, encode_text(clip_tokenizer(), tiny_text_encoder(32), "a photo"))
    assert torch.equal(empty_prompt_context(cfg, 32), ctx)  # the same tower in every build


def _fake_sd_folder(root, width: int):
    """A diffusers-layout SD folder holding only a (tiny, random) text encoder and the CLIP tokenizer."""
    enc = tiny_text_encoder(width, layers=1, seed=7)
    enc.save_pretrained(root / "text_encoder")
    clip_tokenizer().save_pretrained(root / "tokenizer")  # tokenizer_config.json (pad "!", 77 tokens)
    write_clip_tokenizer_files(root / "tokenizer")  # vocab.json + merges.txt, SD's tokenizer files
    return enc


def test_pretrained_path_reads_the_sd_text_encoder_through_the_loader(tmp_path):
    enc = _fake_sd_folder(tmp_path, 24)
    cfg = resolve_config("paper", {"model.sd_source": str(tmp_path)})
    assert not cfg.model.random_weights
    ctx = empty_prompt_context(cfg, 24)
    ids = torch.tensor([[49406, 49407] + [0] * 75])
    with torch.no_grad():
        expected = enc(ids).last_hidden_state  # the loaded encoder's output for "" (its final LayerNorm included)
    assert ctx.shape == (1, 77, 24) and torch.allclose(ctx, expected, atol=1e-6)
    assert not torch.allclose(ctx, empty_prompt_context(resolve_config("smoke"), 24))  # not the random tower
