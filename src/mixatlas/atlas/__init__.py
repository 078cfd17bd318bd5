"""Stage 1: decompose a corpus into an atlas of concept x task cells (embed, cluster, type tasks).

Modules by job: `folder` (the atlas folder, `Atlas`, `AtlasInfo`), `cache` (embedding shards),
`embedding_pass` (corpus -> cached embeddings, ordered rejects), `build` (build / assign an atlas),
and the steps `embed`, `cluster`, `tasks`, `exemplars`.
"""

from mixatlas.atlas.build import assign_atlas, build_atlas
from mixatlas.atlas.folder import ATLAS_VERSION, Atlas, AtlasInfo, AtlasParent

__all__ = ["ATLAS_VERSION", "Atlas", "AtlasInfo", "AtlasParent", "assign_atlas", "build_atlas"]
