"""Profiles: the one source of defaults for the CLI, the notebooks and the tests (docs/design.md §2).

Each profile is a frozen :class:`Config` made of one frozen dataclass per stage. ``smoke`` runs on a CPU in
about a minute per notebook with tiny random networks; ``mini`` runs on a CPU with a small diffusion prior
trained here from scratch (stage 0, :class:`PriorConfig`) on the bundled photos of ``data/mini``; ``paper``
carries the paper's settings (§3.5, §4.1).
Profiles differ only in numbers and weight sources, never in code path.

Overrides are dotted keys (``"data.workers"``, ``"stage1.lr"``, ``"seed"``); an unknown key or a value of the
wrong type raises :class:`ConfigError` naming the key, and so does a value outside what :data:`CHOICES` and
:data:`RANGES` allow. The resolved config is saved as JSON next to every
output with :func:`save_config`.

Everything is imported from here (``from moediffir.config import Config, resolve_config``); the parts live in
:mod:`moediffir.config.sections` (the dataclasses and their defaults), :mod:`moediffir.config.profiles` (the
profiles and the ``released`` recipe), :mod:`moediffir.config.values` (the allowed values) and
:mod:`moediffir.config.resolve` (overrides, validation, JSON).
"""

from __future__ import annotations

from moediffir.config.profiles import (
    PROFILE_FACTORIES,
    PROFILES,
    RECIPE_PAPER_SCALE,
    RECIPE_VALUES,
    RECIPES,
    recipe_overrides,
)
from moediffir.config.resolve import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    field_names,
    load_config,
    parse_override,
    resolve_config,
    save_config,
    validate_config,
)
from moediffir.config.sections import (
    AblationConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    PriorConfig,
    SampleConfig,
    Stage1Config,
    Stage2Config,
)
from moediffir.config.values import CHOICES, DECODERS, RANGES, allowed_values, first_problem

__all__ = [
    "CHOICES", "DECODERS", "PROFILES", "PROFILE_FACTORIES", "RANGES", "RECIPES", "RECIPE_PAPER_SCALE", "RECIPE_VALUES",
    "AblationConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "PriorConfig",
    "SampleConfig", "Stage1Config", "Stage2Config",
    "allowed_values", "apply_overrides", "config_from_dict", "config_to_dict", "field_names", "first_problem",
    "load_config", "parse_override", "recipe_overrides", "resolve_config", "save_config", "validate_config",
]
