"""Learned codecs C_PSNR and C_SSIM of the CIR benchmark (paper §3.5, ref. [9]: Cheng et al., CVPR 2020).

Both are compressai's ``cheng2020_attn`` (attention modules, hyperprior + 5x5 autoregressive context, rANS
entropy coder; compressai's version models each latent with one Gaussian, not the paper's mixture), as trained
by compressai's zoo for MSE (C_PSNR) or MS-SSIM (C_SSIM).
Levels are compressai qualities 1..6 (the benchmark uses 1, 2, 3).

- Real entropy coding: ``model.compress()`` writes the rANS strings, ``model.decompress()`` decodes them; bits =
  8 x the total length of all strings (``bits_source="bitstream"``), as compressai's own evaluation counts them
  (the two-integer latent shape is not counted: it follows from the image size).
- The image is padded by edge pixels to multiples of 64 (the analysis transform downsamples by 64 in total
  including the hyperprior) and the decoded image is cropped back; bpp is counted over the original size.
- Weights. ``"pretrained"``: the compressai zoo checkpoint read from the torch hub cache,
  ``torch.hub.get_dir()/checkpoints/<zoo file name>`` (file names taken from compressai's own ``model_urls``);
  this module never downloads: a missing file raises :class:`CodecUnavailableError` naming the file and the
  folder. ``"random"``: untrained networks with a fixed seed (``info["weights"] = "random"``), for the smoke
  profile; their bits and images are real round trips of untrained networks, NOT the paper's codec.

One model per quality is built on first use and kept in the codec object.

Speed. compressai's autoregressive loops spend most of their time in two places that do not affect the result:
``build_indexes`` (63 tensor comparisons per latent position) and handing all 64 CDF tables (~27 000 ints)
to the rANS decoder at every position. :func:`ar_compress` / :func:`ar_decompress` run the same loops with
the same tensor operations, but find the scale index with one ``searchsorted`` and pass the decoder only the
tables the position uses. They write the same bytes as ``model.compress()`` and decode the same image as
``model.decompress()`` (tests/codecs/test_learned.py checks both, bit for bit); ``coder="compressai"`` calls
compressai's own methods instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moediffir.codecs.base import (
    CodecError,
    CodecResult,
    CodecUnavailableError,
    check_rgb,
    pad_to_multiple,
    torch_threads,
)
from moediffir.utils.io import UnsafeWeightsError, first_line, load_weights_only, torch_hub_dir

ARCHITECTURE = "cheng2020-attn"  # compressai zoo name
METRICS = {"c_psnr": "mse", "c_ssim": "ms-ssim"}
PAD_MULTIPLE = 64
RANDOM_SEED = 0  # seed of the untrained networks (offset by metric and quality, so each network differs)


def _import_compressai() -> tuple[Any, Any]:
    try:
        import torch
        from compressai.zoo import image as zoo
    except ImportError as exc:  # pragma: no cover - declared dependencies
        raise CodecUnavailableError(
            f"learned codecs need torch and compressai ({exc}); pip install compressai"
        ) from exc
    return torch, zoo


def zoo_qualities() -> list[int]:
    """The qualities compressai offers for ``cheng2020-attn``."""
    _, zoo = _import_compressai()
    return sorted(zoo.cfgs[ARCHITECTURE])


#: compressai's zoo file names of the qualities the paper's levels use (from its ``model_urls``; tests/codecs/test_learned.py
#: checks them against the installed compressai), so that the preflight names them without importing it.
ZOO_FILES: dict[tuple[str, int], str] = {
    ("mse", 1): "cheng2020_attn-mse-1-465f2b64.pth.tar", ("mse", 2): "cheng2020_attn-mse-2-e0805385.pth.tar",
    ("mse", 3): "cheng2020_attn-mse-3-2d07bbdf.pth.tar", ("ms-ssim", 1): "cheng2020_attn-ms-ssim-1-c5381d91.pth.tar",
    ("ms-ssim", 2): "cheng2020_attn-ms-ssim-2-5dad201d.pth.tar",
    ("ms-ssim", 3): "cheng2020_attn-ms-ssim-3-5c9be841.pth.tar",
}


def checkpoint_file_name(metric: str, quality: int) -> str:
    """The exact file name compressai's zoo stores for (metric, quality) in the torch hub cache."""
    if (metric, quality) in ZOO_FILES:
        return ZOO_FILES[(metric, quality)]
    _, zoo = _import_compressai()
    try:
        url = zoo.model_urls[ARCHITECTURE][metric][quality]
    except KeyError as exc:
        raise CodecError(
            f"compressai has no pretrained {ARCHITECTURE} for metric {metric!r} quality {quality}"
        ) from exc
    return url.rsplit("/", 1)[-1]


def checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (follows ``$TORCH_HOME`` and ``torch.hub.set_dir``)."""
    return torch_hub_dir() / "checkpoints"


# ------------------------------------------------------------------------------ autoregressive coding
KERNEL, PADDING, Z_TO_Y = 5, 2, 4  # context model kernel, its padding, and the y/z size ratio of cheng2020


def scale_indexes(gaussian_conditional: Any, scales: Any) -> Any:
    """Same values as compressai's ``GaussianConditional.build_indexes``, in one ``searchsorted``.

    compressai: ``index = (n - 1) - #{s in table[:-1] : scale <= s}`` = ``#{s in table[:-1] : s < scale}``, which
    is the left insertion point of ``scale`` in the sorted table.
    """
    import torch

    scales = gaussian_conditional.lower_bound_scale(scales)
    table = gaussian_conditional.scale_table[:-1].to(scales.dtype).contiguous()
    return torch.searchsorted(table, scales.contiguous(), right=False).int()


class _Tables:
    """The Gaussian conditional's CDF tables as Python lists (built once per model)."""

    def __init__(self, gaussian_conditional: Any) -> None:
        self.cdfs = gaussian_conditional.quantized_cdf.tolist()
        self.lengths = gaussian_conditional.cdf_length.reshape(-1).int().tolist()
        self.offsets = gaussian_conditional.offset.reshape(-1).int().tolist()
        self.cdfs = [c[:n] for c, n in zip(self.cdfs, self.lengths)]  # drop the zero padding of each row

    def subset(self, indexes: list[int]) -> tuple[list[int], list[list[int]], list[int], list[int]]:
        used = sorted(set(indexes))
        remap = {u: i for i, u in enumerate(used)}
        return (
            [remap[i] for i in indexes],
            [self.cdfs[u] for u in used],
            [self.lengths[u] for u in used],
            [self.offsets[u] for u in used],
        )


def ar_compress(model: Any, x: Any, tables: _Tables) -> dict[str, Any]:
    """``model.compress(x)`` of a compressai joint autoregressive model (batch of one), same bytes, faster."""
    import torch
    import torch.nn.functional as F
    from compressai.ans import BufferedRansEncoder

    y = model.g_a(x)  # (1, M, H/16, W/16)
    z = model.h_a(y)  # (1, N, H/64, W/64)
    z_strings = model.entropy_bottleneck.compress(z)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
    params = model.h_s(z_hat)  # (1, 2M, H/16, W/16)
    height, width = z_hat.size(2) * Z_TO_Y, z_hat.size(3) * Z_TO_Y
    y_hat = F.pad(y, (PADDING, PADDING, PADDING, PADDING))  # (1, M, h+4, w+4)
    weight = model.context_prediction.weight * model.context_prediction.mask
    bias = model.context_prediction.bias
    gc = model.gaussian_conditional
    symbols: list[int] = []
    indexes: list[int] = []
    for h in range(height):
        for w in range(width):
            y_crop = y_hat[:, :, h : h + KERNEL, w : w + KERNEL]  # (1, M, 5, 5)
            ctx_p = F.conv2d(y_crop, weight, bias=bias)  # (1, 2M, 1, 1)
            p = params[:, :, h : h + 1, w : w + 1]  # (1, 2M, 1, 1)
            gaussian_params = (
                model.entropy_parameters(torch.cat((p, ctx_p), dim=1)).squeeze(3).squeeze(2)
            )  # (1, 2M)
            scales_hat, means_hat = gaussian_params.chunk(2, 1)  # (1, M) each
            y_q = gc.quantize(y_crop[:, :, PADDING, PADDING], "symbols", means_hat)  # (1, M) int
            y_hat[:, :, h + PADDING, w + PADDING] = y_q + means_hat
            symbols.extend(y_q.squeeze().tolist())
            indexes.extend(scale_indexes(gc, scales_hat).squeeze().tolist())
    encoder = BufferedRansEncoder()
    encoder.encode_with_indexes(symbols, indexes, tables.cdfs, tables.lengths, tables.offsets)
    return {"strings": [[encoder.flush()], z_strings], "shape": z.size()[-2:]}


def ar_decompress(model: Any, strings: list, shape: Any, tables: _Tables) -> Any:
    """``model.decompress(strings, shape)["x_hat"]`` (batch of one), same values, faster."""
    import torch
    import torch.nn.functional as F
    from compressai.ans import RansDecoder

    z_hat = model.entropy_bottleneck.decompress(strings[1], shape)  # (1, N, h/4, w/4)
    params = model.h_s(z_hat)  # (1, 2M, h, w)
    height, width = z_hat.size(2) * Z_TO_Y, z_hat.size(3) * Z_TO_Y
    y_hat = torch.zeros((1, model.M, height + 2 * PADDING, width + 2 * PADDING), device=z_hat.device)
    weight, bias = model.context_prediction.weight, model.context_prediction.bias
    gc = model.gaussian_conditional
    decoder = RansDecoder()
    decoder.set_stream(strings[0][0])
    for h in range(height):
        for w in range(width):
            y_crop = y_hat[
                :, :, h : h + KERNEL, w : w + KERNEL
            ]  # (1, M, 5, 5); not-yet-decoded entries are 0
            ctx_p = F.conv2d(y_crop, weight, bias=bias)  # (1, 2M, 1, 1)
            p = params[:, :, h : h + 1, w : w + 1]
            gaussian_params = model.entropy_parameters(torch.cat((p, ctx_p), dim=1))  # (1, 2M, 1, 1)
            scales_hat, means_hat = gaussian_params.chunk(2, 1)  # (1, M, 1, 1) each
            idx, cdfs, lengths, offsets = tables.subset(scale_indexes(gc, scales_hat).squeeze().tolist())
            rv = decoder.decode_stream(idx, cdfs, lengths, offsets)
            rv = gc.dequantize(torch.Tensor(rv).reshape(1, -1, 1, 1), means_hat)  # (1, M, 1, 1)
            y_hat[:, :, h + PADDING : h + PADDING + 1, w + PADDING : w + PADDING + 1] = rv
    y_hat = F.pad(y_hat, (-PADDING, -PADDING, -PADDING, -PADDING))  # (1, M, h, w)
    return model.g_s(y_hat).clamp_(0, 1)  # (1, 3, H, W)


class CompressAICodec:
    """compressai ``cheng2020_attn`` with real entropy coding; level = quality (int, 1..6)."""

    def __init__(
        self,
        name: str = "c_psnr",
        weights: str = "pretrained",
        device: str = "cpu",
        threads: int | None = 1,
        coder: str = "fast",
    ) -> None:
        if name not in METRICS:
            raise CodecError(f"learned codec {name!r}: choose one of {sorted(METRICS)}")
        if weights not in ("pretrained", "random"):
            raise CodecError(f"{name}: data.learned_weights={weights!r}; choose 'pretrained' or 'random'")
        self.name = name
        self.metric = METRICS[name]
        self.weights = weights
        self.device = device
        # torch threads during a call (restored after). The autoregressive entropy coder is a long run of tiny
        # ops: one thread is fastest, and several threads spin badly when processes share the cores.
        self.threads = threads
        if coder not in ("fast", "compressai"):
            raise CodecError(f"{name}: coder={coder!r}; choose 'fast' (same bits, faster) or 'compressai'")
        self.coder = coder
        self._tables: dict[int, _Tables] = {}
        self._torch, self._zoo = _import_compressai()
        self._models: dict[int, Any] = {}

    # -- models -----------------------------------------------------------------------------------
    def checkpoint_path(self, quality: int) -> Path:
        """Where the pretrained checkpoint of ``quality`` must be (it is never downloaded)."""
        return checkpoint_dir() / checkpoint_file_name(self.metric, quality)

    def missing_checkpoints(self, qualities: tuple[int, ...] = (1, 2, 3)) -> list[Path]:
        """Checkpoint files this codec would need for ``qualities`` but cannot find (empty for random weights)."""
        if self.weights == "random":
            return []
        return [p for p in (self.checkpoint_path(q) for q in qualities) if not p.is_file()]

    def _build(self, quality: int) -> Any:
        torch, zoo = self._torch, self._zoo
        cls = zoo.model_architectures[ARCHITECTURE]
        if self.weights == "pretrained":
            path = self.checkpoint_path(quality)
            if not path.is_file():
                raise CodecUnavailableError(
                    f"{self.name}: pretrained weights for quality {quality} are missing: expected the compressai zoo "
                    f"file {path.name!r} in the torch hub cache folder {str(path.parent)!r}. Fetch it once with "
                    f"compressai (cheng2020_attn(quality={quality}, metric={self.metric!r}, pretrained=True)) on a "
                    "machine with network access and copy it there, or set data.learned_weights='random' to use "
                    "untrained networks (labelled as such)."
                )
            try:  # tensors and plain values only: a file holding more is refused unread
                state = load_weights_only(path, fix="delete it and fetch it again with compressai")
            except UnsafeWeightsError as exc:
                raise CodecError(f"{self.name}: {exc}") from exc
            except Exception as exc:
                raise CodecError(
                    f"{self.name}: cannot read checkpoint {path} ({first_line(exc)}); delete it and fetch it again"
                ) from exc
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            model = cls.from_state_dict(zoo.load_pretrained(state))
            model.update(force=False)  # the checkpoint carries the CDF tables; build them only if absent
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED + 100 * sorted(METRICS.values()).index(self.metric) + quality)
                model = cls(*zoo.cfgs[ARCHITECTURE][quality])
            model.update(force=True)  # CDF tables of the untrained entropy models
        return model.eval().to(self.device)

    def model(self, quality: int) -> Any:
        """The network for ``quality`` (built once, then cached in this object)."""
        if quality not in self._models:
            self._models[quality] = self._build(quality)
            self._tables[quality] = _Tables(self._models[quality].gaussian_conditional)
        return self._models[quality]

    # -- coding -----------------------------------------------------------------------------------
    def __call__(self, rgb: np.ndarray, level: int) -> CodecResult:
        rgb = check_rgb(rgb, self.name)
        qualities = sorted(self._zoo.cfgs[ARCHITECTURE])
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or int(level) not in qualities:
            raise CodecError(f"{self.name}: the level is a compressai quality in {qualities}; got {level!r}")
        quality = int(level)
        torch = self._torch
        model = self.model(quality)
        h, w = rgb.shape[:2]
        padded = pad_to_multiple(rgb, PAD_MULTIPLE)  # (H', W', 3)
        x = torch.from_numpy(np.array(padded)).permute(2, 0, 1)[None].float().div_(255.0)  # (1, 3, H', W')
        x = x.to(self.device)
        with torch_threads(self.threads), torch.inference_mode():
            if self.coder == "fast" and self.device == "cpu":
                enc = ar_compress(model, x, self._tables[quality])
                x_hat = ar_decompress(model, enc["strings"], enc["shape"], self._tables[quality])  # (1, 3, H', W')
            else:
                enc = model.compress(x)
                x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]  # (1, 3, H', W')
        num_bytes = sum(len(s) for group in enc["strings"] for s in group)
        out = (
            x_hat[0].clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        )  # (H', W', 3)
        decoded = np.ascontiguousarray(out[:h, :w])  # (H, W, 3)
        info = {
            "backend": f"compressai-{ARCHITECTURE}/{self.metric}",
            "coder": self.coder,
            "weights": self.weights,
            "bits_source": "bitstream",
            "quality": quality,
            "coded_size": f"{padded.shape[1]}x{padded.shape[0]}",
        }
        if self.weights == "random":
            info["note"] = "untrained network (random weights): not the paper's codec"
        return CodecResult(decoded=decoded, num_bits=8 * num_bytes, info=info)
