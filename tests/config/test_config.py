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


# ------------------------------------------------------------------------------------------- recipes
def _flat(cfg) -> dict:
    return {f"{sec}.{k}": v for sec, d in config_to_dict(cfg).items() if isinstance(d, dict) for k, v in d.items()}


def test_released_recipe_sets_every_switch_and_explicit_overrides_win():
    from moediffir.config import RECIPE_PAPER_SCALE, RECIPE_VALUES

    paper = resolve_config("paper")
    assert paper.model.recipe == "paper" and paper.model.spade_form == "residual"
    released = resolve_config("paper", {"model.recipe": "released"})
    flat_paper, flat_rel = _flat(paper), _flat(released)
    expected = {**RECIPE_VALUES["released"], **RECIPE_PAPER_SCALE["released"]}
    for key, value in expected.items():
        assert flat_rel[key] == value or flat_rel[key] == list(value), key
        assert flat_paper[key] != flat_rel[key], f"{key}: the released value equals the paper default"
    changed = {k for k in flat_paper if flat_paper[k] != flat_rel[k]} - {"model.recipe"}
    assert changed == set(expected)  # nothing else moves
    assert released.stage1.lr == 1e-4 and released.stage1.max_steps == 800_000 and not released.stage1.augment
    assert released.data.preset == "official" and tuple(released.stage2.betas) == (0.5, 0.9)
    mixed = resolve_config("paper", {"model.recipe": "released", "model.routing": "blind", "stage1.lr": 3e-5})
    assert mixed.model.routing == "blind" and mixed.stage1.lr == 3e-5 and mixed.model.gate_init == "zeros"


def test_recipe_keeps_the_profile_numbers_outside_paper_and_survives_save_load(tmp_path):
    smoke = resolve_config("smoke")
    released = resolve_config("smoke", {"model.recipe": "released"})
    assert released.stage1.max_steps == smoke.stage1.max_steps and released.stage1.lr == smoke.stage1.lr
    assert released.model.routing == "task" and released.stage2.fusion_block == "rrdb"
    save_config(released, tmp_path)
    assert load_config(tmp_path / "config.json") == released
    tweaked = resolve_config("smoke", {"model.recipe": "released", "model.vit_final_norm": False})
    save_config(tweaked, tmp_path / "t")
    assert load_config(tmp_path / "t" / "config.json") == tweaked  # the saved keys win over the recipe
    with pytest.raises(ConfigError, match="model.recipe"):
        resolve_config("smoke", {"model.recipe": "github"})
    with pytest.raises(ConfigError, match="model.recipe"):
        resolve_config("smoke", {"model.recipe": 1})


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


@pytest.mark.parametrize(("key", "value"), [
    ("stage1.lr", float("inf")), ("stage1.lr", float("nan")), ("sample.fusion_weight", float("nan")),
    ("stage2.train_fusion_weight", float("nan")), ("stage1.betas", [0.9, float("inf")]),
    ("prior.vae_lr", float("nan")),
])
def test_non_finite_floats_are_refused_in_one_line(key, value):
    """NaN passes every range check (each comparison with it is false): non-finite floats are refused first."""
    with pytest.raises(ConfigError) as err:
        resolve_config("mini", {key: value})
    msg = str(err.value)
    assert "\n" not in msg and key in msg and "finite" in msg


def test_json_infinity_and_nan_from_the_command_line_are_refused():
    for text in ("stage1.lr=Infinity", "stage1.lr=NaN", "stage1.lr=-Infinity"):
        key, value = parse_override(text)
        with pytest.raises(ConfigError, match=r"stage1\.lr.*finite"):
            resolve_config("smoke", {key: value})


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("seed", -1, "between 0 and 4294967295"),
    ("stage1.batch_size", 100_000, "between 1 and 4096"),
    ("stage2.batch_size", 4097, "between 1 and 4096"),
    ("sample.batch_size", 0, "between 1 and 4096"),
    ("prior.vae_batch_size", 5000, "between 1 and 4096"),
    ("prior.unet_batch_size", 0, "between 1 and 4096"),
    ("prior.checkpoint_every", 0, ">= 1"),
    ("prior.vae_steps", 0, ">= 1"),
    ("prior.unet_steps", -3, ">= 1"),
    ("prior.log_every", 0, ">= 1"),
    ("prior.keep_checkpoints", 0, ">= 1"),
    ("prior.crop_size", 4, ">= 8"),
    ("prior.crop_size", 66, "multiple of 4"),
    ("prior.vae_lr", 0.0, "> 0"),
    ("prior.unet_lr", -1e-3, "> 0"),
    ("prior.vae_kl_weight", -1.0, ">= 0.0"),
    ("prior.vae_latent_noise", -0.1, ">= 0.0"),
    ("prior.latent_channels", 0, ">= 1"),
    ("prior.vae_channels", [16, 0, 64], ">= 1"),
    ("prior.unet_channels", [0], ">= 1"),
    ("prior.vae_layers_per_block", 0, ">= 1"),
    ("prior.unet_layers_per_block", 0, ">= 1"),
    ("prior.cross_attention_dim", 0, ">= 1"),
    ("prior.attention_head_dim", 0, ">= 1"),
    ("prior.prediction_type", "x0", "epsilon, v_prediction, sample"),
])
def test_seed_batch_sizes_and_prior_keys_have_ranges(key, value, allowed):
    with pytest.raises(ConfigError) as err:
        resolve_config("mini", {key: value})
    msg = str(err.value)
    assert "\n" not in msg and key in msg and allowed in msg


def test_every_numeric_prior_key_has_a_range():
    from moediffir.config import RANGES, PriorConfig

    numeric = [f.name for f in dataclasses.fields(PriorConfig)
               if f.type in ("int", "float", "tuple[int, ...]") and f.name != "enabled"]
    assert len(numeric) >= 18 and [n for n in numeric if f"prior.{n}" not in RANGES] == []


def test_the_largest_allowed_batch_and_seed_resolve():
    cfg = resolve_config("smoke", {"stage1.batch_size": 4096, "seed": 2**32 - 1, "prior.crop_size": 72})
    assert cfg.stage1.batch_size == 4096 and cfg.seed == 2**32 - 1


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
    from moediffir.models.clip_encoders import V2T_BACKENDS
    from moediffir.models.degradation_prior import DP_BACKENDS
    from moediffir.models.prompts import PROMPT_DESIGNS
    from moediffir.models.visual2text import V2T_FORMS
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
    assert set(CHOICES["model.v2t_form"]) == set(V2T_FORMS)
    assert set(CHOICES["sample.color_fix"]) == set(COLOR_FIXES)
    assert set(CHOICES["sample.scheduler"]) == set(SCHEDULERS)
    from moediffir.config import RECIPES
    from moediffir.models.compensator import FUSION_BLOCKS
    from moediffir.models.prompts import PROMPT_INITS, ROUTER_INPUTS
    from moediffir.models.router import GATE_INITS
    from moediffir.models.spade import SPADE_FORMS
    from moediffir.training.stage1 import OPTIMIZERS

    assert set(CHOICES["model.recipe"]) == set(RECIPES) and set(CHOICES["model.spade_form"]) == set(SPADE_FORMS)
    assert set(CHOICES["model.router_input"]) == set(ROUTER_INPUTS)
    assert set(CHOICES["model.gate_init"]) == set(GATE_INITS)
    assert set(CHOICES["model.prompt_init"]) == set(PROMPT_INITS)
    assert set(CHOICES["stage1.optimizer"]) == set(OPTIMIZERS)
    assert set(CHOICES["stage2.fusion_block"]) == set(FUSION_BLOCKS)
    from moediffir.training.prior import PREDICTION_TYPES

    assert set(CHOICES["prior.prediction_type"]) == set(PREDICTION_TYPES)


def test_every_key_with_allowed_values_is_a_config_key():
    from moediffir.config import CHOICES, RANGES, config_to_dict

    d = config_to_dict(resolve_config("paper"))
    for key in (*CHOICES, *RANGES):
        section, _, name = key.rpartition(".")
        assert name in (d[section] if section else d), key
