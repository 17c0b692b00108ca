"""Where the weights of every part of a MoE-DiffIR model come from: the one rule (paper §3.2-3.4, §4.1).

A model is the frozen diffusion prior (the SD UNet and VAE, paper §3.1), the frozen degradation prior and the
frozen CLIP image encoder of the Visual2Text adapter (§3.3), and the parts trained by this kit: the MoE prompt
module and SPADE layers (stage I, §3.2), the V2T adapter's learnable tokens and quality enhancer (stage I,
§3.3) and the decoder compensator (stage II, §3.4, Eq. 4). Each part has one of three provenances:

``pretrained``    public weights read from local files (SD 2.1-base, DA-CLIP / CLIP, CLIP RN50);
``random``        a seeded random initialisation (the ``tiny`` networks of the smoke profile, or any part
                  built with ``model.random_backbone``): numbers from such a part say nothing about the method;
``trained here``  weights trained by this kit (stage I / II parts, and the diffusion prior itself when the
                  profile trains one in stage 0).

:func:`provenance` maps a config to ``{part: provenance}``; every label, table, figure, model folder and model
card asks it instead of re-deriving the rule from the config's flags. :func:`uses_degradation_prior` is the
one rule for whether the degradation prior is part of the model at all; :func:`label_is_random` the one test of
whether a table row's weights label names random weights.
"""

from __future__ import annotations

from typing import Any

PRETRAINED = "pretrained"
RANDOM = "random"
TRAINED = "trained here"
PROVENANCES = (PRETRAINED, RANDOM, TRAINED)

# parts of the model, in the order of the paper's figure 2 (frozen prior first, then what is trained)
UNET, VAE = "unet", "vae"
DEGRADATION_PRIOR = "degradation_prior"
V2T_CLIP = "v2t_clip_encoder"
PROMPT_MODULE, SPADE, V2T_ADAPTER = "prompt_module", "spade", "v2t_adapter"
COMPENSATOR = "compensator"
BACKBONE_PARTS = (UNET, VAE)
# the model_weights label of rows from a model whose diffusion prior the kit trained (stage 0), and figure titles
PRIOR_TRAINED_LABEL = "diffusion prior and MoE-DiffIR parts trained here"


def uses_degradation_prior(cfg: Any) -> bool:
    """True when the model has a degradation prior: ``model.use_dp`` with MoE prompts, whose router (blind, or
    the released task gates) is its only reader (paper §3.3, Eq. 3)."""
    m = cfg.model
    return bool(m.use_dp) and m.prompt_design == "moe"


def _prior_trained_here(cfg: Any) -> bool:
    prior = getattr(cfg, "prior", None)  # stage 0 (a diffusion prior trained by the kit), where a profile has it
    return bool(getattr(prior, "enabled", False))


def backbone_is_random(model: Any) -> bool:
    """True for the ``tiny`` backbone (random by design, whatever the other flags say) and for
    ``model.random_backbone``; ``model`` is the config's ``model`` section."""
    return model.backbone == "tiny" or bool(model.random_backbone)


def backbone_provenance(cfg: Any) -> str:
    """The UNet's and VAE's provenance: random (:func:`backbone_is_random`), trained here (a stage-0 prior) or
    SD 2.1-base's public weights."""
    if backbone_is_random(cfg.model):
        return RANDOM
    return TRAINED if _prior_trained_here(cfg) else PRETRAINED


def frozen_encoder_provenance(cfg: Any, backend: str) -> str:
    """The provenance of a frozen CLIP-like encoder (degradation prior or V2T's image tower) of ``backend``:
    ``tiny`` has no public weights, and ``model.random_backbone`` keeps every frozen part random."""
    return RANDOM if backend == "tiny" or cfg.model.random_backbone else PRETRAINED


def provenance(cfg: Any, *, trained: bool = True, compensator: bool = True) -> dict[str, str]:
    """``{part: "pretrained" | "random" | "trained here"}`` for every part of the model ``cfg`` describes.

    Args:
        cfg: a resolved :class:`~moediffir.config.Config`.
        trained: the trainable parts have been trained (False: a freshly built model, whose trainable parts
            are random).
        compensator: the model has a decoder compensator (stage II ran, or will).

    Parts absent from the model (no degradation prior, no V2T adapter, no compensator) are not listed.
    """
    m = cfg.model
    bb = backbone_provenance(cfg)
    learnt = TRAINED if trained else RANDOM
    out = {UNET: bb, VAE: bb}
    if uses_degradation_prior(cfg):
        out[DEGRADATION_PRIOR] = frozen_encoder_provenance(cfg, m.dp_backend)
    if m.use_v2t:
        out[V2T_CLIP] = frozen_encoder_provenance(cfg, m.v2t_backend)
    out[PROMPT_MODULE] = learnt
    out[SPADE] = learnt
    if m.use_v2t:
        out[V2T_ADAPTER] = learnt
    if compensator:
        out[COMPENSATOR] = learnt
    return out


def random_parts(cfg: Any, *, trained: bool = True, compensator: bool = True) -> list[str]:
    """The parts of :func:`provenance` with random weights, in its order."""
    return [p for p, v in provenance(cfg, trained=trained, compensator=compensator).items() if v == RANDOM]


def frozen_parts_random(cfg: Any) -> bool:
    """True when some frozen part (prior, degradation prior, V2T's CLIP) has random weights: every number of
    such a model is labelled as saying nothing about the method."""
    return any(v == RANDOM for p, v in provenance(cfg, compensator=False).items()
               if p in (UNET, VAE, DEGRADATION_PRIOR, V2T_CLIP))


def provenance_label(prov: dict[str, str]) -> str:
    """One line for tables and logs, e.g. ``unet, vae: random; prompt_module, spade: trained here``."""
    groups: dict[str, list[str]] = {}
    for part, value in prov.items():
        groups.setdefault(value, []).append(part)
    return "; ".join(f"{', '.join(parts)}: {value}" for value, parts in groups.items())


def label_is_random(label: Any) -> bool:
    """Whether a weights label of a table row says some weights are random: the metric networks'
    ``random(seed=N)``, a model folder's ``random weights: <parts>``, a sweep variant's ``random-weight backbone,
    ...``. Every such label is written from :data:`RANDOM`, so this is the one test for it."""
    return isinstance(label, str) and RANDOM in label


def figure_note(cfg: Any) -> bool | str:
    """What a figure's title says about the weights behind it (``random`` of :mod:`moediffir.report.figures`):
    ``True`` where a part is random, ``"<PRIOR_TRAINED_LABEL> (<profile> profile)"`` where the prior itself was
    trained here, else ``""`` (the paper's setting: a pretrained prior)."""
    if cfg.model.random_weights:
        return True
    return f"{PRIOR_TRAINED_LABEL} ({cfg.profile} profile)" if _prior_trained_here(cfg) else ""
