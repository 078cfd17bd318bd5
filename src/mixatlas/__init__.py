"""MixAtlas: find the best data mixture for midtraining a multimodal LLM.

Pipeline: corpus -> atlas (concept x task cells) -> mixture space -> search (GP-UCB vs baselines,
proxy models as the objective) -> recipe -> materialized training manifest and report.
"""

__version__ = "0.1.0"
