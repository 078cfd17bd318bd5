"""Stage 1: decompose a corpus into an atlas of concept x task cells (embed, cluster, type tasks)."""

from mixatlas.atlas.atlas import Atlas, assign_atlas, build_atlas

__all__ = ["Atlas", "assign_atlas", "build_atlas"]
