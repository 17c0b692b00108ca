"""Profiles and overrides (moediffir.config)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from moediffir.config import (
    PROFILES,
    Config,
    ConfigError,
    config_to_dict,
    load_config,
    parse_override,
    resolve_config,
    save_config,
)


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_resolve_and_are_frozen(profile):
    cfg = resolve_config(profile)
    assert cfg.profile == profile
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data.workers = 3  # type: ignore[misc]


def test_profiles_differ_only_in_numbers_and_sources():
    smoke, paper = resolve_config("smoke"), resolve_config("paper")
    # same structure (one code path): identical field names in every section
    assert config_to_dict(smoke).keys() == config_to_dict(paper).keys()
    for section in ("data", "model", "stage1", "stage2", "sample", "eval", "ablation"):
        assert config_to_dict(smoke)[section].keys() == config_to_dict(paper)[section].keys()
    # the paper's hyper-parameters (§4.1) live in the paper profile
    assert paper.stage1.lr == 5e-5 and paper.stage1.batch_size == 32 and paper.stage1.max_steps == 400_000
    assert paper.stage2.lr == 1e-4 and paper.stage2.max_steps == 100_000 and paper.stage2.num_latents == 70_000
    assert paper.model.num_prompts == 7 and paper.model.top_k == 3 and paper.model.prompt_dim == 256
    assert paper.sample.num_steps == 200
    assert smoke.data.learned_weights == "random" and paper.data.learned_weights == "pretrained"


def test_dotted_and_nested_overrides():
    cfg = resolve_config("smoke", {"data.workers": 2, "stage1": {"lr": 1e-4}, "seed": 7})
    assert cfg.data.workers == 2 and cfg.stage1.lr == 1e-4 and cfg.seed == 7
    # untouched fields keep the profile's defaults
    assert cfg.stage1.batch_size == resolve_config("smoke").stage1.batch_size


def test_int_is_accepted_for_float_and_list_for_tuple():
    cfg = resolve_config("smoke", {"stage1.lr": 1, "data.test_sets": ["a", "b"]})
    assert cfg.stage1.lr == 1.0 and isinstance(cfg.stage1.lr, float)
    assert cfg.data.test_sets == ("a", "b")


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"data.wrkers": 1}, "data.wrkers"),
        ({"nosuchsection.x": 1}, "nosuchsection.x"),
        ({"data.workers": "2"}, "data.workers"),
        ({"data.workers": True}, "data.workers"),
        ({"model.use_dp": 1}, "model.use_dp"),
        ({"stage1.betas": [0.9, 0.99, 0.5]}, "stage1.betas"),
        ({"data.test_sets": "LIVE1"}, "data.test_sets"),
        ({"data": 3}, "data"),
        ({"profile": "paper"}, "profile"),
    ],
)
def test_bad_overrides_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        resolve_config("smoke", overrides)


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile 'tiny'"):
        resolve_config("tiny")


def test_save_and_load_round_trip(tmp_path):
    cfg = resolve_config("smoke", {"data.workers": 3, "model.top_k": 2})
    path = save_config(cfg, tmp_path)
    assert json.loads(path.read_text())["data"]["workers"] == 3
    assert load_config(path) == cfg
    assert not list(tmp_path.glob("*.tmp"))


def test_load_config_names_bad_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        load_config(bad)


def test_parse_override():
    assert parse_override("data.workers=2") == ("data.workers", 2)
    assert parse_override("data.preset=official") == ("data.preset", "official")
    assert parse_override("data.test_sets=[\"A\"]") == ("data.test_sets", ["A"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("data.workers")


def test_derived_paths():
    cfg = resolve_config("smoke")
    assert str(cfg.benchmark_dir).endswith("benchmark/smoke")
    assert resolve_config("smoke", {"data.out_dir": "x/y"}).benchmark_dir.as_posix() == "x/y"
    assert isinstance(cfg, Config)


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("model.prompt_design", "foo", "none, single, multi, moe"),
    ("stage1.max_steps", -5, ">= 0"),
    ("data.png_compress_level", 42, "between 0 and 9"),
    ("data.codecs", ["jpeg", "mp3"], "jpeg, webp"),
    ("sample.fusion_weight", 1.5, "between 0.0 and 1.0"),
    ("stage1.lr", 0.0, "> 0"),
    ("device", "gpu", "cuda:N"),
])
def test_values_outside_what_is_allowed_are_one_line_naming_key_value_and_choices(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        resolve_config("smoke", {key: value})
    msg = str(err.value)
    assert "\n" not in msg and key in msg and allowed in msg
    assert repr(value[-1] if isinstance(value, list) else value) in msg


def test_every_profile_is_valid_and_saved_configs_are_checked(tmp_path):
    from moediffir.config import PROFILES, validate_config

    for profile in PROFILES:
        validate_config(resolve_config(profile))
    path = save_config(resolve_config("smoke"), tmp_path)
    data = json.loads(path.read_text())
    data["model"]["routing"] = "random"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="model.routing"):
        load_config(path)


def test_allowed_words_are_those_of_the_modules_that_read_them():
    """The config keeps the allowed values in one table; each must match the module that reads the key."""
    from moediffir.codecs import CODECS
    from moediffir.codecs.video import VVENC_PRESETS, X26X_PRESETS
    from moediffir.codecs.yuv import MATRICES, RANGES
    from moediffir.config import CHOICES
    from moediffir.metrics.suite import KNOWN_METRICS
    from moediffir.models.degradation_prior import DP_BACKENDS
    from moediffir.models.prompts import PROMPT_DESIGNS
    from moediffir.models.visual2text import V2T_BACKENDS
    from moediffir.pipelines.colorfix import COLOR_FIXES
    from moediffir.pipelines.sampling import SCHEDULERS

    assert set(CHOICES["data.codecs"]) == set(CODECS)
    assert set(CHOICES["data.x265_preset"]) == set(X26X_PRESETS) == set(CHOICES["data.x264_preset"])
    assert set(CHOICES["data.vvenc_preset"]) == set(VVENC_PRESETS)
    assert set(CHOICES["data.yuv_matrix"]) == set(MATRICES) and set(CHOICES["data.yuv_range"]) == set(RANGES)
    assert set(CHOICES["eval.metrics"]) == set(KNOWN_METRICS)
    assert set(CHOICES["model.dp_backend"]) == set(DP_BACKENDS)
    assert set(CHOICES["model.prompt_design"]) == set(PROMPT_DESIGNS)
    assert set(CHOICES["model.v2t_backend"]) == set(V2T_BACKENDS)
    assert set(CHOICES["sample.color_fix"]) == set(COLOR_FIXES)
    assert set(CHOICES["sample.scheduler"]) == set(SCHEDULERS)


def test_every_key_with_allowed_values_is_a_config_key():
    from moediffir.config import CHOICES, RANGES, config_to_dict

    d = config_to_dict(resolve_config("paper"))
    for key in (*CHOICES, *RANGES):
        section, name = key.split(".")
        assert name in d[section], key
