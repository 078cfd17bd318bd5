"""Corpus stage: the `Sample` record, streaming readers, image refs, the rejects list, and (in
`mixatlas.corpus.synth`) the synthetic multimodal corpus."""

from mixatlas.corpus.images import (
    DEFAULT_MAX_PIXELS,
    ImageRejected,
    image_bytes,
    open_image,
    open_sample_image,
)
from mixatlas.corpus.readers import READERS, corpus_files, detect_format, read_corpus
from mixatlas.corpus.rejects import Rejects
from mixatlas.corpus.sample import TASKS, Sample

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "READERS",
    "TASKS",
    "ImageRejected",
    "Rejects",
    "Sample",
    "corpus_files",
    "detect_format",
    "image_bytes",
    "open_image",
    "open_sample_image",
    "read_corpus",
]
