"""The notebooks' first-cell helper (moediffir.notebook): config, labels, folders, device, quiet notices."""

from __future__ import annotations

import logging

import pytest

from moediffir.config import ConfigError
from moediffir.notebook import setup_notebook


def test_setup_resolves_the_profile_and_the_overrides():
    cfg, random_weights, figures_dir, tables_dir, device = setup_notebook(
        "smoke", {"results_dir": "elsewhere", "device": "cpu"})
    assert cfg.profile == "smoke" and random_weights is True and device == "cpu"
    assert figures_dir == cfg.profile_results_dir / "figures" and tables_dir.parent == figures_dir.parent
    assert figures_dir.as_posix().startswith("elsewhere/smoke")


def test_paper_profile_is_pretrained_unless_asked_for_random_weights():
    assert setup_notebook("paper", {"device": "cpu"}).random_weights is False
    assert setup_notebook("paper", {"device": "cpu", "model.random_backbone": True}).random_weights is True


def test_bad_override_names_the_key():
    with pytest.raises(ConfigError, match="stage1.nope"):
        setup_notebook("smoke", {"stage1.nope": 1})


def test_setup_quiets_third_party_notices():
    parent = logging.getLogger("bitsandbytes")
    old = parent.level
    try:
        parent.setLevel(logging.NOTSET)
        setup_notebook("smoke")
        assert not logging.getLogger("bitsandbytes.backends.cpu.ops").isEnabledFor(logging.WARNING)
    finally:
        parent.setLevel(old)
