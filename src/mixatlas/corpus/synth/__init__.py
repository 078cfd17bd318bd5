"""The synthetic multimodal corpus: 8 Pillow-rendered image domains x 5 tasks, with held-out benchmarks.

`synthesize(out, samples, seed)` writes LLaVA JSONL + PNGs; every record keeps its ground truth in
`meta` (domain, task, boxes, drawn text), which decomposition never reads.
"""

from mixatlas.corpus.synth.canvas import BOX_FORMAT
from mixatlas.corpus.synth.generate import BENCHMARKS, DOMAINS, render_sample, synthesize

__all__ = ["BENCHMARKS", "BOX_FORMAT", "DOMAINS", "render_sample", "synthesize"]
