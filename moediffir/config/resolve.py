"""Resolving a config: dotted-key overrides checked against the sections' types, validated values
(:mod:`moediffir.config.values`) and the JSON saved next to every output (docs/design.md §2)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from moediffir.config.profiles import PROFILE_FACTORIES, recipe_overrides
from moediffir.config.sections import Config, ConfigError
from moediffir.config.values import first_problem
from moediffir.utils.io import atomic_write_json


def validate_config(cfg: Config) -> Config:
    """Raise :class:`ConfigError` for the first key whose value is not allowed (:data:`CHOICES`, :data:`RANGES`,
    the device); return ``cfg``. The message is one line: the key, the value and what is allowed."""
    problem = first_problem(config_to_dict(cfg))
    if problem:
        raise ConfigError(problem)
    return cfg


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation; allow int->float and list->tuple. Raise on mismatch."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"override {key!r}: expected bool, got {type(value).__name__} {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"override {key!r}: expected int, got {type(value).__name__} {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"override {key!r}: expected float, got {type(value).__name__} {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"override {key!r}: expected str, got {type(value).__name__} {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"override {key!r}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"override {key!r}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"override {key!r}: {value!r} matches none of {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"override {key!r}: expected None, got {value!r}")
    raise ConfigError(f"override {key!r}: unsupported field type {annotation}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def apply_overrides(cfg: Config, overrides: Mapping[str, Any] | None) -> Config:
    """Return ``cfg`` with dotted-key overrides applied; unknown keys and wrong types raise ConfigError.

    Nested mappings are accepted too: ``{"data": {"workers": 2}}`` equals ``{"data.workers": 2}``.
    """
    if not overrides:
        return cfg
    flat: dict[str, Any] = {}

    def _flatten(prefix: str, obj: Mapping[str, Any]) -> None:
        for k, v in obj.items():
            full = f"{prefix}{k}"
            section = _field_types(Config).get(full) if not prefix else None
            if isinstance(v, Mapping) and section is not None and is_dataclass(section):
                _flatten(full + ".", v)
            else:
                flat[full] = v

    _flatten("", overrides)
    if "model.recipe" in flat:  # the recipe first, so the other overrides given with it win
        recipe = flat["model.recipe"]
        if not isinstance(recipe, str):
            raise ConfigError(f"override 'model.recipe': expected str, got {type(recipe).__name__} {recipe!r}")
        cfg = apply_overrides(cfg, recipe_overrides(recipe, cfg.profile))
    for key, value in flat.items():
        parts = key.split(".")
        if parts[0] == "profile":
            raise ConfigError("override 'profile': choose the profile with resolve_config(profile=...)")
        top_types = _field_types(Config)
        if parts[0] not in top_types:
            raise ConfigError(f"unknown config key {key!r}; top-level keys: {sorted(top_types)}")
        if len(parts) == 1:
            if is_dataclass(top_types[parts[0]]):
                raise ConfigError(f"override {key!r}: is a section; set its fields as '{key}.<field>'")
            cfg = replace(cfg, **{parts[0]: _coerce(key, value, top_types[parts[0]])})
            continue
        if len(parts) != 2 or not is_dataclass(top_types[parts[0]]):
            raise ConfigError(f"unknown config key {key!r}")
        section_name, name = parts
        section = getattr(cfg, section_name)
        sec_types = _field_types(type(section))
        if name not in sec_types:
            raise ConfigError(f"unknown config key {key!r}; fields of {section_name!r}: {sorted(sec_types)}")
        new_section = replace(section, **{name: _coerce(key, value, sec_types[name])})
        cfg = replace(cfg, **{section_name: new_section})
    return cfg


def resolve_config(profile: str = "smoke", overrides: Mapping[str, Any] | None = None) -> Config:
    """The profile's defaults with validated overrides applied (types, then :func:`validate_config`)."""
    if profile not in PROFILE_FACTORIES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {sorted(PROFILE_FACTORIES)}")
    return validate_config(apply_overrides(PROFILE_FACTORIES[profile](), overrides))


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a CLI ``key=value`` override; the value is read as JSON when it parses, else as a string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. data.workers=2")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain, JSON-serialisable dict (tuples become lists)."""
    return dataclasses.asdict(cfg)


def config_from_dict(d: Mapping[str, Any]) -> Config:
    """Rebuild a config saved by :func:`save_config` (validated like overrides)."""
    d = dict(d)
    profile = d.pop("profile", "paper")
    base = PROFILE_FACTORIES.get(profile, PROFILE_FACTORIES["paper"])()
    return validate_config(apply_overrides(base, d))


def save_config(cfg: Config, folder: str | Path, name: str = "config.json") -> Path:
    """Write the resolved config as JSON into ``folder`` (atomically) and return the path."""
    return atomic_write_json(Path(folder) / name, config_to_dict(cfg))


def load_config(path: str | Path) -> Config:
    """Read a config written by :func:`save_config`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    return config_from_dict(data)


def field_names(section: type) -> list[str]:
    """Field names of a config section (for CLI help and notebooks)."""
    return [f.name for f in fields(section)]
