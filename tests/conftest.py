"""Shared fixtures: a small synthetic corpus that every stage's tests can read."""

from __future__ import annotations

from pathlib import Path

import pytest

SYNTH_SAMPLES = 600
SYNTH_SEED = 7
SYNTH_EVAL_PER_BENCHMARK = 20


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder written by `synthesize(out, 600, seed=7, eval_per_benchmark=20)`: `train.jsonl` (15 samples
    per domain x task cell), `images/`, `eval/<benchmark>.jsonl` and `synth.json`. Read-only: copy it
    before changing anything."""
    from mixatlas.corpus.synth import synthesize

    out = tmp_path_factory.mktemp("synth_corpus")
    synthesize(out, SYNTH_SAMPLES, SYNTH_SEED, eval_per_benchmark=SYNTH_EVAL_PER_BENCHMARK)
    return out
