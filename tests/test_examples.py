"""The example configs shipped in examples/ stay valid against the current config models."""

from __future__ import annotations

from pathlib import Path

from mixatlas.objectives.proxy import ProxyConfig
from mixatlas.search.config import SearchConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_search_yaml_loads_and_flags_override() -> None:
    config = SearchConfig.load(EXAMPLES / "search.yaml", {"budget": 7, "method": None})
    assert config.budget == 7 and config.method == "gp-ucb"  # a None flag keeps the YAML value
    assert config.space == "task" and config.trial_seeds == "shared" and config.minimize is True
    assert config.proxy_config == EXAMPLES / "proxy.yaml"  # relative paths resolve beside the YAML
    assert config.sources == ["atlas"]


def test_proxy_yaml_is_the_tiny_preset() -> None:
    config = ProxyConfig.from_yaml(EXAMPLES / "proxy.yaml")
    assert config.preset == "tiny" and config.image_size == 64 and config.steps == 300
