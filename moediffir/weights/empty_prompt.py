"""The empty-prompt text context the UNet reads when the Visual2Text adapter is off (paper §3.3, §4.3).

StableSR and DiffBIR "configure the text condition input for the SD as an empty string" (§3.3); so does the
released code without V2T: it encodes ``""`` with SD 2.1's OpenCLIP text encoder (``FrozenOpenCLIPEmbedder``,
``layer="penultimate"``), a ``(1, 77, 1024)`` context. This context feeds every V2T-off model: Fig. 6,
Table 2 and Table 3's bare MoE-Prompt row.

:func:`empty_prompt_context` encodes ``""`` once, when the denoiser is built; the model folder stores it
(``null_context.safetensors``), so sampling never needs the text encoder.

- Pretrained backbone (``paper``): SD 2.1-base's ``tokenizer`` + ``text_encoder`` through
  :func:`~moediffir.weights.loading.load_sd_text_encoder`. Its diffusers text encoder has 23 of OpenCLIP's 24
  layers and ends with the final LayerNorm, so ``last_hidden_state`` *is* the penultimate-layer output.
- Random backbone (``smoke``, ``model.random_backbone``): a small CLIP text transformer built in code with
  random weights (labelled as such by the model folder), of the UNet's ``cross_attention_dim`` width, behind
  the real CLIP BPE tokenizer: :func:`write_clip_tokenizer_files` writes ``vocab.json``/``merges.txt`` from the
  BPE merges file that ``open_clip`` ships (``bpe_simple_vocab_16e6.txt.gz``, read without importing
  ``open_clip``), so no file is downloaded.
  The tokenizer pads with ``"!"`` (id 0), as SD 2.1's does.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

import torch

CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"  # shipped inside the open_clip package
CONTEXT_LENGTH = 77  # CLIP's text context
CLIP_VOCAB_SIZE = 49408
TINY_TEXT_LAYERS = 2
TINY_TEXT_SEED = 0  # the random text tower is the same in every build


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_bpe_path() -> Path:
    """The CLIP BPE merges file inside the installed ``open_clip`` package (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    path = Path(spec.origin).parent / CLIP_BPE_FILE if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{CLIP_BPE_FILE}: not found in the open_clip package (pip install open_clip_torch)")
    return path


def write_clip_tokenizer_files(folder: str | Path) -> Path:
    """Write the CLIP tokenizer's ``vocab.json`` and ``merges.txt`` (49408 tokens) into ``folder``.

    Built exactly as CLIP's ``SimpleTokenizer`` builds its vocabulary: the 256 byte symbols, the same with
    ``</w>``, the 48894 merges, then ``<|startoftext|>`` and ``<|endoftext|>``.
    """
    bpe = clip_bpe_path()
    with gzip.open(bpe) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"CLIP BPE file {bpe}: {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return folder


def clip_tokenizer():
    """The CLIP BPE tokenizer (``transformers.CLIPTokenizer``, SD 2.1's settings) from the shipped merges."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer_files(tmp)
        return CLIPTokenizer(
            str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), pad_token="!",
            model_max_length=CONTEXT_LENGTH,
        )


def tiny_text_encoder(width: int, layers: int = TINY_TEXT_LAYERS, seed: int = TINY_TEXT_SEED):
    """A random-weight CLIP text transformer of ``width`` channels (SD 2.1's layout: GELU, final LayerNorm)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    heads = max(h for h in (16, 8, 4, 2, 1) if width % h == 0)
    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=CONTEXT_LENGTH, hidden_act="gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(config)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def encode_text(tokenizer, text_encoder, text: str = "") -> torch.Tensor:
    """``(1, 77, D)`` context of ``text``: ids padded to 77, the encoder's last hidden state (fp32, CPU)."""
    ids = tokenizer(
        [text], padding="max_length", max_length=CONTEXT_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids  # (1, 77)
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device)).last_hidden_state.float().cpu()  # (1, 77, D)


_CACHE: dict[tuple, torch.Tensor] = {}  # one encoding per text-encoder source and width in a process


def empty_prompt_context(cfg, cross_attention_dim: int) -> torch.Tensor:
    """The ``(1, 77, cross_attention_dim)`` encoding of ``""`` for a resolved config (see the module docstring).

    Encoded once per process for each text-encoder source (an ablation sweep builds many V2T-off models).
    """
    key = (bool(cfg.model.random_weights), "" if cfg.model.random_weights else cfg.model.sd_source, cross_attention_dim)
    if key not in _CACHE:
        _CACHE[key] = _encode_empty(cfg, cross_attention_dim)
    return _CACHE[key].clone()


def _encode_empty(cfg, cross_attention_dim: int) -> torch.Tensor:
    if cfg.model.random_weights:
        tokenizer, text_encoder = clip_tokenizer(), tiny_text_encoder(cross_attention_dim)
    else:
        from moediffir.weights.loading import load_sd_text_encoder

        tokenizer, text_encoder = load_sd_text_encoder(cfg)
    context = encode_text(tokenizer, text_encoder, "")
    if context.shape[-1] != cross_attention_dim:
        raise ValueError(
            f"empty prompt: the text encoder gives {context.shape[-1]}-d tokens, the UNet's cross_attention_dim "
            f"is {cross_attention_dim} (model.sd_source)"
        )
    return context
