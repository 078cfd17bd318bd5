"""MixAtlas: find the best data mixture for midtraining a multimodal LLM.

Pipeline: corpus -> atlas (concept x task cells) -> mixture space -> search (GP-UCB vs baselines,
proxy models as the objective) -> recipe -> materialized training manifest and report.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # one source of truth: pyproject.toml's version, as installed
    __version__ = version("mixatlas")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
